//! The patient record as the guideline sees it: a few plain types, independent of FHIR's JSON shapes and of
//! CDS Hooks.
//!
//! Why a model of our own: the rules need a dozen fields out of hundreds, and real EHR data arrives in R4,
//! STU3 and DSTU2 shapes. [`crate::fhir`] maps all of them onto these types once, so the rules in
//! [`crate::assess`] stay small, total and testable without JSON.

use time::Date;

/// One code from a code system, with the display the sender gave (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coding {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// A CodeableConcept: codings plus free text. Local EHR codes are common, so rules fall back on the text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Concept {
    pub codings: Vec<Coding>,
    pub text: Option<String>,
}

impl Concept {
    /// The best human-readable name: the text, else the first display, else the first code (never a code
    /// system's URL or OID: cards show the system's name next to the code).
    pub fn name(&self) -> String {
        if let Some(text) = self.text.as_deref().filter(|t| !t.trim().is_empty()) {
            return text.trim().to_string();
        }
        let display = self
            .codings
            .iter()
            .filter_map(|c| c.display.as_deref())
            .find(|d| !d.trim().is_empty());
        if let Some(display) = display {
            return display.trim().to_string();
        }
        match self.codings.iter().find(|c| !c.code.trim().is_empty()) {
            Some(c) => format!("code {}", c.code.trim()),
            None => "unnamed".to_string(),
        }
    }

    /// All the text a rule may search: the text and every display, lower-cased.
    pub fn search_text(&self) -> String {
        let mut out = String::new();
        for part in self
            .text
            .iter()
            .chain(self.codings.iter().filter_map(|c| c.display.as_ref()))
        {
            out.push_str(&part.to_lowercase());
            out.push(' ');
        }
        out
    }
}

/// The span of days a FHIR `date` or `dateTime` may stand for: `2019` is all of 2019, `2019-03` all of March,
/// `2019-03-07` and `2019-03-07T10:00:00Z` one day. Rules that prove something from a date use the end that
/// makes the proof hold for every day in the span, so a partial date never proves more than it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DateSpan {
    pub first: Date,
    pub last: Date,
}

impl DateSpan {
    pub fn day(date: Date) -> DateSpan {
        DateSpan {
            first: date,
            last: date,
        }
    }
}

/// The unit of an age as FHIR's `Age` writes it (UCUM `a`, `mo`, `wk`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgeUnit {
    Years,
    Months,
    Weeks,
    Days,
}

/// An age (an `Age`, or one end of a `Range` of ages).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Age {
    pub value: f64,
    pub unit: AgeUnit,
}

/// How a Condition says when it began (`onset[x]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Onset {
    /// `onsetDateTime`, or `onsetPeriod.start`.
    Date(DateSpan),
    /// `onsetPeriod` with only an `end`: it began on or before that.
    NotAfter(DateSpan),
    /// `onsetAge` or DSTU2 `onsetQuantity` (low = high; `<` gives only the high end, `>` only the low end), or
    /// `onsetRange` (either end may be missing): needs the birth date.
    Age { low: Option<Age>, high: Option<Age> },
    /// `onsetString`, as typed ("several years", "since 2019").
    Text(String),
}

/// That (and when) a Condition ended (`abatement[x]`).
#[derive(Debug, Clone, PartialEq)]
pub enum Abatement {
    /// `abatementDateTime`, or `abatementPeriod` (its start, else its end).
    Date(DateSpan),
    /// `abatementAge` (DSTU2 `abatementQuantity`), or `abatementRange`'s low end (its high end when it has no low).
    Age(Age),
    /// STU3/DSTU2 `abatementBoolean`.
    Flag(bool),
    /// `abatementString`.
    Text(String),
}

/// A problem or diagnosis of the patient.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub id: Option<String>,
    pub code: Concept,
    /// Clinical status code (`active`, `recurrence`, `relapse`, `inactive`, `resolved`, `remission`), if given.
    ///
    /// FHIR statuses stay text as the record wrote them, unlike the wire's closed vocabularies (hook names,
    /// indicators), on purpose: real records carry local and case-variant codes (`Active`, `A`, DSTU2's values),
    /// and each rule decides what an unknown one means, always toward the restrictive answer (an unknown
    /// clinical status keeps a condition active; an unknown medication status is not care taken). A parsed
    /// enum would have to pick one meaning for "unknown" for all of them; evidence lines also quote the status
    /// as recorded.
    pub clinical_status: Option<String>,
    /// Verification status code (`confirmed`, `provisional`, `refuted`, `entered-in-error`, …), if given.
    pub verification_status: Option<String>,
    pub onset: Option<Onset>,
    /// When the condition was recorded: R4 `recordedDate`, STU3 `assertedDate`, DSTU2 `dateRecorded`. Only the
    /// latest possible onset, never the onset itself.
    pub recorded: Option<DateSpan>,
    pub abatement: Option<Abatement>,
    pub body_sites: Vec<Concept>,
    /// Free text about the problem: `note[].text`, and the code texts and detail displays of its `evidence`.
    /// Read like a typed onset: it can show the problem is older ("on and off since 2020") or says chronic,
    /// never that it is recent.
    pub notes: Vec<String>,
    /// The `fullUrl` of the Bundle entry it came in (`urn:uuid:…`), which references may use instead of its id.
    pub full_url: Option<String>,
}

impl Condition {
    /// Active for the guideline on `today`: not refuted or entered in error, and a clinical status other than
    /// inactive, resolved or remission; with no clinical status, active unless an `abatement[x]` says it ended
    /// (a date on or before today, `true`, an age or a text).
    pub fn is_active(&self, today: Date) -> bool {
        let verification_ok = !matches!(
            self.verification_status.as_deref(),
            Some("refuted" | "entered-in-error")
        );
        // Only a status that says the condition ended ends it: an unknown or local status ("Active", "A") keeps
        // it, since dropping a chronic condition could only make the answer more permissive.
        let clinical_ok = match self.clinical_status.as_deref() {
            Some(s) => !matches!(
                s.trim().to_ascii_lowercase().as_str(),
                "inactive" | "resolved" | "remission"
            ),
            None => !match &self.abatement {
                None => false,
                Some(Abatement::Date(span)) => span.first <= today,
                Some(Abatement::Flag(ended)) => *ended,
                Some(Abatement::Age(_) | Abatement::Text(_)) => true,
            },
        };
        clinical_ok && verification_ok
    }
}

/// Which FHIR resource a medication fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MedicationSource {
    /// MedicationStatement (any version).
    Statement,
    /// R4/STU3 MedicationRequest.
    Request,
    /// DSTU2 MedicationOrder.
    Order,
}

/// A medication the patient took, takes, was prescribed or reported.
#[derive(Debug, Clone, PartialEq)]
pub struct Medication {
    pub id: Option<String>,
    pub source: MedicationSource,
    /// `medicationCodeableConcept`; for a drug named by `medicationReference`, the referenced Medication's
    /// code once resolved (a contained one when read, one from the record by
    /// [`PatientRecord::resolve_medication_references`]), else the reference's `display` as text.
    pub code: Concept,
    /// `medicationReference.reference`, kept while it is not resolved.
    pub medication_reference: Option<String>,
    pub status: Option<String>,
    /// MedicationRequest `intent` (`order`, `plan`, `proposal`, …).
    pub intent: Option<String>,
    /// STU3 MedicationStatement `taken` (`y`, `n`, `unk`, `na`).
    pub taken: Option<String>,
    /// DSTU2 `wasNotTaken: true`, STU3 `notTaken`, or a MedicationRequest's `doNotPerform: true` (an order
    /// *not* to take it).
    pub not_taken: bool,
    /// `effectiveDateTime`/`effectivePeriod`, `dateAsserted`, `authoredOn` or DSTU2 `dateWritten`.
    pub date: Option<DateSpan>,
    /// The only date is a MedicationStatement's `dateAsserted`: when the use was reported, not when it happened.
    pub asserted_only: bool,
    /// The end of `effectivePeriod` (when it has a start): the course went on until then.
    pub until: Option<DateSpan>,
    /// How it is given: every `dosage[].route` / `dosageInstruction[].route`, and the product's `form`.
    pub routes: Vec<Concept>,
    /// Where it is applied: every `dosage[].site` / `dosageInstruction[].site`.
    pub sites: Vec<Concept>,
}

/// A procedure or therapy (heat therapy, education, physical therapy…).
#[derive(Debug, Clone, PartialEq)]
pub struct Procedure {
    pub id: Option<String>,
    pub code: Concept,
    pub status: Option<String>,
    /// STU3 `notDone: true` or DSTU2 `notPerformed: true`.
    pub not_done: bool,
    /// `performedDateTime`, or `performedPeriod` (its start, else its end).
    pub date: Option<DateSpan>,
    /// The end of `performedPeriod` (when it has a start): the care went on until then.
    pub until: Option<DateSpan>,
    /// `bodySite`: where the care was given.
    pub body_sites: Vec<Concept>,
}

/// Whether one kind of data could be had for this request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Data came (possibly an empty set).
    Present,
    /// The client said there is none (`null` prefetch).
    NoData,
    /// The client tried and failed (an OperationOutcome, or an unreadable Bundle).
    Failed,
    /// Nobody supplied it.
    Missing,
}

impl Availability {
    /// True when the rules can rely on the absence of a fact in this kind of data.
    pub fn is_known(self) -> bool {
        matches!(self, Availability::Present | Availability::NoData)
    }

    /// Merge two sources of the same kind: known beats unknown, a failure is reported over a gap.
    pub fn merge(self, other: Availability) -> Availability {
        use Availability::*;
        match (self, other) {
            (Present, _) | (_, Present) => Present,
            (NoData, _) | (_, NoData) => NoData,
            (Failed, _) | (_, Failed) => Failed,
            (Missing, Missing) => Missing,
        }
    }
}

/// The kinds of patient data the service asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataKind {
    Conditions,
    MedicationStatements,
    MedicationRequests,
    Procedures,
}

impl DataKind {
    pub const ALL: [DataKind; 4] = [
        DataKind::Conditions,
        DataKind::MedicationStatements,
        DataKind::MedicationRequests,
        DataKind::Procedures,
    ];

    /// The kind's name: its prefetch key in discovery (`conditions`, `medicationStatements`, …) and its metrics
    /// label. The one table of the four data kinds; the wire's prefetch templates are keyed by it.
    pub fn key(self) -> &'static str {
        match self {
            DataKind::Conditions => "conditions",
            DataKind::MedicationStatements => "medicationStatements",
            DataKind::MedicationRequests => "medicationRequests",
            DataKind::Procedures => "procedures",
        }
    }

    /// The FHIR resource type that holds this kind of data.
    pub fn resource_type(self) -> &'static str {
        match self {
            DataKind::Conditions => "Condition",
            DataKind::MedicationStatements => "MedicationStatement",
            DataKind::MedicationRequests => "MedicationRequest",
            DataKind::Procedures => "Procedure",
        }
    }
}

/// Everything the service knows of the patient for one request.
#[derive(Debug, Clone)]
pub struct PatientRecord {
    pub conditions: Vec<Condition>,
    pub medications: Vec<Medication>,
    pub procedures: Vec<Procedure>,
    /// Indexed like [`DataKind::ALL`].
    pub availability: [Availability; 4],
    /// Resources that were present but could not be read, and were skipped.
    pub skipped: usize,
    /// Medication resources met anywhere in the record (`_include`d or sent as entries): id → code and dose
    /// form, for resolving `medicationReference`.
    pub medication_definitions: Vec<(String, Concept, Option<Concept>)>,
    /// The patient's birth date (from the `patient` prefetch key), for `onsetAge` and `onsetRange`.
    pub birth_date: Option<DateSpan>,
    /// The substances of the patient's current allergies and intolerances (the `allergyIntolerances` prefetch
    /// key). They change no verdict; an NSAID allergy changes which first-line analgesic the card names.
    pub allergies: Vec<Concept>,
    /// The `allergyIntolerances` prefetch key was sent (even `null`): no need to search for them.
    pub allergies_known: bool,
}

impl Default for PatientRecord {
    fn default() -> Self {
        PatientRecord {
            conditions: Vec::new(),
            medications: Vec::new(),
            procedures: Vec::new(),
            availability: [Availability::Missing; 4],
            skipped: 0,
            medication_definitions: Vec::new(),
            birth_date: None,
            allergies: Vec::new(),
            allergies_known: false,
        }
    }
}

impl PatientRecord {
    pub fn availability(&self, kind: DataKind) -> Availability {
        self.availability[kind as usize]
    }

    pub fn set_availability(&mut self, kind: DataKind, availability: Availability) {
        self.availability[kind as usize] = availability;
    }

    /// Forgets what is known of one kind (before searching it again from the start).
    pub fn clear(&mut self, kind: DataKind) {
        match kind {
            DataKind::Conditions => self.conditions.clear(),
            DataKind::MedicationStatements => self.medications.retain(|m| m.source != MedicationSource::Statement),
            DataKind::MedicationRequests => self.medications.retain(|m| m.source == MedicationSource::Statement),
            DataKind::Procedures => self.procedures.clear(),
        }
    }

    /// The kinds whose contents cannot be relied upon.
    pub fn unknown_kinds(&self) -> Vec<DataKind> {
        DataKind::ALL
            .into_iter()
            .filter(|k| !self.availability(*k).is_known())
            .collect()
    }
}

/// A FHIR Reference: its literal `reference` and its `display` (either may be missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub reference: Option<String>,
    pub display: Option<String>,
}

/// A draft order, reduced to what the guideline needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    /// `ServiceRequest`, `ProcedureRequest`, …
    pub resource_type: String,
    pub id: Option<String>,
    pub code: Concept,
    pub reason_codes: Vec<Concept>,
    /// `reasonReference`s: literal references such as `Condition/123`, and what their `display` says.
    pub reason_references: Vec<Reference>,
    pub body_sites: Vec<Concept>,
    /// Conditions a `reasonReference` can point to without the record: the order's `contained` Conditions
    /// (`#id`) and, in order-sign, the Conditions of the draft-orders Bundle (`urn:uuid:…`).
    pub contained_conditions: Vec<Condition>,
}

impl Order {
    /// `ServiceRequest/123`, the form `selections` and delete actions use.
    pub fn reference(&self) -> Option<String> {
        self.id.as_ref().map(|id| format!("{}/{}", self.resource_type, id))
    }
}

/// Parses the date part of a FHIR date or dateTime leniently, as the span of days it may mean: `2019`,
/// `2019-03`, `2019-03-01` and any `2019-03-01T…` (with or without a time zone, which real data often lacks).
pub fn parse_fhir_span(value: &str) -> Option<DateSpan> {
    let value = value.trim();
    let date_part = value.split('T').next()?;
    let mut parts = date_part.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    if !(1..=9999).contains(&year) {
        return None;
    }
    let Some(month) = parts.next() else {
        return Some(DateSpan {
            first: Date::from_calendar_date(year, time::Month::January, 1).ok()?,
            last: Date::from_calendar_date(year, time::Month::December, 31).ok()?,
        });
    };
    let month = time::Month::try_from(month.parse::<u8>().ok()?).ok()?;
    let Some(day) = parts.next() else {
        return Some(DateSpan {
            first: Date::from_calendar_date(year, month, 1).ok()?,
            last: Date::from_calendar_date(year, month, month.length(year)).ok()?,
        });
    };
    let day: u8 = day.get(..2).unwrap_or(day).parse().ok()?;
    Date::from_calendar_date(year, month, day).ok().map(DateSpan::day)
}

/// The first day a FHIR date or dateTime may mean (see [`parse_fhir_span`]).
pub fn parse_fhir_date(value: &str) -> Option<Date> {
    parse_fhir_span(value).map(|span| span.first)
}

impl PatientRecord {
    /// Resolves every `medicationReference` still open against the Medication resources of the record
    /// (`Medication/123`, an absolute URL ending so, or `urn:uuid:123`). Unresolved ones keep whatever the
    /// reference's `display` gave.
    pub fn resolve_medication_references(&mut self) {
        if self.medication_definitions.is_empty() {
            return;
        }
        for medication in &mut self.medications {
            let Some(reference) = medication.medication_reference.as_deref() else {
                continue;
            };
            let id = reference.strip_prefix("urn:uuid:").unwrap_or(reference);
            let id = id.rsplit('/').next().unwrap_or(id);
            if let Some((_, code, form)) = self.medication_definitions.iter().find(|(def, _, _)| def == id) {
                let display = std::mem::take(&mut medication.code);
                medication.code = code.clone();
                medication.routes.extend(form.clone());
                if medication.code.text.is_none() {
                    medication.code.text = display.text;
                }
                medication.medication_reference = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn dates_parse_leniently() {
        let cases = [
            ("2019", Some(date!(2019 - 01 - 01))),
            ("2019-03", Some(date!(2019 - 03 - 01))),
            ("2019-03-07", Some(date!(2019 - 03 - 07))),
            ("2014-01-31T13:45:24-05:00", Some(date!(2014 - 01 - 31))),
            ("2014-01-31T13:45:24", Some(date!(2014 - 01 - 31))),
            ("2013-02-28T11:06:11.683Z", Some(date!(2013 - 02 - 28))),
            ("2019-02-30", None),
            ("yesterday", None),
            ("", None),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_fhir_date(input), expected, "{input}");
        }
        let span = |s| parse_fhir_span(s).map(|s| (s.first, s.last));
        assert_eq!(span("2019"), Some((date!(2019 - 01 - 01), date!(2019 - 12 - 31))));
        assert_eq!(span("2024-02"), Some((date!(2024 - 02 - 01), date!(2024 - 02 - 29))));
        assert_eq!(
            span("2024-02-03T23:59:00+14:00"),
            Some((date!(2024 - 02 - 03), date!(2024 - 02 - 03)))
        );
        assert_eq!(span("2024-13"), None);
    }

    #[test]
    fn active_conditions() {
        let mut c = Condition {
            id: None,
            code: Concept::default(),
            clinical_status: None,
            verification_status: None,
            onset: None,
            recorded: None,
            abatement: None,
            body_sites: vec![],
            notes: vec![],
            full_url: None,
        };
        let today = date!(2026 - 11 - 23);
        assert!(c.is_active(today));
        for (clinical, verification, active) in [
            (Some("active"), Some("confirmed"), true),
            (Some("relapse"), None, true),
            (Some("Active"), None, true),
            (Some("local-code-7"), None, true),
            (Some("Resolved"), None, false),
            (Some("remission"), None, false),
            (Some("recurrence"), Some("provisional"), true),
            (Some("resolved"), None, false),
            (Some("inactive"), None, false),
            (Some("active"), Some("refuted"), false),
            (None, Some("entered-in-error"), false),
        ] {
            c.clinical_status = clinical.map(str::to_string);
            c.verification_status = verification.map(str::to_string);
            assert_eq!(c.is_active(today), active, "{clinical:?} {verification:?}");
        }
        // With no clinical status, an abatement in the past ends it; one in the future does not.
        c.clinical_status = None;
        c.verification_status = None;
        for (abatement, active) in [
            (Abatement::Date(DateSpan::day(date!(2026 - 01 - 01))), false),
            (Abatement::Date(DateSpan::day(date!(2027 - 01 - 01))), true),
            (Abatement::Flag(true), false),
            (Abatement::Flag(false), true),
            (Abatement::Text("childhood".into()), false),
        ] {
            c.abatement = Some(abatement.clone());
            assert_eq!(c.is_active(today), active, "{abatement:?}");
        }
        // A clinical status says more than an abatement.
        c.clinical_status = Some("recurrence".into());
        c.abatement = Some(Abatement::Flag(true));
        assert!(c.is_active(today));
    }
}

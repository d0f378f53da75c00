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
    /// The best human-readable name: the text, else the first display, else the first code.
    pub fn name(&self) -> String {
        if let Some(text) = self.text.as_deref().filter(|t| !t.trim().is_empty()) {
            return text.trim().to_string();
        }
        if let Some(display) = self.codings.iter().find_map(|c| c.display.as_deref()) {
            return display.to_string();
        }
        match self.codings.first() {
            Some(c) => format!("{} {}", c.system, c.code),
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

/// A problem or diagnosis of the patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub id: Option<String>,
    pub code: Concept,
    /// Clinical status code (`active`, `recurrence`, `relapse`, `inactive`, `resolved`, …), if given.
    pub clinical_status: Option<String>,
    /// Verification status code (`confirmed`, `refuted`, `entered-in-error`, …), if given.
    pub verification_status: Option<String>,
    pub onset: Option<Date>,
    pub recorded: Option<Date>,
    pub body_sites: Vec<Concept>,
}

impl Condition {
    /// Active for the guideline: clinical status active/recurrence/relapse or absent, and not refuted or
    /// entered in error.
    pub fn is_active(&self) -> bool {
        let clinical_ok = match self.clinical_status.as_deref() {
            None => true,
            Some(s) => matches!(s, "active" | "recurrence" | "relapse"),
        };
        let verification_ok = !matches!(
            self.verification_status.as_deref(),
            Some("refuted" | "entered-in-error")
        );
        clinical_ok && verification_ok
    }
}

/// Which FHIR resource a medication fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MedicationSource {
    Statement,
    Request,
}

/// A medication the patient took, takes, was prescribed or reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Medication {
    pub id: Option<String>,
    pub source: MedicationSource,
    pub code: Concept,
    pub status: Option<String>,
    pub date: Option<Date>,
}

/// A procedure or therapy done (heat therapy, education, physical therapy…).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Procedure {
    pub id: Option<String>,
    pub code: Concept,
    pub status: Option<String>,
    pub date: Option<Date>,
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
}

impl Default for PatientRecord {
    fn default() -> Self {
        PatientRecord {
            conditions: Vec::new(),
            medications: Vec::new(),
            procedures: Vec::new(),
            availability: [Availability::Missing; 4],
            skipped: 0,
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
            DataKind::MedicationRequests => self.medications.retain(|m| m.source != MedicationSource::Request),
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

/// A draft order, reduced to what the guideline needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// `ServiceRequest`, `ProcedureRequest`, …
    pub resource_type: String,
    pub id: Option<String>,
    pub code: Concept,
    pub reason_codes: Vec<Concept>,
    /// Literal references such as `Condition/123`.
    pub reason_references: Vec<String>,
    pub body_sites: Vec<Concept>,
}

impl Order {
    /// `ServiceRequest/123`, the form `selections` and delete actions use.
    pub fn reference(&self) -> Option<String> {
        self.id.as_ref().map(|id| format!("{}/{}", self.resource_type, id))
    }
}

/// Parses the date part of a FHIR date or dateTime leniently: `2019`, `2019-03`, `2019-03-01` and any
/// `2019-03-01T…` (with or without a time zone, which real data often lacks). Partial dates take the first
/// day of the period, which can only make a condition look older, never younger.
pub fn parse_fhir_date(value: &str) -> Option<Date> {
    let value = value.trim();
    let date_part = value.split('T').next()?;
    let mut parts = date_part.splitn(3, '-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month: u8 = match parts.next() {
        Some(m) => m.parse().ok()?,
        None => 1,
    };
    let day: u8 = match parts.next() {
        Some(d) => d.get(..2).unwrap_or(d).parse().ok()?,
        None => 1,
    };
    if !(1..=9999).contains(&year) {
        return None;
    }
    let month = time::Month::try_from(month).ok()?;
    Date::from_calendar_date(year, month, day).ok()
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
            body_sites: vec![],
        };
        assert!(c.is_active());
        for (clinical, verification, active) in [
            (Some("active"), Some("confirmed"), true),
            (Some("relapse"), None, true),
            (Some("recurrence"), Some("provisional"), true),
            (Some("resolved"), None, false),
            (Some("inactive"), None, false),
            (Some("active"), Some("refuted"), false),
            (None, Some("entered-in-error"), false),
        ] {
            c.clinical_status = clinical.map(str::to_string);
            c.verification_status = verification.map(str::to_string);
            assert_eq!(c.is_active(), active, "{clinical:?} {verification:?}");
        }
    }
}

//! Conservative care (Step 2 of the guideline): an analgesic trial, self-care education with activity
//! modification, and heat where the pain is in the low back, each judged by what the record really shows.
//!
//! Why so strict: the permissive cards rest on these facts, and real records are full of care that never
//! happened: statements of intent, draft and proposed prescriptions, "not taken", procedures in preparation or
//! dated next week, low-dose aspirin, cold packs billed under a hot-or-cold code, and prescriptions from years
//! before this episode. Each is listed on the card as found but not counted, with the reason, so a clinician
//! can see why the record did not satisfy the rule.
//!
//! Care also has a *where* and a *how*. Care that states its site (a Procedure's `bodySite`, a dosage's `site`,
//! or a region its own name gives: "hot pack to left knee") counts only for pain of that site; when the pain's
//! region is unknown, only sited care of the low back counts (the region the guideline's care depends on). A
//! medication given by a route or in a form that does not treat musculoskeletal pain (eye, ear or nose drops,
//! irrigations, inhalers: `dosage.route`, `Medication.form`, the product's name) is not an analgesic trial;
//! topical NSAIDs on the skin are (the guideline says "NSAIDs" without a route). A period of care
//! (`effectivePeriod`, `performedPeriod`) counts when any part of it falls in the episode. A heat product kept on
//! the medication list (an over-the-counter heat wrap) is heat therapy.

use time::{Date, Duration};

use super::concept::{self, Regions};
use crate::assess::vocabulary::{Policy, Terminology, ValueSet};
use crate::record::{Coding, Concept, DataKind, DateSpan, Medication, MedicationSource, PatientRecord, Procedure};

/// Which resource a piece of evidence came from, in words a clinician uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvidenceSource {
    /// MedicationStatement.
    MedicationRecord,
    /// MedicationRequest or DSTU2 MedicationOrder.
    Prescription,
    Procedure,
}

/// Why a fact that names care does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NotCounted {
    /// Its status, intent or flags do not show it was taken or done (intended, proposed, drafted, in
    /// preparation, not taken, not done, cancelled, unknown).
    NotDone,
    /// Entered in error: it never was.
    EnteredInError,
    /// Applied to another body site than the pain (a hot pack to the knee for low back pain).
    OtherSite,
    /// A route or form that does not treat musculoskeletal pain (eye, ear or nose drops, an irrigation).
    NotSystemic,
    /// Dated after today.
    Future,
    /// Before the current episode (or older than the policy's maximum age).
    Earlier,
    /// No date: it cannot be placed in the current episode.
    Undated,
}

/// One fact of the record that names a piece of conservative care.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub name: String,
    pub coding: Option<Coding>,
    pub date: Option<DateSpan>,
    pub status: Option<String>,
    pub source: EvidenceSource,
    /// `None` when it counts.
    pub not_counted: Option<NotCounted>,
}

/// Whether one element of conservative care is documented.
#[derive(Debug, Clone, PartialEq)]
pub enum CareStatus {
    /// At least one fact counts.
    Found,
    NotFound,
    /// The record could not be searched: these kinds of data are unavailable.
    Unknown(Vec<DataKind>),
}

/// One element of conservative care: its status, and every fact that named it (counted or not).
#[derive(Debug, Clone, PartialEq)]
pub struct Element {
    pub status: CareStatus,
    pub evidence: Vec<Evidence>,
}

/// Whether heat therapy is required before dry needling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeatRequirement {
    /// The pain is in the low back.
    LowBack,
    /// The pain's region is not recorded, so the low back cannot be ruled out.
    RegionUnknown,
    /// The pain is elsewhere (the neck, the thorax, a limb).
    NotRequired,
}

/// The elements of conservative care the guideline requires before dry needling.
#[derive(Debug, Clone, PartialEq)]
pub struct CareCheck {
    pub analgesic: Element,
    pub self_care: Element,
    pub heat: Element,
    pub heat_requirement: HeatRequirement,
    /// Care must be dated on or after this day to count.
    pub window_start: Date,
}

impl CareCheck {
    pub fn heat_required(&self) -> bool {
        self.heat_requirement != HeatRequirement::NotRequired
    }

    pub fn required(&self) -> impl Iterator<Item = &Element> {
        [
            Some(&self.analgesic),
            Some(&self.self_care),
            self.heat_required().then_some(&self.heat),
        ]
        .into_iter()
        .flatten()
    }

    /// Every required element is documented by a fact that counts.
    pub fn complete(&self) -> bool {
        self.required().all(|e| e.status == CareStatus::Found)
    }

    pub fn any_missing(&self) -> bool {
        self.required().any(|e| e.status == CareStatus::NotFound)
    }

    pub fn unknown_kinds(&self) -> Vec<DataKind> {
        let mut kinds: Vec<DataKind> = self
            .required()
            .filter_map(|e| match &e.status {
                CareStatus::Unknown(kinds) => Some(kinds.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        kinds.sort();
        kinds.dedup();
        kinds
    }
}

/// Aspirin at an antiplatelet dose (≤ 162 mg), or with no dose at all, in any spelling: "aspirin 81 mg", "ASA 81", "Aspirin EC 81MG",
/// "acetylsalicylic acid 100 mg". Written by hand because product names put the dose anywhere: the dose read is
/// the first number after the aspirin name (else the last one before it), so "acetaminophen 250 MG / aspirin
/// 250 MG / caffeine 65 MG" is full-dose aspirin, not a low dose.
fn low_dose_aspirin(text: &str) -> bool {
    let names = ["aspirin", "asa", "acetylsalicylic", "ecotrin", "bayer"];
    let Some(at) = names
        .iter()
        .filter_map(|name| {
            text.match_indices(name)
                .find(|(i, _)| text[..*i].chars().next_back().is_none_or(|c| !c.is_alphanumeric()))
                .map(|(i, _)| i + name.len())
        })
        .min()
    else {
        return false;
    };
    let numbers = |part: &str| -> Vec<u32> {
        part.split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty() && w.len() <= 5)
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    let dose = numbers(&text[at..])
        .first()
        .copied()
        .or_else(|| numbers(&text[..at]).last().copied());
    // No dose at all cannot show an analgesic dose: a missing fact is not a trial.
    dose.is_none_or(|mg| (1..=162).contains(&mg))
}

/// Names an analgesic other than aspirin (a combination such as aspirin with acetaminophen still counts).
fn names_other_analgesic(text: &str, terms: &Terminology) -> bool {
    let without: String = ["aspirin", "acetylsalicylic", "asa "]
        .iter()
        .fold(text.to_string(), |t, name| t.replace(name, " "));
    terms.keywords.medication.analgesic.matches(&without)
}

fn lower_texts(concept: &Concept, skip: impl Fn(&Coding) -> bool) -> Vec<String> {
    concept
        .text
        .iter()
        .chain(
            concept
                .codings
                .iter()
                .filter(|c| !skip(c))
                .filter_map(|c| c.display.as_ref()),
        )
        .map(|t| t.to_lowercase())
        .collect()
}

/// True when a medication is acetaminophen or an NSAID that counts as a trial (not an opioid or cough/cold
/// combination, not low-dose aspirin).
pub fn is_analgesic(code: &Concept, terms: &Terminology) -> bool {
    let codings = &code.codings;
    if codings.iter().any(|c| terms.contains(ValueSet::NotAnAnalgesicTrial, c)) {
        return false;
    }
    let texts = lower_texts(code, |_| false);
    let kw = &terms.keywords.medication;
    if texts
        .iter()
        .any(|t| kw.not_an_analgesic_trial.matches(t) || (low_dose_aspirin(t) && !names_other_analgesic(t, terms)))
    {
        return false;
    }
    codings.iter().any(|c| terms.contains(ValueSet::Analgesic, c))
        || kw.analgesic.matches_any(texts.iter().map(String::as_str))
}

/// HL7 v3 RouteOfAdministration and SNOMED CT route codes that do not treat musculoskeletal pain, for routes
/// sent without a display (displays and texts are read with `medication.not_systemic` phrases). Written here
/// rather than in `codes.csv` because they are not clinical value sets: they only stop a drop in the eye from
/// counting as an analgesic trial.
const NOT_SYSTEMIC_ROUTE_CODES: &[&str] = &[
    "OPTHALTA",
    "OPHTHALMIC",
    "OT",
    "OTIC",
    "NASAL",
    "NASINHL",
    "NASINHLC",
    "IRRIG",
    "RESPINHL",
    "IORINSE",
    "MTHRINSE",
    "VAGINSI",
    "54485002",
    "10547007",
    "46713006",
    "447694001",
    "18679011000001101",
    "127492001",
];

/// True when a medication is given by a route or in a form that does not treat musculoskeletal pain.
fn not_systemic(m: &Medication, terms: &Terminology) -> bool {
    let phrases = &terms.keywords.medication.not_systemic;
    let says = |c: &Concept| phrases.matches_any(lower_texts(c, |_| false).iter().map(String::as_str));
    // Route codes are looked up only among the routes and forms: a drug's own code is from another system.
    let route_code = |c: &Concept| {
        c.codings
            .iter()
            .any(|coding| NOT_SYSTEMIC_ROUTE_CODES.contains(&coding.code.trim().to_ascii_uppercase().as_str()))
    };
    says(&m.code) || m.routes.iter().any(|r| says(r) || route_code(r))
}

/// The regions a piece of care states it was given at: its sites and any region its own name gives.
fn care_site(code: &Concept, sites: &[Concept], terms: &Terminology) -> Regions {
    sites.iter().fold(concept::regions(code, terms), |r, site| {
        r.union(concept::regions(site, terms))
    })
}

/// Whether care given at `site` counts for pain of `pain` regions: care with no site counts everywhere; sited
/// care counts where the regions meet, or, when the pain's region is unknown, only at the low back (the one
/// region the guideline's care depends on, and the one that cannot be ruled out).
fn site_counts(site: Regions, pain: Regions) -> bool {
    if site.is_empty() {
        true
    } else if pain.is_empty() {
        site.low_back()
    } else {
        site.overlaps(pain)
    }
}

/// Whether a medication fact shows the drug was taken or prescribed (per FHIR version).
fn medication_done(m: &Medication) -> bool {
    let status_ok = matches!(
        m.status.as_deref(),
        Some("active" | "completed" | "stopped" | "on-hold")
    );
    match m.source {
        MedicationSource::Statement => {
            status_ok && !m.not_taken && !matches!(m.taken.as_deref(), Some("n" | "unk" | "na"))
        }
        MedicationSource::Request | MedicationSource::Order => {
            status_ok
                && !m.not_taken
                && m.intent.as_deref().is_none_or(|i| {
                    matches!(
                        i,
                        "order" | "original-order" | "reflex-order" | "filler-order" | "instance-order"
                    )
                })
        }
    }
}

/// A procedure that happened: completed, under way, or begun and then stopped or paused (`stopped` and
/// `on-hold` are care that was given, even if not to the end).
fn procedure_done(p: &Procedure) -> bool {
    !p.not_done
        && matches!(
            p.status.as_deref(),
            Some("completed" | "in-progress" | "stopped" | "on-hold")
        )
}

fn entered_in_error(status: Option<&str>) -> bool {
    status.is_some_and(|s| s.eq_ignore_ascii_case("entered-in-error"))
}

fn is_heat(p: &Procedure, terms: &Terminology) -> bool {
    let codings = &p.code.codings;
    // CPT 97010 is "hot or cold packs": its own display says nothing; the rest of the text must say heat.
    let texts = lower_texts(&p.code, |c| terms.contains(ValueSet::HotOrColdPack, c));
    let heat = &terms.keywords.procedure.heat_therapy;
    if texts.iter().any(|t| has_cold(t)) && !heat.matches_any(texts.iter().map(String::as_str)) {
        return false;
    }
    codings.iter().any(|c| terms.contains(ValueSet::HeatTherapy, c))
        || heat.matches_any(texts.iter().map(String::as_str))
}

fn has_cold(text: &str) -> bool {
    crate::assess::vocabulary::has_keyword(text, &["cold", "ice", "cryo"])
}

fn is_self_care(p: &Procedure, terms: &Terminology) -> bool {
    p.code.codings.iter().any(|c| terms.contains(ValueSet::SelfCare, c))
        || terms
            .keywords
            .procedure
            .self_care
            .matches_any(lower_texts(&p.code, |_| false).iter().map(String::as_str))
}

/// Whether a fact of care counts, and if not why. `until`: the end of its period, when it has one (a course
/// that began before the episode and went on into it counts).
fn judge(
    done: bool,
    status: Option<&str>,
    date: Option<DateSpan>,
    until: Option<DateSpan>,
    today: Date,
    window_start: Date,
) -> Option<NotCounted> {
    if entered_in_error(status) {
        return Some(NotCounted::EnteredInError);
    }
    if !done {
        return Some(NotCounted::NotDone);
    }
    match date {
        None => Some(NotCounted::Undated),
        // A period that has begun is not in the future, whenever it ends.
        Some(d) if until.is_some() && d.first > today => Some(NotCounted::Future),
        // A month or year that is not over yet may still be ahead.
        Some(d) if until.is_none() && d.last > today => Some(NotCounted::Future),
        Some(d) if until.unwrap_or(d).last.min(today) < window_start => Some(NotCounted::Earlier),
        Some(_) => None,
    }
}

fn known_coding(code: &Concept, terms: &Terminology) -> Option<Coding> {
    code.codings
        .iter()
        .find(|c| terms.is_known(c))
        .or(code.codings.first())
        .cloned()
}

fn element(evidence: Vec<Evidence>, kinds: &[DataKind], record: &PatientRecord) -> Element {
    let status = if evidence.iter().any(|e| e.not_counted.is_none()) {
        CareStatus::Found
    } else {
        let unknown: Vec<DataKind> = kinds
            .iter()
            .copied()
            .filter(|k| !record.availability(*k).is_known())
            .collect();
        if unknown.is_empty() {
            CareStatus::NotFound
        } else {
            CareStatus::Unknown(unknown)
        }
    };
    Element { status, evidence }
}

/// The first day care may be dated to count: the episode's onset when known, else the policy's maximum age.
pub fn window_start(onset: Option<Date>, today: Date, policy: &Policy) -> Date {
    onset.unwrap_or_else(|| {
        today
            .checked_sub(Duration::days(i64::from(policy.care_max_age_days)))
            .unwrap_or(Date::MIN)
    })
}

/// A heat product kept on the medication list (an over-the-counter heat wrap).
fn is_heat_product(m: &Medication, terms: &Terminology) -> bool {
    terms
        .keywords
        .medication
        .heat_product
        .matches_any(lower_texts(&m.code, |_| false).iter().map(String::as_str))
}

fn medication_evidence(
    m: &Medication,
    pain: Regions,
    today: Date,
    window_start: Date,
    terms: &Terminology,
) -> Evidence {
    // A statement dated only by when it was reported places the use in time only while it is current.
    let date = m
        .date
        .filter(|_| !m.asserted_only || m.status.as_deref() == Some("active"));
    let not_counted = judge(
        medication_done(m),
        m.status.as_deref(),
        date,
        m.until,
        today,
        window_start,
    )
    .or_else(|| (!site_counts(care_site(&m.code, &m.sites, terms), pain)).then_some(NotCounted::OtherSite));
    Evidence {
        name: m.code.name(),
        coding: known_coding(&m.code, terms),
        date: m.date,
        status: m.status.clone(),
        source: match m.source {
            MedicationSource::Statement => EvidenceSource::MedicationRecord,
            MedicationSource::Request | MedicationSource::Order => EvidenceSource::Prescription,
        },
        not_counted,
    }
}

/// Looks for each element of conservative care in the record, for pain of `pain` regions (empty: unknown).
pub fn check_care(
    record: &PatientRecord,
    heat_requirement: HeatRequirement,
    pain: Regions,
    window_start: Date,
    today: Date,
    terms: &Terminology,
) -> CareCheck {
    let analgesics = record
        .medications
        .iter()
        .filter(|m| is_analgesic(&m.code, terms) && !is_heat_product(m, terms))
        .map(|m| {
            let mut evidence = medication_evidence(m, pain, today, window_start, terms);
            if evidence.not_counted.is_none_or(|r| r > NotCounted::NotSystemic) && not_systemic(m, terms) {
                evidence.not_counted = Some(NotCounted::NotSystemic);
            }
            evidence
        })
        .collect();
    let procedures = |matches: &dyn Fn(&Procedure) -> bool| -> Vec<Evidence> {
        record
            .procedures
            .iter()
            .filter(|p| matches(p))
            .map(|p| Evidence {
                name: p.code.name(),
                coding: known_coding(&p.code, terms),
                date: p.date,
                status: p.status.clone(),
                source: EvidenceSource::Procedure,
                not_counted: judge(
                    procedure_done(p),
                    p.status.as_deref(),
                    p.date,
                    p.until,
                    today,
                    window_start,
                )
                .or_else(|| {
                    (!site_counts(care_site(&p.code, &p.body_sites, terms), pain)).then_some(NotCounted::OtherSite)
                }),
            })
            .collect()
    };
    let mut heat = procedures(&|p| is_heat(p, terms));
    heat.extend(
        record
            .medications
            .iter()
            .filter(|m| is_heat_product(m, terms))
            .map(|m| medication_evidence(m, pain, today, window_start, terms)),
    );
    CareCheck {
        analgesic: element(
            analgesics,
            &[DataKind::MedicationStatements, DataKind::MedicationRequests],
            record,
        ),
        self_care: element(procedures(&|p| is_self_care(p, terms)), &[DataKind::Procedures], record),
        // Heat is looked for among procedures; a heat wrap on the medication list is found too, but a missing
        // medication list does not make heat unknown (it is rarely kept there).
        heat: element(heat, &[DataKind::Procedures], record),
        heat_requirement,
        window_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_dose_aspirin_in_any_spelling() {
        for text in [
            "aspirin 81 mg oral tablet",
            "aspirin ec 81mg",
            "asa 81",
            "aspirin 81 mg delayed release oral tablet [ecotrin]",
            "acetylsalicylic acid 100 mg",
            "bayer aspirin regimen 81 mg chewable",
        ] {
            assert!(low_dose_aspirin(text), "{text}");
        }
        assert!(low_dose_aspirin("aspirin"), "no dose shows no analgesic dose");
        assert!(low_dose_aspirin("aspirin 25 mg / dipyridamole 200 mg"));
        for text in [
            "aspirin 325 mg oral tablet",
            "ibuprofen 200 mg",
            "aspirin 500 mg / caffeine 65 mg",
            "acetaminophen 250 mg / aspirin 250 mg / caffeine 65 mg oral tablet [excedrin]",
        ] {
            assert!(!low_dose_aspirin(text), "{text}");
        }
    }
}

//! Conservative care (Step 2 of the guideline): an analgesic trial, self-care education with activity
//! modification, and heat where the pain is in the low back, each judged by what the record really shows.
//!
//! Why so strict: the permissive cards rest on these facts, and real records are full of care that never
//! happened: statements of intent, draft and proposed prescriptions, "not taken", procedures in preparation or
//! dated next week, low-dose aspirin, cold packs billed under a hot-or-cold code, and prescriptions from years
//! before this episode. Each is listed on the card as found but not counted, with the reason, so a clinician
//! can see why the record did not satisfy the rule.

use time::{Date, Duration};

use crate::knowledge::{Policy, Terminology, ValueSet};
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
    /// Intended, planned, proposed, drafted, in preparation, not taken, not done, cancelled, unknown.
    NotDone,
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

fn procedure_done(p: &Procedure) -> bool {
    !p.not_done && matches!(p.status.as_deref(), Some("completed" | "in-progress"))
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
    crate::knowledge::has_keyword(text, &["cold", "ice", "cryo"])
}

fn is_self_care(p: &Procedure, terms: &Terminology) -> bool {
    p.code.codings.iter().any(|c| terms.contains(ValueSet::SelfCare, c))
        || terms
            .keywords
            .procedure
            .self_care
            .matches_any(lower_texts(&p.code, |_| false).iter().map(String::as_str))
}

fn judge(done: bool, date: Option<DateSpan>, today: Date, window_start: Date) -> Option<NotCounted> {
    if !done {
        return Some(NotCounted::NotDone);
    }
    match date {
        None => Some(NotCounted::Undated),
        // A month or year that is not over yet may still be ahead.
        Some(d) if d.last > today => Some(NotCounted::Future),
        Some(d) if d.first < window_start => Some(NotCounted::Earlier),
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

/// Looks for each element of conservative care in the record.
pub fn check_care(
    record: &PatientRecord,
    heat_requirement: HeatRequirement,
    window_start: Date,
    today: Date,
    terms: &Terminology,
) -> CareCheck {
    let analgesics = record
        .medications
        .iter()
        .filter(|m| is_analgesic(&m.code, terms))
        .map(|m| Evidence {
            name: m.code.name(),
            coding: known_coding(&m.code, terms),
            date: m.date,
            status: m.status.clone(),
            source: match m.source {
                MedicationSource::Statement => EvidenceSource::MedicationRecord,
                MedicationSource::Request | MedicationSource::Order => EvidenceSource::Prescription,
            },
            // A statement dated only by when it was reported places the use in time only while it is current.
            not_counted: judge(
                medication_done(m),
                m.date
                    .filter(|_| !m.asserted_only || m.status.as_deref() == Some("active")),
                today,
                window_start,
            ),
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
                not_counted: judge(procedure_done(p), p.date, today, window_start),
            })
            .collect()
    };
    CareCheck {
        analgesic: element(
            analgesics,
            &[DataKind::MedicationStatements, DataKind::MedicationRequests],
            record,
        ),
        self_care: element(procedures(&|p| is_self_care(p, terms)), &[DataKind::Procedures], record),
        heat: element(procedures(&|p| is_heat(p, terms)), &[DataKind::Procedures], record),
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

//! The guideline as pure functions: (order, patient record, today) → an [`Outcome`].
//!
//! Why pure: this is the part clinicians review and the part that must never fail, so it does no I/O, knows
//! neither HTTP nor CDS Hooks JSON, and every branch is reachable from a plain unit test. It cannot fail: when
//! data the verdict needs is missing it says so ([`Outcome::NeedsData`]) and the caller decides what that
//! means on the wire (412).
//!
//! The rules, from the guideline summary in `../shared/clinical-source/`:
//! 1. The indication comes from the order's reason, else its body site, else the patient's active conditions;
//!    with several candidates the most restrictive wins ([`IndicationKind`] is ordered that way).
//! 2. Chronic low back pain (or degenerative lumbar disease), osteoarthritis, patellofemoral pain, headache,
//!    and chronic myofascial or non-specific pain: recommend against.
//! 3. Neck pain: manual therapy plus exercise first.
//! 4. Acute/subacute myofascial pain, other acute back/neck pain, or no recognisable indication: conservative
//!    care (an analgesic trial, self-care education, and heat where the pain is in the low back) must be
//!    documented first; dry needling is never first line.

use time::Date;

use crate::knowledge::{CardId, Terminology, ValueSet, has_keyword};
use crate::record::{Coding, Concept, Condition, DataKind, Medication, Order, PatientRecord, Procedure};

/// Twelve weeks: from here on pain is chronic.
const CHRONIC_DAYS: i64 = 84;
/// Six weeks: from here on pain is subacute.
const SUBACUTE_DAYS: i64 = 42;

/// How long the condition has lasted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chronicity {
    Acute,
    Subacute,
    Chronic,
    /// No onset or recorded date, and a code that does not say.
    Unknown,
}

/// What a candidate indication means for dry needling, most restrictive first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum IndicationKind {
    ChronicLowBackPain,
    Osteoarthritis,
    PatellofemoralPain,
    Headache,
    ChronicPain,
    NeckPain,
    Myofascial,
    OtherPain,
}

/// Where an indication was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    OrderReason,
    OrderBodySite,
    Record,
}

/// One condition the rules considered.
#[derive(Debug, Clone, PartialEq)]
pub struct Indication {
    pub kind: IndicationKind,
    pub name: String,
    pub coding: Option<Coding>,
    pub chronicity: Chronicity,
    /// Onset, or the date it was recorded when the onset is missing.
    pub since: Option<Date>,
    pub low_back: bool,
    pub neck: bool,
    pub origin: Origin,
}

/// One fact of the record that shows a piece of conservative care.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub name: String,
    pub coding: Option<Coding>,
    pub date: Option<Date>,
    pub status: Option<String>,
    /// `MedicationRequest`, `MedicationStatement` or `Procedure`.
    pub resource_type: &'static str,
}

/// Whether one element of conservative care is documented.
#[derive(Debug, Clone, PartialEq)]
pub enum CareStatus {
    Found(Vec<Evidence>),
    NotFound,
    /// The record could not be searched: these kinds of data are unavailable.
    Unknown(Vec<DataKind>),
}

/// The elements of conservative care the guideline requires before dry needling.
#[derive(Debug, Clone, PartialEq)]
pub struct CareCheck {
    pub analgesic: CareStatus,
    pub self_care: CareStatus,
    pub heat: CareStatus,
    /// Heat therapy is required where the pain is in the low back.
    pub heat_required: bool,
}

impl CareCheck {
    fn required(&self) -> impl Iterator<Item = &CareStatus> {
        [
            Some(&self.analgesic),
            Some(&self.self_care),
            self.heat_required.then_some(&self.heat),
        ]
        .into_iter()
        .flatten()
    }

    fn any_missing(&self) -> bool {
        self.required().any(|s| matches!(s, CareStatus::NotFound))
    }

    fn unknown_kinds(&self) -> Vec<DataKind> {
        let mut kinds: Vec<DataKind> = self
            .required()
            .filter_map(|s| match s {
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

/// Something the card should say about how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// The verdict did not need these kinds of data, and they could not be checked.
    HistoryUnavailable(Vec<DataKind>),
    /// The patient's conditions could not be read, so only the order was used.
    ConditionsUnavailable,
    /// Entries of the record that could not be read.
    Skipped(usize),
    /// The deciding condition has no onset date.
    OnsetUnknown,
    /// The order's reason references that do not resolve to a condition in the record.
    ReasonUnresolved(Vec<String>),
}

/// The verdict for one order.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub card: CardId,
    /// The condition that decided; `None` when no indication was recognised.
    pub decisive: Option<Indication>,
    /// Every condition considered, most restrictive first.
    pub candidates: Vec<Indication>,
    /// Present when the verdict depended on conservative care.
    pub care: Option<CareCheck>,
    /// For the not-first-line cards: add the acute low back pain options.
    pub low_back_first_line: bool,
    pub notes: Vec<Note>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Card(Box<Assessment>),
    /// No verdict is possible without these kinds of data.
    NeedsData(Vec<DataKind>),
}

/// A dry-needling order: coded CPT 20560/20561 or SNOMED 231082000, or named so in text (local codes).
/// Acupuncture and trigger-point injections are related but are not dry needling.
pub fn is_dry_needling(order: &Order, terms: &Terminology) -> bool {
    let codings = &order.code.codings;
    if codings.iter().any(|c| terms.contains(ValueSet::DryNeedlingOrder, c)) {
        return true;
    }
    if codings.iter().any(|c| terms.contains(ValueSet::NotDryNeedlingOrder, c)) {
        return false;
    }
    let text = order.code.search_text().replace("(s)", "");
    has_keyword(&text, &terms.keywords.dry_needling_order)
}

/// What a concept says, from its codes when any is in a value set, else from its text.
#[derive(Debug, Default, Clone, Copy)]
struct Traits {
    low_back: bool,
    lumbar_degenerative: bool,
    neck: bool,
    myofascial: bool,
    myalgia: bool,
    chronic_pain: bool,
    osteoarthritis: bool,
    patellofemoral: bool,
    headache: bool,
    says_chronic: bool,
}

fn traits(concept: &Concept, terms: &Terminology) -> Option<Traits> {
    let codings = &concept.codings;
    if codings.iter().any(|c| terms.contains(ValueSet::NotBackPain, c)) {
        return None;
    }
    let text = concept.search_text();
    let kw = &terms.keywords;
    let mut t = Traits {
        says_chronic: has_keyword(&text, &kw.chronic),
        ..Traits::default()
    };
    if codings.iter().any(|c| terms.is_known(c)) {
        let any = |set| codings.iter().any(|c| terms.contains(set, c));
        t.low_back = any(ValueSet::LowBackPain);
        t.lumbar_degenerative = any(ValueSet::LumbarDegenerative);
        t.neck = any(ValueSet::NeckPain);
        t.myofascial = any(ValueSet::Myofascial);
        t.myalgia = any(ValueSet::Myalgia);
        t.chronic_pain = any(ValueSet::ChronicPain);
        t.osteoarthritis = any(ValueSet::Osteoarthritis);
        t.patellofemoral = any(ValueSet::PatellofemoralPain);
        t.headache = any(ValueSet::Headache);
        t.says_chronic |= codings.iter().any(|c| terms.says_chronic(c));
    } else {
        t.low_back = has_keyword(&text, &kw.low_back);
        t.neck = has_keyword(&text, &kw.neck);
        t.myofascial = has_keyword(&text, &kw.myofascial);
        t.osteoarthritis = has_keyword(&text, &kw.osteoarthritis);
        t.patellofemoral = has_keyword(&text, &kw.patellofemoral);
        t.headache = has_keyword(&text, &kw.headache);
        t.chronic_pain = t.says_chronic && text.contains("pain");
    }
    Some(t)
}

fn chronicity(says_chronic: bool, since: Option<Date>, today: Date) -> Chronicity {
    if says_chronic {
        return Chronicity::Chronic;
    }
    let Some(since) = since else {
        return Chronicity::Unknown;
    };
    let days = (today - since).whole_days();
    if days >= CHRONIC_DAYS {
        Chronicity::Chronic
    } else if days >= SUBACUTE_DAYS {
        Chronicity::Subacute
    } else {
        Chronicity::Acute
    }
}

fn kind(t: &Traits, chronicity: Chronicity) -> Option<IndicationKind> {
    let chronic = chronicity == Chronicity::Chronic;
    let kind = if t.lumbar_degenerative || (t.low_back && chronic) {
        IndicationKind::ChronicLowBackPain
    } else if t.osteoarthritis {
        IndicationKind::Osteoarthritis
    } else if t.patellofemoral {
        IndicationKind::PatellofemoralPain
    } else if t.headache {
        IndicationKind::Headache
    } else if t.chronic_pain || (chronic && (t.myofascial || t.myalgia)) {
        IndicationKind::ChronicPain
    } else if t.neck {
        IndicationKind::NeckPain
    } else if t.myofascial {
        IndicationKind::Myofascial
    } else if t.low_back || t.myalgia {
        IndicationKind::OtherPain
    } else {
        return None;
    };
    Some(kind)
}

fn indication(
    concept: &Concept,
    since: Option<Date>,
    origin: Origin,
    terms: &Terminology,
    today: Date,
) -> Option<Indication> {
    let t = traits(concept, terms)?;
    let chronicity = chronicity(t.says_chronic, since, today);
    Some(Indication {
        kind: kind(&t, chronicity)?,
        name: concept.name(),
        coding: concept
            .codings
            .iter()
            .find(|c| terms.is_known(c))
            .or(concept.codings.first())
            .cloned(),
        chronicity,
        since,
        low_back: t.low_back || t.lumbar_degenerative,
        neck: t.neck,
        origin,
    })
}

fn condition_since(c: &Condition) -> Option<Date> {
    let onset = match &c.onset {
        Some(crate::record::Onset::Date(span) | crate::record::Onset::NotAfter(span)) => Some(span.first),
        _ => None,
    };
    onset.or(c.recorded.map(|d| d.first))
}

fn same_code(a: &Concept, b: &Concept) -> bool {
    a.codings
        .iter()
        .any(|x| b.codings.iter().any(|y| x.code == y.code && x.system == y.system))
}

/// Resolves `Condition/123`, an absolute URL ending so, or `urn:uuid:123` against the record.
fn resolve<'a>(reference: &str, record: &'a PatientRecord) -> Option<&'a Condition> {
    let id = reference.rsplit('/').next().unwrap_or(reference);
    let id = id.strip_prefix("urn:uuid:").unwrap_or(id);
    let typed = reference.contains('/') && !reference.contains("Condition/");
    if typed {
        return None;
    }
    record.conditions.iter().find(|c| c.id.as_deref() == Some(id))
}

struct Region {
    low_back: bool,
    neck: bool,
}

/// Where the pain is, from the order's body site text; `None` when it names neither region.
fn body_site_region(sites: &[Concept], terms: &Terminology) -> Option<Region> {
    let text: String = sites.iter().map(Concept::search_text).collect();
    let region = Region {
        low_back: has_keyword(&text, &terms.keywords.low_back),
        neck: has_keyword(&text, &terms.keywords.neck),
    };
    (region.low_back || region.neck).then_some(region)
}

/// Assesses one dry-needling order against the patient's record on `today`.
pub fn assess(order: &Order, record: &PatientRecord, today: Date, terms: &Terminology) -> Outcome {
    let mut notes = Vec::new();
    let conditions_known = record.availability(DataKind::Conditions).is_known();
    let active: Vec<&Condition> = record.conditions.iter().filter(|c| c.is_active(today)).collect();
    let mut candidates: Vec<Indication> = Vec::new();

    if !order.reason_codes.is_empty() || !order.reason_references.is_empty() {
        for reason in &order.reason_codes {
            let since = active
                .iter()
                .find(|c| same_code(&c.code, reason))
                .and_then(|c| condition_since(c));
            candidates.extend(indication(reason, since, Origin::OrderReason, terms, today));
        }
        let mut unresolved = Vec::new();
        for reference in &order.reason_references {
            match resolve(reference, record) {
                Some(c) => candidates.extend(indication(
                    &c.code,
                    condition_since(c),
                    Origin::OrderReason,
                    terms,
                    today,
                )),
                None => unresolved.push(reference.clone()),
            }
        }
        if !unresolved.is_empty() {
            if order.reason_codes.is_empty() && unresolved.len() == order.reason_references.len() && !conditions_known {
                return Outcome::NeedsData(vec![DataKind::Conditions]);
            }
            notes.push(Note::ReasonUnresolved(unresolved));
        }
    } else if let Some(region) = body_site_region(&order.body_sites, terms) {
        // The body site says where the pain is: keep the patient's conditions of that region.
        candidates.extend(
            active
                .iter()
                .filter_map(|c| indication(&c.code, condition_since(c), Origin::Record, terms, today))
                .filter(|found| (region.low_back && found.low_back) || (region.neck && found.neck)),
        );
        if candidates.is_empty() {
            let site = &order.body_sites[0];
            let t = Traits {
                low_back: region.low_back,
                neck: region.neck,
                ..Traits::default()
            };
            candidates.extend(kind(&t, Chronicity::Unknown).map(|kind| Indication {
                kind,
                name: site.name(),
                coding: site.codings.first().cloned(),
                chronicity: Chronicity::Unknown,
                since: None,
                low_back: region.low_back,
                neck: region.neck,
                origin: Origin::OrderBodySite,
            }));
        }
        if !conditions_known {
            notes.push(Note::ConditionsUnavailable);
        }
    } else {
        if !conditions_known {
            return Outcome::NeedsData(vec![DataKind::Conditions]);
        }
        for c in &active {
            candidates.extend(indication(&c.code, condition_since(c), Origin::Record, terms, today));
        }
    }

    // Most restrictive first; a condition recorded many times (common in real data) is listed once, with
    // its earliest date.
    candidates.sort_by(|a, b| {
        let dated_first = a.since.is_none().cmp(&b.since.is_none());
        a.kind
            .cmp(&b.kind)
            .then(a.name.cmp(&b.name))
            .then(dated_first)
            .then(a.since.cmp(&b.since))
    });
    candidates.dedup_by(|later, first| later.kind == first.kind && later.name == first.name);
    let decisive = candidates.first().cloned();
    if decisive.as_ref().is_some_and(|d| d.chronicity == Chronicity::Unknown) {
        notes.push(Note::OnsetUnknown);
    }
    if record.skipped > 0 {
        notes.push(Note::Skipped(record.skipped));
    }

    let decided_by_indication = match decisive.as_ref().map(|d| d.kind) {
        Some(IndicationKind::ChronicLowBackPain) => Some(CardId::AgainstChronicLowBackPain),
        Some(IndicationKind::Osteoarthritis) => Some(CardId::AgainstOsteoarthritis),
        Some(IndicationKind::PatellofemoralPain) => Some(CardId::AgainstPatellofemoralPain),
        Some(IndicationKind::Headache) => Some(CardId::AgainstHeadache),
        Some(IndicationKind::ChronicPain) => Some(CardId::AgainstChronicPain),
        Some(IndicationKind::NeckPain) => Some(CardId::NeckPainPreferManualTherapy),
        Some(IndicationKind::Myofascial | IndicationKind::OtherPain) | None => None,
    };
    if let Some(card) = decided_by_indication {
        let unknown: Vec<DataKind> = record.unknown_kinds();
        if !unknown.is_empty() {
            notes.push(Note::HistoryUnavailable(unknown));
        }
        return Outcome::Card(Box::new(Assessment {
            card,
            decisive,
            candidates,
            care: None,
            low_back_first_line: false,
            notes,
        }));
    }

    let low_back = decisive.as_ref().is_some_and(|d| d.low_back);
    let care = check_care(record, low_back, terms);
    let myofascial = decisive.as_ref().is_some_and(|d| d.kind == IndicationKind::Myofascial);
    let card = if care.any_missing() {
        if myofascial {
            CardId::MyofascialCareMissing
        } else {
            CardId::NotFirstLineCareMissing
        }
    } else {
        let unknown = care.unknown_kinds();
        if !unknown.is_empty() {
            return Outcome::NeedsData(unknown);
        }
        if myofascial {
            CardId::MyofascialMayConsider
        } else {
            CardId::NotFirstLineCareDocumented
        }
    };
    let unknown = care.unknown_kinds();
    if !unknown.is_empty() {
        notes.push(Note::HistoryUnavailable(unknown));
    }
    let acute_low_back = low_back && decisive.as_ref().is_some_and(|d| d.chronicity != Chronicity::Chronic);
    Outcome::Card(Box::new(Assessment {
        card,
        decisive,
        candidates,
        care: Some(care),
        low_back_first_line: acute_low_back,
        notes,
    }))
}

fn medication_counts(m: &Medication, terms: &Terminology) -> bool {
    if matches!(
        m.status.as_deref(),
        Some("not-taken" | "entered-in-error" | "cancelled")
    ) {
        return false;
    }
    let codings = &m.code.codings;
    if codings.iter().any(|c| terms.contains(ValueSet::NotAnAnalgesicTrial, c)) {
        return false;
    }
    if codings.iter().any(|c| terms.contains(ValueSet::Analgesic, c)) {
        return true;
    }
    let text = m.code.search_text();
    has_keyword(&text, &terms.keywords.analgesic) && !has_keyword(&text, &terms.keywords.not_an_analgesic_trial)
}

fn procedure_matches(p: &Procedure, set: ValueSet, keywords: &[String], terms: &Terminology) -> bool {
    if matches!(p.status.as_deref(), Some("not-done" | "entered-in-error")) {
        return false;
    }
    p.code.codings.iter().any(|c| terms.contains(set, c)) || has_keyword(&p.code.search_text(), keywords)
}

fn status_of(evidence: Vec<Evidence>, kinds: &[DataKind], record: &PatientRecord) -> CareStatus {
    if !evidence.is_empty() {
        return CareStatus::Found(evidence);
    }
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
}

fn evidence(
    code: &Concept,
    date: Option<Date>,
    status: &Option<String>,
    resource_type: &'static str,
    terms: &Terminology,
) -> Evidence {
    Evidence {
        name: code.name(),
        coding: code
            .codings
            .iter()
            .find(|c| terms.is_known(c))
            .or(code.codings.first())
            .cloned(),
        date,
        status: status.clone(),
        resource_type,
    }
}

/// Looks for each element of conservative care in the record.
pub fn check_care(record: &PatientRecord, heat_required: bool, terms: &Terminology) -> CareCheck {
    use crate::record::MedicationSource;
    let kw = &terms.keywords;
    let analgesics = record
        .medications
        .iter()
        .filter(|m| medication_counts(m, terms))
        .map(|m| {
            let resource_type = match m.source {
                MedicationSource::Statement => "MedicationStatement",
                MedicationSource::Request => "MedicationRequest",
                MedicationSource::Order => "MedicationOrder",
            };
            evidence(&m.code, m.date.map(|d| d.first), &m.status, resource_type, terms)
        })
        .collect();
    let procedures = |set, keywords: &[String]| -> Vec<Evidence> {
        record
            .procedures
            .iter()
            .filter(|p| procedure_matches(p, set, keywords, terms))
            .map(|p| evidence(&p.code, p.date.map(|d| d.first), &p.status, "Procedure", terms))
            .collect()
    };
    CareCheck {
        analgesic: status_of(
            analgesics,
            &[DataKind::MedicationStatements, DataKind::MedicationRequests],
            record,
        ),
        self_care: status_of(
            procedures(ValueSet::SelfCare, &kw.self_care),
            &[DataKind::Procedures],
            record,
        ),
        heat: status_of(
            procedures(ValueSet::HeatTherapy, &kw.heat_therapy),
            &[DataKind::Procedures],
            record,
        ),
        heat_required,
    }
}

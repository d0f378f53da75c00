//! The guideline as pure functions: (order, patient record, today) → a [`Verdict`].
//!
//! Why pure: this is the part clinicians review and the part that must never fail, so it does no I/O, knows
//! neither HTTP nor CDS Hooks JSON, and every branch is reachable from a plain unit test. It cannot fail: when
//! data the verdict needs is missing it says so ([`Verdict::NeedsData`]) and the caller decides what that
//! means on the wire (412).
//!
//! The steps, from the guideline summary in `../shared/clinical-source/`:
//! 1. **Facts.** The order's reasons (codes and resolved `reasonReference`s), its body site and target muscle,
//!    and the patient's active conditions are classified once by [`concept`] into kinds of pain and regions.
//! 2. **Relevance.** When the order names a kind or a region, the record's conditions of the same kind or
//!    region join it; otherwise every active condition counts and the most restrictive wins.
//! 3. **Episodes.** Facts of the same region form an episode (an unplaced fact joins those sharing a kind); its
//!    duration is the earliest evidence of it anywhere in the record ([`dating`]). A code or text that says
//!    chronic wins; unknown stays unknown.
//! 4. **Findings.** The decisive indication (the most restrictive candidate), how long the episodes the order may
//!    treat have lasted, and conservative care ([`care`]) in their window: care stated at another site or given
//!    by a route that does not treat muscle pain does not count.
//! 5. **Verdict.** One `match` (`decide`) whose arms are the rows of docs/decision-table.md, most restrictive
//!    first: chronic low back pain or degenerative lumbar disease, osteoarthritis, patellofemoral pain,
//!    headache and chronic pain: not recommended; neck pain: manual therapy plus exercise first; a problem the
//!    guideline does not address: not an indication; otherwise duration and care decide, and the only permissive
//!    cards need a [`Permit`], which exists only when every reason's duration is *established* under 12 weeks,
//!    every required element of care is counted, and the record is whole.
//!
//! The words the rules speak (the cards, value sets, phrases and policy) are theirs, in [`vocabulary`]; what
//! the words contain is content, read from `cards/` and checked by [`crate::content`].

pub mod care;
pub mod concept;
pub mod dating;
pub mod vocabulary;

use time::Date;

pub use care::{CareCheck, CareStatus, Element, Evidence, EvidenceSource, HeatRequirement, NotCounted};
pub use concept::{Kind, Kinds, Meaning, Regions};
pub use dating::{ChronicBy, DateEvidence, DateSource, Dating, EpisodeLength, SaidBy};

use crate::assess::vocabulary::{CardId, Policy, Terminology, ValueSet};
use crate::record::{Coding, Concept, Condition, DataKind, Order, PatientRecord};

/// How long the condition has lasted, as the card says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chronicity {
    Acute,
    Subacute,
    Chronic,
    /// Not established by the record.
    Unknown,
}

impl From<EpisodeLength> for Chronicity {
    fn from(length: EpisodeLength) -> Chronicity {
        match length {
            EpisodeLength::Chronic(_) => Chronicity::Chronic,
            EpisodeLength::Established { days, .. } if days >= dating::SUBACUTE_DAYS => Chronicity::Subacute,
            EpisodeLength::Established { .. } => Chronicity::Acute,
            EpisodeLength::Unknown => Chronicity::Unknown,
        }
    }
}

/// What a candidate indication means for dry needling, most restrictive first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndicationKind {
    ChronicLowBackPain,
    Osteoarthritis,
    PatellofemoralPain,
    Headache,
    ChronicPain,
    NeckPain,
    /// A non-myofascial problem of a region the guideline does not address (lateral epicondylitis, plantar
    /// fasciitis, shoulder impingement), under 12 weeks or of unknown duration: never an indication.
    OutsideGuideline,
    Myofascial,
    OtherPain,
}

/// Where an indication was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    OrderReason,
    /// The order's body site, or a target muscle named on it.
    OrderBodySite,
    Record,
}

/// One condition the rules considered.
#[derive(Debug, Clone, PartialEq)]
pub struct Indication {
    pub kind: IndicationKind,
    pub name: String,
    pub coding: Option<Coding>,
    pub origin: Origin,
    pub regions: Regions,
    /// What this fact itself says about its dates.
    pub dating: Dating,
    /// The duration of the episode it belongs to.
    pub length: EpisodeLength,
    /// When the episode is chronic by another entry of the record (an "acute" flare of chronic low back pain),
    /// that entry's name.
    pub chronic_by_other: Option<String>,
}

impl Indication {
    pub fn chronicity(&self) -> Chronicity {
        self.length.into()
    }
}

/// Something the card should say about how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// The verdict did not need these kinds of data, and they could not be checked.
    HistoryUnavailable(Vec<DataKind>),
    /// The conditions could not be read; the order alone was used.
    ConditionsUnavailable,
    /// Entries of the record were unreadable and skipped.
    Skipped(usize),
    /// Reason references that match no condition in the record.
    ReasonUnresolved(Vec<String>),
    /// The order names no reason or region that the rules recognise: the verdict comes from the problem list.
    FromProblemList,
}

/// How far a card goes toward allowing dry needling; the property tests check that more evidence of
/// chronicity or less evidence of care never moves an answer up this scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stance {
    NotRecommended,
    PreferAlternative,
    NotYet,
    MayConsider,
}

impl Stance {
    /// The stance's name in the card log and analytics.
    pub fn as_str(self) -> &'static str {
        match self {
            Stance::NotRecommended => "not_recommended",
            Stance::PreferAlternative => "prefer_alternative",
            Stance::NotYet => "not_yet",
            Stance::MayConsider => "may_consider",
        }
    }
}

/// The stance of each card.
pub fn stance(card: CardId) -> Stance {
    match card {
        CardId::AgainstChronicLowBackPain
        | CardId::AgainstOsteoarthritis
        | CardId::AgainstPatellofemoralPain
        | CardId::AgainstHeadache
        | CardId::AgainstChronicPain => Stance::NotRecommended,
        CardId::NeckPainPreferManualTherapy => Stance::PreferAlternative,
        CardId::MyofascialCareMissing
        | CardId::NotFirstLineCareMissing
        | CardId::ConfirmDuration
        | CardId::IndicationNotDocumented
        | CardId::ConditionOutsideGuideline
        // Stands in for a 412, which permits nothing either.
        | CardId::DataUnavailable => Stance::NotYet,
        CardId::MyofascialMayConsider | CardId::NotFirstLineCareDocumented => Stance::MayConsider,
    }
}

/// The result of assessing one order.
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    pub card: CardId,
    /// The most restrictive candidate, which decided the card.
    pub decisive: Option<Indication>,
    /// Every candidate considered, most restrictive first.
    pub candidates: Vec<Indication>,
    /// The order's own reasons that name no condition the guideline addresses (name, code), so the card can
    /// still list them.
    pub unrecognised_reasons: Vec<(String, Option<Coding>)>,
    /// The conservative-care check, when the verdict depends on it.
    pub care: Option<CareCheck>,
    /// Acute low back pain: name the further first-line options (massage, acupuncture, spinal manipulation).
    pub low_back_first_line: bool,
    /// An NSAID allergy or intolerance is on file: the card names acetaminophen as the analgesic to try.
    pub nsaid_allergy: bool,
    pub notes: Vec<Note>,
    /// Codes of procedures done in the last six weeks, so that a card does not suggest them again.
    pub recent_procedures: Vec<Coding>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Card(Box<Assessment>),
    /// The verdict needs these kinds of data, which could not be had.
    NeedsData(Vec<DataKind>),
}

mod permit {
    //! The only way to a permissive card. A [`Permit`] cannot be built outside this module, and only
    //! [`Permit::grant`] builds one: when the duration of every myofascial or other-pain episode the order may
    //! treat is established under 12 weeks, every required element of conservative care is counted, no entry of
    //! the record was unreadable, and the order's reason is known.
    use super::{CareCheck, EpisodeLength, dating::CHRONIC_DAYS};

    pub struct Permit(());

    impl Permit {
        /// `record_whole`: no entry of the record was unreadable and the order's reason is known (a dropped
        /// or unknown Condition could be the chronic one).
        pub fn grant(length: EpisodeLength, care: &CareCheck, record_whole: bool) -> Option<Permit> {
            match length {
                EpisodeLength::Established { days, .. } if days < CHRONIC_DAYS && care.complete() && record_whole => {
                    Some(Permit(()))
                }
                _ => None,
            }
        }
    }
}

pub use permit::Permit;

/// The permissive card for an indication, given a permit.
fn permitted(kind: IndicationKind, _permit: Permit) -> CardId {
    if kind == IndicationKind::Myofascial {
        CardId::MyofascialMayConsider
    } else {
        CardId::NotFirstLineCareDocumented
    }
}

/// True when the order is dry needling: CPT 20560/20561 or SNOMED 231082000, else a local order whose name
/// says so. Acupuncture and trigger-point injections are related but are not dry needling.
pub fn is_dry_needling(order: &Order, terms: &Terminology) -> bool {
    let codings = &order.code.codings;
    if codings.iter().any(|c| terms.contains(ValueSet::DryNeedlingOrder, c)) {
        return true;
    }
    if codings.iter().any(|c| terms.contains(ValueSet::NotDryNeedlingOrder, c)) {
        return false;
    }
    let texts = order
        .code
        .text
        .iter()
        .chain(codings.iter().filter_map(|c| c.display.as_ref()))
        .map(|t| t.to_lowercase());
    let phrases = &terms.keywords.order.dry_needling;
    texts.into_iter().any(|t| phrases.matches(&t))
}

/// A classified fact before its episode is known.
struct Fact {
    meaning: Meaning,
    dating: Dating,
    origin: Origin,
    name: String,
    coding: Option<Coding>,
}

fn best_coding(concept: &Concept, terms: &Terminology) -> Option<Coding> {
    concept
        .codings
        .iter()
        .find(|c| terms.is_known(c))
        .or(concept.codings.first())
        .cloned()
}

/// What says a concept is chronic: a code whose own meaning is chronic, else its name.
fn chronic_by(concept: &Concept, terms: &Terminology) -> SaidBy {
    if concept.codings.iter().any(|c| terms.says_chronic(c)) {
        SaidBy::Code
    } else {
        SaidBy::Name
    }
}

/// The dating of a fact that has no dates of its own: only whether its concept says chronic, and what says so.
fn said(meaning: &Meaning, concept: &Concept, terms: &Terminology) -> Dating {
    let mut dating = Dating::default();
    if meaning.says_chronic {
        dating.say_chronic(chronic_by(concept, terms));
    }
    dating
}

fn condition_fact(c: &Condition, origin: Origin, record: &PatientRecord, today: Date, terms: &Terminology) -> Fact {
    let mut meaning = concept::classify(&c.code, terms);
    for site in &c.body_sites {
        meaning.regions = meaning.regions.union(concept::regions(site, terms));
    }
    let mut dating = dating::condition_dating(c, record.birth_date, today, terms);
    if meaning.says_chronic {
        dating.say_chronic(chronic_by(&c.code, terms));
    }
    Fact {
        meaning,
        dating,
        origin,
        name: c.code.name(),
        coding: best_coding(&c.code, terms),
    }
}

/// Resolves a reason reference: `#id` to a Condition contained in the order; `urn:uuid:…` to a Condition of
/// the draft-orders Bundle or the record; `Condition/123` or an absolute URL ending so, against the record.
fn resolve<'a>(reference: &str, order: &'a Order, record: &'a PatientRecord) -> Option<&'a Condition> {
    let by_id = |conditions: &'a [Condition], id: &str| conditions.iter().find(|c| c.id.as_deref() == Some(id));
    if let Some(local) = reference.strip_prefix('#') {
        return by_id(&order.contained_conditions, local);
    }
    let by_url = |conditions: &'a [Condition]| conditions.iter().find(|c| c.full_url.as_deref() == Some(reference));
    if let Some(c) = by_url(&order.contained_conditions).or_else(|| by_url(&record.conditions)) {
        return Some(c);
    }
    let id = reference.strip_prefix("urn:uuid:").unwrap_or(reference);
    let typed = id.contains('/') && !id.contains("Condition/");
    if typed {
        return None;
    }
    let id = id.rsplit('/').next().unwrap_or(id);
    by_id(&order.contained_conditions, id).or_else(|| by_id(&record.conditions, id))
}

/// What the indication is, given the episode's chronicity; `None` when it is not one the guideline names.
fn indication_kind(kinds: Kinds, regions: Regions, chronic: bool) -> Option<IndicationKind> {
    let pain_of_back = kinds.has(Kind::LowBackPain)
        || kinds.has(Kind::BackPain)
        || kinds.has(Kind::Myofascial)
        || kinds.has(Kind::Myalgia)
        || kinds.has(Kind::ChronicPain);
    let kind = if kinds.has(Kind::LumbarDegenerative)
        || (kinds.has(Kind::LowBackPain) && chronic)
        || (regions.low_back() && pain_of_back && chronic)
    {
        IndicationKind::ChronicLowBackPain
    } else if kinds.has(Kind::Osteoarthritis) {
        IndicationKind::Osteoarthritis
    } else if kinds.has(Kind::Patellofemoral) {
        IndicationKind::PatellofemoralPain
    } else if kinds.has(Kind::Headache) {
        IndicationKind::Headache
    } else if kinds.has(Kind::ChronicPain)
        || (chronic
            && (kinds.has(Kind::Myofascial)
                || kinds.has(Kind::Myalgia)
                || kinds.has(Kind::BackPain)
                || kinds.has(Kind::OtherMusculoskeletal)))
    {
        // "Not for chronic conditions" (S1-11): a chronic tendinopathy is as much out as a chronic myalgia.
        IndicationKind::ChronicPain
    } else if kinds.has(Kind::NeckPain) || (regions.neck() && kinds.any_pain()) {
        IndicationKind::NeckPain
    } else if kinds.has(Kind::OtherMusculoskeletal) {
        IndicationKind::OutsideGuideline
    } else if kinds.has(Kind::Myofascial) {
        IndicationKind::Myofascial
    } else if kinds.has(Kind::LowBackPain) || kinds.has(Kind::BackPain) || kinds.has(Kind::Myalgia) {
        IndicationKind::OtherPain
    } else {
        return None;
    };
    Some(kind)
}

/// Two facts can be the same episode when their regions agree; when one names no region, only if they share a
/// kind (an unplaced myofascial pain is dated by another myofascial entry, not by a thigh myalgia).
fn same_episode(a: &Fact, b: &Fact) -> bool {
    let (ra, rb) = (a.meaning.regions, b.meaning.regions);
    if ra.is_empty() || rb.is_empty() {
        a.meaning.kinds.intersects(b.meaning.kinds)
    } else {
        ra.overlaps(rb)
    }
}

/// Assesses one dry-needling order against the patient's record on `today`.
#[allow(clippy::too_many_lines)] // the decision's steps in the order the guideline applies them (module docs), each
// a few lines; split, the order in which facts are gathered and the verdict taken would be scattered
pub fn assess(order: &Order, record: &PatientRecord, today: Date, terms: &Terminology, policy: &Policy) -> Verdict {
    let mut notes = Vec::new();
    let conditions_known = record.availability(DataKind::Conditions).is_known();

    // 1. What the order says: its region (body site, target muscle in its name) and its reasons.
    let mut order_regions = concept::regions(&order.code, terms);
    for site in &order.body_sites {
        order_regions = order_regions.union(concept::regions(site, terms));
    }
    let mut facts: Vec<Fact> = Vec::new();
    for reason in &order.reason_codes {
        let meaning = concept::classify(reason, terms);
        facts.push(Fact {
            dating: said(&meaning, reason, terms),
            meaning,
            origin: Origin::OrderReason,
            name: reason.name(),
            coding: best_coding(reason, terms),
        });
    }
    let mut resolved_ids = Vec::new();
    let mut unresolved = Vec::new();
    // A reference that matches nothing and says nothing: the order's reason is unknown.
    let mut reason_unknown = false;
    for reference in &order.reason_references {
        match reference.reference.as_deref().and_then(|r| resolve(r, order, record)) {
            Some(c) if !matches!(c.verification_status.as_deref(), Some("refuted" | "entered-in-error")) => {
                resolved_ids.extend(c.id.clone());
                let mut fact = condition_fact(c, Origin::OrderReason, record, today, terms);
                // A reason that points to a problem the record says has ended names the problem, but its dates
                // belong to the earlier episode, not to the pain being treated now.
                if !c.is_active(today) {
                    fact.dating = said(&fact.meaning, &c.code, terms);
                }
                facts.push(fact);
            }
            Some(_) => {}
            None => {
                // Not in the record: its display, if any, still says what the order is for (typed text).
                if let Some(display) = &reference.display {
                    let concept = Concept {
                        codings: vec![],
                        text: Some(display.clone()),
                    };
                    let meaning = concept::classify(&concept, terms);
                    facts.push(Fact {
                        dating: said(&meaning, &concept, terms),
                        meaning,
                        origin: Origin::OrderReason,
                        name: display.clone(),
                        coding: None,
                    });
                }
                if reference.display.is_none() {
                    reason_unknown = true;
                }
                unresolved.push(
                    reference
                        .reference
                        .clone()
                        .or(reference.display.clone())
                        .unwrap_or_default(),
                );
            }
        }
    }
    if !unresolved.is_empty() {
        let nothing_said = order.reason_references.iter().all(|r| r.display.is_none());
        if order.reason_codes.is_empty()
            && unresolved.len() == order.reason_references.len()
            && nothing_said
            && !conditions_known
        {
            return Verdict::NeedsData(vec![DataKind::Conditions]);
        }
        notes.push(Note::ReasonUnresolved(unresolved.clone()));
    }
    for fact in &mut facts {
        if fact.meaning.regions.is_empty() {
            fact.meaning.regions = order_regions;
        }
    }
    let reason_kinds = facts.iter().fold(Kinds::default(), |k, f| k.union(f.meaning.kinds));
    let target_regions = facts.iter().fold(order_regions, |r, f| r.union(f.meaning.regions));
    // A body site or target muscle of the low back or neck, without a recognised reason, stands for a pain of
    // that region.
    if reason_kinds.is_empty() && (order_regions.low_back() || order_regions.neck()) {
        let site = order
            .body_sites
            .iter()
            .find(|s| !concept::regions(s, terms).is_empty())
            .unwrap_or(&order.code);
        let mut kinds = Kinds::default();
        if order_regions.low_back() {
            kinds.add(Kind::LowBackPain);
        }
        if order_regions.neck() {
            kinds.add(Kind::NeckPain);
        }
        facts.push(Fact {
            meaning: Meaning {
                kinds,
                regions: order_regions,
                ..Meaning::default()
            },
            dating: Dating::default(),
            origin: Origin::OrderBodySite,
            name: site.name(),
            coding: site.codings.first().cloned(),
        });
    }
    let has_target = !reason_kinds.is_empty() || !target_regions.is_empty();
    if !conditions_known {
        if !has_target {
            return Verdict::NeedsData(vec![DataKind::Conditions]);
        }
        notes.push(Note::ConditionsUnavailable);
    }

    // 2. The record's active conditions that bear on this order.
    for c in record.conditions.iter().filter(|c| c.is_active(today)) {
        if c.id.as_ref().is_some_and(|id| resolved_ids.contains(id)) {
            continue;
        }
        let fact = condition_fact(c, Origin::Record, record, today, terms);
        let m = &fact.meaning;
        // Same region; or, where one side names no region, the same kind of problem (a region-less chronic pain
        // covers every region; a pain order with no region takes any pain).
        let placeable = m.regions.is_empty() || target_regions.is_empty();
        let relevant = !has_target
            || m.regions.overlaps(target_regions)
            || (placeable
                && (m.kinds.shares_group(reason_kinds)
                    || (m.kinds.has(Kind::ChronicPain) && m.regions.is_empty())
                    || (target_regions.is_empty() && reason_kinds.any_pain() && m.kinds.any_pain())));
        if relevant && !m.kinds.is_empty() {
            facts.push(fact);
        }
    }
    // An order whose reason could not be resolved names one: the card says that instead (first).
    if !has_target && unresolved.is_empty() && facts.iter().any(|f| !f.meaning.kinds.is_empty()) {
        notes.push(Note::FromProblemList);
    }
    let unrecognised_reasons: Vec<(String, Option<Coding>)> = facts
        .iter()
        .filter(|f| f.origin == Origin::OrderReason && f.meaning.kinds.is_empty())
        .map(|f| (f.name.clone(), f.coding.clone()))
        .collect();

    // 3. Episodes, and each candidate's indication.
    let mut candidates: Vec<(Indication, Regions)> = Vec::new();
    for fact in facts.iter().filter(|f| !f.meaning.kinds.is_empty()) {
        let episode: Vec<&Fact> = facts
            .iter()
            .filter(|other| other.meaning.kinds.any_pain() && same_episode(fact, other))
            .collect();
        let length = if fact.meaning.kinds.any_pain() {
            dating::episode_duration(episode.iter().map(|f| f.dating), today)
        } else {
            dating::episode_duration([fact.dating], today)
        };
        // A fact that is chronic by its own evidence is shown with it; otherwise the card names the entry that
        // makes its episode chronic.
        let own = dating::episode_duration([fact.dating], today);
        let (length, chronic_by_other) = match (length, own) {
            (EpisodeLength::Chronic(_), own @ EpisodeLength::Chronic(_)) => (own, None),
            (EpisodeLength::Chronic(by), _) => {
                let other = episode
                    .iter()
                    .find(|f| match by {
                        ChronicBy::Said => f.dating.says_chronic,
                        ChronicBy::Date(e) => f.dating.existed_by == Some(e),
                    })
                    .map(|f| f.name.clone());
                (length, other)
            }
            _ => (length, None),
        };
        let episode_regions = episode
            .iter()
            .fold(fact.meaning.regions, |r, f| r.union(f.meaning.regions));
        let chronic = matches!(length, EpisodeLength::Chronic(_));
        let Some(kind) = indication_kind(fact.meaning.kinds, fact.meaning.regions, chronic) else {
            continue;
        };
        candidates.push((
            Indication {
                kind,
                name: fact.name.clone(),
                coding: fact.coding.clone(),
                origin: fact.origin,
                regions: fact.meaning.regions,
                dating: fact.dating,
                length,
                chronic_by_other,
            },
            episode_regions,
        ));
    }
    // Most restrictive first; the same condition recorded many times (common in real data) is listed once,
    // with its earliest evidence.
    // Within a kind, the entry that itself shows the episode's duration comes first (it names the card), then the
    // earliest.
    candidates.sort_by(|(a, _), (b, _)| {
        a.kind
            .cmp(&b.kind)
            .then(a.chronic_by_other.is_some().cmp(&b.chronic_by_other.is_some()))
            .then(existed(a).is_none().cmp(&existed(b).is_none()))
            .then(existed(a).cmp(&existed(b)))
            .then(a.name.cmp(&b.name))
    });
    let mut seen = std::collections::HashSet::new();
    candidates.retain(|(c, _)| seen.insert((c.kind, c.name.clone())));
    let decisive = candidates.first().cloned();
    // Heat and the permit look at every candidate, not only the decisive one: an order with two reasons is as
    // unproven as its least proven one, and heat is owed if any of its pains is in the low back.
    let all_regions = candidates
        .iter()
        .fold(order_regions, |r, (c, episode)| r.union(c.regions).union(*episode));
    let decisive = decisive.map(|(d, _)| d);
    let candidates: Vec<Indication> = candidates.into_iter().map(|(c, _)| c).collect();
    if record.skipped > 0 {
        notes.push(Note::Skipped(record.skipped));
    }

    // 4. What the verdict turns on: the decisive indication, the duration of every episode the order may treat
    //    (the latest onset of them: care must belong to each), and conservative care in that window, looked for
    //    only when the verdict can turn on it (rows 8–13: not on the hot path of a "not recommended" answer).
    let kind = decisive.as_ref().map(|d| d.kind);
    let turns_on_care = matches!(
        kind,
        None | Some(IndicationKind::Myofascial | IndicationKind::OtherPain)
    );
    let length = treated_episode_length(&candidates);
    let care = turns_on_care.then(|| {
        let heat = if all_regions.low_back() {
            HeatRequirement::LowBack
        } else if !all_regions.is_empty() {
            HeatRequirement::NotRequired
        } else {
            HeatRequirement::RegionUnknown
        };
        let onset = match length {
            EpisodeLength::Established { since, .. } => Some(since),
            _ => None,
        };
        let window = care::window_start(onset, today, policy);
        care::check_care(record, heat, all_regions, window, today, terms)
    });
    let findings = Findings {
        kind,
        conditions_known,
        length,
        care: care.as_ref(),
        record_whole: record.skipped == 0 && !reason_unknown,
    };

    // 5. The verdict.
    let card = match decide(&findings) {
        Decision::Card(card) => card,
        Decision::NeedsData(kinds) => return Verdict::NeedsData(kinds),
    };
    // Cards of rows 1–7 stand on the indication alone; the others on duration and care.
    let unknown = match &care {
        Some(care) => care.unknown_kinds(),
        None => record.unknown_kinds(),
    };
    if !unknown.is_empty() {
        notes.push(Note::HistoryUnavailable(unknown));
    }
    Verdict::Card(Box::new(Assessment {
        card,
        decisive,
        candidates,
        unrecognised_reasons,
        low_back_first_line: turns_on_care && all_regions.low_back() && length != EpisodeLength::Unknown,
        care,
        nsaid_allergy: nsaid_allergy(record, terms),
        notes,
        recent_procedures: recent_procedures(record, today),
    }))
}

/// The duration of the episodes an order for myofascial or other pain may treat: unknown if any is, else the
/// one with the latest onset (care must belong to every one of them).
fn treated_episode_length(candidates: &[Indication]) -> EpisodeLength {
    let conservative: Vec<&Indication> = candidates
        .iter()
        .filter(|c| matches!(c.kind, IndicationKind::Myofascial | IndicationKind::OtherPain))
        .collect();
    if conservative.iter().any(|c| c.length == EpisodeLength::Unknown) {
        return EpisodeLength::Unknown;
    }
    conservative
        .iter()
        .map(|c| c.length)
        .max_by_key(|l| match l {
            EpisodeLength::Established { since, .. } => Some(*since),
            _ => None,
        })
        .unwrap_or(EpisodeLength::Unknown)
}

/// What the verdict turns on, gathered by the steps before it.
struct Findings<'a> {
    /// The most restrictive indication (`None`: none the guideline names).
    kind: Option<IndicationKind>,
    /// The conditions could be read (or the client said there are none).
    conditions_known: bool,
    /// How long the episodes the order may treat have lasted.
    length: EpisodeLength,
    /// Conservative care, looked for when the indication leaves the verdict to it (rows 8–13).
    care: Option<&'a CareCheck>,
    /// No entry of the record was unreadable and no reason reference is unknown.
    record_whole: bool,
}

/// The decision table's answer: a card template, or the data it needs.
enum Decision {
    Card(CardId),
    NeedsData(Vec<DataKind>),
}

/// The decision table (docs/decision-table.md): the first arm that matches wins, most restrictive first; each
/// arm carries its row number. A missing fact never reaches rows 10 and 12, the only permissive ones: they need
/// a [`Permit`].
fn decide(f: &Findings) -> Decision {
    use Decision::{Card, NeedsData};
    use IndicationKind::*;
    let established = f.length != EpisodeLength::Unknown;
    let care_missing = f.care.is_some_and(CareCheck::any_missing);
    let unknown_care = f.care.map(CareCheck::unknown_kinds).unwrap_or_default();
    match f.kind {
        // Rows 1–5 cannot be outranked by a condition the record might hold: they stand without the conditions.
        Some(ChronicLowBackPain) => Card(CardId::AgainstChronicLowBackPain), // row 1
        Some(Osteoarthritis) => Card(CardId::AgainstOsteoarthritis),         // row 2
        Some(PatellofemoralPain) => Card(CardId::AgainstPatellofemoralPain), // row 3
        Some(Headache) => Card(CardId::AgainstHeadache),                     // row 4
        Some(ChronicPain) => Card(CardId::AgainstChronicPain),               // row 5
        // Any other verdict could be outranked by a condition the record holds (cervical osteoarthritis
        // outranks neck pain), and duration and care cannot be judged without the record.
        _ if !f.conditions_known => NeedsData(vec![DataKind::Conditions]),
        Some(NeckPain) => Card(CardId::NeckPainPreferManualTherapy), // row 6
        Some(OutsideGuideline) => Card(CardId::ConditionOutsideGuideline), // row 7
        Some(Myofascial | OtherPain) if !established => Card(CardId::ConfirmDuration), // row 8
        Some(Myofascial) if care_missing => Card(CardId::MyofascialCareMissing), // row 9
        Some(OtherPain) | None if care_missing => Card(CardId::NotFirstLineCareMissing), // row 11
        _ if !unknown_care.is_empty() => NeedsData(unknown_care),
        // Care is always looked for here; were it not, there would be no permit.
        Some(kind @ (Myofascial | OtherPain)) => {
            match f.care.and_then(|c| Permit::grant(f.length, c, f.record_whole)) {
                Some(permit) => Card(permitted(kind, permit)), // rows 10 and 12
                None => Card(CardId::ConfirmDuration),         // row 8: not proven after all
            }
        }
        None => Card(CardId::IndicationNotDocumented), // row 13
    }
}

/// True when a current allergy or intolerance names an NSAID (by class or drug), in its text or displays.
fn nsaid_allergy(record: &PatientRecord, terms: &Terminology) -> bool {
    let nsaid = &terms.keywords.medication.nsaid;
    record.allergies.iter().any(|a| {
        a.text
            .iter()
            .chain(a.codings.iter().filter_map(|c| c.display.as_ref()))
            .any(|t| nsaid.matches(&t.to_lowercase()))
    })
}

fn recent_procedures(record: &PatientRecord, today: Date) -> Vec<Coding> {
    let since = today - time::Duration::days(dating::SUBACUTE_DAYS);
    record
        .procedures
        .iter()
        .filter(|p| !p.not_done && matches!(p.status.as_deref(), Some("completed" | "in-progress")))
        .filter(|p| p.date.is_some_and(|d| d.first >= since && d.first <= today))
        .flat_map(|p| p.code.codings.iter().cloned())
        .collect()
}

fn existed(i: &Indication) -> Option<Date> {
    i.dating.existed_by.map(|e| e.date).or(i.dating.onset_from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::Knowledge;
    use crate::record::{Availability, DateSpan, Onset};
    use time::macros::date;

    const TODAY: Date = date!(2026 - 11 - 23);
    const SCT: &str = "http://snomed.info/sct";

    fn coded(code: &str, display: &str) -> Concept {
        Concept {
            codings: vec![Coding {
                system: SCT.into(),
                code: code.into(),
                display: Some(display.into()),
            }],
            text: None,
        }
    }

    fn condition(code: Concept, onset: &str) -> Condition {
        Condition {
            id: None,
            code,
            clinical_status: Some("active".into()),
            verification_status: None,
            onset: crate::record::parse_fhir_span(onset).map(Onset::Date),
            recorded: None::<DateSpan>,
            abatement: None,
            body_sites: vec![],
            notes: vec![],
            full_url: None,
        }
    }

    fn order(reason: Concept) -> Order {
        Order {
            resource_type: "ServiceRequest".into(),
            id: Some("dn".into()),
            code: coded("231082000", "Dry needle acupuncture (procedure)"),
            reason_codes: vec![reason],
            reason_references: vec![],
            body_sites: vec![],
            contained_conditions: vec![],
        }
    }

    fn card(order: &Order, conditions: Vec<Condition>) -> CardId {
        let k = Knowledge::embedded().unwrap();
        let mut record = PatientRecord {
            conditions,
            ..PatientRecord::default()
        };
        for kind in DataKind::ALL {
            record.set_availability(kind, Availability::Present);
        }
        match assess(order, &record, TODAY, &k.terminology, &k.policy) {
            Verdict::Card(a) => a.card,
            Verdict::NeedsData(kinds) => panic!("needs {kinds:?}"),
        }
    }

    fn complete_care(record: &mut PatientRecord) {
        use crate::record::{Medication, MedicationSource, Procedure};
        let day = DateSpan::day(date!(2026 - 11 - 15));
        record.medications.push(Medication {
            id: None,
            source: MedicationSource::Request,
            code: Concept {
                codings: vec![],
                text: Some("ibuprofen 600 mg".into()),
            },
            medication_reference: None,
            status: Some("completed".into()),
            intent: Some("order".into()),
            taken: None,
            not_taken: false,
            date: Some(day),
            asserted_only: false,
            until: None,
            routes: vec![],
            sites: vec![],
        });
        for text in ["Pain management education", "Heating pad"] {
            record.procedures.push(Procedure {
                id: None,
                code: Concept {
                    codings: vec![],
                    text: Some(text.into()),
                },
                status: Some("completed".into()),
                not_done: false,
                date: Some(day),
                until: None,
                body_sites: vec![],
            });
        }
    }

    fn card_with_care(order: &Order, conditions: Vec<Condition>) -> CardId {
        let k = Knowledge::embedded().unwrap();
        let mut record = PatientRecord {
            conditions,
            ..PatientRecord::default()
        };
        complete_care(&mut record);
        for kind in DataKind::ALL {
            record.set_availability(kind, Availability::Present);
        }
        match assess(order, &record, TODAY, &k.terminology, &k.policy) {
            Verdict::Card(a) => a.card,
            Verdict::NeedsData(kinds) => panic!("needs {kinds:?}"),
        }
    }

    fn typed(text: &str) -> Concept {
        Concept {
            codings: vec![],
            text: Some(text.into()),
        }
    }

    #[test]
    fn every_reason_must_be_proven_not_only_the_decisive_one() {
        let mut dated = condition(typed("myofascial pain, rhomboid"), "2026-11-02");
        dated.body_sites = vec![];
        let mut both = order(typed("myofascial pain, rhomboid"));
        assert_eq!(
            card_with_care(&both, vec![dated.clone()]),
            CardId::MyofascialMayConsider
        );
        // A second reason nothing dates keeps the order unproven.
        both.reason_codes.push(typed("myofascial pain, gluteal"));
        assert_eq!(card_with_care(&both, vec![dated]), CardId::ConfirmDuration);
    }

    #[test]
    fn an_unplaced_fact_joins_only_an_episode_of_its_own_kind() {
        // An undated myofascial pain is not dated by a recent thigh myalgia.
        let undated = Condition {
            onset: None,
            recorded: crate::record::parse_fhir_span("2026-11-16"),
            ..condition(coded("726531007", "Myofascial pain syndrome (disorder)"), "2026")
        };
        let myalgia = condition(typed("myalgia of thigh"), "2026-11-02");
        let unplaced = order(coded("726531007", "Myofascial pain syndrome (disorder)"));
        assert_eq!(
            card_with_care(&unplaced, vec![undated, myalgia]),
            CardId::ConfirmDuration
        );
    }

    #[test]
    fn another_region_of_the_same_kind_is_another_problem() {
        // A myofascial neck order is not decided by chronic myofascial pain of the low back…
        let neck = order(coded("279030006", "Myofascial pain syndrome of neck (disorder)"));
        let low_back = coded("279041008", "Myofascial pain syndrome of lower back (disorder)");
        assert_eq!(
            card(&neck, vec![condition(low_back.clone(), "2015-01-01")]),
            CardId::NeckPainPreferManualTherapy
        );
        // …but a region-less myofascial order is (it may be the same pain), and so is the low back's own order.
        let unplaced = order(coded("726531007", "Myofascial pain syndrome (disorder)"));
        assert_eq!(
            card(&unplaced, vec![condition(low_back.clone(), "2015-01-01")]),
            CardId::AgainstChronicLowBackPain
        );
        let acute_flare = order(coded("278862001", "Acute low back pain (finding)"));
        assert_eq!(
            card(&acute_flare, vec![condition(low_back, "2015-01-01")]),
            CardId::AgainstChronicLowBackPain
        );
    }
}

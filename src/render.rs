//! Turns an [`Assessment`] into a CDS Hooks card, using the templates and phrases in `cards/`.
//!
//! Why separate from the rules: the rules decide *which* card; this module only fills it in (the evidence
//! lists, the notes, the suggested orders), so wording changes never touch the logic and the logic's tests
//! never depend on wording.
//!
//! Every piece of caller text (a condition's name, a drug's name, a status, a code) is quoted through
//! [`crate::quote`]: plain text in the summary (CDS Hooks defines it so), inert Markdown in the detail (no
//! formatting, no link, not even GFM's autolinks), each piece bounded and all of one card's quotes together
//! bounded ([`QUOTE_BUDGET`]), and long lists cut with a count. So an answer's size depends on the limits,
//! never on how much text a record carries.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::assess::vocabulary::CardId;
use crate::assess::{
    Assessment, CareStatus, ChronicBy, DateEvidence, DateSource, Element, EpisodeLength, Evidence, EvidenceSource,
    HeatRequirement, Indication, IndicationKind, NotCounted, Note, Origin, SaidBy,
};
use crate::content::{DataLabels, Knowledge, Phrases, SUMMARY_VARS, UNAVAILABLE_VAR};
use crate::quote::{self, Budget};
use crate::record::{Coding, Concept, DataKind, DateSpan, Order};
use crate::wire::{
    Action, ActionType, Card, CardExtension, Indicator, SelectionBehavior, Source, Suggestion, WireCoding,
};

/// What the card needs from the request besides the assessment.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub patient_id: Option<String>,
    pub encounter_id: Option<String>,
    /// The codes of every other draft order of the request (order-sign sends them all), so that a card does not
    /// suggest what is already drafted.
    pub other_draft_codes: Vec<Coding>,
    /// Kinds of data the FHIR server was not searched for because the access token's scopes do not allow it:
    /// the data-unavailable card says which scope is missing.
    pub out_of_scope: Vec<DataKind>,
}

fn system_label(system: &str) -> &str {
    match system {
        "http://snomed.info/sct" | "urn:oid:2.16.840.1.113883.6.96" => "SNOMED CT",
        "http://hl7.org/fhir/sid/icd-10-cm" | "urn:oid:2.16.840.1.113883.6.90" => "ICD-10-CM",
        "http://hl7.org/fhir/sid/icd-9-cm" | "urn:oid:2.16.840.1.113883.6.103" => "ICD-9-CM",
        "http://www.ama-assn.org/go/cpt" | "urn:oid:2.16.840.1.113883.6.12" => "CPT",
        "http://www.nlm.nih.gov/research/umls/rxnorm" | "urn:oid:2.16.840.1.113883.6.88" => "RxNorm",
        "http://www.whocc.no/atc" => "ATC",
        // Local code systems (OIDs, EHR URLs) mean nothing to a clinician.
        _ => "local code",
    }
}

/// Characters of caller text one card may quote in all (names, statuses, codes).
pub const QUOTE_BUDGET: usize = 6_000;
/// Characters of a text or display carried from the order into a suggested resource (its reason, body site): the
/// codes carry the meaning; the text is bounded so that a suggestion never repeats a record's bulk.
const CARRIED_MAX: usize = 200;
/// Characters of one quoted name.
const NAME_MAX: usize = 160;
/// Items of one list (conditions, care found, care not counted) before the rest are counted, not listed.
const LIST_MAX: usize = 12;

/// The caller text one card quotes, bounded piece by piece and in all.
struct Quoter(Budget);

impl Quoter {
    fn new() -> Quoter {
        Quoter(Budget::new(QUOTE_BUDGET))
    }
    /// Caller text as inert Markdown, at most `max` characters (and what is left of the card's budget).
    fn md(&mut self, text: &str, max: usize) -> String {
        self.0.take(text, max, quote::markdown_inline)
    }
}

fn code_label(coding: &Option<Coding>, q: &mut Quoter) -> String {
    match coding {
        Some(c) => format!(" ({} {})", system_label(&c.system), q.md(&c.code, 40)),
        None => String::new(),
    }
}

/// Drops SNOMED CT's semantic tag ("Chronic low back pain (finding)" → "Chronic low back pain") for reading.
fn plain_name(name: &str) -> &str {
    const TAGS: [&str; 6] = [
        " (finding)",
        " (disorder)",
        " (procedure)",
        " (regime/therapy)",
        " (situation)",
        " (morphologic abnormality)",
    ];
    TAGS.iter().find_map(|tag| name.strip_suffix(tag)).unwrap_or(name)
}

fn kind_label(kind: DataKind) -> &'static str {
    match kind {
        DataKind::Conditions => "conditions",
        DataKind::MedicationStatements => "medication lists",
        DataKind::MedicationRequests => "prescriptions",
        DataKind::Procedures => "procedures",
    }
}

fn kinds_label(kinds: &[DataKind]) -> String {
    kinds.iter().map(|k| kind_label(*k)).collect::<Vec<_>>().join(", ")
}

fn origin_label(o: Origin) -> &'static str {
    match o {
        Origin::OrderReason => "reason on the order",
        Origin::OrderBodySite => "body site or target muscle on the order",
        Origin::Record => "patient's problem list",
    }
}

fn span_label(span: DateSpan) -> String {
    if span.first == span.last {
        span.first.to_string()
    } else if span.first.year() == span.last.year() && span.first.month() == span.last.month() {
        format!("{}-{:02}", span.first.year(), span.first.month() as u8)
    } else {
        format!("{}", span.first.year())
    }
}

/// A date of the record as it was written (a partial date shows as its year or month).
fn evidence_date(e: &DateEvidence) -> String {
    e.shown.map(span_label).unwrap_or_else(|| e.date.to_string())
}

fn date_source_label(source: DateSource) -> &'static str {
    match source {
        DateSource::Onset => "onset",
        DateSource::Recorded => "on the problem list since",
        DateSource::OnsetAge => "the onset age places it by",
        DateSource::OnsetText => "the typed onset places it by",
        DateSource::Note => "a note on the condition places it by",
    }
}

/// What the record shows about how long the episode has lasted, in words.
fn duration_label(c: &Indication, q: &mut Quoter) -> String {
    if let (EpisodeLength::Chronic(by), Some(other)) = (c.length, &c.chronic_by_other) {
        let when = match by {
            ChronicBy::Date(e) => format!(", {} {}", date_source_label(e.source), evidence_date(&e)),
            ChronicBy::Said => String::new(),
        };
        return format!(
            "chronic (12 weeks or more): the same problem as **{}**{when}",
            q.md(plain_name(other), NAME_MAX)
        );
    }
    match c.length {
        // Which words say so: its name, a code, its typed onset or a note on it.
        EpisodeLength::Chronic(ChronicBy::Said) => {
            let by = match c.dating.said_by {
                Some(SaidBy::Name) | None => "its name says so".to_string(),
                Some(SaidBy::Code) => "its code says so".to_string(),
                Some(SaidBy::OnsetText) => "its typed onset says so".to_string(),
                Some(SaidBy::Note) => "a note on it says so".to_string(),
            };
            match c.dating.existed_by {
                Some(e) => format!("chronic ({by}; {} {})", date_source_label(e.source), e.date),
                None => format!("chronic ({by})"),
            }
        }
        EpisodeLength::Chronic(ChronicBy::Date(e)) => {
            format!(
                "chronic (12 weeks or more): {} {}",
                date_source_label(e.source),
                evidence_date(&e)
            )
        }
        EpisodeLength::Established { since, days } => {
            let label = if days >= crate::assess::dating::SUBACUTE_DAYS {
                "subacute (6 to 12 weeks)"
            } else {
                "acute (under 6 weeks)"
            };
            // The onset as written when this entry gave it (a month shows as the month).
            let onset = match c.dating.existed_by {
                Some(e) if e.source == DateSource::Onset && e.shown.is_some_and(|s| s.first == since) => {
                    evidence_date(&e)
                }
                _ => since.to_string(),
            };
            format!("{label}: onset {onset}, {} weeks ago", days / 7)
        }
        EpisodeLength::Unknown => {
            let own = match c.dating.existed_by {
                Some(e) if e.source == DateSource::Recorded => {
                    format!("entry recorded {}, onset not recorded", evidence_date(&e))
                }
                Some(e) => format!("{} {}", date_source_label(e.source), evidence_date(&e)),
                None if c.origin == Origin::Record => "no onset or recorded date".to_string(),
                None => "no date on the order".to_string(),
            };
            format!("**how long it has lasted is not established** ({own})")
        }
    }
}

/// Whether the card's verdict turns on duration for this kind of indication.
fn duration_matters(kind: IndicationKind) -> bool {
    !matches!(
        kind,
        IndicationKind::Osteoarthritis | IndicationKind::PatellofemoralPain | IndicationKind::Headache
    )
}

fn conditions_list(assessment: &Assessment, phrases: &Phrases, q: &mut Quoter) -> String {
    let candidates = &assessment.candidates;
    let unrecognised = &assessment.unrecognised_reasons;
    if candidates.is_empty() && unrecognised.is_empty() {
        return format!("- {}\n", phrases.no_conditions);
    }
    let mut out = String::new();
    for c in candidates.iter().take(LIST_MAX) {
        let duration = if duration_matters(c.kind) {
            format!(": {}", duration_label(c, q))
        } else {
            String::new()
        };
        let name = q.md(plain_name(&c.name), NAME_MAX);
        let code = code_label(&c.coding, q);
        let _ = writeln!(out, "- **{name}**{code}{duration}; from the {}", origin_label(c.origin));
    }
    if candidates.len() > LIST_MAX {
        let _ = writeln!(out, "- … and {} more", candidates.len() - LIST_MAX);
    }
    // The order's own reasons are always listed, with why they do not count when they do not.
    for (name, coding) in unrecognised.iter().take(LIST_MAX) {
        let name = q.md(plain_name(name), NAME_MAX);
        let code = code_label(coding, q);
        let _ = writeln!(
            out,
            "- **{name}**{code}; from the reason on the order: {}",
            phrases.reason_not_addressed
        );
    }
    out
}

fn source_label(source: EvidenceSource) -> &'static str {
    match source {
        EvidenceSource::MedicationRecord => "on the medication list",
        EvidenceSource::Prescription => "prescription",
        EvidenceSource::Procedure => "procedure",
    }
}

fn not_counted_label(reason: NotCounted, phrases: &Phrases) -> &str {
    match reason {
        NotCounted::NotDone => &phrases.reason_not_done,
        NotCounted::EnteredInError => &phrases.reason_entered_in_error,
        NotCounted::OtherSite => &phrases.reason_other_site,
        NotCounted::NotSystemic => &phrases.reason_not_systemic,
        NotCounted::Future => &phrases.reason_future,
        NotCounted::Earlier => &phrases.reason_earlier,
        NotCounted::Undated => &phrases.reason_undated,
    }
}

fn date_label(date: Option<DateSpan>) -> String {
    date.map(span_label).unwrap_or_else(|| "undated".to_string())
}

/// One line per distinct product or procedure: real records repeat the same prescription many times.
fn evidence_lines(label: &str, evidence: &[&Evidence], phrases: &Phrases, out: &mut String, q: &mut Quoter) {
    // (name, (system, code), why not counted) → the records of it.
    type Key = (String, Option<(String, String)>, Option<NotCounted>);
    let mut groups: BTreeMap<Key, Vec<&Evidence>> = BTreeMap::new();
    for e in evidence {
        let code = e.coding.as_ref().map(|c| (c.system.clone(), c.code.clone()));
        groups.entry((e.name.clone(), code, e.not_counted)).or_default().push(e);
    }
    let distinct = groups.len();
    for ((name, _, not_counted), items) in groups.into_iter().take(LIST_MAX) {
        let code = code_label(&items[0].coding, q);
        // The status and date shown are those of the most recent record, so they describe the same fact.
        let latest = items.iter().copied().max_by_key(|e| e.date).unwrap_or(items[0]);
        let status = latest
            .status
            .as_deref()
            .map(|s| format!(", {}", q.md(s, 30)))
            .unwrap_or_default();
        let count = if items.len() > 1 {
            format!(", {} records, latest", items.len())
        } else {
            String::new()
        };
        let why = not_counted
            .map(|r| format!(" ({})", not_counted_label(r, phrases)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {label}: {}{code}, {}{status}{count} {}{why}",
            q.md(plain_name(&name), NAME_MAX),
            source_label(latest.source),
            date_label(latest.date),
        );
    }
    if distinct > LIST_MAX {
        let _ = writeln!(out, "- {label}: … and {} more", distinct - LIST_MAX);
    }
}

/// The care lists: found (counted), found but not counted, and missing (only what is required).
fn care_lists(assessment: &Assessment, phrases: &Phrases, q: &mut Quoter) -> (String, String, String) {
    let Some(care) = &assessment.care else {
        return (String::new(), String::new(), String::new());
    };
    let mut found = String::new();
    let mut not_counted = String::new();
    let mut missing = String::new();
    let heat_label = match care.heat_requirement {
        HeatRequirement::RegionUnknown => phrases.heat_region_unknown.as_str(),
        _ => phrases.heat_therapy.as_str(),
    };
    let elements: [(&str, &str, &Element, bool); 3] = [
        (&phrases.analgesic, &phrases.analgesic, &care.analgesic, true),
        (&phrases.self_care, &phrases.self_care, &care.self_care, true),
        (&phrases.heat_therapy, heat_label, &care.heat, care.heat_required()),
    ];
    for (label, missing_label, element, required) in elements {
        let counted: Vec<&Evidence> = element.evidence.iter().filter(|e| e.not_counted.is_none()).collect();
        let other: Vec<&Evidence> = element.evidence.iter().filter(|e| e.not_counted.is_some()).collect();
        evidence_lines(label, &counted, phrases, &mut found, q);
        evidence_lines(label, &other, phrases, &mut not_counted, q);
        match &element.status {
            CareStatus::NotFound if required => {
                let _ = writeln!(missing, "- {missing_label}");
            }
            CareStatus::Unknown(kinds) if required => {
                let _ = writeln!(
                    missing,
                    "- {missing_label}: could not be checked ({} unavailable)",
                    kinds_label(kinds)
                );
            }
            _ => {}
        }
    }
    if found.is_empty() {
        found = format!("- {}\n", phrases.nothing_found);
    }
    if !not_counted.is_empty() {
        not_counted = format!("{}\n\n{not_counted}", phrases.not_counted_heading);
    }
    if missing.is_empty() {
        missing = format!("- {}\n", phrases.nothing_missing);
    }
    (found, not_counted, missing)
}

/// The required elements that are missing, for a summary ("heat therapy", "an analgesic trial and heat
/// therapy").
fn missing_summary(assessment: &Assessment, phrases: &Phrases) -> String {
    let Some(care) = &assessment.care else {
        return String::new();
    };
    let parts: Vec<&str> = [
        (&care.analgesic, phrases.analgesic_short.as_str(), true),
        (&care.self_care, phrases.self_care_short.as_str(), true),
        (&care.heat, phrases.heat_short.as_str(), care.heat_required()),
    ]
    .into_iter()
    .filter(|(e, _, required)| *required && e.status != CareStatus::Found)
    .map(|(_, label, _)| label)
    .collect();
    match parts.as_slice() {
        [] => phrases.care_short.clone(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn notes_text(notes: &[Note], phrases: &Phrases) -> String {
    let mut out = String::new();
    // An unresolved reason is said first, at the top of the card (`render`).
    for note in notes.iter().filter(|n| !matches!(n, Note::ReasonUnresolved(_))) {
        let line = match note {
            Note::HistoryUnavailable(kinds) => phrases.history_unavailable.replace("{kinds}", &kinds_label(kinds)),
            Note::ConditionsUnavailable => phrases.conditions_unavailable.clone(),
            Note::Skipped(count) => phrases.skipped_entries.replace("{count}", &count.to_string()),
            Note::ReasonUnresolved(references) => phrases
                .reason_unresolved
                .replace("{count}", &references.len().to_string()),
            Note::FromProblemList => phrases.from_problem_list.clone(),
        };
        let _ = write!(out, "\n> {line}\n");
    }
    out
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Truncates at a word boundary where one is near, so a summary does not end mid-word.
fn truncate_words(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let cut: String = text.chars().take(max_chars.saturating_sub(1)).collect();
    let at_word = match cut.rfind([' ', ',', ';']) {
        Some(i) if cut[..i].chars().count() * 3 >= max_chars * 2 => {
            cut[..i].trim_end_matches([',', ';', ' ']).to_string()
        }
        _ => cut,
    };
    format!("{at_word}…")
}

fn wire_coding(c: &crate::content::CodingText) -> WireCoding {
    WireCoding {
        system: c.system.clone(),
        code: c.code.clone(),
        display: c.display.clone(),
    }
}

fn concept_json(c: &Concept) -> Value {
    let mut out = serde_json::Map::new();
    let codings: Vec<Value> = c
        .codings
        .iter()
        .map(|coding| {
            let mut v = json!({"code": coding.code});
            if !coding.system.is_empty() {
                v["system"] = json!(coding.system);
            }
            if let Some(display) = &coding.display {
                v["display"] = json!(quote::plain(display, CARRIED_MAX));
            }
            v
        })
        .collect();
    if !codings.is_empty() {
        out.insert("coding".into(), Value::Array(codings));
    }
    if let Some(text) = &c.text {
        out.insert("text".into(), json!(quote::plain(text, CARRIED_MAX)));
    }
    Value::Object(out)
}

/// A suggested ServiceRequest: the template from `cards/resources/`, for this patient and encounter, with the
/// dry-needling order's reasons (codes, else references, else the condition that decided the card) and body
/// sites carried over.
fn suggested_resource(template: &Value, order: &Order, decisive: Option<&Indication>, facts: &RequestFacts) -> Value {
    let mut resource = template.clone();
    if let Some(patient) = &facts.patient_id {
        resource["subject"] = json!({"reference": format!("Patient/{patient}")});
    }
    if let Some(encounter) = &facts.encounter_id {
        resource["encounter"] = json!({"reference": format!("Encounter/{encounter}")});
    }
    let non_empty = |v: &Value| v.as_object().is_some_and(|o| !o.is_empty());
    let reasons: Vec<Value> = order.reason_codes.iter().map(concept_json).filter(non_empty).collect();
    if !reasons.is_empty() {
        resource["reasonCode"] = Value::Array(reasons);
    } else if !order.reason_references.is_empty() {
        let references = order
            .reason_references
            .iter()
            .map(|r| {
                let mut v = serde_json::Map::new();
                if let Some(reference) = &r.reference {
                    v.insert("reference".into(), json!(reference));
                }
                if let Some(display) = &r.display {
                    v.insert("display".into(), json!(quote::plain(display, CARRIED_MAX)));
                }
                Value::Object(v)
            })
            .collect();
        resource["reasonReference"] = Value::Array(references);
    } else if let Some(d) = decisive {
        let concept = Concept {
            codings: d.coding.iter().cloned().collect(),
            text: Some(plain_name(&d.name).to_string()),
        };
        resource["reasonCode"] = json!([concept_json(&concept)]);
    }
    let sites: Vec<Value> = order.body_sites.iter().map(concept_json).filter(non_empty).collect();
    if !sites.is_empty() {
        resource["bodySite"] = Value::Array(sites);
    }
    resource
}

/// True when a suggested resource's own order is already drafted in this request or was done in recent weeks.
fn already_there(resource: &Value, assessment: &Assessment, facts: &RequestFacts, knowledge: &Knowledge) -> bool {
    let terms = &knowledge.terminology;
    let Some(codings) = resource.pointer("/code/coding").and_then(Value::as_array) else {
        return false;
    };
    codings.iter().any(|c| {
        let coding = Coding {
            system: c["system"].as_str().unwrap_or_default().to_string(),
            code: c["code"].as_str().unwrap_or_default().to_string(),
            display: None,
        };
        facts
            .other_draft_codes
            .iter()
            .chain(&assessment.recent_procedures)
            .any(|other| terms.same_procedure(&coding, other))
    })
}

fn suggestions(assessment: &Assessment, order: &Order, facts: &RequestFacts, knowledge: &Knowledge) -> Vec<Suggestion> {
    let phrases = &knowledge.phrases;
    let template = knowledge.card(assessment.card);
    let mut out = Vec::new();
    for s in &template.suggestions {
        let mut actions = Vec::new();
        if s.remove_order {
            // Without an id the order cannot be referenced, so neither removing nor replacing it is offered.
            let Some(reference) = order.reference() else {
                continue;
            };
            actions.push(Action {
                kind: ActionType::Delete,
                description: phrases.remove_action.clone(),
                resource: None,
                resource_id: Some(reference),
            });
        }
        let mut skipped = false;
        let mut created = Vec::new();
        for name in &s.create {
            let resource = suggested_resource(&knowledge.resources[name], order, assessment.decisive.as_ref(), facts);
            if already_there(&resource, assessment, facts, knowledge) {
                skipped = true;
                continue;
            }
            let what = resource_name(&resource, name);
            created.push(what.to_lowercase());
            actions.push(Action {
                kind: ActionType::Create,
                description: phrases.create_action.replace("{name}", &what),
                resource: Some(resource),
                resource_id: None,
            });
        }
        // A replacement whose alternatives are all drafted or done already is only a removal, which the card
        // offers on its own.
        if skipped && !actions.iter().any(|a| a.kind == ActionType::Create) {
            continue;
        }
        // Its label says what it now does: it creates only what is not there yet.
        let label = if skipped {
            phrases.replace_only.replace("{names}", &created.join(" and "))
        } else {
            s.label.clone()
        };
        out.push(Suggestion {
            label,
            uuid: Uuid::new_v4().to_string(),
            is_recommended: s.recommended.then_some(true),
            actions,
        });
    }
    out
}

/// A suggested resource's name: its `code.text`, else the template's file name.
fn resource_name(resource: &Value, template: &str) -> String {
    resource
        .pointer("/code/text")
        .and_then(Value::as_str)
        .unwrap_or(template)
        .to_string()
}

/// The `alternatives` placeholder: the card's suggested alternatives, given which of them are already drafted in
/// this request or were done in the last six weeks, so the card does not tell the clinician to order what is
/// already there.
fn alternatives(assessment: &Assessment, order: &Order, facts: &RequestFacts, knowledge: &Knowledge) -> String {
    let phrases = &knowledge.phrases;
    let template = knowledge.card(assessment.card);
    let (mut present, mut missing) = (Vec::new(), Vec::new());
    for name in template.suggestions.iter().flat_map(|s| &s.create) {
        let resource = suggested_resource(&knowledge.resources[name], order, assessment.decisive.as_ref(), facts);
        let what = resource_name(&resource, name);
        if already_there(&resource, assessment, facts, knowledge) {
            present.push(what);
        } else {
            missing.push(what.to_lowercase());
        }
    }
    match (present.is_empty(), missing.is_empty()) {
        (true, _) => phrases.alternatives_none.clone(),
        (false, true) => phrases.alternatives_all.clone(),
        (false, false) => phrases
            .alternatives_some
            .replace("{present}", &present.join(" and "))
            .replace("{missing}", &missing.join(" and ")),
    }
}

/// "Myofascial pain syndrome" reads "myofascial pain syndrome" mid-sentence; "MPS" and "ICD" stay as they are.
fn mid_sentence(name: &str) -> String {
    let mut chars = name.chars();
    match (chars.next(), chars.next()) {
        (Some(first), Some(second)) if first.is_uppercase() && second.is_lowercase() => {
            first.to_lowercase().chain(name.chars().skip(1)).collect()
        }
        _ => name.to_string(),
    }
}

fn summary_max(var: &str) -> usize {
    SUMMARY_VARS.iter().find(|(v, _)| *v == var).map_or(0, |(_, n)| *n)
}

/// Renders the card for one assessed order.
pub fn render_card(assessment: &Assessment, order: &Order, facts: &RequestFacts, knowledge: &Knowledge) -> Card {
    render(assessment, &[], order, facts, knowledge)
}

/// Renders the data-unavailable card for an order the rules could not decide without `kinds` of data (the
/// `card` missing-data policy). It carries no assessment: no conditions, care or notes, only what could not be
/// checked and what the guideline asks before dry needling, and the same source, footer, override reasons and
/// removal suggestion as every warning card.
pub fn render_data_unavailable(kinds: &[DataKind], order: &Order, facts: &RequestFacts, knowledge: &Knowledge) -> Card {
    let assessment = Assessment {
        card: CardId::DataUnavailable,
        decisive: None,
        candidates: Vec::new(),
        unrecognised_reasons: Vec::new(),
        care: None,
        low_back_first_line: false,
        nsaid_allergy: false,
        notes: Vec::new(),
        recent_procedures: Vec::new(),
    };
    render(&assessment, kinds, order, facts, knowledge)
}

/// The list of data that could not be checked, with what the rules would have read each for, and, for the kinds
/// the FHIR server was not searched for, the scope the access token lacks.
fn unavailable_list(kinds: &[DataKind], labels: Option<&DataLabels>, out_of_scope: &[DataKind]) -> String {
    let Some(labels) = labels else {
        return String::new();
    };
    let mut out = String::new();
    for kind in kinds {
        let label = labels.label(*kind);
        let _ = write!(
            out,
            "- **{}** ({}): {}",
            capitalised(&label.name),
            kind.resource_type(),
            label.checks
        );
        if out_of_scope.contains(kind) {
            let _ = write!(
                out,
                ". Not searched for: the EHR's access token does not allow reading and searching {}; it needs {}",
                kind.resource_type(),
                crate::scopes::needed_for_search(kind.resource_type())
            );
        }
        out.push('\n');
    }
    out
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn render(
    assessment: &Assessment,
    unavailable: &[DataKind],
    order: &Order,
    facts: &RequestFacts,
    knowledge: &Knowledge,
) -> Card {
    let phrases = &knowledge.phrases;
    let template = knowledge.card(assessment.card);
    let labels = template.unavailable.as_ref();
    // Within the summary's budget by construction: the loader measured it with every kind named.
    let unavailable_names = labels.map(|l| l.names(unavailable)).unwrap_or_default();
    let mut q = Quoter::new();
    // The summary is plain text (CDS Hooks): the name without markup, controls or line breaks.
    let indication = match &assessment.decisive {
        Some(d) => quote::plain(plain_name(&d.name), 80),
        None => phrases.unknown_indication.clone(),
    };
    let missing = truncate(&missing_summary(assessment, phrases), summary_max("missing"));
    let render_summary = |indication: &str| {
        template.summary.render(|var| match var {
            "indication" => indication.to_string(),
            UNAVAILABLE_VAR => unavailable_names.clone(),
            _ => missing.clone(),
        })
    };
    // "…for chronic low back pain (Chronic low back pain)": the name adds nothing, so it is left out.
    let bare = render_summary("").replace(" ()", "");
    let summary = if bare.to_lowercase().contains(&indication.to_lowercase()) {
        bare
    } else {
        // The indication gets whatever room the rest of the summary leaves (at least its minimum).
        let room = 139usize
            .saturating_sub(render_summary("").chars().count())
            .max(summary_max("indication"));
        render_summary(&truncate_words(&mid_sentence(&indication), room))
    };
    let summary = truncate(&summary, 139);
    let (care_found, care_not_counted, care_missing) = care_lists(assessment, phrases, &mut q);
    let first = if assessment.nsaid_allergy {
        &phrases.first_line_nsaid_allergy
    } else {
        &phrases.first_line
    };
    let first_line = if assessment.low_back_first_line {
        format!("{first} {}", phrases.first_line_low_back)
    } else {
        first.clone()
    };
    let duration = assessment
        .decisive
        .as_ref()
        .map(|d| duration_label(d, &mut q))
        .unwrap_or_else(|| phrases.no_conditions.clone());
    let indication_md = q.md(&indication, 80);
    let conditions = conditions_list(assessment, phrases, &mut q);
    let detail = template.detail.render(|var| match var {
        "indication" => indication_md.clone(),
        "conditions" => conditions.clone(),
        "care_found" => care_found.clone(),
        "care_not_counted" => care_not_counted.clone(),
        "care_missing" => care_missing.clone(),
        "missing" => missing_summary(assessment, phrases),
        "first_line" => first_line.clone(),
        "duration" => duration.clone(),
        "notes" => notes_text(&assessment.notes, phrases),
        "alternatives" => alternatives(assessment, order, facts, knowledge),
        UNAVAILABLE_VAR => unavailable_list(unavailable, labels, &facts.out_of_scope),
        _ => String::new(),
    });
    // When the order's reason could not be resolved, the card says so before anything else.
    let unresolved = assessment.notes.iter().find_map(|n| match n {
        Note::ReasonUnresolved(references) => Some(
            phrases
                .reason_unresolved
                .replace("{count}", &references.len().to_string()),
        ),
        _ => None,
    });
    let detail = match unresolved {
        Some(first) => format!("> {first}\n\n{}\n\n{}", detail.trim(), phrases.source_footer),
        None => format!("{}\n\n{}", detail.trim(), phrases.source_footer),
    };
    let suggestions = suggestions(assessment, order, facts, knowledge);
    let warning = template.indicator != Indicator::Info;
    let mut override_reasons: Vec<WireCoding> = if warning {
        knowledge.override_reasons.iter().map(wire_coding).collect()
    } else {
        vec![]
    };
    override_reasons.extend(template.extra_override_reasons.iter().map(wire_coding));
    Card {
        // Version 7: random, but ordered by time, so the card log's uuid index grows at its end instead of at a
        // random page per card (which, on a busy SQLite log, cost a quarter of the hook throughput).
        uuid: Uuid::now_v7().to_string(),
        summary,
        detail: Some(collapse_blank_lines(&detail)),
        indicator: template.indicator,
        source: Source {
            label: knowledge.source_label.clone(),
            topic: Some(wire_coding(&knowledge.source_topic)),
        },
        selection_behavior: (!suggestions.is_empty()).then_some(SelectionBehavior::AtMostOne),
        suggestions,
        override_reasons,
        extension: CardExtension {
            card: assessment.card.file_stem(),
            content_version: knowledge.version.label.clone(),
        },
    }
}

/// Empty placeholders leave runs of blank lines; Markdown renders them the same, but the JSON is for reading.
fn collapse_blank_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}

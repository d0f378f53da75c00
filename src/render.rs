//! Turns an [`Assessment`] into a CDS Hooks card, using the templates and phrases in `cards/`.
//!
//! Why separate from the rules: the rules decide *which* card; this module only fills it in (the evidence
//! lists, the notes, the suggested orders), so wording changes never touch the logic and the logic's tests
//! never depend on wording.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::{Value, json};
use time::Date;
use uuid::Uuid;

use crate::assess::{Assessment, CareStatus, Chronicity, Evidence, Indication, Note, Origin};
use crate::knowledge::{CardTemplate, Indicator, Knowledge, Phrases, SUMMARY_VARS};
use crate::record::{Coding, Concept, DataKind, Order};
use crate::wire::{Action, Card, Source, Suggestion, WireCoding};

/// What the card needs from the request besides the assessment.
#[derive(Debug, Clone, Default)]
pub struct RequestFacts {
    pub patient_id: Option<String>,
    pub encounter_id: Option<String>,
}

fn system_label(system: &str) -> &str {
    match system {
        "http://snomed.info/sct" => "SNOMED CT",
        "http://hl7.org/fhir/sid/icd-10-cm" => "ICD-10-CM",
        "http://www.ama-assn.org/go/cpt" => "CPT",
        "http://www.nlm.nih.gov/research/umls/rxnorm" => "RxNorm",
        "http://www.whocc.no/atc" => "ATC",
        "" => "code",
        other => other,
    }
}

fn code_label(coding: &Option<Coding>) -> String {
    match coding {
        Some(c) => format!(" ({} {})", system_label(&c.system), c.code),
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

/// Markdown-escapes text that came from the record, so a display cannot inject links or formatting.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|' | '!') {
            out.push('\\');
        }
        if ch == '\n' || ch == '\r' {
            out.push(' ');
        } else {
            out.push(ch);
        }
    }
    out
}

fn kind_label(kind: DataKind) -> &'static str {
    match kind {
        DataKind::Conditions => "conditions",
        DataKind::MedicationStatements => "medication statements",
        DataKind::MedicationRequests => "medication orders",
        DataKind::Procedures => "procedures",
    }
}

fn kinds_label(kinds: &[DataKind]) -> String {
    kinds.iter().map(|k| kind_label(*k)).collect::<Vec<_>>().join(", ")
}

fn chronicity_label(c: Chronicity) -> &'static str {
    match c {
        Chronicity::Acute => "acute (under 6 weeks)",
        Chronicity::Subacute => "subacute (6 to 12 weeks)",
        Chronicity::Chronic => "chronic (12 weeks or more)",
        Chronicity::Unknown => "duration not recorded",
    }
}

fn origin_label(o: Origin) -> &'static str {
    match o {
        Origin::OrderReason => "reason on the order",
        Origin::OrderBodySite => "body site on the order",
        Origin::Record => "patient's active conditions",
    }
}

fn date_label(date: Option<Date>) -> String {
    date.map(|d| d.to_string()).unwrap_or_else(|| "no date".to_string())
}

fn conditions_list(candidates: &[Indication], phrases: &Phrases) -> String {
    if candidates.is_empty() {
        return format!("- {}\n", phrases.no_conditions);
    }
    let mut out = String::new();
    for c in candidates {
        let _ = writeln!(
            out,
            "- **{}**{}: {}, since {}; from the {}",
            escape(plain_name(&c.name)),
            code_label(&c.coding),
            chronicity_label(c.chronicity),
            date_label(c.since),
            origin_label(c.origin),
        );
    }
    out
}

/// One line per distinct product or procedure: real records repeat the same prescription many times.
fn evidence_lines(label: &str, evidence: &[Evidence], out: &mut String) {
    let mut groups: BTreeMap<(String, String), Vec<&Evidence>> = BTreeMap::new();
    for e in evidence {
        groups
            .entry((e.name.clone(), code_label(&e.coding)))
            .or_default()
            .push(e);
    }
    for ((name, code), items) in groups {
        // The status and date shown are those of the most recent record, so they describe the same fact.
        let latest = items.iter().copied().max_by_key(|e| e.date).unwrap_or(items[0]);
        let status = latest.status.as_deref().map(|s| format!(", {s}")).unwrap_or_default();
        let count = if items.len() > 1 {
            format!(", {} records, latest", items.len())
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "- {label}: {}{code}, {}{status}{count} {}",
            escape(plain_name(&name)),
            latest.resource_type,
            date_label(latest.date),
        );
    }
}

fn care_lists(assessment: &Assessment, phrases: &Phrases) -> (String, String) {
    let Some(care) = &assessment.care else {
        return (String::new(), String::new());
    };
    let mut found = String::new();
    let mut missing = String::new();
    let elements = [
        (&phrases.analgesic, &care.analgesic, true),
        (&phrases.self_care, &care.self_care, true),
        (&phrases.heat_therapy, &care.heat, care.heat_required),
    ];
    for (label, status, required) in elements {
        match status {
            CareStatus::Found(evidence) => evidence_lines(label, evidence, &mut found),
            CareStatus::NotFound if required => {
                let _ = writeln!(missing, "- {label}");
            }
            CareStatus::Unknown(kinds) if required => {
                let _ = writeln!(
                    missing,
                    "- {label}: could not be checked ({} unavailable)",
                    kinds_label(kinds)
                );
            }
            _ => {}
        }
    }
    if !care.heat_required && !matches!(care.heat, CareStatus::Found(_)) {
        let _ = writeln!(missing, "- {}", phrases.heat_not_required);
    }
    if found.is_empty() {
        found = format!("- {}\n", phrases.nothing_found);
    }
    if missing.is_empty() {
        missing = format!("- {}\n", phrases.nothing_missing);
    }
    (found, missing)
}

fn notes_text(notes: &[Note], phrases: &Phrases) -> String {
    let mut out = String::new();
    for note in notes {
        let line = match note {
            Note::HistoryUnavailable(kinds) => phrases.history_unavailable.replace("{kinds}", &kinds_label(kinds)),
            Note::ConditionsUnavailable => phrases.conditions_unavailable.clone(),
            Note::Skipped(count) => phrases.skipped_entries.replace("{count}", &count.to_string()),
            Note::OnsetUnknown => phrases.onset_unknown.clone(),
            Note::ReasonUnresolved(references) => phrases
                .reason_unresolved
                .replace("{count}", &references.len().to_string()),
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

fn indicator(i: Indicator) -> &'static str {
    match i {
        Indicator::Info => "info",
        Indicator::Warning => "warning",
        Indicator::Critical => "critical",
    }
}

fn wire_coding(c: &crate::knowledge::CodingText) -> WireCoding {
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
                v["display"] = json!(display);
            }
            v
        })
        .collect();
    if !codings.is_empty() {
        out.insert("coding".into(), Value::Array(codings));
    }
    if let Some(text) = &c.text {
        out.insert("text".into(), json!(text));
    }
    Value::Object(out)
}

/// A suggested ServiceRequest: the template from `cards/resources/`, for this patient and encounter, with
/// the dry-needling order's reasons carried over.
fn suggested_resource(template: &Value, order: &Order, facts: &RequestFacts) -> Value {
    let mut resource = template.clone();
    if let Some(patient) = &facts.patient_id {
        resource["subject"] = json!({"reference": format!("Patient/{patient}")});
    }
    if let Some(encounter) = &facts.encounter_id {
        resource["encounter"] = json!({"reference": format!("Encounter/{encounter}")});
    }
    let reasons: Vec<Value> = order
        .reason_codes
        .iter()
        .map(concept_json)
        .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        .collect();
    if !reasons.is_empty() {
        resource["reasonCode"] = Value::Array(reasons);
    }
    resource
}

fn suggestions(template: &CardTemplate, order: &Order, facts: &RequestFacts, knowledge: &Knowledge) -> Vec<Suggestion> {
    let phrases = &knowledge.phrases;
    let mut out = Vec::new();
    for s in &template.suggestions {
        let mut actions = Vec::new();
        if s.remove_order {
            // Without an id the order cannot be referenced, so neither removing nor replacing it is offered.
            let Some(reference) = order.reference() else {
                continue;
            };
            actions.push(Action {
                kind: "delete",
                description: phrases.remove_action.clone(),
                resource: None,
                resource_id: Some(reference),
            });
        }
        for name in &s.create {
            let resource = suggested_resource(&knowledge.resources[name], order, facts);
            let what = resource
                .pointer("/code/text")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_string();
            actions.push(Action {
                kind: "create",
                description: phrases.create_action.replace("{name}", &what),
                resource: Some(resource),
                resource_id: None,
            });
        }
        out.push(Suggestion {
            label: s.label.clone(),
            uuid: Uuid::new_v4().to_string(),
            is_recommended: s.recommended.then_some(true),
            actions,
        });
    }
    out
}

/// Renders the card for one assessed order.
pub fn render_card(assessment: &Assessment, order: &Order, facts: &RequestFacts, knowledge: &Knowledge) -> Card {
    let phrases = &knowledge.phrases;
    let template = knowledge.card(assessment.card);
    let indication_max = SUMMARY_VARS
        .iter()
        .find(|(v, _)| *v == "indication")
        .map_or(60, |(_, n)| *n);
    let indication = match &assessment.decisive {
        Some(d) => plain_name(&d.name).to_string(),
        None => phrases.unknown_indication.clone(),
    };
    let summary = truncate(&template.summary.render(|_| truncate(&indication, indication_max)), 139);
    let (care_found, care_missing) = care_lists(assessment, phrases);
    let first_line = if assessment.low_back_first_line {
        format!("{} {}", phrases.first_line, phrases.first_line_low_back)
    } else {
        phrases.first_line.clone()
    };
    let detail = template.detail.render(|var| match var {
        "indication" => escape(&indication),
        "conditions" => conditions_list(&assessment.candidates, phrases),
        "care_found" => care_found.clone(),
        "care_missing" => care_missing.clone(),
        "first_line" => first_line.clone(),
        "notes" => notes_text(&assessment.notes, phrases),
        _ => String::new(),
    });
    let suggestions = suggestions(template, order, facts, knowledge);
    let warning = template.indicator != Indicator::Info;
    Card {
        uuid: Uuid::new_v4().to_string(),
        summary,
        detail: Some(detail.trim().to_string()),
        indicator: indicator(template.indicator),
        source: Source {
            label: knowledge.source_label.clone(),
            topic: Some(wire_coding(&knowledge.source_topic)),
        },
        selection_behavior: (!suggestions.is_empty()).then_some("at-most-one"),
        suggestions,
        override_reasons: if warning {
            knowledge.override_reasons.iter().map(wire_coding).collect()
        } else {
            vec![]
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markdown_from_the_record() {
        assert_eq!(escape("a [link](x) *b*\nc"), "a \\[link\\](x) \\*b\\* c");
    }

    #[test]
    fn truncates_on_characters() {
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}

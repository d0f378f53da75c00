//! The checks that go beyond a file's shape: services (one per hook, URL-safe ids), suggested resources (valid
//! R4 ServiceRequests), and cards (known placeholders, the summary budget, suggestions that name resources
//! that exist, the data-unavailable card's own rules).
//!
//! Why here and not at render: a card that cannot be rendered, or renders a summary over the limit, must stop
//! the start with its file and what to change, never fail or mislead on a request.

use std::collections::BTreeMap;

use super::Problems;
use super::templates::{
    CardFile, CardTemplate, CompanionText, DETAIL_VARS, SUMMARY_LIMIT, SUMMARY_VARS, ServiceFile, ServiceText,
    Template, UNAVAILABLE_VAR, summary_budget,
};
use crate::assess::is_dry_needling;
use crate::assess::vocabulary::{CardId, Terminology};
use crate::record::{Coding, Concept, DataKind, Order};
use crate::wire::{Hook, Indicator};

pub(super) fn check_services(service: &ServiceFile, problems: &mut Problems) {
    const FILE: &str = "service.toml";
    for hook in Hook::ALL {
        let n = service.services.iter().filter(|s| s.hook == hook).count();
        if n != 1 {
            problems.add(
                FILE,
                "[[services]]",
                format!("exactly one service must handle `{hook}`; {n} do"),
            );
        }
    }
    for s in &service.services {
        let at = format!("[[services]] `{}`", s.id);
        let id_ok = !s.id.is_empty() && s.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !id_ok || s.id == "feedback" {
            problems.add(
                FILE,
                &at,
                "the id must be a URL-safe name (letters, digits, `-`, `_`) other than `feedback`",
            );
        }
        if s.title.trim().is_empty() || s.description.trim().is_empty() {
            problems.add(FILE, &at, "needs a title and a description");
        }
    }
    let mut ids: Vec<&str> = service.services.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        problems.add(FILE, "[[services]]", "service ids must differ");
    }
    if service.override_reasons.is_empty() {
        problems.add(FILE, "override_reasons", "at least one override reason is needed");
    }
}

/// The sandbox companion: an order-select service of its own (a URL-safe id no other service has), a summary
/// within the limit, and an order the rules read as dry needling, so that the draft it suggests is checked by the
/// real service and never answered again by the companion (which ignores dry-needling drafts).
pub(super) fn check_companion(
    file: &str,
    companion: &CompanionText,
    services: &[ServiceText],
    terminology: &Terminology,
    problems: &mut Problems,
) {
    let s = &companion.service;
    if s.hook != Hook::OrderSelect {
        problems.add(
            file,
            "[service] hook",
            "the companion answers the sandbox's PAMA tab: write order-select",
        );
    }
    let id_ok = !s.id.is_empty() && s.id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !id_ok || s.id == "feedback" {
        problems.add(
            file,
            "[service] id",
            "the id must be a URL-safe name (letters, digits, `-`, `_`) other than `feedback`",
        );
    }
    if services.iter().any(|other| other.id == s.id) {
        problems.add(
            file,
            "[service] id",
            "a service in service.toml has this id: give the companion its own",
        );
    }
    if s.title.trim().is_empty() || s.description.trim().is_empty() {
        problems.add(file, "[service]", "needs a title and a description");
    }
    let card = &companion.card;
    let length = card.summary.chars().count();
    if card.summary.trim().is_empty() || length > SUMMARY_LIMIT {
        problems.add(
            file,
            "[card] summary",
            format!("{length} characters; a summary must have 1 to {SUMMARY_LIMIT}"),
        );
    }
    for (field, text) in [
        ("[card] detail", &card.detail),
        ("[card] source_label", &card.source_label),
        ("[card] suggestion", &card.suggestion),
        ("[card] action", &card.action),
    ] {
        if text.trim().is_empty() {
            problems.add(file, field, "must not be empty");
        }
    }
    let order = Order {
        resource_type: "ServiceRequest".to_string(),
        code: Concept {
            codings: vec![Coding {
                system: companion.order.system.clone(),
                code: companion.order.code.clone(),
                display: Some(companion.order.display.clone()),
            }],
            text: None,
        },
        id: None,
        reason_codes: Vec::new(),
        reason_references: Vec::new(),
        body_sites: Vec::new(),
        contained_conditions: Vec::new(),
    };
    if !is_dry_needling(&order, terminology) {
        problems.add(
            file,
            "[order]",
            format!(
                "`{}` `{}` is not a dry-needling order in valuesets/codes.csv (order.dry_needling): the suggested draft \
                 would get no dry-needling card",
                companion.order.system, companion.order.code
            ),
        );
    }
}

/// A suggested resource must be a ServiceRequest that fhir-sdk's R4 model accepts once the service has
/// filled in the subject, as it does when rendering.
pub(super) fn check_service_request(text: &str) -> Result<serde_json::Value, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if value.get("resourceType").and_then(|v| v.as_str()) != Some("ServiceRequest") {
        return Err("must be a ServiceRequest".to_string());
    }
    let mut filled = value.clone();
    filled["subject"] = serde_json::json!({"reference": "Patient/example"});
    fhir_check::service_request(filled).map_err(|e| format!("not a valid R4 ServiceRequest: {e}"))?;
    Ok(value)
}

pub(super) fn parse_card(
    id: CardId,
    name: &str,
    text: &str,
    resources: &BTreeMap<String, serde_json::Value>,
    problems: &mut Problems,
) -> Option<CardTemplate> {
    let file: CardFile = match toml::from_str(text) {
        Ok(file) => file,
        Err(e) => {
            problems.toml(name, text, &e);
            return None;
        }
    };
    let before = problems.found.len();
    let summary = Template::parse(&file.summary)
        .map_err(|e| problems.add(name, "summary", e))
        .ok();
    let detail = Template::parse(&file.detail)
        .map_err(|e| problems.add(name, "detail", e))
        .ok();
    let summary_names = || {
        SUMMARY_VARS
            .iter()
            .map(|(v, _)| format!("{{{{{v}}}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(summary) = &summary {
        for var in summary.vars() {
            let known = SUMMARY_VARS.iter().any(|(v, _)| *v == var) || var == UNAVAILABLE_VAR;
            if !known {
                problems.add(
                    name,
                    "summary",
                    format!("cannot use `{{{{{var}}}}}`; a summary may use {}", summary_names()),
                );
            }
        }
    }
    if let Some(detail) = &detail {
        for var in detail
            .vars()
            .filter(|v| !DETAIL_VARS.contains(v) && *v != UNAVAILABLE_VAR)
        {
            let allowed: Vec<String> = DETAIL_VARS.iter().map(|v| format!("{{{{{v}}}}}")).collect();
            problems.add(
                name,
                "detail",
                format!("cannot use `{{{{{var}}}}}`; a detail may use {}", allowed.join(", ")),
            );
        }
    }
    if let (Some(summary), Some(detail)) = (&summary, &detail) {
        check_unavailable(id, name, &file, summary, detail, problems);
        // The longest list of unavailable data is all of it.
        let all_unavailable = file
            .unavailable
            .as_ref()
            .map(|labels| labels.names(&DataKind::ALL))
            .unwrap_or_default();
        let budget = summary_budget(summary, &all_unavailable);
        if budget.longest() > SUMMARY_LIMIT {
            let over = budget.longest() - SUMMARY_LIMIT;
            let fix = if budget.fixed > over {
                format!("shorten the fixed text by {over}")
            } else {
                "the placeholders alone are too long: remove one".to_string()
            };
            problems.add(
                name,
                "summary",
                format!(
                    "is {}; the limit is {SUMMARY_LIMIT} (CDS Hooks: fewer than 140): {fix}",
                    budget.explain()
                ),
            );
        }
    }
    let when = file.when.as_deref().map(str::trim).unwrap_or_default();
    if when.is_empty() {
        problems.add(
            name,
            "when",
            "say in words when this card is given (its row of docs/decision-table.md): `when = \"...\"` before the first table",
        );
    }
    for (i, s) in file.suggestions.iter().enumerate() {
        let at = format!("suggestions[{}]", i + 1);
        if s.label.trim().is_empty() || (!s.remove_order && s.create.is_empty()) {
            problems.add(
                name,
                &at,
                "a suggestion needs a label and an action (`remove_order = true`, `create = [...]` or both)",
            );
        }
        for missing in s.create.iter().filter(|r| !resources.contains_key(*r)) {
            let known: Vec<&str> = resources.keys().map(String::as_str).collect();
            problems.add(
                name,
                &at,
                format!(
                    "creates unknown resource `{missing}`: no resources/{missing}.json (there are: {})",
                    known.join(", ")
                ),
            );
        }
    }
    let (Some(summary), Some(detail)) = (summary, detail) else {
        return None;
    };
    (problems.found.len() == before).then_some(CardTemplate {
        when: when.to_string(),
        indicator: file.indicator,
        summary,
        detail,
        suggestions: file.suggestions,
        extra_override_reasons: file.extra_override_reasons,
        unavailable: file.unavailable,
    })
}

/// The data-unavailable card stands in for a 412, so it must say what could not be checked (in its summary and
/// its detail) and must never look like clearance (no `info` indicator). Its placeholder and its labels belong
/// to it alone: on a verdict card they would have nothing to say.
fn check_unavailable(
    id: CardId,
    name: &str,
    file: &CardFile,
    summary: &Template,
    detail: &Template,
    problems: &mut Problems,
) {
    let uses = |t: &Template| t.vars().any(|v| v == UNAVAILABLE_VAR);
    if id != CardId::DataUnavailable {
        if uses(summary) || uses(detail) || file.unavailable.is_some() {
            problems.add(
                name,
                "",
                format!("only the data-unavailable card may use `{{{{{UNAVAILABLE_VAR}}}}}` and [unavailable]"),
            );
        }
        return;
    }
    if !uses(summary) || !uses(detail) {
        problems.add(
            name,
            "",
            format!("summary and detail must both say what could not be checked (`{{{{{UNAVAILABLE_VAR}}}}}`)"),
        );
    }
    if file.indicator == Indicator::Info {
        problems.add(
            name,
            "indicator",
            "must be `warning` or `critical`: this card stands in for a 412",
        );
    }
    let Some(labels) = &file.unavailable else {
        problems.add(name, "[unavailable]", "[unavailable] must name every kind of data");
        return;
    };
    for kind in DataKind::ALL {
        let label = labels.label(kind);
        if label.name.trim().is_empty() || label.checks.trim().is_empty() {
            problems.add(
                name,
                "[unavailable]",
                format!(
                    "[unavailable] needs a name and what it checks for {}",
                    kind.resource_type()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tests::copy_of_cards;
    use crate::content::{ContentSource, Knowledge};

    /// The data-unavailable card stands in for a 412: it must name what could not be checked, in its summary and
    /// its detail, stay within the summary budget with every kind named, and never be `info`.
    #[test]
    fn the_data_unavailable_card_is_checked_at_load() {
        let knowledge = Knowledge::embedded().unwrap();
        let template = knowledge.card(CardId::DataUnavailable);
        assert_eq!(template.indicator, Indicator::Warning);
        let labels = template.unavailable.as_ref().expect("labels for every kind");
        assert_eq!(
            labels.names(&DataKind::ALL),
            "problem list, medication statements, medication orders and procedures"
        );
        assert_eq!(labels.names(&[DataKind::Procedures]), "procedures");
        assert!(
            knowledge
                .cards
                .iter()
                .all(|(id, t)| (*id == CardId::DataUnavailable) == t.unavailable.is_some())
        );

        let copy = copy_of_cards("unavailable");
        let path = copy.join("cards/data-unavailable.toml");
        let good = std::fs::read_to_string(&path).unwrap();
        let labels_at = good.find("[unavailable.conditions]").unwrap();
        let summary_line = good.lines().find(|l| l.starts_with("summary = ")).unwrap();
        let broken = [
            (
                good.replace("indicator = \"warning\"", "indicator = \"info\""),
                "must be `warning` or `critical`",
            ),
            (
                good.replace(summary_line, "summary = \"Dry needling: some data was not checked\""),
                "must both say what could not be checked",
            ),
            (good[..labels_at].to_string(), "[unavailable] must name every kind"),
            (
                good.replace("[unavailable.procedures]", "[unavailable.other]"),
                "data-unavailable.toml",
            ),
            (
                good.replace("name = \"problem list\"", "name = \" \""),
                "needs a name and what it checks for Condition",
            ),
            (
                good.replace("name = \"procedures\"", &format!("name = \"{}\"", "p".repeat(40))),
                "140",
            ),
        ];
        for (text, expected) in broken {
            std::fs::write(&path, text).unwrap();
            let error = Knowledge::load(&ContentSource::Directory(copy.clone()))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expected), "{expected}: {error}");
        }
        // Its placeholder belongs to it alone.
        std::fs::write(&path, &good).unwrap();
        let headache = copy.join("cards/against-headache.toml");
        std::fs::write(
            &headache,
            "indicator = \"warning\"\nsummary = \"x {{unavailable}}\"\ndetail = \"y\"\n",
        )
        .unwrap();
        let error = Knowledge::load(&ContentSource::Directory(copy.clone()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("only the data-unavailable card"), "{error}");
        std::fs::remove_dir_all(&copy).unwrap();
    }
}

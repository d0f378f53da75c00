//! The sandbox companion: a testing aid for the CDS Hooks sandbox, whose tabs cannot draft a dry-needling order.
//!
//! A second `order-select` service (its texts in `cards/sandbox-companion.toml`). For a selected draft
//! ServiceRequest with a reason that is not dry needling (the sandbox's PAMA Imaging draft), it answers one info
//! card whose suggestion `update`s that draft, same id and resource type, into the content's dry-needling order,
//! keeping its reason, subject and the rest. The sandbox applies the update to its draft and fires `order-select`
//! again, and the real service (`dry-needling-order-select`) answers the updated draft with its card; the
//! companion answers nothing for it (it is dry needling now), so the two never loop.
//!
//! Why it is safe: it reads only the draft it was sent and answers only a suggestion on it, which the clinician
//! (the tester) must take; it quotes nothing from the draft; and it is served only where the deployment says so
//! ([`SandboxCompanion`]: on by default only where the service is open on loopback, like the workbench). No HTTP
//! here: [`crate::http`] serves it.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::assess::is_dry_needling;
use crate::content::{CompanionText, Knowledge};
use crate::fhir::{Resource, parse_resource};
use crate::service::{HookError, HookSummary, Limits};
use crate::wire::{
    Action, ActionType, Card, CardExtension, CardsResponse, RequestError, SelectionBehavior, ServiceDescription,
    Source, Suggestion, parse_hook_request,
};

/// The card template id the companion's card carries (`extension`, metrics, the card log).
pub const CARD: &str = "sandbox-companion";
/// Its stance in the card log: not a verdict on any order.
pub const STANCE: &str = "testing_aid";

/// The extension the sandbox reads from every ServiceRequest an `update` suggestion gives its PAMA draft (it
/// shows it as the "PAMA Rating", and stops with a script error when there is none). Dry needling is outside
/// the appropriate-use criteria for advanced imaging, hence `no-criteria-apply`.
const PAMA_RATING_URL: &str = "http://fhir.org/argonaut/Extension/pama-rating";
const PAMA_RATING_SYSTEM: &str = "http://fhir.org/argonaut/CodeSystem/pama-rating";

/// Whether the companion is served (`[sandbox_companion] enabled`; by default only where the service is open on
/// loopback). Off, it is not in discovery and its URLs are 404 like any unknown service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxCompanion {
    On,
    Off,
}

impl SandboxCompanion {
    /// True when `id` is the companion's and it is served.
    pub fn serves(self, knowledge: &Knowledge, id: &str) -> bool {
        self == SandboxCompanion::On && knowledge.companion.service.id == id
    }
}

/// The companion's discovery entry: no prefetch (it reads only the draft).
pub fn description(knowledge: &Knowledge) -> ServiceDescription {
    crate::service::describe(&knowledge.companion.service, knowledge, false)
}

/// One draft-orders entry; anything else in it is left alone.
#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    resource: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bundle<'a> {
    resource_type: Option<String>,
    #[serde(borrow, default)]
    entry: Vec<&'a RawValue>,
}

/// Answers one call to the companion: at most one card, for the first selected draft it can turn into dry
/// needling. Bad envelopes get the same refusals as the real service's (400, 413).
pub fn answer(knowledge: &Knowledge, limits: &Limits, body: &[u8]) -> Result<(CardsResponse, HookSummary), HookError> {
    let companion = &knowledge.companion;
    // The prefetch is never needed: it stays unread.
    let request = parse_hook_request(body, limits.max_prefetch_entries, |_| false)?;
    tracing::Span::current().record(
        "hook_instance",
        tracing::field::display(crate::logsafe::caller_text(&request.hook_instance)),
    );
    if request.hook != Some(companion.service.hook) {
        return Err(HookError::WrongHook {
            expected: companion.service.hook,
        });
    }
    let mut summary = HookSummary {
        hook_instance: request.hook_instance.clone(),
        ..HookSummary::default()
    };
    let nothing = CardsResponse { cards: Vec::new() };
    let (Some(draft_orders), Some(selections)) = (request.context.draft_orders, &request.context.selections) else {
        return Ok((nothing, summary));
    };
    let bundle = serde_json::from_str::<Bundle>(draft_orders.get())
        .ok()
        .filter(|b| b.resource_type.as_deref() == Some("Bundle"))
        .ok_or_else(|| RequestError("`context.draftOrders` must be a FHIR Bundle".to_string()))?;
    if bundle.entry.len() > limits.max_draft_orders {
        return Err(HookError::TooLarge(format!(
            "`context.draftOrders` has more than {} entries, the most this service accepts",
            limits.max_draft_orders
        )));
    }
    let Some(draft) = bundle
        .entry
        .iter()
        .filter_map(|entry| serde_json::from_str::<Entry>(entry.get()).ok()?.resource)
        .find_map(|resource| candidate(resource, selections, knowledge))
    else {
        return Ok((nothing, summary));
    };
    let card = card(knowledge, updated(draft, companion));
    summary.cards = 1;
    summary.stances = vec![STANCE];
    Ok((CardsResponse { cards: vec![card] }, summary))
}

/// The draft as a JSON object, when it is one the companion may offer to change: a selected ServiceRequest in
/// `draft` status, with an id and a reason, that is not dry needling already.
fn candidate(resource: &RawValue, selections: &[String], knowledge: &Knowledge) -> Option<Map<String, Value>> {
    let Ok(Resource::Order(order)) = parse_resource(resource.get()) else {
        return None;
    };
    let reference = order.reference()?;
    let selected = selections
        .iter()
        .any(|s| *s == reference || s.ends_with(&format!("/{reference}")));
    if order.resource_type != "ServiceRequest"
        || !selected
        || (order.reason_codes.is_empty() && order.reason_references.is_empty())
        || is_dry_needling(&order, &knowledge.terminology)
    {
        return None;
    }
    let Ok(Value::Object(draft)) = serde_json::from_str::<Value>(resource.get()) else {
        return None;
    };
    // Only a draft: an order that is already active (or anything else) is never touched.
    (draft.get("status").and_then(Value::as_str) == Some("draft")).then_some(draft)
}

/// The draft as a dry-needling order: the content's code in place of the study's, the study's category and
/// details dropped (they describe the imaging study), everything else (id, status, intent, subject, reasons,
/// body sites, notes) kept; and the PAMA rating the sandbox needs.
fn updated(mut draft: Map<String, Value>, companion: &CompanionText) -> Value {
    let order = &companion.order;
    draft.insert(
        "code".to_string(),
        json!({
            "coding": [{"system": order.system, "code": order.code, "display": order.display}],
            "text": order.display,
        }),
    );
    draft.remove("category");
    draft.remove("orderDetail");
    let mut extensions: Vec<Value> = match draft.remove("extension") {
        Some(Value::Array(extensions)) => extensions
            .into_iter()
            .filter(|e| e.get("url").and_then(Value::as_str) != Some(PAMA_RATING_URL))
            .collect(),
        _ => Vec::new(),
    };
    extensions.push(json!({
        "url": PAMA_RATING_URL,
        "valueCodeableConcept": {"coding": [{"system": PAMA_RATING_SYSTEM, "code": "no-criteria-apply"}]},
    }));
    draft.insert("extension".to_string(), Value::Array(extensions));
    Value::Object(draft)
}

fn card(knowledge: &Knowledge, resource: Value) -> Card {
    let text = &knowledge.companion.card;
    Card {
        uuid: Uuid::now_v7().to_string(),
        summary: text.summary.clone(),
        detail: Some(text.detail.trim().to_string()),
        indicator: text.indicator,
        source: Source {
            label: text.source_label.clone(),
            topic: None,
        },
        suggestions: vec![Suggestion {
            label: text.suggestion.clone(),
            uuid: Uuid::new_v4().to_string(),
            is_recommended: None,
            actions: vec![Action {
                kind: ActionType::Update,
                description: text.action.clone(),
                resource: Some(resource),
                resource_id: None,
            }],
        }],
        selection_behavior: Some(SelectionBehavior::AtMostOne),
        override_reasons: Vec::new(),
        extension: CardExtension {
            card: CARD,
            content_version: knowledge.version.label.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_update_replaces_the_study_and_its_rating_and_keeps_the_rest() {
        let knowledge = Knowledge::embedded().unwrap();
        let draft = json!({
            "resourceType": "ServiceRequest", "id": "x", "status": "draft", "intent": "plan",
            "category": [{"text": "Imaging"}], "orderDetail": [{"text": "with contrast"}],
            "code": {"text": "CT head"}, "subject": {"reference": "Patient/p"},
            "reasonCode": [{"text": "neck pain"}], "note": [{"text": "kept"}],
            "extension": [
                {"url": "http://example.org/other", "valueString": "kept"},
                {"url": PAMA_RATING_URL, "valueCodeableConcept": {"coding": [{"code": "appropriate"}]}},
            ],
        });
        let Value::Object(map) = draft.clone() else {
            unreachable!()
        };
        let updated = updated(map, &knowledge.companion);
        assert_eq!(updated["code"]["coding"][0]["code"], "20560");
        assert!(updated.get("category").is_none() && updated.get("orderDetail").is_none());
        for kept in ["id", "status", "intent", "subject", "reasonCode", "note"] {
            assert_eq!(updated[kept], draft[kept], "{kept}");
        }
        let extensions = updated["extension"].as_array().unwrap();
        assert_eq!(extensions.len(), 2);
        assert_eq!(extensions[0]["valueString"], "kept");
        assert_eq!(
            extensions[1]["valueCodeableConcept"]["coding"][0]["code"],
            "no-criteria-apply"
        );
    }
}

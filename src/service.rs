//! One hook call from request bytes to cards: parse → find the dry-needling orders → gather the record →
//! assess → render. No HTTP here; [`crate::http`] maps [`HookError`] to status codes.
//!
//! Why this order: most order hooks carry no dry-needling order, so the draft orders are read first and the
//! (possibly megabytes of) prefetch is not read at all unless an order needs it.

use std::collections::BTreeSet;

use serde_json::value::RawValue;
use time::Date;

use crate::assess::{Outcome, assess, is_dry_needling};
use crate::fhir::{Resource, parse_contents};
use crate::knowledge::{Knowledge, ServiceText};
use crate::record::{Availability, DataKind, Order, PatientRecord};
use crate::render::{RequestFacts, render_card};
use crate::wire::{CardsResponse, HookRequest, RequestError, parse_hook_request};

/// Why a hook call got no cards.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    BadRequest(#[from] RequestError),
    #[error("no CDS service has this id")]
    UnknownService,
    #[error("this service handles `{expected}`, not `{got}`")]
    WrongHook { expected: String, got: String },
    /// Data the verdict needs could be had neither from prefetch nor from the FHIR server (412).
    #[error("data needed for the assessment is unavailable")]
    MissingData(Vec<DataKind>),
}

/// What happened, for the request's log line: ids and counts only.
#[derive(Debug, Clone, Default)]
pub struct HookSummary {
    pub dry_needling_orders: usize,
    pub cards: usize,
    pub skipped_entries: usize,
}

/// The prefetch key for each kind of data, as discovery declares them.
pub fn prefetch_key(kind: DataKind) -> &'static str {
    match kind {
        DataKind::Conditions => "conditions",
        DataKind::MedicationStatements => "medicationStatements",
        DataKind::MedicationRequests => "medicationRequests",
        DataKind::Procedures => "procedures",
    }
}

/// Finds the service for an id.
pub fn find_service<'k>(knowledge: &'k Knowledge, id: &str) -> Option<&'k ServiceText> {
    knowledge.services.iter().find(|s| s.id == id)
}

/// The draft orders this call is about: the selected ones for order-select, all for order-sign; only
/// dry-needling orders are kept. Unreadable entries are skipped.
pub fn dry_needling_orders(request: &HookRequest, knowledge: &Knowledge) -> Vec<Order> {
    let Some(draft_orders) = request.context.draft_orders else {
        return Vec::new();
    };
    let Ok(contents) = parse_contents(draft_orders.get()) else {
        return Vec::new();
    };
    let selected = |order: &Order| -> bool {
        if request.hook != "order-select" {
            return true;
        }
        let (Some(selections), Some(reference)) = (&request.context.selections, order.reference()) else {
            return false;
        };
        selections
            .iter()
            .any(|s| s == &reference || s.ends_with(&format!("/{reference}")))
    };
    contents
        .resources
        .into_iter()
        .filter_map(|r| match r {
            Resource::Order(order) => Some(order),
            _ => None,
        })
        .filter(|order| selected(order) && is_dry_needling(order, &knowledge.terminology))
        .collect()
}

/// Reads the record from prefetch. Each key: a Bundle or resource = present; `null` = no data; an
/// OperationOutcome with an error (alone or as an entry) or an unreadable value = failed; absent = missing.
pub fn record_from_prefetch(prefetch: Option<&[(String, &RawValue)]>) -> PatientRecord {
    let mut record = PatientRecord::default();
    let Some(prefetch) = prefetch else {
        return record;
    };
    for kind in DataKind::ALL {
        let Some((_, raw)) = prefetch.iter().find(|(key, _)| key == prefetch_key(kind)) else {
            continue;
        };
        let availability = add_contents(&mut record, raw.get());
        record.set_availability(kind, availability);
    }
    record
}

/// Adds a Bundle's (or a single resource's) contents to the record and says what it means for availability.
/// Resources are routed by their type, whatever key they came under.
pub fn add_contents(record: &mut PatientRecord, json: &str) -> Availability {
    if json.trim() == "null" {
        return Availability::NoData;
    }
    let Ok(contents) = parse_contents(json) else {
        record.skipped += 1;
        return Availability::Failed;
    };
    record.skipped += contents.skipped;
    let mut failed = false;
    for resource in contents.resources {
        match resource {
            Resource::Condition(c) => record.conditions.push(c),
            Resource::Medication(m) => record.medications.push(m),
            Resource::Procedure(p) => record.procedures.push(p),
            Resource::Outcome { failed: true } => failed = true,
            Resource::Outcome { failed: false } | Resource::Order(_) | Resource::Other => {}
        }
    }
    if failed {
        Availability::Failed
    } else {
        Availability::Present
    }
}

/// Answers one hook call.
pub fn handle_hook(
    knowledge: &Knowledge,
    service_id: &str,
    body: &[u8],
    today: Date,
) -> Result<(CardsResponse, HookSummary), HookError> {
    let service = find_service(knowledge, service_id).ok_or(HookError::UnknownService)?;
    let request = parse_hook_request(body)?;
    // Recorded as soon as it is known, so that 400s and 412s are traceable too.
    tracing::Span::current().record("hook_instance", tracing::field::display(&request.hook_instance));
    if request.hook != service.hook {
        return Err(HookError::WrongHook {
            expected: service.hook.clone(),
            got: request.hook,
        });
    }
    let mut summary = HookSummary::default();
    let orders = dry_needling_orders(&request, knowledge);
    summary.dry_needling_orders = orders.len();
    if orders.is_empty() {
        return Ok((CardsResponse { cards: Vec::new() }, summary));
    }
    let record = record_from_prefetch(request.prefetch.as_deref());
    summary.skipped_entries = record.skipped;
    let facts = RequestFacts {
        patient_id: request.context.patient_id.clone(),
        encounter_id: request.context.encounter_id.clone(),
    };
    let mut cards = Vec::new();
    let mut missing = BTreeSet::new();
    for order in &orders {
        match assess(order, &record, today, &knowledge.terminology) {
            Outcome::Card(assessment) => cards.push(render_card(&assessment, order, &facts, knowledge)),
            Outcome::NeedsData(kinds) => missing.extend(kinds),
        }
    }
    if !missing.is_empty() {
        return Err(HookError::MissingData(missing.into_iter().collect()));
    }
    summary.cards = cards.len();
    Ok((CardsResponse { cards }, summary))
}

//! `POST /cds-services/{companion id}`: the sandbox companion ([`crate::companion`]), routed only when it is on.
//!
//! The same edge as a hook call, cheapest refusal first (413 on the declared length, 503 when admission is
//! full, the body read within its limit), then [`crate::companion::answer`]. Its card is counted and goes to the
//! card log under the companion's service id (stance `testing_aid`), so that the feedback the sandbox sends for
//! it is stored as feedback on a known card, never mixed with the clinical cards' analytics.

use axum::Extension;
use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::admission::Overloaded;
use super::handlers::{count_cards, declared_length, log_cards, read_body};
use super::{ApiError, AppState, SpanNote, memory};
use crate::auth::Verified;
use crate::companion::{self, SandboxCompanion};
use crate::ops::metrics as ops;

pub(super) async fn hook(
    State(state): State<Arc<AppState>>,
    verified: Option<Extension<Verified>>,
    request: Request,
) -> Result<Response, ApiError> {
    let verified = verified.map(|Extension(v)| v);
    // Routed when the companion is on for anyone (globally or for a tenant); off for this caller's tenant, it is
    // unknown to it, like any other id.
    if super::handlers::policy(&state, verified.as_ref()).sandbox_companion() == SandboxCompanion::Off {
        return Err(ApiError::UnknownService);
    }
    let service = state.knowledge.companion.service.id.clone();
    // The request's own headers, read in place (the `HeaderMap` extractor copies them).
    let (parts, body) = request.into_parts();
    let length = declared_length(&parts.headers, &body, state.body_limit)?;
    let ticket = state.admission.admit(length).map_err(|Overloaded| {
        memory::freed_large();
        metrics::counter!(ops::HOOKS_SHED).increment(1);
        ApiError::Overloaded
    })?;
    let body = read_body(body, state.body_limit).await?;
    let answered = companion::answer(&state.knowledge, &state.limits, &body);
    drop(body);
    drop(ticket);
    let (response, summary) = answered?;
    count_cards(&service, &response, &summary);
    if let Some(storage) = &state.storage {
        // Not a verdict on any order: its own stance (in the summary), apart from the clinical cards' analytics.
        log_cards(storage, &service, &response, &summary, verified.as_ref());
    }
    let mut response = Json(response).into_response();
    SpanNote::add(&mut response, |note| note.cards = Some(summary.cards));
    Ok(response)
}

//! The endpoints: discovery, the hook services, and feedback.
//!
//! Each hook call goes through the same steps in the same order, cheapest refusal first: is the service known
//! (404), does the declared body fit (413, before a byte of it is read, so a refused upload never gets
//! `100 Continue`), is there room for it (503, see [`super::admission`]), then the body is read within the limit
//! and handed to [`crate::service`]. A large body's parsing and assessment run on the blocking pool, so that
//! the async workers keep answering small calls meanwhile; small ones run inline, where they are fastest.

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::net::SocketAddr;
use time::Date;
use tracing::{Span, field, info, warn};

use super::admission::Overloaded;
use super::memory;
use super::{Access, ApiError, AppState, MetricsExposure};
use crate::auth::Verified;
use crate::logsafe::caller_text;
use crate::ops::metrics as ops;
use crate::service::{HookCall, HookError, HookSummary, find_service, handle_hook};
use crate::wire::{self, CardsResponse, Discovery, PREFETCH, ServiceDescription};

/// The largest feedback body accepted: thousands of entries.
pub const FEEDBACK_BODY_LIMIT: usize = 1024 * 1024;

pub(super) async fn discovery(State(state): State<AppState>) -> Json<Discovery> {
    let services = state
        .knowledge
        .services
        .iter()
        .map(|s| ServiceDescription {
            hook: s.hook.clone(),
            title: s.title.clone(),
            description: s.description.clone(),
            id: s.id.clone(),
            prefetch: PREFETCH.into_iter().collect(),
            usage_requirements: s.usage_requirements.clone(),
        })
        .collect();
    Json(Discovery { services })
}

/// `GET /healthz`: the process is alive and answering. Depends on nothing else, so an orchestrator restarts the
/// service only when the service itself is stuck.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`: ready for hook calls: the guidance content is loaded and validated (it is, or the service
/// would not have started) and the services are listed. Never depends on an EHR's FHIR server or key host:
/// their outages make data unavailable for one call, they do not make this instance unfit to answer.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let services = state.knowledge.services.len();
    let ready = services > 0;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "checks": { "content": { "services": services } },
    });
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub(super) async fn hook(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    verified: Option<Extension<Verified>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = known_service(&state, id)?;
    let length = declared_length(&headers, &body, state.body_limit)?;
    let ticket = state.admission.admit(length).map_err(|Overloaded| {
        // What hyper buffered of the refused body is freed on this worker: the next quiet tick returns it.
        memory::freed_large();
        metrics::counter!(ops::HOOKS_SHED).increment(1);
        ApiError::Overloaded
    })?;
    let body = read_body(body, state.body_limit).await?;
    let call = Call {
        state: state.clone(),
        id: id.clone(),
        body,
        today: state.today(),
        verified: verified.map(|Extension(verified)| verified),
    };
    let (response, summary) = if ticket.is_large() {
        let runtime = tokio::runtime::Handle::current();
        let span = Span::current();
        let dispatch = tracing::dispatcher::get_default(Clone::clone);
        // The ticket moves with the work: if the caller's time-out drops this handler, the place (and the
        // memory it stands for) is held until the work is really done.
        tokio::task::spawn_blocking(move || {
            let answered =
                tracing::dispatcher::with_default(&dispatch, || span.in_scope(|| runtime.block_on(call.run())));
            drop(call);
            memory::trim();
            drop(ticket);
            answered
        })
        .await
        .map_err(|_| ApiError::Internal)??
    } else {
        let answered = call.run().await;
        drop(ticket);
        answered?
    };
    let span = Span::current();
    span.record("orders", summary.dry_needling_orders);
    span.record("cards", summary.cards);
    count_cards(&state, &id, &response, &summary);
    if summary.skipped_entries > 0 {
        warn!(
            skipped = summary.skipped_entries,
            "unreadable record entries were skipped"
        );
    }
    Ok(Json(response).into_response())
}

/// One hook call's inputs, owned, so that it can move to the blocking pool.
struct Call {
    state: AppState,
    id: String,
    body: Bytes,
    today: Date,
    verified: Option<Verified>,
}

/// Cards by service, template and indicator; data that could not be had, by kind and by answer. All labels come
/// from the content and the code (`&'static str`s and configured ids), never from the request.
fn count_cards(state: &AppState, service: &str, response: &CardsResponse, summary: &HookSummary) {
    let Some(service) = find_service(&state.knowledge, service).map(|s| s.id.clone()) else {
        return;
    };
    for card in &response.cards {
        metrics::counter!(
            ops::CARDS,
            "service" => service.clone(),
            "card" => card.extension.card,
            "indicator" => card.indicator
        )
        .increment(1);
    }
    for (kinds, answer) in [(&summary.unchecked, "note"), (&summary.unavailable, "card")] {
        for &kind in kinds {
            metrics::counter!(ops::DATA_UNAVAILABLE, "kind" => ops::kind_label(kind), "answer" => answer).increment(1);
        }
    }
}

impl Call {
    async fn run(&self) -> Result<(CardsResponse, HookSummary), ApiError> {
        let call = HookCall {
            service_id: &self.id,
            body: &self.body,
            today: self.today,
            caller: self.verified.as_ref().map(|v| &v.client.fhir),
            limits: &self.state.limits,
            missing_data: &self.state.missing_data,
        };
        match handle_hook(&self.state.knowledge, &self.state.fetcher, call).await {
            Ok(answer) => Ok(answer),
            Err(HookError::MissingData(kinds)) => {
                for &kind in &kinds {
                    metrics::counter!(ops::DATA_UNAVAILABLE, "kind" => ops::kind_label(kind), "answer" => "412")
                        .increment(1);
                }
                Err(ApiError::PreconditionFailed(kinds))
            }
            Err(error) => Err(error.into()),
        }
    }
}

pub(super) async fn feedback(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    known_service(&state, id)?;
    // Feedback is not admitted like hook calls (it must stay responsive in a burst), so its bodies get a limit of
    // their own, far below a hook's: a feedback entry is a few hundred bytes.
    let limit = state.body_limit.min(FEEDBACK_BODY_LIMIT);
    declared_length(&headers, &body, limit)?;
    let body = read_body(body, limit).await?;
    let entries = wire::parse_feedback(&body).map_err(|e| ApiError::BadRequest(e.0))?;
    for entry in &entries {
        // `outcome` is checked to be `accepted` or `overridden` by the parser: a closed set.
        let outcome = if entry.outcome == "accepted" {
            "accepted"
        } else {
            "overridden"
        };
        metrics::counter!(ops::FEEDBACK, "outcome" => outcome).increment(1);
        // Fields a feedback entry does not have are left out, not logged empty.
        info!(
            card = %caller_text(&entry.card),
            outcome = %entry.outcome,
            accepted_suggestions = (!entry.accepted_suggestions.is_empty()).then_some(entry.accepted_suggestions.len()),
            override_reason = entry.override_reason.as_deref().map(|r| field::display(caller_text(r))),
            outcome_timestamp = %entry.outcome_timestamp,
            "feedback"
        );
    }
    Ok(Json(serde_json::json!({ "received": entries.len() })))
}

/// `GET /metrics` on the main port: for loopback peers only, and only when no separate metrics listener is
/// configured; anyone else sees no such endpoint.
pub(super) async fn metrics_on_main(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    let loopback = peer.is_some_and(|Extension(ConnectInfo(peer))| peer.ip().is_loopback());
    if !loopback || state.metrics_exposure != MetricsExposure::LoopbackOnly {
        return Err(ApiError::NoRoute);
    }
    metrics(State(state)).await
}

/// `GET /metrics`: the Prometheus text format, with the gauges read now.
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(metrics) = &state.metrics else {
        return Err(ApiError::NoRoute);
    };
    let replay = match state.access.as_ref() {
        Access::Verify(verifier) => Some(verifier.replay_cache_len()),
        Access::Open => None,
    };
    let body = metrics.render(state.admission.in_flight(), replay);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response())
}

/// The service id from the path: 400 when the path segment is not valid UTF-8 once decoded, 404 when no service
/// has it.
fn known_service(state: &AppState, id: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::BadRequest("the service id in the URL is not valid".to_string()))?;
    Span::current().record("service", field::display(caller_text(&id)));
    if find_service(&state.knowledge, &id).is_none() {
        return Err(ApiError::UnknownService);
    }
    Ok(id)
}

/// The body's declared length (`Content-Length`, or the exact size of a body built in memory; `None` when
/// chunked): 413 at once when it is over the limit.
fn declared_length(headers: &HeaderMap, body: &Body, limit: usize) -> Result<Option<u64>, ApiError> {
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .or_else(|| http_body::Body::size_hint(body).exact());
    match length {
        Some(length) if length > limit as u64 => Err(ApiError::PayloadTooLarge(limit)),
        _ => Ok(length),
    }
}

/// Reads the whole body, refusing it (413) as soon as it passes the limit, whatever it declared.
async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge(limit)),
        Err(_) => Err(ApiError::BadRequest("the request body could not be read".to_string())),
    }
}

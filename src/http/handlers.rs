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
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use std::net::SocketAddr;
use std::sync::Arc;
use time::Date;
use tracing::{Span, field, info, warn};

use super::SlowRequest;
use super::admission::Overloaded;
use super::memory;
use super::{Access, ApiError, AppState, MetricsExposure, SpanNote, Storage};
use crate::auth::Verified;
use crate::companion::SandboxCompanion;
use crate::content::Knowledge;
use crate::logsafe::caller_text;
use crate::ops::metrics as ops;
use crate::service::MissingDataPolicy;
use crate::service::{HookCall, HookError, HookSummary, find_service, handle_hook};
use crate::store::{CardRecord, FeedbackRecord};
use crate::tenant::CallPolicy;
use crate::wire::{self, CardsResponse, Discovery, ServiceDescription};

/// The largest feedback body accepted: thousands of entries.
pub(crate) const FEEDBACK_BODY_LIMIT: usize = 1024 * 1024;

/// The discovery answer: static for the life of the process (the content is loaded once), so it is serialized
/// once, at start, and each call only clones a reference-counted buffer.
#[derive(Debug)]
pub struct DiscoveryDocuments {
    clinical: Bytes,
    with_companion: Bytes,
    /// The clinical services' entries and the companion's, for a tenant that uses only some services (its
    /// document is serialized when asked for: such tenants are few, and the entries are small).
    services: Vec<ServiceDescription>,
    companion: ServiceDescription,
}

impl DiscoveryDocuments {
    pub(super) fn new(knowledge: &Knowledge) -> DiscoveryDocuments {
        let mut services: Vec<ServiceDescription> = knowledge
            .services
            .iter()
            .map(|s| crate::service::describe(s, knowledge, true))
            .collect();
        let serialize = |services: &[ServiceDescription]| {
            let document = Discovery {
                services: services.to_vec(),
            };
            // Serializing plain strings and maps cannot fail.
            Bytes::from(serde_json::to_vec(&document).unwrap_or_default())
        };
        let clinical = serialize(&services);
        // The testing aid last: clients that take the first service for a hook (the workbench) keep the real one.
        let companion = crate::companion::description(knowledge);
        services.push(companion.clone());
        let with_companion = serialize(&services);
        services.pop();
        DiscoveryDocuments {
            clinical,
            with_companion,
            services,
            companion,
        }
    }

    /// The document for a call under `policy`: the services it uses, and the companion when it is on for it.
    fn document(&self, policy: &CallPolicy<'_>) -> Bytes {
        let companion = policy.sandbox_companion() == SandboxCompanion::On;
        if policy.tenant.is_none_or(|t| t.services.is_none()) {
            return if companion {
                self.with_companion.clone()
            } else {
                self.clinical.clone()
            };
        }
        let mut services: Vec<ServiceDescription> =
            self.services.iter().filter(|s| policy.uses(&s.id)).cloned().collect();
        if companion {
            services.push(self.companion.clone());
        }
        Bytes::from(serde_json::to_vec(&Discovery { services }).unwrap_or_default())
    }
}

/// The policy a call runs under: its verified tenant's, else the global one.
pub(super) fn policy<'a>(state: &AppState, verified: Option<&'a Verified>) -> CallPolicy<'a> {
    CallPolicy {
        tenant: verified.and_then(|v| v.tenant.as_deref()),
        global_missing_data: state.missing_data,
        global_companion: state.sandbox_companion,
    }
}

/// `GET /cds-services`: with trusted clients, the caller's token chose its tenant, whose document lists the
/// services it uses and the companion only when it is on for it.
pub(super) async fn discovery(State(state): State<Arc<AppState>>, verified: Option<Extension<Verified>>) -> Response {
    let verified = verified.map(|Extension(v)| v);
    let document = state.discovery.document(&policy(&state, verified.as_ref()));
    ([(header::CONTENT_TYPE, "application/json")], document).into_response()
}

/// `GET /healthz`: the process is alive and answering. Depends on nothing else, so an orchestrator restarts the
/// service only when the service itself is stuck.
pub(super) async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// How long readiness waits for the store's answer.
const STORE_PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// How long feedback waits for the store before the EHR is asked to resend.
const FEEDBACK_STORE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `GET /readyz`: ready for hook calls: the guidance content is loaded and validated (it is, or the service
/// would not have started) and the services are listed. Never depends on an EHR's FHIR server or key host:
/// their outages make data unavailable for one call, they do not make this instance unfit to answer.
///
/// The store is checked (one round trip) and reported, but a store that does not answer makes the status
/// `degraded`, still 200: hook answers never depend on it (the card log is queued), so taking instances out of
/// rotation for it would turn an analytics outage into a CDS outage, on every instance at once when they share
/// one PostgreSQL. Feedback meanwhile gets 503 and EHRs resend it.
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let services = state.knowledge.services.len();
    let ready = services > 0;
    let (store, store_ok) = match &state.storage {
        None => (serde_json::json!({ "backend": "off" }), true),
        Some(storage) => {
            let answered = tokio::time::timeout(STORE_PING_TIMEOUT, storage.store.ping()).await;
            let answers = matches!(answered, Ok(Ok(())));
            if !answers {
                metrics::counter!(ops::STORE_ERRORS, "operation" => "ping").increment(1);
            }
            // A store that answers a read but fails writes (a full disk) is degraded too.
            let writes_failing = storage.store.writes_failing();
            let ok = answers && !writes_failing;
            let check = serde_json::json!({
                "backend": storage.store.backend(),
                "ok": ok,
                "writesFailing": writes_failing,
                "cardLogQueued": storage.card_log.queued(),
                "cardLogDropped": storage.card_log.dropped(),
            });
            (check, ok)
        }
    };
    let status = match (ready, store_ok) {
        (false, _) => "not ready",
        (true, true) => "ready",
        (true, false) => "degraded",
    };
    let body = serde_json::json!({
        "status": status,
        "checks": {
            "content": { "services": services, "version": state.knowledge.version.label },
            "store": store,
        },
    });
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

pub(super) async fn hook(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    verified: Option<Extension<Verified>>,
    request: Request,
) -> Result<Response, ApiError> {
    let verified = verified.map(|Extension(verified)| verified);
    let service = clinical_service(&state, id)?;
    let policy = policy(&state, verified.as_ref());
    // A service the caller's tenant does not use is unknown to it, like any other id.
    if !policy.uses(&state.knowledge.services[service].id) {
        return Err(ApiError::UnknownService);
    }
    let missing_data = policy.missing_data();
    // The request's own headers, read in place (the `HeaderMap` extractor copies them).
    let (parts, body) = request.into_parts();
    let length = declared_length(&parts.headers, &body, state.body_limit)?;
    let ticket = state.admission.admit(length).map_err(|Overloaded| {
        // What hyper buffered of the refused body is freed on this worker: the next quiet tick returns it.
        memory::freed_large();
        metrics::counter!(ops::HOOKS_SHED).increment(1);
        ApiError::Overloaded
    })?;
    let body = read_body(body, state.body_limit).await?;
    let call = Call {
        state: state.clone(),
        service,
        body,
        today: state.today(),
        verified,
        missing_data,
    };
    let caller = call.verified.clone();
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
    // The content's own id: a closed set, for metric labels and the card log.
    let service = &state.knowledge.services[service].id;
    count_cards(service, &response, &summary);
    if let Some(storage) = &state.storage {
        log_cards(storage, service, &response, &summary, caller.as_ref());
    }
    if summary.skipped_entries > 0 {
        warn!(
            skipped = summary.skipped_entries,
            "unreadable record entries were skipped"
        );
    }
    let mut response = Json(response).into_response();
    SpanNote::add(&mut response, |note| {
        note.orders = Some(summary.dry_needling_orders);
        note.cards = Some(summary.cards);
    });
    Ok(response)
}

/// One hook call's inputs, owned, so that it can move to the blocking pool.
struct Call {
    state: Arc<AppState>,
    /// Index of the service in `state.knowledge.services`.
    service: usize,
    body: Bytes,
    today: Date,
    verified: Option<Verified>,
    /// `[missing_data]`, or the caller's tenant's.
    missing_data: MissingDataPolicy,
}

/// Cards by service, template and indicator; data that could not be had, by kind and by answer. All labels come
/// from the content and the code (`&'static str`s and configured ids), never from the request.
pub(super) fn count_cards(service: &str, response: &CardsResponse, summary: &HookSummary) {
    for card in &response.cards {
        metrics::counter!(
            ops::CARDS,
            "service" => service.to_string(),
            "card" => card.extension.card,
            "indicator" => card.indicator.as_str()
        )
        .increment(1);
    }
    for (kinds, answer) in [(&summary.unchecked, "note"), (&summary.unavailable, "card")] {
        for &kind in kinds {
            metrics::counter!(ops::DATA_UNAVAILABLE, "kind" => ops::kind_label(kind), "answer" => answer).increment(1);
        }
    }
}

/// Queues the answer's cards for the card log (never waits; see [`crate::store::CardLog`]). Ids, template,
/// indicator, stance and the client: nothing from the patient's record.
pub(super) fn log_cards(
    storage: &Storage,
    service: &str,
    response: &CardsResponse,
    summary: &HookSummary,
    caller: Option<&Verified>,
) {
    if response.cards.is_empty() {
        return;
    }
    let now = time::OffsetDateTime::now_utc();
    let records = response
        .cards
        .iter()
        .zip(&summary.stances)
        .map(|(card, stance)| CardRecord {
            uuid: card.uuid.clone(),
            service_id: service.to_string(),
            card: card.extension.card.to_string(),
            indicator: card.indicator.as_str().to_string(),
            stance: (*stance).to_string(),
            suggestion_uuids: card.suggestions.iter().map(|s| s.uuid.clone()).collect(),
            issued_at: now,
            client_issuer: caller.map(|v| v.client.issuer.clone()),
            tenant: caller.and_then(|v| v.tenant_id().map(str::to_string)),
            hook_instance: summary.hook_instance.clone(),
            content_version: card.extension.content_version.clone().into(),
        })
        .collect();
    storage.card_log.record(records);
}

impl Call {
    async fn run(&self) -> Result<(CardsResponse, HookSummary), ApiError> {
        let call = HookCall {
            service: &self.state.knowledge.services[self.service],
            body: &self.body,
            today: self.today,
            caller: self.verified.as_ref().map(|v| &v.client.fhir),
            limits: &self.state.limits,
            missing_data: &self.missing_data,
        };
        match handle_hook(&self.state.knowledge, &self.state.fetcher, call).await {
            Ok(answer) => Ok(answer),
            Err(HookError::MissingData(kinds, refused)) => {
                for &kind in &kinds {
                    metrics::counter!(ops::DATA_UNAVAILABLE, "kind" => ops::kind_label(kind), "answer" => "412")
                        .increment(1);
                }
                Err(ApiError::PreconditionFailed(kinds, refused))
            }
            Err(error) => Err(error.into()),
        }
    }
}

/// `POST /cds-services/{id}/feedback`: checked, counted, logged (ids and codes only), and stored when a store is
/// configured. Stored before the answer: a 200 means the items are kept, and when the store cannot take them
/// the EHR gets 503 with `Retry-After` and resends (storing is idempotent, so a resend never counts twice).
pub(super) async fn feedback(
    State(state): State<Arc<AppState>>,
    id: Result<Path<String>, PathRejection>,
    verified: Option<Extension<Verified>>,
    request: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    let verified = verified.map(|Extension(v)| v);
    let id = known_service(&state, id, &policy(&state, verified.as_ref()))?;
    // Feedback bodies get a limit of their own, far below a hook's (a feedback entry is a few hundred bytes), and
    // a budget of bytes held at once, apart from the hook calls' places (see [`super::admission`]).
    let limit = state.body_limit.min(FEEDBACK_BODY_LIMIT);
    // The request's own headers, read in place (the `HeaderMap` extractor copies them).
    let (parts, body) = request.into_parts();
    let length = declared_length(&parts.headers, &body, limit)?;
    // Held until the entries are stored (or refused): the memory the body and its entries stand for.
    let _place = state
        .admission
        .admit_feedback(length, limit as u64)
        .map_err(|Overloaded| {
            memory::freed_large();
            metrics::counter!(ops::FEEDBACK_SHED).increment(1);
            ApiError::Overloaded
        })?;
    // Read within the budget's place; whatever the body's size, its buffers and entries are freed when this call
    // ends, and the next tick returns them to the system.
    let _trim = memory::LargeWork::begin();
    let body = read_body(body, limit).await?;
    let entries = wire::parse_feedback(&body).map_err(|e| ApiError::BadRequest(e.0))?;
    for entry in &entries {
        // Parsed into an enum by the wire: a closed set, fit for a metric label.
        let outcome = entry.outcome.as_str();
        metrics::counter!(ops::FEEDBACK, "outcome" => outcome).increment(1);
        // Fields a feedback entry does not have are left out, not logged empty.
        info!(
            card = %caller_text(&entry.card),
            outcome,
            accepted_suggestions = (!entry.accepted_suggestions.is_empty()).then_some(entry.accepted_suggestions.len()),
            override_reason = entry.override_reason.as_deref().map(|r| field::display(caller_text(r))),
            outcome_timestamp = %caller_text(&entry.outcome_timestamp),
            "feedback"
        );
    }
    let Some(storage) = &state.storage else {
        return Ok(Json(serde_json::json!({ "received": entries.len() })));
    };
    let service_id = find_service(&state.knowledge, &id).map_or(id, |s| s.id.clone());
    let issuer = verified.map(|v| v.client.issuer.clone());
    let received_at = time::OffsetDateTime::now_utc();
    let records: Vec<FeedbackRecord> = entries
        .into_iter()
        .map(|entry| FeedbackRecord {
            card_uuid: entry.card,
            service_id: service_id.clone(),
            outcome: entry.outcome,
            accepted_suggestions: entry.accepted_suggestions,
            override_reason_code: entry.override_reason,
            override_reason_system: entry.override_reason_system,
            user_comment: entry.user_comment.filter(|_| storage.keep_override_comments),
            outcome_at: entry.outcome_at,
            received_at,
            client_issuer: issuer.clone(),
        })
        .collect();
    let stored = tokio::time::timeout(FEEDBACK_STORE_TIMEOUT, storage.store.insert_feedback(&records)).await;
    match stored {
        Ok(Ok(outcome)) => Ok(Json(serde_json::json!({
            "received": records.len(),
            "stored": outcome.stored,
            "duplicates": outcome.duplicates,
            "unknownCards": outcome.unknown_cards,
        }))),
        failed => {
            metrics::counter!(ops::STORE_ERRORS, "operation" => "feedback").increment(1);
            match failed {
                Ok(Err(error)) => warn!(%error, "feedback not stored: the EHR is asked to resend it"),
                _ => warn!("feedback not stored in time: the EHR is asked to resend it"),
            }
            Err(ApiError::StoreUnavailable)
        }
    }
}

/// `GET /metrics` on the main port: for loopback peers only, and only when no separate metrics listener is
/// configured; anyone else sees no such endpoint.
pub(super) async fn metrics_on_main(
    State(state): State<Arc<AppState>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
) -> Result<Response, ApiError> {
    // On a dual-stack `[::]` listener an IPv4 scraper arrives as `::ffff:127.0.0.1`: loopback too.
    let loopback = peer.is_some_and(|Extension(ConnectInfo(peer))| peer.ip().to_canonical().is_loopback());
    if !loopback || state.metrics_exposure != MetricsExposure::LoopbackOnly {
        return Err(ApiError::NoRoute);
    }
    metrics(State(state)).await
}

/// `GET /metrics`: the Prometheus text format, with the gauges read now.
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let Some(metrics) = &state.metrics else {
        return Err(ApiError::NoRoute);
    };
    let replay = match state.access.as_ref() {
        Access::Verify(verifier) => Some(verifier.replay_cache_len()),
        Access::Open => None,
    };
    let queued = state.storage.as_ref().map(|s| s.card_log.queued());
    let body = metrics.render(state.admission.in_flight(), replay, queued);
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
        .into_response())
}

/// The clinical service the path names, as an index into `knowledge.services`, looked up once per call: 400
/// when the path segment is not valid UTF-8 once decoded, 404 when no service has it. (The sandbox companion
/// has a route of its own, matched before this one.)
fn clinical_service(state: &AppState, id: Result<Path<String>, PathRejection>) -> Result<usize, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::BadRequest("the service id in the URL is not valid".to_string()))?;
    state
        .knowledge
        .services
        .iter()
        .position(|s| s.id == id)
        .ok_or(ApiError::UnknownService)
}

/// The service id from the path, for feedback (the clinical services the caller's tenant uses, and the
/// companion's when it is on for it): 400 when the path segment is not valid UTF-8 once decoded, 404 when no
/// such service answers the caller.
fn known_service(
    state: &AppState,
    id: Result<Path<String>, PathRejection>,
    policy: &CallPolicy<'_>,
) -> Result<String, ApiError> {
    let Path(id) = id.map_err(|_| ApiError::BadRequest("the service id in the URL is not valid".to_string()))?;
    let clinical = find_service(&state.knowledge, &id).is_some_and(|s| policy.uses(&s.id));
    if !clinical && !policy.sandbox_companion().serves(&state.knowledge, &id) {
        return Err(ApiError::UnknownService);
    }
    Ok(id)
}

/// The body's declared length (`Content-Length`, or the exact size of a body built in memory; `None` when
/// chunked): 413 at once when it is over the limit.
pub(super) fn declared_length(headers: &HeaderMap, body: &Body, limit: usize) -> Result<Option<u64>, ApiError> {
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
pub(super) async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(ApiError::PayloadTooLarge(limit)),
        Err(error) => {
            // The pacing error comes wrapped (axum's body error around the boxed one): look through the chain.
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
            while let Some(error) = cause {
                if let Some(slow) = error.downcast_ref::<SlowRequest>() {
                    let reason = match slow {
                        SlowRequest::Deadline(_) => "deadline",
                        SlowRequest::Rate(_) => "rate",
                    };
                    metrics::counter!(ops::SLOW_REQUESTS, "reason" => reason).increment(1);
                    return Err(ApiError::SlowRequest(*slow));
                }
                cause = error.source();
            }
            Err(ApiError::BadRequest("the request body could not be read".to_string()))
        }
    }
}

//! The HTTP edge: routes, CORS, body limits, time-outs, the per-request span, and the one place errors become
//! status codes ([`ApiError`]).
//!
//! Why one error enum here: every failure a client can cause must be a clear 4xx with a JSON
//! OperationOutcome and no internals, and that policy is easiest to keep when a single `IntoResponse` decides
//! it. Nothing below this module knows about status codes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use time::{Date, OffsetDateTime};
use tower_http::cors::{Any, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tracing::{Instrument, Span, field, info, info_span, warn};

use crate::auth::{AuthError, Verified, Verifier};
use crate::config::Config;
use crate::fetch::{Allowlist, FetchSettings, Fetcher, http_client};
use crate::knowledge::Knowledge;
use crate::record::DataKind;
use crate::service::{HookCall, HookError, find_service, handle_hook, prefetch_key};
use crate::wire::{self, Discovery, PREFETCH, ServiceDescription};

/// Default request body limit: large enough for a prefetch of several thousand resources.
pub const DEFAULT_BODY_LIMIT: usize = 16 * 1024 * 1024;
/// A request that has not been answered in this time gets 408 (slow clients; FHIR fetches have their own,
/// much shorter, deadline).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Who may call.
#[derive(Debug)]
pub enum Access {
    /// Unsigned requests are accepted (development on loopback, or `--insecure-no-auth`).
    Open,
    /// Every request must carry a valid JWT from a trusted client.
    Verify(Verifier),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub knowledge: Arc<Knowledge>,
    /// The date the rules take as today; `None` means the real date. Fixed in tests and for reviewers.
    pub today: Option<Date>,
    pub body_limit: usize,
    pub access: Arc<Access>,
    pub fetcher: Arc<Fetcher>,
}

impl AppState {
    /// Open access, and no FHIR server allowed: the caller adds what the deployment allows.
    pub fn new(knowledge: Knowledge) -> AppState {
        AppState {
            knowledge: Arc::new(knowledge),
            today: None,
            body_limit: DEFAULT_BODY_LIMIT,
            access: Arc::new(Access::Open),
            fetcher: Arc::new(Fetcher::new(
                http_client(),
                FetchSettings::default(),
                Allowlist::default(),
                false,
            )),
        }
    }

    /// The state for a deployment: access mode from the trusted clients and the listen address, FHIR
    /// allowlists and limits from the configuration.
    ///
    /// Without trusted clients the service accepts unsigned requests, which is safe only while nobody but this
    /// machine can reach it: on any other address it refuses to start unless `insecure_no_auth` is given.
    pub fn configure(
        knowledge: Knowledge,
        config: Config,
        listen: SocketAddr,
        insecure_no_auth: bool,
    ) -> Result<AppState, StartError> {
        let http = http_client();
        let loopback = listen.ip().is_loopback();
        let access = if config.clients.is_empty() {
            if !loopback && !insecure_no_auth {
                return Err(StartError::NoTrustedClients(listen));
            }
            Access::Open
        } else {
            let Some(base) = config.public_base_url.as_deref() else {
                return Err(StartError::NoPublicBaseUrl);
            };
            Access::Verify(Verifier::new(config.clients, base, http.clone()))
        };
        // Loopback FHIR servers are a development convenience: only while the service itself is on loopback and
        // open. With trusted clients, every server must be on an allowlist, like any other.
        let allow_loopback = loopback && matches!(access, Access::Open);
        let fetcher = Fetcher::new(http, config.fetch, config.allowlist, allow_loopback);
        Ok(AppState {
            access: Arc::new(access),
            fetcher: Arc::new(fetcher),
            ..AppState::new(knowledge)
        })
    }

    fn today(&self) -> Date {
        self.today.unwrap_or_else(|| OffsetDateTime::now_utc().date())
    }
}

/// Why the service will not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to serve on {0} without trusted clients: anyone who can reach it could call it unsigned. \
         Configure [[client]] entries (--config), listen on loopback, or pass --insecure-no-auth"
    )]
    NoTrustedClients(SocketAddr),
    #[error("trusted clients need `public_base_url`: tokens' `aud` is checked against it")]
    NoPublicBaseUrl,
}

/// Every error a client can see.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no CDS service has the id in this URL; see GET /cds-services")]
    UnknownService,
    #[error("no such endpoint; see GET /cds-services")]
    NoRoute,
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("data needed for the assessment is unavailable")]
    PreconditionFailed(Vec<DataKind>),
    /// Deliberately without detail; the log has the reason.
    #[error("authentication required")]
    Unauthorized(AuthError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownService | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// The status and the OperationOutcome body.
    pub fn to_parts(&self) -> (StatusCode, serde_json::Value) {
        let (code, messages) = match self {
            ApiError::BadRequest(_) => ("invalid", vec![self.to_string()]),
            ApiError::UnknownService | ApiError::NoRoute => ("not-found", vec![self.to_string()]),
            ApiError::MethodNotAllowed => ("not-supported", vec![self.to_string()]),
            ApiError::PayloadTooLarge(_) => ("too-costly", vec![self.to_string()]),
            ApiError::PreconditionFailed(kinds) => ("incomplete", kinds.iter().map(|k| missing_message(*k)).collect()),
            ApiError::Unauthorized(_) => ("login", vec![self.to_string()]),
        };
        (self.status(), wire::operation_outcome(code, &messages))
    }
}

fn missing_message(kind: DataKind) -> String {
    let key = prefetch_key(kind);
    let query = PREFETCH.iter().find(|(k, _)| *k == key).map_or("", |(_, q)| *q);
    format!(
        "{} data is unavailable: send it as prefetch `{key}` ({query}), or a null value if the patient has none",
        kind.resource_type()
    )
}

impl From<HookError> for ApiError {
    fn from(e: HookError) -> Self {
        match e {
            HookError::BadRequest(e) => ApiError::BadRequest(e.0),
            HookError::UnknownService => ApiError::UnknownService,
            e @ HookError::WrongHook { .. } => ApiError::BadRequest(e.to_string()),
            HookError::MissingData(kinds) => ApiError::PreconditionFailed(kinds),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.to_parts();
        let span = Span::current();
        match &self {
            ApiError::Unauthorized(reason) => span.record("error", field::display(reason)),
            _ => span.record("error", field::display(&self)),
        };
        if let ApiError::Unauthorized(_) = self {
            return (status, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response();
        }
        (status, Json(body)).into_response()
    }
}

/// The body of a request to a service's endpoint: 404 for an unknown service (before the body matters), 413
/// over the limit.
fn service_body(state: &AppState, id: &str, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    Span::current().record("service", field::display(id));
    if find_service(&state.knowledge, id).is_none() {
        return Err(ApiError::UnknownService);
    }
    let limit = state.body_limit;
    body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge(limit)
        }
        _ => ApiError::BadRequest("the request body could not be read".to_string()),
    })
}

async fn discovery(State(state): State<AppState>) -> Json<Discovery> {
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

async fn hook(
    State(state): State<AppState>,
    Path(id): Path<String>,
    verified: Option<Extension<Verified>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = service_body(&state, &id, body)?;
    let call = HookCall {
        service_id: &id,
        body: &body,
        today: state.today(),
        caller: verified.as_ref().map(|v| &v.client.fhir),
    };
    let (response, summary) = handle_hook(&state.knowledge, &state.fetcher, call).await?;
    let span = Span::current();
    span.record("orders", summary.dry_needling_orders);
    span.record("cards", summary.cards);
    if summary.skipped_entries > 0 {
        warn!(
            skipped = summary.skipped_entries,
            "unreadable record entries were skipped"
        );
    }
    Ok(Json(response).into_response())
}

async fn feedback(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = service_body(&state, &id, body)?;
    let entries = wire::parse_feedback(&body).map_err(|e| ApiError::BadRequest(e.0))?;
    for entry in entries {
        info!(
            card = %entry.card,
            outcome = %entry.outcome,
            accepted_suggestions = ?entry.accepted_suggestions,
            override_reason = entry.override_reason.as_deref().unwrap_or(""),
            outcome_timestamp = %entry.outcome_timestamp,
            "feedback"
        );
    }
    Ok(StatusCode::OK)
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// One span per request, with what may be logged: method, path (service ids only), hookInstance, status,
/// latency. Never bodies, headers or tokens.
async fn trace(request: Request, next: Next) -> Response {
    let span = info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        service = field::Empty,
        hook_instance = field::Empty,
        issuer = field::Empty,
        jti = field::Empty,
        orders = field::Empty,
        fetched = field::Empty,
        fetch_ms = field::Empty,
        cards = field::Empty,
        status = field::Empty,
        latency_us = field::Empty,
        error = field::Empty,
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    span.record("latency_us", started.elapsed().as_micros() as u64);
    span.in_scope(|| info!("request done"));
    response
}

/// Verifies the caller's JWT when clients are configured; the verified client travels to the handlers as a
/// request extension. Runs inside CORS, so preflight requests (which carry no token) never reach it.
async fn authenticate(State(access): State<Arc<Access>>, mut request: Request, next: Next) -> Response {
    let Access::Verify(verifier) = access.as_ref() else {
        return next.run(request).await;
    };
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let Some(token) = token else {
        warn!(reason = %AuthError::MissingToken, "request refused");
        return ApiError::Unauthorized(AuthError::MissingToken).into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match verifier.verify(&token, request.uri().path(), now).await {
        Ok(verified) => {
            let span = Span::current();
            span.record("issuer", field::display(&verified.client.issuer));
            span.record("jti", field::display(&verified.jti));
            request.extensions_mut().insert(verified);
            next.run(request).await
        }
        Err(rejection) => {
            warn!(
                reason = %rejection.reason,
                issuer = rejection.issuer.as_deref().unwrap_or(""),
                kid = rejection.kid.as_deref().unwrap_or(""),
                "request refused"
            );
            ApiError::Unauthorized(rejection.reason).into_response()
        }
    }
}

/// CORS for browser clients such as the CDS Hooks sandbox: any origin (services are public and use bearer
/// tokens, not cookies), the `Authorization` header, and Chromium's private-network preflight.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .allow_private_network(true)
        .max_age(Duration::from_secs(24 * 60 * 60))
}

/// Builds the application: the same router serves production, tests (`oneshot`) and the CLI.
pub fn app(state: AppState) -> Router {
    let limit = state.body_limit;
    let access = state.access.clone();
    Router::new()
        .route("/cds-services", get(discovery))
        .route("/cds-services/{id}", post(hook))
        .route("/cds-services/{id}/feedback", post(feedback))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(access, authenticate))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(cors())
        .layer(middleware::from_fn(trace))
        .layer(middleware::map_response(timeout_body))
}

/// The time-out layer answers with an empty body; give it the same JSON shape as every other error.
async fn timeout_body(response: Response) -> Response {
    if response.status() != StatusCode::REQUEST_TIMEOUT {
        return response;
    }
    let body = wire::operation_outcome("timeout", &["the request took too long".to_string()]);
    (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response()
}

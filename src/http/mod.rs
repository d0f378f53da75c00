//! The HTTP edge: connections, routes, CORS, authentication, admission, body limits, time-outs, the
//! per-request span, and the one place errors become status codes.
//!
//! | file | what |
//! |---|---|
//! | [`serve`] | sockets: HTTP/1.1, header-read and idle time-outs, the connection cap, shutdown deadline |
//! | `mod.rs` | the router and its layers: trace → CORS → time-out → authentication → handlers |
//! | `handlers.rs` | discovery, hooks, feedback: read the body within its limits, call [`crate::service`]; health |
//! | [`admission`] | how many hook calls (and large bodies) run at once; 503 beyond |
//! | [`memory`] | returning memory to the system after large calls and bursts |
//! | [`error`] | [`ApiError`]: status codes and OperationOutcomes |
//!
//! Why the edge is the only place that knows HTTP: the service, the wire format and the rules can then be
//! tested and reasoned about without it, and every limit a hostile client meets is in this folder.

pub mod admission;
pub mod error;
mod handlers;
pub mod memory;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use time::{Date, OffsetDateTime};
use tower_http::cors::{Any, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tracing::{Instrument, Span, field, info, info_span, warn};

pub use admission::{Admission, AdmissionSettings};
pub use error::{ApiError, StartError};
pub use serve::{ServeSettings, serve};

use crate::auth::{AuthError, Verifier};
use crate::config::Config;
use crate::fetch::{Allowlist, FetchSettings, Fetcher, http_client};
use crate::knowledge::Knowledge;
use crate::logsafe::caller_text;
use crate::service::{Limits, MissingDataPolicy};
use crate::web::{self, Workbench};
use crate::wire;

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
    /// Caps on a request's content (draft orders, cards, prefetch entries).
    pub limits: Limits,
    /// How many hook calls run at once.
    pub admission: Admission,
    /// Whether the tester's workbench (`GET /`) is served.
    pub workbench: Workbench,
    /// 412 or a card, per kind of data the verdict lacks (`[missing_data]`; all 412 by default).
    pub missing_data: MissingDataPolicy,
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
            )),
            limits: Limits::default(),
            admission: Admission::new(AdmissionSettings::default()),
            workbench: Workbench::On,
            missing_data: MissingDataPolicy::default(),
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
        // Every FHIR server, loopback ones included, must be on an allowlist the operator wrote: a caller never
        // picks one. (Open mode once allowed any loopback server, and then any web page could make the service
        // read a local server it named and show the data in a card.)
        let fetcher = Fetcher::new(http, config.fetch, config.allowlist);
        // The workbench is a development tool: on by default only where the service is open on loopback.
        let workbench = match config.workbench {
            Some(true) => Workbench::On,
            Some(false) => Workbench::Off,
            None if loopback && matches!(access, Access::Open) => Workbench::On,
            None => Workbench::Off,
        };
        Ok(AppState {
            access: Arc::new(access),
            fetcher: Arc::new(fetcher),
            limits: config.limits,
            admission: Admission::new(config.admission),
            workbench,
            missing_data: config.missing_data,
            ..AppState::new(knowledge)
        })
    }

    pub(crate) fn today(&self) -> Date {
        self.today.unwrap_or_else(|| OffsetDateTime::now_utc().date())
    }
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
        path = %caller_text(request.uri().path()),
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
            span.record("jti", field::display(caller_text(&verified.jti)));
            request.extensions_mut().insert(verified);
            next.run(request).await
        }
        Err(rejection) => {
            warn!(
                reason = %rejection.reason,
                issuer = %caller_text(rejection.issuer.as_deref().unwrap_or("")),
                kid = %caller_text(rejection.kid.as_deref().unwrap_or("")),
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
    let access = state.access.clone();
    let workbench = state.workbench;
    let state_for_health = state.clone();
    let services = Router::new()
        .route("/cds-services", get(handlers::discovery))
        .route("/cds-services/{id}", post(handlers::hook))
        .route("/cds-services/{id}/feedback", post(handlers::feedback))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        .layer(middleware::from_fn_with_state(access, authenticate));
    // Health checks are for the orchestrator, which has no token; they say nothing about patients or clients.
    let health = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state_for_health);
    // The workbench's page and public fixtures need no token; the calls the page makes do, like anyone's.
    services
        .merge(health)
        .merge(web::routes(workbench).method_not_allowed_fallback(method_not_allowed))
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

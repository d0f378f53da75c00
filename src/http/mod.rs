//! The HTTP edge: connections, routes, CORS, authentication, admission, body limits, time-outs, the
//! per-request span, and the one place errors become status codes.
//!
//! | file | what |
//! |---|---|
//! | [`mod@serve`] | sockets: HTTP/1.1, header-read and idle time-outs, request deadline and body rate, the connection cap and per-peer share, shutdown deadline |
//! | `mod.rs` | the router and its two layers: `edge` (span, loopback host, deadline, metrics) → `authenticate` (CORS, token) → handlers |
//! | `cors.rs` | CORS, with constant headers |
//! | `handlers.rs` | discovery, hooks, feedback: read the body within its limits, call [`crate::service`]; health |
//! | `fhir.rs` | `/fhir/ValueSet`, `/fhir/PlanDefinition` and their ids, when they are on: [`crate::export`]'s precomputed answers |
//! | `attributes.rs` | `/source-attributes` and `.html`: the source attributes (ONC HTI-1), precomputed, no token |
//! | `companion.rs` | the sandbox companion's route, when it is on: its body within the limits, then [`crate::companion`] |
//! | [`admission`] | how many hook calls (and large bodies) run at once; 503 beyond |
//! | [`analytics`] | `/analytics`, `.csv`, `.html`: their own credential, the window, the store's answer |
//! | [`memory`] | returning memory to the system after large calls and bursts |
//! | [`error`] | [`ApiError`]: status codes and OperationOutcomes |
//!
//! Why the edge is the only place that knows HTTP: the service, the wire format and the rules can then be
//! tested and reasoned about without it, and every limit a hostile client meets is in this folder.

pub mod admission;
pub mod analytics;
mod attributes;
mod companion;
mod cors;
pub mod error;
mod fhir;
mod handlers;
pub mod memory;
pub mod serve;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use time::{Date, OffsetDateTime};
use tracing::{Instrument, Span, field, info, info_span, warn};

pub use admission::{Admission, AdmissionSettings};
pub use analytics::AnalyticsAccess;
pub use attributes::SourceAttributeAnswers;
pub use error::{ApiError, StartError};
pub use serve::{ServeSettings, SlowRequest, default_share, serve};

use crate::auth::{AuthError, Rejection, Verifier};
use crate::companion::SandboxCompanion;
use crate::content::Knowledge;
use crate::export::{Catalogue, FhirExport};
use crate::fetch::{Allowlist, FetchSettings, Fetcher, http_client};
use crate::logsafe::caller_text;
use crate::ops::metrics::{self as ops, Metrics};
use crate::service::{Limits, MissingDataPolicy};
use crate::store::{CardLog, Store};
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
    /// Every request must carry a valid JWT from a trusted client. Boxed: the verifier is large, and the
    /// enum is built once.
    Verify(Box<Verifier>),
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub knowledge: Arc<Knowledge>,
    /// The discovery document, serialized once from the content (with and without the sandbox companion).
    pub discovery: Arc<handlers::DiscoveryDocuments>,
    /// The source attributes (`/source-attributes`, `.html`), serialized once from the content.
    pub source_attributes: Arc<SourceAttributeAnswers>,
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
    /// Whether the sandbox companion (a testing aid, [`crate::companion`]) is in discovery and served.
    pub sandbox_companion: SandboxCompanion,
    /// Whether the content as FHIR (`/fhir/…`, [`crate::export`]) is served, and its answers.
    pub fhir_export: FhirRoutes,
    /// 412 or a card, per kind of data the verdict lacks (`[missing_data]`; all 412 by default).
    pub missing_data: MissingDataPolicy,
    /// The metrics recorder, when one is installed (by `main`), and where `/metrics` is served.
    pub metrics: Option<Metrics>,
    pub metrics_exposure: MetricsExposure,
    /// The card log and feedback store; `None` when the store is off (and in most tests).
    pub storage: Option<Storage>,
    /// Who may read `/analytics`.
    pub analytics: AnalyticsAccess,
    /// Open on loopback: only requests whose `Host` names this machine are served (a web page that rebinds its
    /// own name to 127.0.0.1 sends its own name), plus the configured public host.
    pub loopback_hosts_only: Option<LoopbackHosts>,
}

/// The `Host` names an open loopback service answers: loopback names and addresses, and the configured public
/// host (when `public_base_url` names one).
#[derive(Debug, Clone, Default)]
pub struct LoopbackHosts {
    pub public_host: Option<String>,
}

impl LoopbackHosts {
    /// True when `host` (a `Host` header: a name or address, maybe with a port) may be served.
    pub fn allows(&self, host: &str) -> bool {
        // Compared without changing case rather than lower-cased first: this runs on every request, and
        // lower-casing allocated.
        let host = host.trim();
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, port)| {
                if port.bytes().all(|c| c.is_ascii_digit()) {
                    name
                } else {
                    host
                }
            }),
        };
        let loopback_ip = name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
        let localhost_suffix = ".localhost";
        loopback_ip
            || name.eq_ignore_ascii_case("localhost")
            || (name.len() >= localhost_suffix.len()
                && name.is_char_boundary(name.len() - localhost_suffix.len())
                && name[name.len() - localhost_suffix.len()..].eq_ignore_ascii_case(localhost_suffix))
            || self
                .public_host
                .as_deref()
                .is_some_and(|p| p.eq_ignore_ascii_case(name))
    }
}

/// Whether `/fhir/…` is served (`[export] routes`; by default only in open mode) and, when it is, the export's
/// answers: computed once from the content, which never changes while the service runs.
#[derive(Debug, Clone)]
pub enum FhirRoutes {
    Off,
    On(Arc<OnceLock<Catalogue>>),
}

impl FhirRoutes {
    /// On, not yet computed.
    pub fn on() -> FhirRoutes {
        FhirRoutes::On(Arc::new(OnceLock::new()))
    }

    /// The answers, computed from `knowledge` the first time they are asked for; `None` when off.
    pub fn catalogue(&self, knowledge: &Knowledge) -> Option<&Catalogue> {
        match self {
            FhirRoutes::Off => None,
            FhirRoutes::On(cell) => {
                Some(cell.get_or_init(|| Catalogue::new(&FhirExport::build(knowledge, OffsetDateTime::now_utc()))))
            }
        }
    }

    /// Computes the answers now (at start), so that no request waits for them.
    pub fn prepare(&self, knowledge: &Knowledge) {
        let _ = self.catalogue(knowledge);
    }
}

/// The store as the handlers use it: cards go through the queue, feedback straight to the store.
#[derive(Debug, Clone)]
pub struct Storage {
    pub store: Store,
    pub card_log: CardLog,
    /// Whether an override's `userComment` is stored (`[store] keep_override_comments`).
    pub keep_override_comments: bool,
}

/// Where `GET /metrics` answers. Metrics say nothing about patients, but they do say how the service is used and
/// what it refuses, so they are not for anyone who can reach the hook endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsExposure {
    /// On the main port, to loopback peers only (a sidecar or an agent on the same host); the default.
    LoopbackOnly,
    /// Only on the separate metrics listener (`--metrics-listen`); the main port has no `/metrics`.
    SeparateListener,
}

impl AppState {
    /// Open access, and no FHIR server allowed: the caller adds what the deployment allows.
    pub fn new(knowledge: Knowledge) -> AppState {
        AppState {
            discovery: Arc::new(handlers::DiscoveryDocuments::new(&knowledge)),
            source_attributes: Arc::new(SourceAttributeAnswers::new(&knowledge)),
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
            // A testing aid: off unless asked for ([`AppState::configure`] turns it on where the workbench is).
            sandbox_companion: SandboxCompanion::Off,
            // Open, like this state: on, computed at its first request ([`AppState::configure`] computes it at once).
            fhir_export: FhirRoutes::on(),
            missing_data: MissingDataPolicy::default(),
            metrics: None,
            metrics_exposure: MetricsExposure::LoopbackOnly,
            storage: None,
            analytics: AnalyticsAccess::Open,
            loopback_hosts_only: None,
        }
    }

    pub(crate) fn today(&self) -> Date {
        self.today.unwrap_or_else(|| OffsetDateTime::now_utc().date())
    }
}

/// The start-up line that says where EHRs must call, and whether that fits the listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressNotice {
    Info(String),
    /// The public URL cannot reach this listener as written: every token would fail `aud` (or never arrive).
    Warn(String),
}

impl AddressNotice {
    /// What to announce for a service bound to `listen` with this access. With trusted clients, `aud` is
    /// checked against `public_base_url`, so that (not the listen address) is the URL EHRs must call; when it
    /// names this machine on another port or address, the two cannot both be right, and the line says what to
    /// change.
    pub fn new(listen: SocketAddr, access: &Access) -> AddressNotice {
        let Access::Verify(verifier) = access else {
            return AddressNotice::Info(format!("serving CDS Hooks discovery at http://{listen}/cds-services"));
        };
        let base = verifier.base_url();
        let discovery = format!("{base}/cds-services");
        let Ok(url) = url::Url::parse(base) else {
            return AddressNotice::Info(format!("EHRs must call {discovery}; listening on {listen}"));
        };
        let local_host = match url.host() {
            Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback() || ip.is_unspecified(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.is_unspecified(),
            None => false,
        };
        if !local_host {
            return AddressNotice::Info(format!(
                "EHRs must call {discovery} (public_base_url; tokens' aud is checked against it); listening on \
                 {listen}, so whatever serves that URL must forward it here"
            ));
        }
        let reachable = url.port_or_known_default() == Some(listen.port())
            && (listen.ip().is_loopback() || listen.ip().is_unspecified());
        if reachable {
            AddressNotice::Info(format!(
                "EHRs must call {discovery} (public_base_url; tokens' aud is checked against it); listening on {listen}"
            ))
        } else {
            AddressNotice::Warn(format!(
                "public_base_url is {base} but the service listens on {listen}: tokens are accepted only for \
                 {discovery} and the URLs under it, which this listener does not serve. If EHRs call \
                 http://{listen}, start with --public-base-url http://{listen} (or set public_base_url)"
            ))
        }
    }
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// What a request's log line says that only the layers below the trace know: the auth layer (issuer, token
/// id), the handlers (orders, cards) and the error conversion (why). Each puts it on the response, as an
/// extension; [`edge`] alone writes it into the request's span, so there is one place that decides what a
/// request's log line holds. (The service layer records the `hookInstance` and what it fetched itself: it
/// learns them mid-call, and a 400 or 412 after that point must still carry them.)
#[derive(Debug, Clone, Default)]
pub(crate) struct SpanNote {
    pub(crate) issuer: Option<String>,
    pub(crate) jti: Option<String>,
    pub(crate) orders: Option<usize>,
    pub(crate) cards: Option<usize>,
    pub(crate) error: Option<String>,
}

impl SpanNote {
    /// Writes into the response's note (added when it has none yet), when the request's span records anything:
    /// with the log level above `info` it does not, and a request that does nothing is spared the note's three
    /// allocations (issue 26).
    pub(crate) fn add(response: &mut Response, write: impl FnOnce(&mut SpanNote)) {
        if !Span::current().is_disabled() {
            write(response.extensions_mut().get_or_insert_default());
        }
    }

    fn record(self, span: &Span) {
        if let Some(issuer) = self.issuer {
            span.record("issuer", field::display(issuer));
        }
        if let Some(jti) = self.jti {
            span.record("jti", field::display(jti));
        }
        if let Some(orders) = self.orders {
            span.record("orders", orders);
        }
        if let Some(cards) = self.cards {
            span.record("cards", cards);
        }
        if let Some(error) = self.error {
            span.record("error", field::display(error));
        }
    }
}

/// What the outermost layer ([`edge`]) needs, built once with the router.
struct Edge {
    /// Open on loopback: the `Host` names served (see [`loopback_host_refused`]).
    hosts: Option<LoopbackHosts>,
    /// The answer's deadline ([`REQUEST_TIMEOUT`]); `None` on the metrics listener, whose routes answer at once.
    timeout: Option<Duration>,
    routes: RouteMetrics,
}

/// The outermost layer, one per request, in one function (issue 26: each layer the router wraps around every
/// route is cloned and boxed again for every request, so four layers here cost four times one): the request's
/// span and its log line, the refusal of other hosts' names open on loopback, the request's deadline (408 with an
/// OperationOutcome), and the request counted and timed by route.
///
/// The span carries what may be logged: method, path (service ids only), hookInstance, status, latency. Never
/// bodies, headers or tokens.
async fn edge(State(edge): State<Arc<Edge>>, request: Request, next: Next) -> Response {
    let route = edge.routes.of(&request);
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
    if !span.is_disabled()
        && let Some(service) = path_service(&request)
    {
        span.record("service", field::display(caller_text(service)));
    }
    let started = Instant::now();
    let mut response = if loopback_host_refused(edge.hosts.as_ref(), &request) {
        // In the span, so that the refusal's reason reaches its log line.
        span.in_scope(|| {
            ApiError::Forbidden(
                "this service is open on loopback and answers only loopback host names (localhost, 127.0.0.1, [::1])"
                    .to_string(),
            )
            .into_response()
        })
    } else {
        let answer = next.run(request).instrument(span.clone());
        match edge.timeout {
            None => answer.await,
            Some(limit) => tokio::time::timeout(limit, answer).await.unwrap_or_else(|_| {
                let body = wire::operation_outcome("timeout", &["the request took too long".to_string()]);
                (StatusCode::REQUEST_TIMEOUT, Json(body)).into_response()
            }),
        }
    };
    let elapsed = started.elapsed();
    if let Some(note) = response.extensions_mut().remove::<SpanNote>()
        && !span.is_disabled()
    {
        note.record(&span);
    }
    route.count(response.status(), elapsed);
    if !span.is_disabled() {
        span.record("status", response.status().as_u16());
        span.record("latency_us", elapsed.as_micros() as u64);
        span.in_scope(|| info!("request done"));
    }
    response
}

/// The service id a `/cds-services/{id}…` path names (the caller's text: escaped and truncated when logged).
fn path_service(request: &Request) -> Option<&str> {
    let id = request.uri().path().strip_prefix("/cds-services/")?.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// The request counter and latency histogram of each route label, registered with the recorder the first time
/// the label is met and reused afterwards. Why not `metrics::counter!` per request, as before: each call built
/// its labels (two `String`s) and looked the key up in the recorder's registry, a tenth of what a request that
/// does nothing cost (issue 26's profile). Lazily, not at start: `app` may be built before `main` installs the
/// recorder, and a handle taken then would count nothing.
struct RouteMetrics {
    /// The content's service ids (a closed set), put in for `{id}` in a template.
    services: Arc<[String]>,
    /// By the router's template; each with the plain template's handles and one per known service id.
    by_template: std::sync::RwLock<std::collections::HashMap<String, TemplateMetrics>>,
    unmatched: OnceLock<Arc<RouteCounters>>,
}

#[derive(Default)]
struct TemplateMetrics {
    plain: Option<Arc<RouteCounters>>,
    /// Indexed like `RouteMetrics::services`.
    per_service: Vec<Option<Arc<RouteCounters>>>,
}

/// One route label's histogram and its counters by status (a handful per route in practice).
struct RouteCounters {
    label: String,
    duration: metrics::Histogram,
    by_status: std::sync::RwLock<Vec<(u16, metrics::Counter)>>,
}

impl RouteCounters {
    fn new(label: String) -> RouteCounters {
        RouteCounters {
            duration: metrics::histogram!(ops::REQUEST_DURATION, "route" => label.clone()),
            label,
            by_status: std::sync::RwLock::new(Vec::new()),
        }
    }

    fn count(&self, status: StatusCode, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
        let code = status.as_u16();
        {
            let statuses = self.by_status.read().unwrap_or_else(|p| p.into_inner());
            if let Some((_, counter)) = statuses.iter().find(|(c, _)| *c == code) {
                counter.increment(1);
                return;
            }
        }
        let mut statuses = self.by_status.write().unwrap_or_else(|p| p.into_inner());
        if !statuses.iter().any(|(c, _)| *c == code) {
            let label = self.label.clone();
            let counter = metrics::counter!(ops::REQUESTS, "route" => label, "status" => status.as_str().to_string());
            statuses.push((code, counter));
        }
        if let Some((_, counter)) = statuses.iter().find(|(c, _)| *c == code) {
            counter.increment(1);
        }
    }
}

impl RouteMetrics {
    fn new(services: Arc<[String]>) -> RouteMetrics {
        RouteMetrics {
            services,
            by_template: std::sync::RwLock::default(),
            unmatched: OnceLock::new(),
        }
    }

    /// The counters of the route a request matched, as a metrics label: the router's template (a closed set),
    /// with a known service's id put in for `{id}` (the content's ids, also a closed set); `unmatched` for
    /// everything else. Never the path itself, which the caller chooses.
    fn of(&self, request: &Request) -> Arc<RouteCounters> {
        let Some(matched) = request.extensions().get::<MatchedPath>() else {
            return self
                .unmatched
                .get_or_init(|| Arc::new(RouteCounters::new("unmatched".to_string())))
                .clone();
        };
        let template = matched.as_str();
        let service = template
            .starts_with("/cds-services/{id}")
            .then(|| {
                let id = request
                    .uri()
                    .path()
                    .trim_start_matches("/cds-services/")
                    .split('/')
                    .next()?;
                self.services.iter().position(|s| s == id)
            })
            .flatten();
        let cached = {
            let known = self.by_template.read().unwrap_or_else(|p| p.into_inner());
            known.get(template).and_then(|t| match service {
                None => t.plain.clone(),
                Some(i) => t.per_service.get(i).cloned().flatten(),
            })
        };
        if let Some(counters) = cached {
            return counters;
        }
        let mut known = self.by_template.write().unwrap_or_else(|p| p.into_inner());
        let entry = known.entry(template.to_string()).or_default();
        let slot = match service {
            None => &mut entry.plain,
            Some(i) => {
                if entry.per_service.len() <= i {
                    entry.per_service.resize(i + 1, None);
                }
                &mut entry.per_service[i]
            }
        };
        slot.get_or_insert_with(|| {
            let label = match service {
                None => template.to_string(),
                Some(i) => template.replace("{id}", &self.services[i]),
            };
            Arc::new(RouteCounters::new(label))
        })
        .clone()
    }
}

/// Verifies the caller's JWT when clients are configured; the verified client travels to the handlers as a
/// request extension. Runs inside CORS, so preflight requests (which carry no token) never reach it.
/// True when a request's `Content-Type` is JSON (`application/json`, `application/fhir+json`, any `+json`, with
/// any parameters) or is not given (a browser always gives one with a body; curl and some EHRs give none).
fn json_or_unstated(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    // Compared without lower-casing a copy: this runs on every open-mode POST.
    let essence = value.split(';').next().unwrap_or("").trim();
    let (Some(kind), Some(subtype)) = (essence.get(..12), essence.get(12..)) else {
        return false;
    };
    kind.eq_ignore_ascii_case("application/")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() >= 5
                && subtype
                    .get(subtype.len() - 5..)
                    .is_some_and(|s| s.eq_ignore_ascii_case("+json")))
}

/// Open on loopback, a request whose `Host` is another name is refused (DNS rebinding: a page whose name now
/// resolves to 127.0.0.1 would otherwise be same-origin with the service). A request with no `Host` (HTTP/1.0) is
/// not a browser's.
fn loopback_host_refused(hosts: Option<&LoopbackHosts>, request: &Request) -> bool {
    let (Some(hosts), Some(host)) = (hosts, request.headers().get(header::HOST)) else {
        return false;
    };
    !host.to_str().is_ok_and(|h| hosts.allows(h))
}

/// The services' own layer: CORS (a preflight never reaches the token check; a refusal carries CORS headers, so
/// that a browser can read why), then the token. One layer rather than two: see [`edge`].
async fn authenticate(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    cors::around(request, |request| verify(&access, request, next)).await
}

async fn verify(access: &Access, mut request: Request, next: Next) -> Response {
    let Access::Verify(verifier) = access else {
        // Open mode has no token to stop a web page the developer visits: a "simple" cross-origin POST (no
        // preflight) can only carry `text/plain`, a form or multipart. So here a body must say it is JSON.
        if request.method() == axum::http::Method::POST && !json_or_unstated(request.headers()) {
            return ApiError::UnsupportedMediaType.into_response();
        }
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
        let rejection = Rejection {
            reason: AuthError::MissingToken,
            issuer: None,
            kid: None,
            audience: None,
            tenant: None,
        };
        log_refusal(&rejection, verifier);
        return ApiError::Unauthorized(AuthError::MissingToken).into_response();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match verifier.verify(&token, request.uri().path(), now).await {
        Ok(verified) => {
            let issuer = verified.client.issuer.clone();
            let jti = caller_text(&verified.jti).to_string();
            request.extensions_mut().insert(verified);
            let mut response = next.run(request).await;
            SpanNote::add(&mut response, |note| {
                note.issuer = Some(issuer);
                note.jti = Some(jti);
            });
            response
        }
        Err(rejection) => {
            log_refusal(&rejection, verifier);
            ApiError::Unauthorized(rejection.reason).into_response()
        }
    }
}

/// The refusal's log line. An `aud` refusal also says, at most every ten seconds, which values were expected and
/// which came: the one trust mistake the person setting up an EHR cannot see from the EHR's side (calling the
/// service as `localhost` rather than `127.0.0.1`, or on another port than `public_base_url`).
fn log_refusal(rejection: &Rejection, verifier: &Verifier) {
    metrics::counter!("cds_auth_refusals_total", "reason" => rejection.reason.label()).increment(1);
    // What the token did not have is left out of the line, not logged empty.
    let issuer = rejection.issuer.as_deref().map(|i| field::display(caller_text(i)));
    let kid = rejection.kid.as_deref().map(|k| field::display(caller_text(k)));
    let reason = rejection.reason;
    if let Some(tenant) = rejection.tenant.as_deref() {
        warn!(%reason, issuer, kid, tenant = %caller_text(tenant), "request refused");
        return;
    }
    let Some(mismatch) = &rejection.audience else {
        warn!(%reason, issuer, kid, "request refused");
        return;
    };
    let mut detailed = false;
    verifier
        .audience_diagnostics
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .warn(|times| {
            detailed = true;
            let list = |values: &[String]| {
                let quoted: Vec<String> = values.iter().map(|v| format!("`{}`", caller_text(v))).collect();
                if quoted.is_empty() {
                    "nothing".to_string()
                } else {
                    quoted.join(", ")
                }
            };
            let hint = match mismatch.other_origin() {
                Some(origin) => format!(
                    "; the EHR calls this service at {}, but public_base_url is {}: if that is the right address, \
                     start with --public-base-url {}",
                    caller_text(&origin),
                    verifier.base_url(),
                    caller_text(&origin)
                ),
                None => String::new(),
            };
            warn!(
                %reason,
                issuer,
                kid,
                times,
                expected = %list(&mismatch.expected),
                received = %list(&mismatch.received),
                "request refused: the token's aud is {}, this service accepts {}{hint}",
                list(&mismatch.received),
                list(&mismatch.expected),
            );
        });
    if !detailed {
        warn!(%reason, issuer, kid, "request refused");
    }
}

/// Builds the application: the same router serves production, tests (`oneshot`) and the CLI.
pub fn app(state: AppState) -> Router {
    let access = state.access.clone();
    let workbench = state.workbench;
    let verifies_tokens = matches!(access.as_ref(), Access::Verify(_));
    let service_ids: Arc<[String]> = state.knowledge.services.iter().map(|s| s.id.clone()).collect();
    let edge_state = Arc::new(Edge {
        hosts: state.loopback_hosts_only.clone(),
        timeout: Some(REQUEST_TIMEOUT),
        routes: RouteMetrics::new(service_ids),
    });
    // Shared, not copied: a handler's `State` is cloned for every request.
    let state = Arc::new(state);
    let state_for_health = state.clone();
    let fhir_state = state.clone();
    let attributes_state = state.clone();
    let mut services = Router::new()
        .route("/cds-services", get(handlers::discovery))
        .route("/cds-services/{id}", post(handlers::hook))
        .route("/cds-services/{id}/feedback", post(handlers::feedback));
    // On for anyone (globally, or for one tenant: the handler then answers 404 to the others).
    let companion_for_someone = state.sandbox_companion == SandboxCompanion::On
        || match access.as_ref() {
            Access::Verify(verifier) => verifier.tenants().any(|t| t.sandbox_companion == Some(true)),
            Access::Open => false,
        };
    if companion_for_someone {
        // Its own route, ahead of `{id}` (its feedback takes the common route, which knows its id only while it
        // is on); off, its id is unknown like any other's (404).
        let path = format!("/cds-services/{}", state.knowledge.companion.service.id);
        services = services.route(&path, post(companion::hook));
    }
    let services = services
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
        // CORS only here (in `authenticate`), on `/fhir/…` and on the source attributes: the CDS Hooks sandbox calls
        // from its own origin; analytics, metrics, health and the workbench's data are for this origin only, so other
        // origins' pages cannot read them.
        .layer(middleware::from_fn_with_state(access, authenticate));
    // Health checks are for the orchestrator, which has no token; they say nothing about patients or clients.
    let health = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics_on_main))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state_for_health.clone());
    // Analytics have their own credential (see [`analytics`]); the JWT middleware never sees them.
    let analytics = Router::new()
        .route("/analytics", get(analytics::json))
        .route("/analytics.csv", get(analytics::csv))
        .route("/analytics.html", get(analytics::page))
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state_for_health);
    // The content as FHIR, where it is on: no patient's data, so no token; off, its paths are unknown (404).
    let fhir = fhir::routes(&fhir_state)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(cors::layer));
    // The source attributes (ONC HTI-1): what the content says about itself, no patient's data, so no token and
    // every mode; CORS, so that an EHR's web client can read them like discovery.
    let source_attributes = attributes::routes(&attributes_state)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(cors::layer));
    // The workbench's page and public fixtures need no token; the calls the page makes do, like anyone's.
    services
        .merge(fhir)
        .merge(source_attributes)
        .merge(health)
        .merge(analytics)
        .merge(web::routes(workbench, verifies_tokens).method_not_allowed_fallback(method_not_allowed))
        .layer(middleware::from_fn_with_state(edge_state, edge))
}

/// The separate metrics listener's application (`--metrics-listen`): `GET /metrics` and the health checks,
/// nothing else.
pub fn metrics_app(state: AppState) -> Router {
    let edge_state = Arc::new(Edge {
        hosts: None,
        timeout: None,
        routes: RouteMetrics::new(Arc::from(Vec::new())),
    });
    Router::new()
        .route("/metrics", get(handlers::metrics))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(Arc::new(state))
        .layer(middleware::from_fn_with_state(edge_state, edge))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(listen: &str, base: Option<&str>) -> AddressNotice {
        let access = match base {
            Some(base) => Access::Verify(Box::new(Verifier::new(Vec::new(), base, http_client()))),
            None => Access::Open,
        };
        AddressNotice::new(listen.parse().unwrap(), &access)
    }

    #[test]
    fn the_start_up_line_says_which_url_ehrs_must_call() {
        let info = |text: &str| AddressNotice::Info(text.to_string());
        assert_eq!(
            notice("127.0.0.1:8080", None),
            info("serving CDS Hooks discovery at http://127.0.0.1:8080/cds-services")
        );
        for (listen, base) in [
            ("127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("127.0.0.1:8080", "http://localhost:8080"),
            ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ] {
            let AddressNotice::Info(line) = notice(listen, Some(base)) else {
                panic!("{listen} {base}: a warning");
            };
            assert!(
                line.starts_with(&format!("EHRs must call {base}/cds-services")),
                "{line}"
            );
        }
        // Behind a proxy: the public URL is another host; said plainly, not a warning.
        let AddressNotice::Info(line) = notice("0.0.0.0:8080", Some("https://cds.example.org")) else {
            panic!("a warning behind a proxy");
        };
        assert!(
            line.contains("EHRs must call https://cds.example.org/cds-services"),
            "{line}"
        );
        assert!(line.contains("must forward it here"), "{line}");
        // The sandbox configuration run on another port, or on a non-loopback address: a warning with the fix.
        for (listen, base) in [
            ("127.0.0.1:9090", "http://127.0.0.1:8080"),
            ("10.0.0.5:8080", "http://127.0.0.1:8080"),
        ] {
            let AddressNotice::Warn(line) = notice(listen, Some(base)) else {
                panic!("{listen} {base}: no warning");
            };
            assert!(line.contains(&format!("--public-base-url http://{listen}")), "{line}");
        }
    }
}

//! The one place errors become status codes: [`ApiError`].
//!
//! Why one enum: every failure a client can cause must be a clear 4xx with a JSON OperationOutcome and no
//! internals, and that policy is easiest to keep when a single `IntoResponse` decides it. Nothing below the
//! edge knows about status codes. Messages never quote what the caller sent: they name fields and limits.

use std::net::SocketAddr;

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::AuthError;
use crate::record::DataKind;
use crate::service::{HookError, NotFetched};
use crate::wire::{self, PREFETCH};

/// Seconds a shed caller is asked to wait before retrying.
pub const RETRY_AFTER_SECS: u64 = 1;
/// Seconds an EHR is asked to wait before resending feedback the store could not take.
pub const STORE_RETRY_AFTER_SECS: u64 = 30;

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
    #[error(
        "[[client]] `{issuer}`, tenant `{tenant}`: services lists `{service}`, which is not a service of this \
         content (its services: {known})"
    )]
    UnknownTenantService {
        issuer: String,
        tenant: String,
        service: String,
        known: String,
    },
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
    /// `/fhir/<type>/<id>` with an id the export does not have (the type's name; never the id).
    #[error("no {0} has the id in this URL; see GET /fhir/{0}")]
    UnknownResource(&'static str),
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// Within the body limit, but over a limit on its content (draft orders, prefetch entries, cards).
    #[error("{0}")]
    ContentTooLarge(String),
    #[error("data needed for the assessment is unavailable")]
    PreconditionFailed(Vec<DataKind>, NotFetched),
    /// Deliberately without detail; the log has the reason.
    #[error("authentication required")]
    Unauthorized(AuthError),
    /// A verified caller asked for something its trust does not cover (another organisation's FHIR server).
    #[error("{0}")]
    Forbidden(String),
    /// `/analytics` without its credential (never an EHR's token). The browser is asked for it (Basic).
    #[error("analytics needs its own credential: the token whose SHA-256 is [analytics] token_sha256")]
    AnalyticsLogin,
    /// Analytics are not served: tokens are verified and no analytics credential is configured.
    #[error("analytics are off: set [analytics] token_sha256 in the configuration to serve them")]
    AnalyticsOff,
    /// The store could not take or give what was asked (feedback is to be resent; analytics retried).
    #[error("the store is unavailable; retry after {STORE_RETRY_AFTER_SECS} s")]
    StoreUnavailable,
    /// A POST whose body is not JSON, in open mode (where no token stops a cross-origin page).
    #[error("the body must be JSON: send Content-Type: application/json")]
    UnsupportedMediaType,
    /// The body arrived too slowly (see the pacing in `http::serve`); the connection is closed after the answer.
    #[error("{0}")]
    SlowRequest(super::SlowRequest),
    /// Load shedding: too many calls in progress.
    #[error("the service is busy; retry after {RETRY_AFTER_SECS} s")]
    Overloaded,
    /// A bug (a panic in a handler's work); the log has nothing more, the client nothing at all.
    #[error("the service failed to answer")]
    Internal,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownService | ApiError::NoRoute | ApiError::UnknownResource(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::SlowRequest(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::PayloadTooLarge(_) | ApiError::ContentTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::PreconditionFailed(..) => StatusCode::PRECONDITION_FAILED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::AnalyticsOff => StatusCode::FORBIDDEN,
            ApiError::AnalyticsLogin => StatusCode::UNAUTHORIZED,
            ApiError::Overloaded | ApiError::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The status and the OperationOutcome body.
    pub fn to_parts(&self) -> (StatusCode, serde_json::Value) {
        let (code, messages) = match self {
            ApiError::BadRequest(_) => ("invalid", vec![self.to_string()]),
            ApiError::UnknownService | ApiError::NoRoute | ApiError::UnknownResource(_) => {
                ("not-found", vec![self.to_string()])
            }
            ApiError::MethodNotAllowed | ApiError::UnsupportedMediaType => ("not-supported", vec![self.to_string()]),
            ApiError::PayloadTooLarge(_) | ApiError::ContentTooLarge(_) => ("too-costly", vec![self.to_string()]),
            ApiError::PreconditionFailed(kinds, not_fetched) => (
                "incomplete",
                kinds
                    .iter()
                    .map(|k| missing_message(*k))
                    .chain(not_fetched.out_of_scope.iter().map(|k| out_of_scope_message(*k)))
                    .chain(
                        not_fetched
                            .server
                            .map(|why| format!("the request's fhirServer was not called: {why}")),
                    )
                    .collect(),
            ),
            ApiError::Unauthorized(_) => ("login", vec![self.to_string()]),
            ApiError::Forbidden(_) | ApiError::AnalyticsOff => ("forbidden", vec![self.to_string()]),
            ApiError::AnalyticsLogin => ("login", vec![self.to_string()]),
            ApiError::StoreUnavailable => ("transient", vec![self.to_string()]),
            ApiError::SlowRequest(_) => ("timeout", vec![self.to_string()]),
            ApiError::Overloaded => ("throttled", vec![self.to_string()]),
            ApiError::Internal => ("exception", vec![self.to_string()]),
        };
        (self.status(), wire::operation_outcome(code, &messages))
    }
}

fn missing_message(kind: DataKind) -> String {
    let key = kind.key();
    let query = PREFETCH.iter().find(|(k, _)| *k == key).map_or("", |(_, q)| *q);
    format!(
        "{} data is unavailable: send it as prefetch `{key}` ({query}), or a null value if the patient has none",
        kind.resource_type()
    )
}

/// Why a kind of data was not searched for: the scope the token lacks.
fn out_of_scope_message(kind: DataKind) -> String {
    let resource_type = kind.resource_type();
    format!(
        "{resource_type} was not searched for on the request's fhirServer: fhirAuthorization's scope does not allow \
         reading and searching it; it needs {}",
        crate::scopes::needed_for_search(resource_type)
    )
}

impl From<HookError> for ApiError {
    fn from(e: HookError) -> Self {
        match e {
            HookError::BadRequest(e) => ApiError::BadRequest(e.0),
            HookError::UnknownService => ApiError::UnknownService,
            e @ HookError::WrongHook { .. } => ApiError::BadRequest(e.to_string()),
            HookError::TooLarge(message) => ApiError::ContentTooLarge(message),
            HookError::MissingData(kinds, refused) => ApiError::PreconditionFailed(kinds, refused),
            e @ HookError::ForeignFhirServer => ApiError::Forbidden(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.to_parts();
        // Why, for the request's log line (written by the edge layer, [`super::SpanNote`]).
        let why = match &self {
            ApiError::Unauthorized(reason) => reason.to_string(),
            _ => self.to_string(),
        };
        let mut response = match self {
            ApiError::Unauthorized(_) => (status, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response(),
            ApiError::AnalyticsLogin => (
                status,
                [(header::WWW_AUTHENTICATE, r#"Basic realm="analytics", charset="UTF-8""#)],
                Json(body),
            )
                .into_response(),
            ApiError::StoreUnavailable => (
                status,
                [(header::RETRY_AFTER, STORE_RETRY_AFTER_SECS.to_string())],
                Json(body),
            )
                .into_response(),
            ApiError::SlowRequest(_) => (status, [(header::CONNECTION, "close")], Json(body)).into_response(),
            ApiError::Overloaded => (
                status,
                [(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())],
                Json(body),
            )
                .into_response(),
            _ => (status, Json(body)).into_response(),
        };
        super::SpanNote::add(&mut response, |note| note.error = Some(why));
        response
    }
}

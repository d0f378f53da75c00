//! `GET /analytics` (JSON), `/analytics.csv` and `/analytics.html`: who may read them, and for which window.
//!
//! Access is separate from the EHRs' trust on purpose: an EHR's token proves an EHR is calling, not that a
//! person may read how clinicians answer the cards. With trusted clients configured, analytics need the
//! credential whose SHA-256 is `[analytics] token_sha256`, as `Authorization: Bearer <token>` (scripts) or as the
//! password of HTTP Basic (a browser asks for it; any user name); without that setting they are off (403).
//! Open mode on loopback (development) serves them without a credential unless one is configured. The JWT
//! middleware never sees these routes, so an EHR token is never accepted here, and these credentials are never
//! accepted for hooks.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use time::{Date, Duration, OffsetDateTime, Time};
use tracing::warn;

use super::{ApiError, AppState};
use crate::ops::metrics as ops;
use crate::store::Analytics;
use crate::web::analytics::{self as view, CsvTable, ReasonNames};

/// The window when none is asked for: the last twelve weeks.
const DEFAULT_WEEKS: i64 = 12;
/// The longest window, in days: ten years.
const MAX_DAYS: i64 = 3660;
/// How long an analytics query may take before the caller gets 503.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Who may read analytics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalyticsAccess {
    /// Anyone who can reach the service: open mode on loopback, without a configured credential.
    Open,
    /// Whoever presents the token with this SHA-256.
    Token([u8; 32]),
    /// Nobody: tokens are verified and no analytics credential is configured.
    Off,
}

/// The query string: `since` and `until` as `YYYY-MM-DD` (UTC; `until` excluded), `table` for the CSV, `tenant`
/// for one tenant's cards.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Window {
    since: Option<String>,
    until: Option<String>,
    table: Option<String>,
    tenant: Option<String>,
}

/// What one analytics request asked for, besides the window the answer carries.
pub(super) struct Asked {
    table: CsvTable,
    /// `?tenant=`: only that tenant's cards.
    tenant: Option<String>,
}

/// The longest `tenant` accepted: the card log keeps tenants to this many characters.
const MAX_TENANT_CHARS: usize = crate::store::MAX_TEXT_CHARS;

pub(super) async fn json(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<Window>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (analytics, asked) = load(&state, &headers, query).await?;
    Ok(axum::Json(view::json_of(&analytics, asked.tenant.as_deref())).into_response())
}

pub(super) async fn csv(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    query: Result<Query<Window>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (analytics, asked) = load(&state, &headers, query).await?;
    let name = match asked.table {
        CsvTable::Templates => "analytics-templates.csv",
        CsvTable::Weeks => "analytics-weeks.csv",
        CsvTable::Reasons => "analytics-reasons.csv",
        CsvTable::Versions => "analytics-versions.csv",
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        view::csv(&analytics, asked.table),
    )
        .into_response())
}

pub(super) async fn page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    query: Result<Query<Window>, QueryRejection>,
) -> Result<Response, ApiError> {
    let (analytics, asked) = load(&state, &headers, query).await?;
    let reasons: ReasonNames = state
        .knowledge
        .override_reasons
        .iter()
        .map(|r| ((r.system.clone(), r.code.clone()), r.display.clone()))
        .collect();
    // The page links to the JSON and CSV of the same window: only the window's keys are carried over, and the
    // tenant, encoded anew from its decoded value (never the caller's raw text).
    let mut query: Vec<String> = raw
        .unwrap_or_default()
        .split('&')
        .filter(|p| p.starts_with("since=") || p.starts_with("until="))
        .filter(|p| p.bytes().all(|b| b.is_ascii_alphanumeric() || b"=-".contains(&b)))
        .map(str::to_string)
        .collect();
    if let Some(tenant) = &asked.tenant {
        query.push(format!(
            "tenant={}",
            url::form_urlencoded::byte_serialize(tenant.as_bytes()).collect::<String>()
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No script at all; the charts are inline SVG.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
                 form-action 'none'; frame-ancestors 'none'",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        view::page_of(&analytics, &reasons, &query.join("&"), asked.tenant.as_deref()),
    )
        .into_response())
}

/// Access, then the window, then the store's answer.
async fn load(
    state: &AppState,
    headers: &HeaderMap,
    query: Result<Query<Window>, QueryRejection>,
) -> Result<(Analytics, Asked), ApiError> {
    allowed(state.analytics, headers)?;
    let Query(window) = query.map_err(|_| {
        ApiError::BadRequest(
            "the query string may have `since` and `until` (YYYY-MM-DD), `tenant` and, for the CSV, `table` \
             (templates, weeks, reasons or versions)"
                .to_string(),
        )
    })?;
    let tenant = window.tenant.map(tenant).transpose()?;
    let table = match window.table.as_deref() {
        None | Some("templates") => CsvTable::Templates,
        Some("weeks") => CsvTable::Weeks,
        Some("reasons") => CsvTable::Reasons,
        Some("versions") => CsvTable::Versions,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "`table` must be templates, weeks, reasons or versions".to_string(),
            ));
        }
    };
    // The real date, not the rules' `--as-of`: cards are logged with the real time.
    let today = OffsetDateTime::now_utc().date();
    let (since, until) = window_bounds(window.since.as_deref(), window.until.as_deref(), today)?;
    let Some(storage) = &state.storage else {
        return Err(ApiError::Forbidden(
            "analytics need the store, which is off ([store] backend = \"off\")".to_string(),
        ));
    };
    let query = storage.store.analytics_of(since, until, tenant.as_deref());
    match tokio::time::timeout(QUERY_TIMEOUT, query).await {
        Ok(Ok(analytics)) => Ok((analytics, Asked { table, tenant })),
        Ok(Err(error)) => {
            metrics::counter!(ops::STORE_ERRORS, "operation" => "analytics").increment(1);
            warn!(%error, "analytics query failed");
            Err(ApiError::StoreUnavailable)
        }
        Err(_) => {
            metrics::counter!(ops::STORE_ERRORS, "operation" => "analytics").increment(1);
            warn!("analytics query timed out");
            Err(ApiError::StoreUnavailable)
        }
    }
}

/// `?tenant=`: a tenant id as the card log keeps it (not empty, at most [`MAX_TENANT_CHARS`] characters, no
/// control characters), else 400 without repeating it. A tenant with no cards (unknown, or no longer
/// configured) is a valid question with an empty answer: the card log outlives the configuration.
fn tenant(text: String) -> Result<String, ApiError> {
    if text.is_empty() || text.chars().count() > MAX_TENANT_CHARS || text.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "`tenant` must be a tenant id: 1 to {MAX_TENANT_CHARS} characters, no control characters"
        )));
    }
    Ok(text)
}

/// Whether the request may read analytics.
fn allowed(access: AnalyticsAccess, headers: &HeaderMap) -> Result<(), ApiError> {
    let expected = match access {
        AnalyticsAccess::Open => return Ok(()),
        AnalyticsAccess::Off => return Err(ApiError::AnalyticsOff),
        AnalyticsAccess::Token(digest) => digest,
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(credential);
    let matches = |token: &str| {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        bool::from(digest.ct_eq(&expected))
    };
    match presented {
        Some(token) if matches(&token) => Ok(()),
        _ => {
            metrics::counter!(ops::AUTH_REFUSALS, "reason" => "analytics_credential").increment(1);
            Err(ApiError::AnalyticsLogin)
        }
    }
}

/// The token from `Bearer <token>`, or the password from `Basic base64(user:password)`.
fn credential(header: &str) -> Option<String> {
    let (scheme, value) = header.split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(value.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(value).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_, password) = decoded.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

/// `[since, until)` as instants at midnight UTC. Defaults: until the end of today, since twelve weeks before.
fn window_bounds(
    since: Option<&str>,
    until: Option<&str>,
    today: Date,
) -> Result<(OffsetDateTime, OffsetDateTime), ApiError> {
    let parse = |text: &str, key: &str| {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        Date::parse(text, &format).map_err(|_| ApiError::BadRequest(format!("`{key}` must be a date, YYYY-MM-DD")))
    };
    let until = match until {
        Some(text) => parse(text, "until")?,
        None => today.next_day().unwrap_or(today),
    };
    let since = match since {
        Some(text) => parse(text, "since")?,
        None => until - Duration::weeks(DEFAULT_WEEKS),
    };
    if since >= until {
        return Err(ApiError::BadRequest("`since` must be before `until`".to_string()));
    }
    if (until - since).whole_days() > MAX_DAYS {
        return Err(ApiError::BadRequest(format!(
            "the window may span at most {MAX_DAYS} days"
        )));
    }
    let midnight = |d: Date| d.with_time(Time::MIDNIGHT).assume_utc();
    Ok((midnight(since), midnight(until)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn windows() {
        let today = date!(2026 - 11 - 30);
        let (since, until) = window_bounds(None, None, today).unwrap();
        assert_eq!(until.date(), date!(2026 - 12 - 01));
        assert_eq!(since.date(), date!(2026 - 09 - 08));
        let (since, until) = window_bounds(Some("2026-01-01"), Some("2026-02-01"), today).unwrap();
        assert_eq!(
            (since.date(), until.date()),
            (date!(2026 - 01 - 01), date!(2026 - 02 - 01))
        );
        for (since, until) in [
            (Some("2026-02-01"), Some("2026-01-01")),
            (Some("2026-13-01"), None),
            (Some("2000-01-01"), Some("2026-01-01")),
            (Some("yesterday"), None),
        ] {
            assert!(window_bounds(since, until, today).is_err(), "{since:?} {until:?}");
        }
    }

    #[test]
    fn tenants() {
        assert_eq!(tenant("hospital-a".to_string()).unwrap(), "hospital-a");
        assert_eq!(
            tenant("é <b>".to_string()).unwrap(),
            "é <b>",
            "escaped where shown, not refused"
        );
        for bad in [String::new(), "a\nb".to_string(), "x".repeat(MAX_TENANT_CHARS + 1)] {
            assert!(tenant(bad.clone()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials() {
        assert_eq!(credential("Bearer abc").as_deref(), Some("abc"));
        // "anyone:s3cret"
        assert_eq!(credential("Basic YW55b25lOnMzY3JldA==").as_deref(), Some("s3cret"));
        assert_eq!(credential("Basic !!!"), None);
        assert_eq!(credential("Digest x"), None);
        let digest: [u8; 32] = Sha256::digest(b"s3cret").into();
        let mut headers = HeaderMap::new();
        assert!(allowed(AnalyticsAccess::Token(digest), &headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(allowed(AnalyticsAccess::Token(digest), &headers).is_ok());
        assert!(allowed(AnalyticsAccess::Off, &headers).is_err());
        headers.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(allowed(AnalyticsAccess::Token(digest), &headers).is_err());
    }
}

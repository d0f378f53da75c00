//! Who may call: CDS Hooks 2.0 "Trusting CDS Clients". Every call carries a JWT signed by the EHR; this module
//! decides whether to believe it.
//!
//! Why it is strict: a hook request names a FHIR server and hands over a token for it, and the cards steer an
//! order. A forged or replayed call could make the service fetch from anywhere, or could feed it a made-up
//! record. So the checks follow the spec and its security advice to the letter: a trusted issuer, a key of
//! that issuer found by `kid`, an algorithm of that key's family (never `none`, never HMAC), the exact URL
//! called as `aud`, a short life, and a `jti` never seen before. A rejection says nothing to the caller (401);
//! the log says why, with the issuer and `kid`, never the token.
//!
//! Keys come from configuration (inline or a file) and from the issuer's JWKS URL, fetched on demand, cached,
//! and refetched at most once per [`REFRESH_INTERVAL`] when an unknown `kid` arrives. A token's `jku` header
//! is only accepted when it is exactly the configured JWKS URL or one of the client's listed `jku` URLs (Oracle
//! Health publishes such a list), and then its keys come from that URL; no other URL is ever fetched.
//!
//! Real EHRs differ from the sandbox in ways a deployment must be able to say, per client and never for
//! another client: Epic's `aud` is whatever the health system typed in when it registered the service, so a
//! client may list accepted [`TrustOptions::audiences`]; its `iss` is the organisation's FHIR base, so a client
//! may require the request's `fhirServer` to be its issuer ([`TrustOptions::fhir_server_is_issuer`]).

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use reqwest::Url;
use serde::Deserialize;

use crate::fetch::{Allowlist, read_capped};
use crate::tenant::Tenant;

/// Clock skew tolerated on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: u64 = 30;
/// Tokens must not live longer than this, from `iat` to `exp`, nor expire later than this from now (the spec
/// recommends five minutes; the sandbox and common EHRs use five). This also bounds how long a `jti` is kept.
pub const MAX_LIFETIME_SECONDS: u64 = 10 * 60;
/// An unknown `kid` triggers a JWKS fetch at most this often per issuer.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Fetched keys are refetched after this long, so that removed keys stop working.
pub const KEYS_TTL: Duration = Duration::from_secs(60 * 60);
/// While the JWKS URL cannot be reached, fetched keys stay usable up to this age, then no longer.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// `jti`s remembered at once (about 40 bytes each): with ten-minute tokens, enough for 1,600 requests a second
/// sustained. When full of unexpired entries, new tokens are refused (fail closed).
pub const REPLAY_CAPACITY: usize = 1_000_000;
/// How long a signed call waits for the shared `jti` cache (PostgreSQL) before judging by this process's alone.
pub const SHARED_REPLAY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long the shared `jti` cache is left alone after it failed to answer.
pub const SHARED_REPLAY_REST: Duration = Duration::from_secs(10);
const JWKS_TIMEOUT: Duration = Duration::from_secs(3);
const JWKS_MAX_BYTES: usize = 256 * 1024;

/// An EHR the service trusts, from configuration.
#[derive(Debug)]
pub struct TrustedClient {
    pub issuer: String,
    /// The issuer's JWKS URL: fetched for unknown `kid`s when a token names no `jku`; always an accepted `jku`.
    pub jwks_url: Option<Url>,
    /// Keys given in configuration (inline or a file).
    pub keys: JwkSet,
    pub algorithms: Vec<Algorithm>,
    /// When set, tokens must carry this `tenant` claim (the single-tenant form, `tenant = "…"`).
    pub tenant: Option<String>,
    /// `[[client.tenants]]`: when not empty, a token's `tenant` claim must be one of these ids, and chooses the
    /// policy its call runs under ([`Verified::tenant`]).
    pub tenants: Vec<Arc<Tenant>>,
    /// FHIR servers this client may name.
    pub fhir: Allowlist,
    /// What this client's tokens may look like beyond the spec's defaults.
    pub options: TrustOptions,
    /// Fetched key sets, one per URL this client's keys may come from (`jwks_url` and each `jku`): a fixed set,
    /// so what a token names can never add an entry.
    remote: HashMap<String, RemoteKeys>,
}

/// Per-client departures from the spec's defaults, each off unless configured. None widens another client's
/// trust: they are consulted only once the token's `iss` has chosen this client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustOptions {
    /// `aud` values accepted besides the URL called (Epic sends the value entered at registration).
    pub audiences: Vec<String>,
    /// `jku` URLs accepted besides `jwks_url`; a token that names one has its keys fetched from it.
    pub jku: Vec<Url>,
    /// The request's `fhirServer`, when given, must be the token's issuer (Epic: `iss` is the FHIR base URL).
    pub fhir_server_is_issuer: bool,
}

impl TrustedClient {
    pub fn new(
        issuer: String,
        jwks_url: Option<Url>,
        keys: JwkSet,
        algorithms: Vec<Algorithm>,
        tenant: Option<String>,
        fhir: Allowlist,
    ) -> Self {
        let remote = jwks_url
            .iter()
            .map(|url| (url.as_str().to_string(), RemoteKeys::default()))
            .collect();
        TrustedClient {
            issuer,
            jwks_url,
            keys,
            algorithms,
            tenant,
            tenants: Vec::new(),
            fhir,
            options: TrustOptions::default(),
            remote,
        }
    }

    /// The same client with these options.
    pub fn with_options(mut self, options: TrustOptions) -> Self {
        for url in &options.jku {
            self.remote.entry(url.as_str().to_string()).or_default();
        }
        self.options = options;
        self
    }

    /// The same client with these tenants (`[[client.tenants]]`).
    pub fn with_tenants(mut self, tenants: Vec<Tenant>) -> Self {
        self.tenants = tenants.into_iter().map(Arc::new).collect();
        self
    }

    /// Whether `jku` (a token header's value) is one this client publishes keys at; the URL to fetch if so.
    fn key_url(&self, jku: &str) -> Option<&Url> {
        let jku = Url::parse(jku).ok()?;
        self.jwks_url
            .iter()
            .chain(&self.options.jku)
            .find(|url| url.as_str() == jku.as_str())
    }
}

#[derive(Debug, Default)]
struct RemoteKeys {
    /// The last fetched set and when it was fetched.
    set: RwLock<Option<(Arc<JwkSet>, Instant)>>,
    /// When the last fetch was attempted; held across a fetch so concurrent requests wait for one fetch.
    last_attempt: tokio::sync::Mutex<Option<Instant>>,
}

/// Why a token was refused. For the log only: the caller gets a bare 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no bearer token")]
    MissingToken,
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("header typ is not JWT")]
    NotJwt,
    #[error("header has no kid")]
    NoKid,
    #[error("issuer is not trusted")]
    UnknownIssuer,
    #[error("algorithm is not allowed for this issuer")]
    Algorithm,
    #[error("jku is not one of this issuer's JWKS URLs")]
    Jku,
    #[error("no key with this kid")]
    UnknownKey,
    #[error("the issuer's keys could not be fetched")]
    KeysUnavailable,
    #[error("the key does not fit the algorithm")]
    KeyMismatch,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("not yet valid (nbf)")]
    NotYetValid,
    #[error("issued in the future (iat)")]
    IssuedInFuture,
    #[error("lifetime longer than allowed")]
    TooLong,
    #[error("aud is not the URL called")]
    Audience,
    #[error("a required claim is missing or malformed")]
    Claims,
    #[error("tenant does not match")]
    Tenant,
    #[error("tenant is not one listed for this issuer")]
    TenantNotListed,
    #[error("jti already used")]
    Replay,
    #[error("too many live tokens to remember")]
    ReplayCacheFull,
}

impl AuthError {
    /// A fixed, short name for the reason: a metrics label (a closed set, never caller text).
    pub fn label(self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::Malformed => "malformed",
            AuthError::NotJwt => "not_jwt",
            AuthError::NoKid => "no_kid",
            AuthError::UnknownIssuer => "unknown_issuer",
            AuthError::Algorithm => "algorithm",
            AuthError::Jku => "jku",
            AuthError::UnknownKey => "unknown_key",
            AuthError::KeysUnavailable => "keys_unavailable",
            AuthError::KeyMismatch => "key_mismatch",
            AuthError::Signature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::TooLong => "too_long",
            AuthError::Audience => "audience",
            AuthError::Claims => "claims",
            AuthError::Tenant => "tenant",
            AuthError::TenantNotListed => "tenant_not_listed",
            AuthError::Replay => "replay",
            AuthError::ReplayCacheFull => "replay_cache_full",
        }
    }
}

/// A refusal with what may be logged about it.
#[derive(Debug)]
pub struct Rejection {
    pub reason: AuthError,
    pub issuer: Option<String>,
    pub kid: Option<String>,
    /// For an [`AuthError::Audience`] refusal: what was expected and what the token said, the one mistake a
    /// person setting up an EHR cannot see from the other side.
    pub audience: Option<AudienceMismatch>,
    /// For an [`AuthError::TenantNotListed`] refusal: the token's `tenant` claim when it is a string (caller
    /// text, escaped and truncated when logged), so that an operator sees which tenant to list.
    pub tenant: Option<Box<str>>,
}

/// The accepted `aud` values and the token's. URLs and registration values are configuration, not patient
/// data; they are still caller text, escaped and truncated when logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceMismatch {
    pub expected: Vec<String>,
    pub received: Vec<String>,
}

impl AudienceMismatch {
    /// A hint for the most common mistake: the token names this very path at another origin (the EHR calls the
    /// service as `localhost`, or on another port, than `public_base_url` says). The origin is returned.
    pub fn other_origin(&self) -> Option<String> {
        self.received.iter().find_map(|received| {
            let received = Url::parse(received).ok()?;
            self.expected.iter().find_map(|expected| {
                let expected = Url::parse(expected).ok()?;
                (received.path() == expected.path() && received.origin() != expected.origin())
                    .then(|| received.origin().ascii_serialization())
            })
        })
    }
}

/// An accepted token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub client: Arc<TrustedClient>,
    pub jti: String,
    /// The tenant the token's `tenant` claim chose among the client's `[[client.tenants]]`; `None` when the
    /// client lists none (its calls run under the global policy).
    pub tenant: Option<Arc<Tenant>>,
}

impl Verified {
    /// The tenant the card log records: the chosen tenant's id, or the client's single `tenant`.
    pub fn tenant_id(&self) -> Option<&str> {
        match &self.tenant {
            Some(tenant) => Some(&tenant.id),
            None => self.client.tenant.as_deref(),
        }
    }
}

/// The claims the service checks itself, besides those jsonwebtoken checks (`iss`, `aud`). `iat` and `jti` are
/// required here because jsonwebtoken cannot require them; `exp` and `nbf` are compared here with the `now` the
/// caller passes, because jsonwebtoken would compare them with the wall clock.
#[derive(Deserialize)]
struct Claims {
    exp: f64,
    #[serde(default)]
    nbf: Option<f64>,
    iat: f64,
    jti: String,
    #[serde(default)]
    tenant: Option<serde_json::Value>,
}

/// Checks tokens for a set of trusted clients.
#[derive(Debug)]
pub struct Verifier {
    clients: Vec<Arc<TrustedClient>>,
    /// The service's public base URL, without a trailing slash; `aud` is this plus the path called.
    base_url: String,
    http: reqwest::Client,
    replay: Mutex<ReplayCache>,
    /// The `jti` cache shared by several instances (PostgreSQL), consulted after this process's own; set once at
    /// start by [`Verifier::share_replay_cache`].
    shared_replay: OnceLock<crate::store::Store>,
    /// Rate limit of the warning when the shared cache does not answer.
    shared_replay_errors: Mutex<crate::logsafe::Occasional>,
    /// After the shared cache failed to answer, it is not asked again until this instant, so that an outage
    /// costs each signed call nothing rather than [`SHARED_REPLAY_TIMEOUT`].
    shared_replay_resting: Mutex<Option<Instant>>,
    /// Rate limit of the detailed `aud` refusal line (see [`crate::http`]): per verifier, so one deployment's
    /// (or one test's) refusals never silence another's.
    pub audience_diagnostics: Mutex<crate::logsafe::Occasional>,
}

impl Verifier {
    pub fn new(clients: Vec<TrustedClient>, base_url: &str, http: reqwest::Client) -> Self {
        Verifier {
            clients: clients.into_iter().map(Arc::new).collect(),
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
            replay: Mutex::new(ReplayCache::new(REPLAY_CAPACITY)),
            shared_replay: OnceLock::new(),
            shared_replay_errors: Mutex::new(crate::logsafe::Occasional::new()),
            shared_replay_resting: Mutex::new(None),
            audience_diagnostics: Mutex::new(crate::logsafe::Occasional::new()),
        }
    }

    /// The `aud` a token for this request path must carry.
    pub fn audience(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    /// The service's public base URL, which EHRs must call.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every `aud` accepted from `client` on `path`: the URL called; for feedback also the service's own URL
    /// (EHRs differ in which they sign for); and the client's configured audiences.
    fn audiences(&self, client: &TrustedClient, path: &str) -> Vec<String> {
        let mut accepted = vec![self.audience(path)];
        if let Some(service) = path.strip_suffix("/feedback")
            && service.starts_with("/cds-services/")
        {
            accepted.push(self.audience(service));
        }
        accepted.extend(client.options.audiences.iter().cloned());
        accepted
    }

    /// Checks every `jti` in `store` as well (after this process's cache), so that a token replayed to another
    /// instance sharing the store is refused. Only the first call has an effect.
    ///
    /// When the store does not answer within [`SHARED_REPLAY_TIMEOUT`], the token is judged by this process's
    /// cache alone, with a warning and `cds_store_errors_total{operation="replay"}`, and the store is left alone
    /// for [`SHARED_REPLAY_REST`] (calls meanwhile are judged the same way, without waiting): a database outage
    /// must neither refuse nor slow every EHR call, and replays to the same instance are still refused.
    pub fn share_replay_cache(&self, store: crate::store::Store) {
        let _ = self.shared_replay.set(store);
    }

    /// Entries in the replay cache (for metrics).
    pub fn replay_cache_len(&self) -> usize {
        self.replay.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(|c| c.issuer.as_str())
    }

    /// Every listed tenant of every client.
    pub fn tenants(&self) -> impl Iterator<Item = &Tenant> {
        self.clients.iter().flat_map(|c| c.tenants.iter().map(|t| &**t))
    }

    /// Verifies a token for a call to `path`, at `now` (seconds since the epoch).
    #[allow(clippy::too_many_lines)] // the checks in the order they must run (header, key, signature, claims,
    // replay), each a few lines ending in its own refusal reason; read top to bottom as the trust model
    pub async fn verify(&self, token: &str, path: &str, now: u64) -> Result<Verified, Rejection> {
        let mut rejection = Rejection {
            reason: AuthError::Malformed,
            issuer: None,
            kid: None,
            audience: None,
            tenant: None,
        };
        let reject = |mut r: Rejection, reason| {
            r.reason = reason;
            Err(r)
        };
        let Ok(header) = jsonwebtoken::decode_header(token) else {
            return reject(rejection, AuthError::Malformed);
        };
        rejection.kid = header.kid.as_ref().map(|k| truncate(k));
        // Read as a whole JSON value, not only `iss`: that checks every string in the claims is text (RFC 7519
        // 7.2: claims that are not UTF-8 JSON are refused), where a struct would skip unread claims unchecked.
        let Ok(unverified @ serde_json::Value::Object(_)) =
            jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
        else {
            return reject(rejection, AuthError::Malformed);
        };
        let unverified_issuer = match unverified.get("iss") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(iss)) => Some(iss.as_str()),
            Some(_) => return reject(rejection, AuthError::Malformed),
        };
        rejection.issuer = unverified_issuer.map(truncate);
        // RFC 7519 4.1.5: `nbf`, when present, is a NumericDate; `"nbf": null` is not one, and must not read as
        // "no nbf" (the struct below would take it so).
        if unverified.get("nbf").is_some_and(|nbf| !nbf.is_number()) {
            return reject(rejection, AuthError::Malformed);
        }
        if !header.typ.as_deref().is_some_and(|t| t.eq_ignore_ascii_case("JWT")) {
            return reject(rejection, AuthError::NotJwt);
        }
        // RFC 7515 4.1.11: a token that marks an extension critical must be refused by a receiver that does
        // not understand it, and this one understands none.
        if header.crit.is_some() {
            return reject(rejection, AuthError::Malformed);
        }
        let Some(kid) = header.kid.as_deref() else {
            return reject(rejection, AuthError::NoKid);
        };
        let Some(client) = unverified_issuer.and_then(|iss| self.clients.iter().find(|c| c.issuer == iss)) else {
            return reject(rejection, AuthError::UnknownIssuer);
        };
        let alg = header.alg;
        if alg.family() == AlgorithmFamily::Hmac || !client.algorithms.contains(&alg) {
            return reject(rejection, AuthError::Algorithm);
        }
        // The keys come from the `jku` the token names when it is one of the client's, else from `jwks_url`.
        let key_url = match header.jku.as_deref() {
            Some(jku) => match client.key_url(jku) {
                Some(url) => Some(url),
                None => return reject(rejection, AuthError::Jku),
            },
            None => client.jwks_url.as_ref(),
        };
        let jwk = match self.find_key(client, kid, key_url).await {
            Ok(jwk) => jwk,
            Err(reason) => return reject(rejection, reason),
        };
        if !key_fits(&jwk, alg) {
            return reject(rejection, AuthError::KeyMismatch);
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            return reject(rejection, AuthError::KeyMismatch);
        };
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECONDS;
        // Checked below, against `now`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let audiences = self.audiences(client, path);
        validation.set_audience(&audiences);
        validation.set_issuer(&[&client.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let claims = match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                let reason = match e.kind() {
                    ErrorKind::InvalidSignature => AuthError::Signature,
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidAudience => {
                        rejection.audience = Some(AudienceMismatch {
                            expected: audiences,
                            received: received_audiences(&unverified),
                        });
                        AuthError::Audience
                    }
                    ErrorKind::InvalidIssuer => AuthError::UnknownIssuer,
                    ErrorKind::InvalidAlgorithm => AuthError::Algorithm,
                    ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) | ErrorKind::InvalidKeyFormat => {
                        AuthError::KeyMismatch
                    }
                    ErrorKind::MissingRequiredClaim(_) | ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => {
                        AuthError::Claims
                    }
                    _ => AuthError::Malformed,
                };
                return reject(rejection, reason);
            }
        };
        let now_f = now as f64;
        let leeway = LEEWAY_SECONDS as f64;
        if claims.exp + leeway < now_f {
            return reject(rejection, AuthError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now_f + leeway) {
            return reject(rejection, AuthError::NotYetValid);
        }
        if claims.iat > now_f + LEEWAY_SECONDS as f64 {
            return reject(rejection, AuthError::IssuedInFuture);
        }
        let longest = (MAX_LIFETIME_SECONDS + LEEWAY_SECONDS) as f64;
        if claims.exp > now_f + longest || claims.exp - claims.iat > longest {
            return reject(rejection, AuthError::TooLong);
        }
        if claims.jti.is_empty() {
            return reject(rejection, AuthError::Claims);
        }
        let claimed = claims.tenant.as_ref().and_then(|t| t.as_str());
        if let Some(tenant) = &client.tenant
            && claimed != Some(tenant.as_str())
        {
            return reject(rejection, AuthError::Tenant);
        }
        // With listed tenants, the claim must name one of them exactly; it chooses the call's policy.
        let tenant = if client.tenants.is_empty() {
            None
        } else {
            match claimed.and_then(|id| client.tenants.iter().find(|t| t.id == id)) {
                Some(tenant) => Some(tenant.clone()),
                None => {
                    rejection.tenant = claimed.map(|t| truncate(t).into_boxed_str());
                    return reject(rejection, AuthError::TenantNotListed);
                }
            }
        };
        let remember_until = claims.exp as u64 + LEEWAY_SECONDS;
        let fresh = self
            .replay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(&client.issuer, &claims.jti, remember_until, now);
        if let Err(reason) = fresh {
            return reject(rejection, reason);
        }
        if let Some(store) = self.shared_replay.get()
            && !self
                .fresh_in_shared_store(store, &client.issuer, &claims.jti, remember_until, now)
                .await
        {
            return reject(rejection, AuthError::Replay);
        }
        Ok(Verified {
            client: client.clone(),
            jti: truncate(&claims.jti),
            tenant,
        })
    }

    /// `false` only when the shared store says the `jti` was used (by any instance); see
    /// [`Verifier::share_replay_cache`] for when it does not answer.
    async fn fresh_in_shared_store(
        &self,
        store: &crate::store::Store,
        issuer: &str,
        jti: &str,
        until: u64,
        now: u64,
    ) -> bool {
        let resting = self
            .shared_replay_resting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|until| Instant::now() < until);
        if resting {
            metrics::counter!(crate::ops::metrics::STORE_ERRORS, "operation" => "replay").increment(1);
            return true;
        }
        let started = Instant::now();
        let checked = tokio::time::timeout(
            SHARED_REPLAY_TIMEOUT,
            store.remember_jti(issuer, jti, until as i64, now as i64),
        )
        .await;
        metrics::histogram!(crate::ops::metrics::SHARED_REPLAY_DURATION).record(started.elapsed().as_secs_f64());
        match checked {
            Ok(Ok(fresh)) => fresh,
            failed => {
                *self.shared_replay_resting.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + SHARED_REPLAY_REST);
                metrics::counter!(crate::ops::metrics::STORE_ERRORS, "operation" => "replay").increment(1);
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {} ms", SHARED_REPLAY_TIMEOUT.as_millis()),
                };
                self.shared_replay_errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .warn(|times| {
                        tracing::warn!(
                            times,
                            %error,
                            "the shared jti cache did not answer: replay checked by this instance alone for the next 10 s"
                        )
                    });
                true
            }
        }
    }

    /// The key for `kid`: configured keys first, then the fetched set, refetching it (rate limited) when the
    /// `kid` is unknown or the set is old. A failed fetch never produces a key.
    async fn find_key(&self, client: &TrustedClient, kid: &str, url: Option<&Url>) -> Result<Jwk, AuthError> {
        if let Some(jwk) = client.keys.find(kid) {
            return Ok(jwk.clone());
        }
        let Some((url, remote)) = url.and_then(|url| Some((url, client.remote.get(url.as_str())?))) else {
            return Err(AuthError::UnknownKey);
        };
        // The key for `kid` in the fetched set, and how old that set is.
        let cached = |remote: &RemoteKeys| -> (Option<Jwk>, Duration) {
            let guard = remote.set.read().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some((set, fetched)) => (set.find(kid).cloned(), fetched.elapsed()),
                None => (None, Duration::MAX),
            }
        };
        if let (Some(jwk), age) = cached(remote)
            && age <= KEYS_TTL
        {
            return Ok(jwk);
        }
        let mut last_attempt = remote.last_attempt.lock().await;
        // Another request may have refreshed the set while this one waited.
        let (found, age) = cached(remote);
        if let Some(jwk) = &found
            && age <= KEYS_TTL
        {
            return Ok(jwk.clone());
        }
        // A key that was fetched from the issuer's own URL stays usable for a while when the URL cannot be
        // reached, but not forever: a removed key must stop working. An unknown key never becomes good.
        let stale = found.filter(|_| age <= KEYS_MAX_AGE);
        if last_attempt.is_some_and(|t| t.elapsed() < REFRESH_INTERVAL) {
            return stale.ok_or(AuthError::UnknownKey);
        }
        *last_attempt = Some(Instant::now());
        match fetch_jwks(&self.http, url).await {
            Ok(set) => {
                tracing::info!(issuer = %client.issuer, keys = set.keys.len(), "fetched JWKS");
                metrics::counter!("cds_jwks_fetches_total", "outcome" => "ok").increment(1);
                let jwk = set.find(kid).cloned();
                *remote.set.write().unwrap_or_else(|p| p.into_inner()) = Some((Arc::new(set), Instant::now()));
                jwk.ok_or(AuthError::UnknownKey)
            }
            Err(()) => {
                tracing::warn!(issuer = %client.issuer, "JWKS fetch failed");
                metrics::counter!("cds_jwks_fetches_total", "outcome" => "failed").increment(1);
                stale.ok_or(AuthError::KeysUnavailable)
            }
        }
    }
}

/// Whether a JWK may verify `alg`: same family, the matching curve, not an encryption key, and its own `alg`
/// (when it names one) equal to the token's. Symmetric (`oct`) keys never fit.
pub fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
        return false;
    }
    if let Some(key_alg) = jwk.common.key_algorithm
        && Algorithm::from_str(&key_alg.to_string()) != Ok(alg)
    {
        return false;
    }
    match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => ec.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES384) => ec.curve == EllipticCurve::P384,
        (AlgorithmParameters::RSA(_), alg) => alg.family() == AlgorithmFamily::Rsa,
        (AlgorithmParameters::OctetKeyPair(okp), Algorithm::EdDSA) => okp.curve == EllipticCurve::Ed25519,
        _ => false,
    }
}

/// Fetches a JWKS with a time-out and a size cap.
async fn fetch_jwks(http: &reqwest::Client, url: &Url) -> Result<JwkSet, ()> {
    let fetch = async {
        let mut response = http.get(url.clone()).send().await.map_err(|_| ())?;
        if !response.status().is_success() {
            return Err(());
        }
        let body = read_capped(&mut response, JWKS_MAX_BYTES).await.map_err(|_| ())?;
        serde_json::from_slice::<JwkSet>(&body).map_err(|_| ())
    };
    tokio::time::timeout(JWKS_TIMEOUT, fetch).await.map_err(|_| ())?
}

/// The token's `aud` as sent (a string or an array of strings), for the refusal's diagnostics.
fn received_audiences(claims: &serde_json::Value) -> Vec<String> {
    match claims.get("aud") {
        Some(serde_json::Value::String(aud)) => vec![truncate(aud)],
        Some(serde_json::Value::Array(auds)) => auds.iter().take(8).filter_map(|a| a.as_str().map(truncate)).collect(),
        _ => Vec::new(),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(200).collect()
}

/// `jti`s seen, per issuer, each kept until its token has expired. Entries are a keyed 64-bit hash of (issuer,
/// jti), so memory stays small and fixed per entry whatever the clients send; a collision could only refuse a
/// token, never admit one.
#[derive(Debug)]
pub struct ReplayCache {
    seen: HashMap<u64, u64>,
    hasher: std::hash::RandomState,
    capacity: usize,
}

impl ReplayCache {
    pub fn new(capacity: usize) -> Self {
        ReplayCache {
            seen: HashMap::new(),
            hasher: std::hash::RandomState::new(),
            capacity,
        }
    }

    /// Records a `jti`; `Err(Replay)` when it is already known and unexpired.
    pub fn insert(&mut self, issuer: &str, jti: &str, until: u64, now: u64) -> Result<(), AuthError> {
        use std::hash::BuildHasher;
        let key = self.hasher.hash_one((issuer, jti));
        if self.seen.get(&key).is_some_and(|&t| t >= now) {
            return Err(AuthError::Replay);
        }
        if self.seen.len() >= self.capacity {
            self.seen.retain(|_, &mut t| t >= now);
            if self.seen.len() >= self.capacity {
                return Err(AuthError::ReplayCacheFull);
            }
        }
        self.seen.insert(key, until);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_cache_forgets_expired_and_fails_closed_when_full() {
        let mut cache = ReplayCache::new(2);
        assert_eq!(cache.insert("a", "1", 100, 10), Ok(()));
        assert_eq!(cache.insert("a", "1", 100, 11), Err(AuthError::Replay));
        assert_eq!(cache.insert("b", "1", 100, 11), Ok(()), "jti is per issuer");
        assert_eq!(cache.insert("a", "2", 100, 12), Err(AuthError::ReplayCacheFull));
        assert_eq!(cache.insert("a", "2", 200, 101), Ok(()), "expired entries make room");
        assert_eq!(cache.insert("a", "1", 300, 102), Ok(()), "an expired jti is forgotten");
        assert_eq!(cache.len(), 2);
    }
}

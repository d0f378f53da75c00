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
//! is only accepted when it is exactly the configured JWKS URL; no other URL is ever fetched.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use reqwest::Url;
use serde::Deserialize;

use crate::fetch::{Allowlist, read_capped};

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
const JWKS_TIMEOUT: Duration = Duration::from_secs(3);
const JWKS_MAX_BYTES: usize = 256 * 1024;

/// An EHR the service trusts, from configuration.
#[derive(Debug)]
pub struct TrustedClient {
    pub issuer: String,
    /// The issuer's JWKS URL: fetched for unknown `kid`s, and the only `jku` accepted.
    pub jwks_url: Option<Url>,
    /// Keys given in configuration (inline or a file).
    pub keys: JwkSet,
    pub algorithms: Vec<Algorithm>,
    /// When set, tokens must carry this `tenant` claim.
    pub tenant: Option<String>,
    /// FHIR servers this client may name.
    pub fhir: Allowlist,
    remote: RemoteKeys,
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
        TrustedClient {
            issuer,
            jwks_url,
            keys,
            algorithms,
            tenant,
            fhir,
            remote: RemoteKeys::default(),
        }
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
    #[error("jku is not this issuer's JWKS URL")]
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
    #[error("jti already used")]
    Replay,
    #[error("too many live tokens to remember")]
    ReplayCacheFull,
}

/// A refusal with what may be logged about it.
#[derive(Debug)]
pub struct Rejection {
    pub reason: AuthError,
    pub issuer: Option<String>,
    pub kid: Option<String>,
}

/// An accepted token.
#[derive(Debug, Clone)]
pub struct Verified {
    pub client: Arc<TrustedClient>,
    pub jti: String,
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
}

impl Verifier {
    pub fn new(clients: Vec<TrustedClient>, base_url: &str, http: reqwest::Client) -> Self {
        Verifier {
            clients: clients.into_iter().map(Arc::new).collect(),
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
            replay: Mutex::new(ReplayCache::new(REPLAY_CAPACITY)),
        }
    }

    /// The `aud` a token for this request path must carry.
    pub fn audience(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(|c| c.issuer.as_str())
    }

    /// Verifies a token for a call to `path`, at `now` (seconds since the epoch).
    pub async fn verify(&self, token: &str, path: &str, now: u64) -> Result<Verified, Rejection> {
        let mut rejection = Rejection {
            reason: AuthError::Malformed,
            issuer: None,
            kid: None,
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
        if let Some(jku) = header.jku.as_deref() {
            let configured = client.jwks_url.as_ref().map(Url::as_str);
            if Url::parse(jku).ok().as_ref().map(Url::as_str) != configured || configured.is_none() {
                return reject(rejection, AuthError::Jku);
            }
        }
        let jwk = match self.find_key(client, kid).await {
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
        validation.set_audience(&[self.audience(path)]);
        validation.set_issuer(&[&client.issuer]);
        validation.set_required_spec_claims(&["exp", "aud", "iss"]);
        let claims = match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
            Ok(data) => data.claims,
            Err(e) => {
                let reason = match e.kind() {
                    ErrorKind::InvalidSignature => AuthError::Signature,
                    ErrorKind::ExpiredSignature => AuthError::Expired,
                    ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                    ErrorKind::InvalidAudience => AuthError::Audience,
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
        if let Some(tenant) = &client.tenant
            && claims.tenant.as_ref().and_then(|t| t.as_str()) != Some(tenant.as_str())
        {
            return reject(rejection, AuthError::Tenant);
        }
        let remember_until = claims.exp as u64 + LEEWAY_SECONDS;
        let fresh = self
            .replay
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(&client.issuer, &claims.jti, remember_until, now);
        if let Err(reason) = fresh {
            return reject(rejection, reason);
        }
        Ok(Verified {
            client: client.clone(),
            jti: truncate(&claims.jti),
        })
    }

    /// The key for `kid`: configured keys first, then the fetched set, refetching it (rate limited) when the
    /// `kid` is unknown or the set is old. A failed fetch never produces a key.
    async fn find_key(&self, client: &TrustedClient, kid: &str) -> Result<Jwk, AuthError> {
        if let Some(jwk) = client.keys.find(kid) {
            return Ok(jwk.clone());
        }
        let Some(url) = &client.jwks_url else {
            return Err(AuthError::UnknownKey);
        };
        // The key for `kid` in the fetched set, and how old that set is.
        let cached = |client: &TrustedClient| -> (Option<Jwk>, Duration) {
            let guard = client.remote.set.read().unwrap_or_else(|p| p.into_inner());
            match guard.as_ref() {
                Some((set, fetched)) => (set.find(kid).cloned(), fetched.elapsed()),
                None => (None, Duration::MAX),
            }
        };
        if let (Some(jwk), age) = cached(client)
            && age <= KEYS_TTL
        {
            return Ok(jwk);
        }
        let mut last_attempt = client.remote.last_attempt.lock().await;
        // Another request may have refreshed the set while this one waited.
        let (found, age) = cached(client);
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
                let jwk = set.find(kid).cloned();
                *client.remote.set.write().unwrap_or_else(|p| p.into_inner()) = Some((Arc::new(set), Instant::now()));
                jwk.ok_or(AuthError::UnknownKey)
            }
            Err(()) => {
                tracing::warn!(issuer = %client.issuer, "JWKS fetch failed");
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

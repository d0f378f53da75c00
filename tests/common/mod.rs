//! Shared helpers: the real router with a fixed "today", and one-call request helpers.
#![allow(dead_code)]

pub mod chromium;
pub mod fhir_server;
pub mod process;
pub mod sandbox;
pub mod store;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use dry_needling_cds::{AppState, Knowledge, app};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The date the fixtures are written against.
pub const TODAY: time::Date = time::macros::date!(2026 - 11 - 23);
pub const SELECT: &str = "/cds-services/dry-needling-order-select";
pub const SIGN: &str = "/cds-services/dry-needling-order-sign";

pub fn state() -> AppState {
    let mut state = AppState::new(Knowledge::embedded().expect("embedded content"));
    state.today = Some(TODAY);
    state
}

/// A valid token of the test issuer (`fixtures/auth/`, TEST-ONLY ES384 key `test-es384`): five minutes of
/// life, for `aud`, with this `jti`.
pub fn es384_token(aud: &str, jti: &str) -> String {
    es384_token_with(aud, jti, serde_json::json!({}))
}

/// [`es384_token`] with these claims added (a `tenant`, say).
pub fn es384_token_with(aud: &str, jti: &str, extra: Value) -> String {
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/auth/es384-private.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = serde_json::json!({"iss": "https://ehr.test.example", "aud": aud, "iat": now, "exp": now + 300,
        "jti": jti});
    for (name, value) in extra.as_object().into_iter().flatten() {
        claims[name] = value.clone();
    }
    let header = jsonwebtoken::Header {
        kid: Some("test-es384".to_string()),
        ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384)
    };
    jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

pub fn fixture(path: &str) -> Vec<u8> {
    let full = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, String::from_utf8_lossy(&self.bytes)))
    }
}

pub async fn send_with(state: AppState, request: Request<Body>) -> Reply {
    let response = app(state).oneshot(request).await.expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    Reply { status, headers, bytes }
}

pub async fn send(request: Request<Body>) -> Reply {
    send_with(state(), request).await
}

pub async fn post(uri: &str, body: impl Into<Body>) -> Reply {
    let request = Request::post(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(request).await
}

pub async fn get(uri: &str) -> Reply {
    send(Request::get(uri).body(Body::empty()).unwrap()).await
}

/// The service id for a request's hook.
pub fn path_for(body: &[u8]) -> &'static str {
    let value: Value = serde_json::from_slice(body).expect("fixture is JSON");
    match value["hook"].as_str() {
        Some("order-sign") => SIGN,
        _ => SELECT,
    }
}

/// Cards without their random uuids, for comparing two answers.
pub fn without_uuids(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("uuid");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

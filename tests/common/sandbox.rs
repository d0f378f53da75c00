//! What the real CDS Hooks sandbox needs around it in a test: its production build (`tests/vendor/cds-hooks-sandbox/`, a copy of `../shared/sandbox/app/`)
//! served as static files, and a FHIR R4 server the browser can reach (CORS on) holding one real patient from an
//! NDJSON file (`fixtures/sandbox/`, copied from `../shared/fhir-samples/`): `metadata`, `Patient` (search and read), and every type's search as
//! the sandbox sends it (`GET {type}?patient=…` and `POST {type}/_search` with a form body). Both log the paths
//! they served.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// The sandbox's build folder.
pub fn app_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vendor/cds-hooks-sandbox")
}

/// Serves a folder's files (GET only; `/` is `index.html`; nothing outside the folder).
pub async fn serve_static(dir: PathBuf) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().fallback(get(move |uri: Uri| {
        let dir = dir.clone();
        async move { file(&dir, uri.path()) }
    }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    address
}

fn file(dir: &Path, path: &str) -> Response {
    let relative = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    if relative.split('/').any(|part| part == ".." || part.is_empty()) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Ok(bytes) = std::fs::read(dir.join(relative)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let content_type = match relative.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("json") | Some("map") => "application/json",
        Some("png") => "image/png",
        Some("css") => "text/css",
        _ => "text/plain; charset=utf-8",
    };
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

#[derive(Clone)]
struct Patient {
    id: String,
    by_type: Arc<HashMap<String, Vec<Value>>>,
    log: Arc<Mutex<Vec<String>>>,
}

/// A FHIR R4 server with one patient.
pub struct PatientServer {
    pub address: SocketAddr,
    pub patient_id: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl PatientServer {
    /// Serves the resources of an NDJSON file (one patient's: its first Patient is the patient).
    pub async fn start(ndjson: &Path) -> PatientServer {
        let text = std::fs::read_to_string(ndjson).unwrap_or_else(|e| panic!("{}: {e}", ndjson.display()));
        let mut by_type: HashMap<String, Vec<Value>> = HashMap::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let resource: Value = serde_json::from_str(line).unwrap();
            let kind = resource["resourceType"].as_str().unwrap().to_string();
            by_type.entry(kind).or_default().push(resource);
        }
        let patient_id = by_type["Patient"][0]["id"].as_str().unwrap().to_string();
        let state = Patient {
            id: patient_id.clone(),
            by_type: Arc::new(by_type),
            log: Arc::default(),
        };
        let log = state.log.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/fhir/metadata", get(metadata))
            .route("/fhir/{kind}", get(search_get))
            .route("/fhir/{kind}/_search", post(search_post))
            .route("/fhir/{kind}/{id}", get(read))
            .with_state(state)
            .layer(tower_http::cors::CorsLayer::permissive());
        tokio::spawn(async move { axum::serve(listener, app).await });
        PatientServer {
            address,
            patient_id,
            log,
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}/fhir", self.address)
    }

    /// `GET metadata`, `POST Condition/_search`, …: what was asked, in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn fhir(value: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/fhir+json")], value.to_string()).into_response()
}

async fn metadata(State(state): State<Patient>) -> Response {
    state.log.lock().unwrap().push("GET metadata".to_string());
    fhir(json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [{"mode": "server"}],
    }))
}

async fn read(State(state): State<Patient>, UrlPath((kind, id)): UrlPath<(String, String)>) -> Response {
    state.log.lock().unwrap().push(format!("GET {kind}/{id}"));
    let found = state
        .by_type
        .get(&kind)
        .and_then(|all| all.iter().find(|r| r["id"] == id.as_str()));
    match found {
        Some(resource) => fhir(resource.clone()),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            json!({"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found"}]})
                .to_string(),
        )
            .into_response(),
    }
}

async fn search_get(
    State(state): State<Patient>,
    UrlPath(kind): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    state.log.lock().unwrap().push(format!("GET {kind}"));
    search(&state, &kind, &query)
}

async fn search_post(State(state): State<Patient>, UrlPath(kind): UrlPath<String>, body: Bytes) -> Response {
    state.log.lock().unwrap().push(format!("POST {kind}/_search"));
    let query: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    search(&state, &kind, &query)
}

/// Every resource of the type when the search names the patient (or, for `Patient`, names nothing else).
fn search(state: &Patient, kind: &str, query: &HashMap<String, String>) -> Response {
    let patient = query.get("patient").or_else(|| query.get("subject"));
    let matches = match patient {
        Some(p) => p.trim_start_matches("Patient/") == state.id,
        None => kind == "Patient" && query.get("_id").is_none_or(|id| *id == state.id),
    };
    let entries: Vec<Value> = if matches {
        state
            .by_type
            .get(kind)
            .into_iter()
            .flatten()
            .map(|r| {
                json!({"fullUrl": format!("{kind}/{}", r["id"].as_str().unwrap_or("")), "resource": r,
                "search": {"mode": "match"}})
            })
            .collect()
    } else {
        Vec::new()
    };
    fhir(json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries}))
}

//! A real HTTP FHIR server on loopback for tests and benchmarks: it serves a fixture patient's searches
//! (`{Type}?patient={id}`, with `_include={Type}:medication` adding the Medications a page's entries reference),
//! with injectable latency, faults and pagination, and logs what it received.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::{Value, json};

/// What a search answers instead of its data.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Status(u16),
    /// Not JSON at all.
    Malformed,
    /// JSON, but a Patient instead of a Bundle.
    NotABundle,
    /// An OperationOutcome with an error, status 200 (some servers do this).
    Outcome,
    /// A valid Bundle of this many bytes or more.
    Huge(usize),
    /// A redirect to this URL.
    Redirect(String),
    /// A Bundle whose `next` link points to this origin.
    NextTo(String),
    /// A Bundle with one malformed entry among the real ones.
    BadEntry,
}

#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Delay before every answer.
    pub latency: Duration,
    /// Faults by resource type.
    pub faults: HashMap<String, Fault>,
    /// Entries per page; `None` = everything on one page.
    pub page_size: Option<usize>,
}

/// One request the server received.
#[derive(Debug, Clone)]
pub struct Logged {
    pub resource_type: String,
    pub query: HashMap<String, String>,
    pub authorization: Option<String>,
    pub accept: Option<String>,
}

#[derive(Clone)]
struct Shared {
    patient_id: String,
    /// Entries by resource type.
    data: Arc<HashMap<String, Vec<Value>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    log: Arc<Mutex<Vec<Logged>>>,
    origin: String,
}

pub struct FhirServer {
    pub address: SocketAddr,
    pub behaviour: Arc<Mutex<Behaviour>>,
    log: Arc<Mutex<Vec<Logged>>>,
    connections: Arc<AtomicUsize>,
}

impl FhirServer {
    /// The origin, e.g. `http://127.0.0.1:41234`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The FHIR base URL to put in `fhirServer`.
    pub fn base(&self) -> String {
        format!("{}/fhir", self.origin())
    }

    pub fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn set(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.behaviour.lock().unwrap());
    }

    /// Serves the prefetch of a hook request fixture as the patient's data.
    pub async fn start(hook_request: &[u8]) -> FhirServer {
        let request: Value = serde_json::from_slice(hook_request).expect("a hook request");
        let patient_id = request["context"]["patientId"].as_str().unwrap_or_default().to_string();
        let mut data: HashMap<String, Vec<Value>> = HashMap::new();
        if let Some(prefetch) = request["prefetch"].as_object() {
            for value in prefetch.values() {
                for entry in value["entry"].as_array().into_iter().flatten() {
                    let resource = &entry["resource"];
                    if let Some(t) = resource["resourceType"].as_str() {
                        data.entry(t.to_string()).or_default().push(resource.clone());
                    }
                }
            }
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        let listener = listener.tap_io(move |_| {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let shared = Shared {
            patient_id,
            data: Arc::new(data),
            behaviour: Arc::default(),
            log: Arc::default(),
            origin: format!("http://{address}"),
        };
        let server = FhirServer {
            address,
            behaviour: shared.behaviour.clone(),
            log: shared.log.clone(),
            connections,
        };
        // CORS, like public test servers: the workbench's browser test loads a patient from it in the page.
        let app = Router::new()
            .route("/fhir/{resource_type}", get(search))
            .with_state(shared)
            .layer(tower_http::cors::CorsLayer::permissive());
        tokio::spawn(async move { axum::serve(listener, app).await });
        server
    }
}

/// A listener that accepts and counts connections but never answers: for proving a server is never contacted.
pub async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (address, count)
}

async fn search(
    State(shared): State<Shared>,
    Path(resource_type): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    shared.log.lock().unwrap().push(Logged {
        resource_type: resource_type.clone(),
        query: query.clone(),
        authorization: header(header::AUTHORIZATION),
        accept: header(header::ACCEPT),
    });
    let behaviour = shared.behaviour.lock().unwrap().clone();
    tokio::time::sleep(behaviour.latency).await;
    let fhir_json = [(header::CONTENT_TYPE, "application/fhir+json")];
    let mut entries: Vec<Value> = if query.get("patient") == Some(&shared.patient_id) {
        shared.data.get(&resource_type).cloned().unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut next = None;
    match behaviour.faults.get(&resource_type) {
        Some(Fault::Status(code)) => {
            let outcome = json!({"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "exception"}]});
            return (StatusCode::from_u16(*code).unwrap(), fhir_json, outcome.to_string()).into_response();
        }
        Some(Fault::Malformed) => return (fhir_json, "{\"resourceType\": \"Bundle\", \"entry\": [").into_response(),
        Some(Fault::NotABundle) => {
            return (fhir_json, json!({"resourceType": "Patient", "id": "x"}).to_string()).into_response();
        }
        Some(Fault::Outcome) => {
            let outcome = json!({"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "too-costly"}]});
            return (fhir_json, outcome.to_string()).into_response();
        }
        Some(Fault::Huge(bytes)) => {
            let filler = "x".repeat(*bytes);
            let bundle = json!({"resourceType": "Bundle", "type": "searchset", "entry": [],
                "meta": {"tag": [{"display": filler}]}});
            return (fhir_json, bundle.to_string()).into_response();
        }
        Some(Fault::Redirect(to)) => {
            return (StatusCode::FOUND, [(header::LOCATION, to.clone())]).into_response();
        }
        Some(Fault::NextTo(origin)) => {
            next = Some(format!(
                "{origin}/fhir/{resource_type}?patient={}&_page=1",
                shared.patient_id
            ));
        }
        Some(Fault::BadEntry) => entries.insert(0, json!({"resourceType": resource_type, "code": "not a concept"})),
        None => {}
    }
    if let Some(size) = behaviour.page_size {
        let page: usize = query.get("_page").and_then(|p| p.parse().ok()).unwrap_or(0);
        let start = (page * size).min(entries.len());
        let end = (start + size).min(entries.len());
        if end < entries.len() {
            next = Some(format!(
                "{}/fhir/{resource_type}?patient={}&_page={}",
                shared.origin,
                shared.patient_id,
                page + 1
            ));
        }
        entries = entries[start..end].to_vec();
    }
    let included = match query.get("_include") {
        Some(include) if *include == format!("{resource_type}:medication") => referenced_medications(&shared, &entries),
        _ => Vec::new(),
    };
    let matches = entries
        .into_iter()
        .map(|r| json!({"resource": r, "search": {"mode": "match"}}));
    let includes = included
        .into_iter()
        .map(|r| json!({"resource": r, "search": {"mode": "include"}}));
    let mut bundle = json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": matches.chain(includes).collect::<Vec<_>>(),
    });
    if let Some(next) = next {
        bundle["link"] = json!([{"relation": "next", "url": next}]);
    }
    (fhir_json, bundle.to_string()).into_response()
}

/// The patient's Medications that `entries` reference (`Medication/{id}` or a URL ending so), each once.
fn referenced_medications(shared: &Shared, entries: &[Value]) -> Vec<Value> {
    let medications = shared.data.get("Medication").map(Vec::as_slice).unwrap_or_default();
    let mut included: Vec<Value> = Vec::new();
    for entry in entries {
        let Some(reference) = entry["medicationReference"]["reference"].as_str() else {
            continue;
        };
        let Some((_, id)) = reference.rsplit_once("Medication/") else {
            continue;
        };
        for medication in medications.iter().filter(|m| m["id"] == id) {
            if !included.contains(medication) {
                included.push(medication.clone());
            }
        }
    }
    included
}

//! The tester's workbench: a page served by the service itself (`GET /`), where a tester picks a bundled
//! public patient (or loads one from a FHIR server, in the browser), drafts a dry-needling order, fires
//! order-select or order-sign at this service (or any CDS service), and sees the cards as an EHR shows them.
//!
//! Why in the service, with its assets embedded: the CDS Hooks sandbox cannot draft a dry-needling order, and a
//! tester should need nothing but `cargo run --release` and a browser: no Node toolchain, nothing loaded from the
//! internet (the two libraries the page uses, marked and DOMPurify, are vendored in `web/workbench/vendor/`).
//!
//! Safety: the workbench adds pages and read-only copies of public fixtures, nothing else. It is on by default
//! only where the service is open on loopback (development); with trusted clients it is off unless the
//! configuration turns it on (`[workbench] enabled = true`). It never changes CORS, authentication or the FHIR
//! allowlist: the page calls the hook endpoints like any other client. Its responses carry a Content Security
//! Policy that allows scripts from this origin only.

pub mod analytics;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};
use serde_json::{Value, json};

static ASSETS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web/workbench");
static REAL_PATIENTS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/fixtures/real");
static RULE_PATIENTS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/fixtures/rules");

/// Rule fixtures offered beside the real patients: one per kind of answer a tester should see.
const RULE_EXAMPLES: [(&str, &str); 4] = [
    (
        "myofascial-care-documented",
        "Myofascial pain, 5 weeks, conservative care documented",
    ),
    ("myofascial-no-analgesic", "Myofascial pain, no analgesic documented"),
    ("neck-pain", "Neck pain"),
    ("headache", "Headache"),
];

/// Scripts, styles and data from this origin only; `connect-src *` because the page may call another CDS
/// service or load a patient from a FHIR server the tester names (the browser fetches it, as the sandbox does).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src *; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether the workbench is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workbench {
    On,
    Off,
}

/// The workbench's routes; empty when it is off, so its paths are 404 like any unknown path.
pub fn routes(workbench: Workbench) -> Router {
    if workbench == Workbench::Off {
        return Router::new();
    }
    Router::new()
        .route("/", get(|| asset("index.html".to_string())))
        .route("/workbench/patients", get(patients))
        .route("/workbench/patients/{id}", get(patient))
        .route("/workbench/{*path}", get(|Path(path): Path<String>| asset(path)))
}

async fn asset(path: String) -> Response {
    let Some(file) = ASSETS.get_file(&path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let content_type = match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        _ => "application/octet-stream",
    };
    let mut response = file.contents().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A bundled patient: the order-select fixture's request, whose prefetch is the patient's record.
fn fixture(id: &str) -> Option<Value> {
    let file = if let Some(rule) = id.strip_prefix("rule-") {
        RULE_EXAMPLES
            .iter()
            .any(|(name, _)| *name == rule)
            .then(|| RULE_PATIENTS.get_file(format!("{rule}.json")))??
    } else {
        REAL_PATIENTS.get_file(format!("{id}.order-select.json"))?
    };
    serde_json::from_slice(file.contents()).ok()
}

/// `GET /workbench/patients`: the bundled patients, each with an id and a title.
async fn patients() -> Json<Value> {
    let mut list: Vec<Value> = REAL_PATIENTS
        .files()
        .filter_map(|f| {
            f.path()
                .to_str()?
                .strip_suffix(".order-select.json")
                .map(str::to_string)
        })
        .map(|slug| json!({ "id": slug, "title": title(&slug), "kind": "real" }))
        .collect();
    list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    list.extend(
        RULE_EXAMPLES
            .iter()
            .map(|(name, title)| json!({ "id": format!("rule-{name}"), "title": title, "kind": "rule" })),
    );
    Json(json!({ "patients": list }))
}

/// `GET /workbench/patients/{id}`: the patient id and the prefetch, as the fixture holds them.
async fn patient(Path(id): Path<String>) -> Response {
    let Some(request) = fixture(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    Json(json!({
        "id": id,
        "patientId": request["context"]["patientId"],
        "prefetch": request["prefetch"],
    }))
    .into_response()
}

/// `clbp-neck-ibuprofen` → "Clbp neck ibuprofen" would read badly; the slugs name the patient or the problem,
/// so a title is the slug with spaces, and known abbreviations spelled out.
fn title(slug: &str) -> String {
    slug.split('-')
        .map(|word| match word {
            "clbp" => "chronic low back pain,".to_string(),
            "oa" => "osteoarthritis".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_patient_has_a_record() {
        for file in REAL_PATIENTS.files() {
            let Some(slug) = file.path().to_str().and_then(|p| p.strip_suffix(".order-select.json")) else {
                continue;
            };
            let request = fixture(slug).unwrap();
            assert!(request["prefetch"]["conditions"].is_object(), "{slug}");
        }
        for (name, _) in RULE_EXAMPLES {
            assert!(fixture(&format!("rule-{name}")).is_some(), "{name}");
        }
        assert!(fixture("rule-../real/x").is_none());
        assert!(fixture("no-such-patient").is_none());
    }
}

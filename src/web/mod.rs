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
//!
//! Where it is off, `GET /` still answers a short page saying what this address is and what to do (401 when the
//! service verifies tokens, 404 otherwise): it names no client, server or patient.

pub mod analytics;
pub mod attributes;

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

/// The workbench's routes. When it is off, only `GET /`, which says so and what to do (`verifies_tokens`: the
/// service has trusted clients, so the answer is 401, as for any request without a token); its other paths are
/// unknown paths.
pub fn routes(workbench: Workbench, verifies_tokens: bool) -> Router {
    if workbench == Workbench::Off {
        return Router::new().route("/", get(move || async move { unserved(verifies_tokens) }));
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

/// `GET /` where the workbench is off: what this address is, and what a person who opened it can do. Nothing
/// about the configuration beyond what the status already says.
fn unserved(verifies_tokens: bool) -> Response {
    let (status, why) = if verifies_tokens {
        (
            StatusCode::UNAUTHORIZED,
            "<p>This service verifies who calls it: EHRs call its CDS Hooks discovery, <code>/cds-services</code>, \
             with a signed JWT from a key it trusts. A browser sends none, hence this 401.</p>",
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "<p>EHRs call its CDS Hooks discovery, <code>/cds-services</code>.</p>",
        )
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\"><title>Dry-needling CDS Hooks service</title></head><body><main>\
         <h1>Dry-needling CDS Hooks service</h1>\
         <p>This address is a CDS Hooks service for EHRs, not a web page.</p>{why}\
         <h2>What you can do</h2><ul>\
         <li>To try the cards in a browser, run the service on your own machine without trusted clients \
         (<code>cargo run --release</code>) and open <code>http://127.0.0.1:8080/</code>: the tester's workbench is \
         on by default only there.</li>\
         <li>An operator can serve the workbench here with <code>[workbench] enabled = true</code>; its calls to the \
         hooks still need a token.</li>\
         <li>The CDS Hooks sandbox can call the hooks with its own key: see docs/sandbox.md \
         (<code>config/sandbox.toml</code>).</li>\
         <li>Liveness: <code>/healthz</code>.</li></ul></main></body></html>"
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if verifies_tokens {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
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

/// `GET /workbench/patients/{id}`: the patient id and the prefetch, as the fixture holds them, and the fixture's
/// selected draft order (`order`, or null), so the page drafts it with the fixture's own code, reason and site.
async fn patient(Path(id): Path<String>) -> Response {
    let Some(request) = fixture(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    Json(json!({
        "id": id,
        "patientId": request["context"]["patientId"],
        "prefetch": request["prefetch"],
        "order": selected_order(&request),
    }))
    .into_response()
}

/// The draft order the fixture's `selections` name (its first), or its only draft order.
fn selected_order(request: &Value) -> Value {
    let context = &request["context"];
    let orders: Vec<&Value> = context["draftOrders"]["entry"]
        .as_array()
        .map(|entries| entries.iter().map(|e| &e["resource"]).collect())
        .unwrap_or_default();
    let selected = context["selections"][0].as_str();
    let named = |order: &&&Value| {
        let name = format!(
            "{}/{}",
            order["resourceType"].as_str().unwrap_or_default(),
            order["id"].as_str().unwrap_or_default()
        );
        Some(name.as_str()) == selected
    };
    match orders.iter().find(named) {
        Some(order) => (**order).clone(),
        None if orders.len() == 1 => orders[0].clone(),
        None => Value::Null,
    }
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

/// The opening of a server-rendered page (the analytics and source-attributes pages): document, `<head>` with
/// its title and style, and `<body><main>`; the caller writes the rest and closes `</main></body></html>`.
pub(crate) fn page_start(title: &str, style: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <link rel=\"icon\" href=\"data:,\">\
         <title>{}</title><style>{style}</style></head><body><main>",
        html_escape::encode_text(title)
    )
}

/// A table in a region of its own that scrolls sideways on a narrow screen, reachable by keyboard and named.
pub(crate) fn scrolling_table(label: &str, table: &str) -> String {
    format!(
        "<div class=\"scroll\" role=\"region\" tabindex=\"0\" aria-label=\"{}\">{table}</div>",
        html_escape::encode_double_quoted_attribute(label)
    )
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

    /// Issue 23: the bundled examples carry their reason on the drafted order (the headache example has no
    /// condition to pick), so the page must be given the order, reason included.
    #[test]
    fn every_bundled_example_comes_with_its_own_drafted_order() {
        for (name, _) in RULE_EXAMPLES {
            let request = fixture(&format!("rule-{name}")).unwrap();
            let order = selected_order(&request);
            assert_eq!(order["resourceType"], "ServiceRequest", "{name}");
            assert_eq!(
                order, request["context"]["draftOrders"]["entry"][0]["resource"],
                "{name}"
            );
        }
        let headache = selected_order(&fixture("rule-headache").unwrap());
        assert_eq!(headache["reasonCode"][0]["coding"][0]["code"], "G44.209");
        assert_eq!(selected_order(&json!({})), Value::Null);
    }

    async fn get_root(state: crate::AppState) -> (StatusCode, axum::http::HeaderMap, String) {
        use http_body_util::BodyExt as _;
        use tower::ServiceExt as _;
        let request = axum::http::Request::get("/").body(axum::body::Body::empty()).unwrap();
        let response = crate::http::app(state).oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8(bytes.to_vec()).unwrap())
    }

    /// Issue 23: `GET /` with trusted clients (the workbench off) was a bare 401 a person could not act on; it is
    /// still a 401, with a page that says what this address is and what to do, and names no client.
    #[tokio::test]
    async fn the_root_says_what_to_do_where_the_workbench_is_off() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
        let clients = "public_base_url = \"https://cds.example.org\"\n[[client]]\nissuer = \"https://ehr.test.example\"\n\
                       jwks_file = \"test-jwks.json\"\nalgorithms = [\"ES384\"]\n";
        let state = |toml: &str, listen: &str| {
            crate::AppState::configure(
                crate::Knowledge::embedded().unwrap(),
                crate::config::Config::parse(toml, &dir).unwrap(),
                listen.parse().unwrap(),
                true,
            )
            .unwrap()
        };
        let (status, headers, html) = get_root(state(clients, "127.0.0.1:8080")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("default-src 'none'")
        );
        assert!(
            html.contains("signed JWT") && html.contains("[workbench] enabled = true"),
            "{html}"
        );
        assert!(html.contains("<main>") && html.contains("<h1>"), "{html}");
        assert!(
            !html.contains("ehr.test.example") && !html.contains("cds.example.org"),
            "{html}"
        );
        // Open elsewhere (`--insecure-no-auth`): the workbench is off too, and no token is asked for.
        let (status, headers, html) = get_root(state("", "0.0.0.0:8080")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(!headers.contains_key(header::WWW_AUTHENTICATE));
        assert!(html.contains("/cds-services") && !html.contains("JWT"), "{html}");
    }
}

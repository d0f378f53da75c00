//! The sandbox companion (issue 23, item 1): testers in the CDS Hooks sandbox get a dry-needling card.
//!
//! The sandbox's tabs cannot draft a dry-needling order; its PAMA Imaging tab drafts an imaging ServiceRequest
//! (`intent: plan`, a CPT study, SNOMED reasons) and applies an `update` suggestion to that draft. The companion
//! (`dry-needling-sandbox-companion`, a second order-select service) offers that update, into dry needling with
//! the same reason, and the real service then answers the updated draft.
//!
//! Through the real router (`oneshot`): discovery lists it only when it is on (open on loopback, or
//! `[sandbox_companion] enabled`); a PAMA draft gets its one info card whose `update` keeps the draft's id and
//! reason; the updated draft gets the real card from `dry-needling-order-select` and nothing from the companion;
//! other drafts get nothing. Then in the real sandbox (its production build, `tests/vendor/cds-hooks-sandbox/`, copied unmodified from `../shared/sandbox/app/`) in
//! headless Chromium, in open and in JWT mode: pick a study and chronic low back pain in the PAMA tab, take the
//! companion's suggestion, see the real card, and find both cards' feedback in the store. Where Chromium or
//! chromedriver is missing the browser test says so and passes, except under `CI`, where it fails.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::http::{Request, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use common::chromium::{self, browser, start_chromedriver};
use common::sandbox::{PatientServer, app_dir, serve_static};
use common::store::{Fixture, Raw};
use common::*;
use dry_needling_cds::AppState;
use dry_needling_cds::config::Config;
use dry_needling_cds::http::{ServeSettings, Storage, serve};
use dry_needling_cds::store::{CardLog, CardLogWriter};
use fantoccini::{Client, Locator};
use http_body_util::BodyExt;
use serde_json::{Value, json};

const COMPANION: &str = "/cds-services/dry-needling-sandbox-companion";
const COMPANION_ID: &str = "dry-needling-sandbox-companion";
/// The draft's id the sandbox's PAMA tab always uses.
const DRAFT_ID: &str = "example-request-id";
const CPT: &str = "http://www.ama-assn.org/go/cpt";
const SNOMED: &str = "http://snomed.info/sct";

fn auth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth")
}

/// The test issuer (`fixtures/auth`), trusted for `https://cds.example.org`.
const CLIENTS: &str = "public_base_url = \"https://cds.example.org\"\n[[client]]\nissuer = \"https://ehr.test.example\"\n\
                       jwks_file = \"test-jwks.json\"\nalgorithms = [\"ES384\"]\n";

/// The state `serve` builds from this configuration text and listen address (`--insecure-no-auth` given).
fn configured(toml: &str, listen: &str) -> AppState {
    let mut state = AppState::configure(
        dry_needling_cds::Knowledge::embedded().unwrap(),
        Config::parse(toml, &auth_dir()).unwrap(),
        listen.parse().unwrap(),
        true,
    )
    .unwrap();
    state.today = Some(TODAY);
    state
}

/// Open on loopback, where the companion is on by default (written without naming it, so that this file
/// compiles, and fails, against the service before the companion).
fn companion_on() -> AppState {
    configured("", "127.0.0.1:8080")
}

async fn listed(state: &AppState, token: Option<&str>) -> bool {
    let discovery = send_with(state.clone(), get_with("/cds-services", token)).await;
    assert_eq!(discovery.status, StatusCode::OK);
    service_ids(&discovery.json()).contains(&COMPANION_ID.to_string())
}

/// The sandbox's PAMA Imaging draft, as its `generateContext` builds it: one ServiceRequest, `draft`, `intent:
/// plan`, the study's coding and each reason's coding with its display as text.
fn pama_draft(patient: &str, study: (&str, &str), reasons: &[(&str, &str)]) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "id": DRAFT_ID,
        "status": "draft",
        "intent": "plan",
        "code": {"coding": [{"system": CPT, "code": study.0, "display": study.1}], "text": study.1},
        "subject": {"reference": format!("Patient/{patient}")},
        "reasonCode": reasons.iter().map(|(code, display)| json!({
            "coding": [{"system": SNOMED, "code": code, "display": display}], "text": display,
        })).collect::<Vec<_>>(),
    })
}

const MRI_LUMBAR: (&str, &str) = (
    "72148",
    "Magnetic resonance (eg, proton) imaging, spinal canal and contents, lumbar; without contrast material",
);
const CHRONIC_LOW_BACK_PAIN: (&str, &str) = ("278860009", "Chronic low back pain (finding)");

/// A real patient's order-select request (Synthea, chronic low back and neck pain, prefetch of the whole record)
/// with `draft` as its only draft order, selected, and the sandbox's Bundle (no `type`).
fn request_with(draft: Value) -> Value {
    let mut request: Value = serde_json::from_slice(&fixture("real/clbp-neck-ibuprofen.order-select.json")).unwrap();
    let reference = format!(
        "{}/{}",
        draft["resourceType"].as_str().unwrap(),
        draft["id"].as_str().unwrap()
    );
    request["context"]["selections"] = json!([reference]);
    request["context"]["draftOrders"] = json!({"resourceType": "Bundle", "entry": [{"resource": draft}]});
    request
}

fn patient_id() -> String {
    let request: Value = serde_json::from_slice(&fixture("real/clbp-neck-ibuprofen.order-select.json")).unwrap();
    request["context"]["patientId"].as_str().unwrap().to_string()
}

fn post_json(uri: &str, body: &Value, token: Option<&str>) -> Request<Body> {
    let mut request = Request::post(uri).header("content-type", "application/json");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::from(body.to_string())).unwrap()
}

fn get_with(uri: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

fn service_ids(discovery: &Value) -> Vec<String> {
    discovery["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn discovery_lists_the_companion_only_where_it_is_on() {
    // Open on loopback (where the workbench is): on, last, named as a testing aid, with no prefetch.
    let on = configured("", "127.0.0.1:8080");
    let discovery = send_with(on.clone(), get_with("/cds-services", None)).await.json();
    assert_eq!(
        service_ids(&discovery),
        ["dry-needling-order-select", "dry-needling-order-sign", COMPANION_ID]
    );
    let entry = &discovery["services"][2];
    assert_eq!(entry["hook"], "order-select");
    assert!(entry["title"].as_str().unwrap().starts_with("Testing aid"), "{entry}");
    assert!(
        entry["description"].as_str().unwrap().contains("CDS Hooks sandbox"),
        "{entry}"
    );
    assert!(
        entry.get("prefetch").is_none(),
        "the companion reads only the draft: {entry}"
    );
    let draft = pama_draft(&patient_id(), MRI_LUMBAR, &[CHRONIC_LOW_BACK_PAIN]);
    let reply = send_with(on, post_json(COMPANION, &request_with(draft.clone()), None)).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["cards"].as_array().unwrap().len(), 1);

    // Off: elsewhere without the switch, on loopback when switched off, and in the plain state tests use.
    for (what, off) in [
        ("open elsewhere (--insecure-no-auth)", configured("", "0.0.0.0:8080")),
        (
            "switched off on loopback",
            configured("[sandbox_companion]\nenabled = false\n", "127.0.0.1:8080"),
        ),
        ("AppState::new", state()),
    ] {
        assert!(!listed(&off, None).await, "{what}");
        let hook = send_with(off.clone(), post_json(COMPANION, &request_with(draft.clone()), None)).await;
        assert_eq!(hook.status, StatusCode::NOT_FOUND, "{what}");
        let feedback =
            json!({"feedback": [{"card": "x", "outcome": "accepted", "outcomeTimestamp": "2026-11-23T10:00:00Z"}]});
        let feedback = send_with(off, post_json(&format!("{COMPANION}/feedback"), &feedback, None)).await;
        assert_eq!(feedback.status, StatusCode::NOT_FOUND, "{what}");
    }
    // Switched on elsewhere: on.
    let elsewhere = configured("[sandbox_companion]\nenabled = true\n", "0.0.0.0:8080");
    assert!(listed(&elsewhere, None).await);
}

#[tokio::test]
async fn with_trusted_clients_the_companion_is_off_unless_the_configuration_turns_it_on() {
    let discovery_token = || {
        es384_token(
            "https://cds.example.org/cds-services",
            &uuid::Uuid::new_v4().to_string(),
        )
    };
    let hook_token = || {
        es384_token(
            &format!("https://cds.example.org{COMPANION}"),
            &uuid::Uuid::new_v4().to_string(),
        )
    };
    let draft = request_with(pama_draft(&patient_id(), MRI_LUMBAR, &[CHRONIC_LOW_BACK_PAIN]));

    let off = configured(CLIENTS, "127.0.0.1:8080");
    let discovery = send_with(off.clone(), get_with("/cds-services", Some(&discovery_token()))).await;
    assert_eq!(discovery.status, StatusCode::OK);
    assert_eq!(
        service_ids(&discovery.json()),
        ["dry-needling-order-select", "dry-needling-order-sign"]
    );
    let hook = send_with(off, post_json(COMPANION, &draft, Some(&hook_token()))).await;
    assert_eq!(hook.status, StatusCode::NOT_FOUND);

    let on = configured(
        &format!("{CLIENTS}[sandbox_companion]\nenabled = true\n"),
        "0.0.0.0:8080",
    );
    assert!(listed(&on, Some(&discovery_token())).await);
    // On, it is a hook like the others: a token for its own URL, or 401.
    assert_eq!(
        send_with(on.clone(), post_json(COMPANION, &draft, None)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let reply = send_with(on, post_json(COMPANION, &draft, Some(&hook_token()))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.json()["cards"][0]["summary"],
        "Try this patient with a dry-needling order"
    );
}

/// The companion's one card for a request, with its update action's resource.
async fn companion_card(request: &Value) -> (Value, Value) {
    let reply = send_with(companion_on(), post_json(COMPANION, request, None)).await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.bytes)
    );
    let answer = reply.json();
    let cards = answer["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 1, "{answer}");
    let card = cards[0].clone();
    let resource = card["suggestions"][0]["actions"][0]["resource"].clone();
    (card, resource)
}

#[tokio::test]
async fn a_pama_draft_gets_one_info_card_that_updates_it_into_dry_needling_for_the_same_reason() {
    let draft = pama_draft(&patient_id(), MRI_LUMBAR, &[CHRONIC_LOW_BACK_PAIN]);
    let (card, updated) = companion_card(&request_with(draft.clone())).await;
    assert_eq!(card["summary"], "Try this patient with a dry-needling order");
    assert_eq!(card["indicator"], "info");
    assert!(card["detail"].as_str().unwrap().contains("Testing aid"), "{card}");
    assert!(
        card["source"]["label"]
            .as_str()
            .unwrap()
            .contains("not clinical advice")
    );
    assert!(uuid::Uuid::parse_str(card["uuid"].as_str().unwrap()).is_ok(), "{card}");
    assert_eq!(card["selectionBehavior"], "at-most-one");
    let suggestions = card["suggestions"].as_array().unwrap();
    assert_eq!(suggestions.len(), 1);
    let suggestion = &suggestions[0];
    assert!(
        uuid::Uuid::parse_str(suggestion["uuid"].as_str().unwrap()).is_ok(),
        "{suggestion}"
    );
    assert!(suggestion["label"].as_str().unwrap().contains("dry-needling"));
    let actions = suggestion["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0]["type"], "update");
    assert!(actions[0]["description"].as_str().is_some_and(|d| !d.is_empty()));

    // The same draft (id, type, status, intent, subject, reason), now dry needling; nothing else changed but
    // the rating the sandbox reads from every update.
    assert_eq!(updated["resourceType"], "ServiceRequest");
    assert_eq!(updated["id"], DRAFT_ID);
    for field in ["status", "intent", "subject", "reasonCode"] {
        assert_eq!(updated[field], draft[field], "{field}");
    }
    assert_eq!(
        updated["code"],
        json!({"coding": [{"system": CPT, "code": "20560",
            "display": "Needle insertion(s) without injection(s); 1 or 2 muscle(s)"}],
            "text": "Needle insertion(s) without injection(s); 1 or 2 muscle(s)"})
    );
    assert_eq!(
        updated["extension"][0]["url"],
        "http://fhir.org/argonaut/Extension/pama-rating"
    );
    let mut rest = updated.as_object().unwrap().clone();
    rest.remove("code");
    rest.remove("extension");
    let mut before = draft.as_object().unwrap().clone();
    before.remove("code");
    assert_eq!(rest, before);

    // A reason given by reference (no reasonCode) is kept too, and so is a body site.
    let mut by_reference = draft.clone();
    by_reference.as_object_mut().unwrap().remove("reasonCode");
    by_reference["reasonReference"] = json!([{"reference": "Condition/neck"}]);
    by_reference["bodySite"] = json!([{"text": "neck"}]);
    let (_, updated) = companion_card(&request_with(by_reference.clone())).await;
    assert_eq!(updated["reasonReference"], by_reference["reasonReference"]);
    assert_eq!(updated["bodySite"], by_reference["bodySite"]);
}

#[tokio::test]
async fn the_updated_draft_gets_the_real_card_and_nothing_more_from_the_companion() {
    for (reason, expected) in [
        (CHRONIC_LOW_BACK_PAIN, "not recommended for chronic low back pain"),
        (("81680005", "Neck pain (finding)"), "neck pain"),
    ] {
        let draft = pama_draft(&patient_id(), MRI_LUMBAR, &[reason]);
        let (_, updated) = companion_card(&request_with(draft)).await;
        // What the sandbox sends next: its draft with the update applied (it rebuilds the resource from the
        // study and reasons it took from the update).
        let next = request_with(updated);
        let real = send_with(companion_on(), post_json(SELECT, &next, None)).await;
        assert_eq!(real.status, StatusCode::OK, "{}", String::from_utf8_lossy(&real.bytes));
        let cards = real.json()["cards"].clone();
        assert_eq!(cards.as_array().unwrap().len(), 1, "{cards}");
        let summary = cards[0]["summary"].as_str().unwrap();
        assert!(summary.contains(expected), "{summary}");
        // The companion stays silent on a dry-needling draft: no loop.
        let again = send_with(companion_on(), post_json(COMPANION, &next, None)).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(again.json(), json!({"cards": []}));
    }
}

#[tokio::test]
async fn the_companion_answers_nothing_but_for_a_selected_draft_service_request_with_a_reason() {
    let patient = patient_id();
    let pama = pama_draft(&patient, MRI_LUMBAR, &[CHRONIC_LOW_BACK_PAIN]);
    let nothing = json!({"cards": []});
    let mut cases: Vec<(&str, Value)> = Vec::new();
    // A dry-needling draft (the real patient's fixture), and the sandbox's Rx View MedicationRequest draft.
    cases.push((
        "dry needling",
        serde_json::from_slice(&fixture("real/clbp-neck-ibuprofen.order-select.json")).unwrap(),
    ));
    let rx_view: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/sandbox/order-select-request.json"
        ))
        .unwrap(),
    )
    .unwrap();
    cases.push(("a MedicationRequest", rx_view));
    let mut no_reason = pama.clone();
    no_reason.as_object_mut().unwrap().remove("reasonCode");
    cases.push(("no reason", request_with(no_reason)));
    let mut active = pama.clone();
    active["status"] = json!("active");
    cases.push(("not a draft", request_with(active)));
    let mut unselected = request_with(pama.clone());
    unselected["context"]["selections"] = json!(["ServiceRequest/another"]);
    cases.push(("not selected", unselected));
    let mut reclick = request_with(pama.clone());
    let context = reclick["context"].as_object_mut().unwrap();
    context.remove("selections");
    context.remove("draftOrders");
    cases.push(("the tab re-clicked (no draft orders)", reclick));
    for (what, request) in cases {
        let reply = send_with(companion_on(), post_json(COMPANION, &request, None)).await;
        assert_eq!(reply.status, StatusCode::OK, "{what}");
        assert_eq!(reply.json(), nothing, "{what}");
    }
    // Another hook, or a draft list that is no Bundle: refused as the real service refuses them.
    let mut sign = request_with(pama.clone());
    sign["hook"] = json!("order-sign");
    assert_eq!(
        send_with(companion_on(), post_json(COMPANION, &sign, None))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    let mut not_a_bundle = request_with(pama);
    not_a_bundle["context"]["draftOrders"] = json!({"resourceType": "Patient"});
    assert_eq!(
        send_with(companion_on(), post_json(COMPANION, &not_a_bundle, None))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn feedback_on_the_companion_card_is_accepted_on_its_own_route() {
    let (card, _) = companion_card(&request_with(pama_draft(
        &patient_id(),
        MRI_LUMBAR,
        &[CHRONIC_LOW_BACK_PAIN],
    )))
    .await;
    let feedback = json!({"feedback": [{
        "card": card["uuid"], "outcome": "accepted", "outcomeTimestamp": "2026-11-23T10:00:00Z",
        "acceptedSuggestions": [{"id": card["suggestions"][0]["uuid"]}],
    }]});
    let reply = send_with(
        companion_on(),
        post_json(&format!("{COMPANION}/feedback"), &feedback, None),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.bytes)
    );
    assert_eq!(reply.json()["received"], 1);
}

// ---------------------------------------------------------------------------------------------------------
// The real sandbox in headless Chromium.

/// What the service received and answered: feedback bodies, and the companion's answers.
#[derive(Default)]
struct Seen {
    feedback: Vec<Value>,
    companion_answers: Vec<Value>,
}

/// The service on `listener` with `state`, a SQLite store, and every feedback body and companion answer copied
/// into `seen`.
fn start_service(
    listener: tokio::net::TcpListener,
    mut state: AppState,
    store: dry_needling_cds::store::Store,
    seen: Arc<Mutex<Seen>>,
) -> CardLogWriter {
    let (card_log, writer) = CardLog::start(store.clone(), 100);
    state.storage = Some(Storage {
        store,
        card_log,
        keep_override_comments: false,
    });
    let record = move |request: AxumRequest, next: Next| {
        let seen = seen.clone();
        async move {
            let path = request.uri().path().to_string();
            if request.method() != axum::http::Method::POST {
                return next.run(request).await;
            }
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            if path.ends_with("/feedback")
                && let Ok(value) = serde_json::from_slice(&bytes)
            {
                seen.lock().unwrap().feedback.push(value);
            }
            let response: Response = next.run(AxumRequest::from_parts(parts, Body::from(bytes))).await;
            if path != COMPANION {
                return response;
            }
            let (parts, body) = response.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            if let Ok(value) = serde_json::from_slice(&bytes) {
                seen.lock().unwrap().companion_answers.push(value);
            }
            Response::from_parts(parts, Body::from(bytes))
        }
    };
    let router = dry_needling_cds::app(state).layer(middleware::from_fn(record));
    tokio::spawn(serve(
        listener,
        router,
        ServeSettings::default(),
        std::future::pending(),
    ));
    writer
}

/// Evaluates `condition` (a JavaScript expression) until it is true, for at most 20 s.
async fn wait_for(client: &Client, condition: &str, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = client
            .execute(&format!("return !!({condition});"), vec![])
            .await
            .map_err(|e| e.to_string())?;
        if value == Value::Bool(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            let text = client
                .execute("return document.body.innerText;", vec![])
                .await
                .map_err(|e| e.to_string())?;
            return Err(format!(
                "{what}: not within 20 s; the page says:\n{}",
                text.as_str().unwrap_or("")
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn page_has(text: &str) -> String {
    format!("document.body.innerText.includes({})", json!(text))
}

/// Types `query` into the `index`th option search of the PAMA tab (0: studies, 1: reasons) and clicks the option
/// whose text starts with `option`, as a tester does.
async fn pick(client: &Client, index: usize, query: &str, option: &str) -> Result<(), String> {
    let inputs = client
        .find_all(Locator::Css("input[id^='react-select']"))
        .await
        .map_err(|e| e.to_string())?;
    let input = inputs.get(index).ok_or(format!("no option search #{index}"))?;
    // The search's placeholder lies over its input: focus it as a click on the box would.
    client
        .execute("arguments[0].focus();", vec![serde_json::to_value(input).unwrap()])
        .await
        .map_err(|e| e.to_string())?;
    input.send_keys(query).await.map_err(|e| e.to_string())?;
    let find = format!(
        "[...document.querySelectorAll('[id*=\"-option-\"]')].find(o => o.textContent.startsWith({}))",
        json!(option)
    );
    wait_for(client, &find, &format!("the option {option}")).await?;
    client
        .execute(&format!("{find}.click();"), vec![])
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

async fn click_button(client: &Client, text: &str) -> Result<(), String> {
    let xpath = format!(
        "//button[contains(normalize-space(.), {})]",
        json!(text).to_string().replace('"', "'")
    );
    client
        .find(Locator::XPath(&xpath))
        .await
        .map_err(|e| format!("no button {text}: {e}"))?
        .click()
        .await
        .map_err(|e| e.to_string())
}

async fn screenshot(client: &Client, path: &Path) -> Result<(), String> {
    let png = client.screenshot().await.map_err(|e| e.to_string())?;
    std::fs::write(path, png).map_err(|e| format!("{}: {e}", path.display()))
}

/// Feedback rows in the store: (card uuid, service id, outcome, accepted suggestions, for an unknown card).
async fn stored_feedback(fx: &Fixture) -> Vec<(String, String, String, String, bool)> {
    let Raw::Sqlite(pool) = &fx.raw else {
        unreachable!("the browser test uses SQLite")
    };
    sqlx::query_as::<_, (String, String, String, String, bool)>(
        "SELECT card_uuid, service_id, outcome, accepted_suggestions, unknown_card FROM feedback",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tester_in_the_real_sandbox_gets_the_dry_needling_card_in_open_and_jwt_mode() {
    if !chromium::available("sandbox browser test") {
        return;
    }
    let started = Instant::now();
    let sandbox = serve_static(app_dir()).await;
    let fhir = PatientServer::start(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/sandbox/smart-bulk-10pt__clbp_neck_ibuprofen__ca15b832.ndjson"),
    )
    .await;
    let (_driver, port) = start_chromedriver().await;
    for mode in ["open", "jwt"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = match mode {
            // Open on loopback: the companion is on by default.
            "open" => configured("", &address.to_string()),
            // The shipped sandbox configuration (the sandbox's issuer and public key, the companion switched on),
            // with the public URL this listener has: tokens' `aud` is the exact URL the sandbox calls.
            _ => {
                let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sandbox.toml");
                let mut config = Config::load(&path).unwrap();
                config.set_public_base_url(&format!("http://{address}")).unwrap();
                let mut state =
                    AppState::configure(dry_needling_cds::Knowledge::embedded().unwrap(), config, address, false)
                        .unwrap();
                state.today = Some(TODAY);
                state
            }
        };
        let fx = Fixture::sqlite(&format!("sandbox-{mode}")).await;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        // The card log's writer runs while this mode's pages are driven.
        let _writer = start_service(listener, state, fx.open().await, seen.clone());
        // The sandbox keeps its services in localStorage: a profile per mode.
        let client = browser(port, &format!("sandbox-{mode}"), (1280, 1000)).await;
        let outcome = run(&client, mode, sandbox, address, &fhir, &seen, &fx).await;
        let _ = client.close().await;
        outcome.unwrap_or_else(|e| panic!("{mode} mode: {e}"));
        eprintln!("{mode} mode: done at {:.1} s", started.elapsed().as_secs_f64());
    }
}

async fn run(
    client: &Client,
    mode: &str,
    sandbox: SocketAddr,
    service: SocketAddr,
    fhir: &PatientServer,
    seen: &Arc<Mutex<Seen>>,
    fx: &Fixture,
) -> Result<(), String> {
    let url = format!(
        "http://{sandbox}/?serviceDiscoveryURL=http://{service}/cds-services&fhirServiceUrl={}&patientId={}",
        fhir.base(),
        fhir.patient_id
    );
    client.goto(&url).await.map_err(|e| e.to_string())?;
    wait_for(client, &page_has("PAMA Imaging"), "the sandbox").await?;
    click_button(client, "PAMA Imaging").await?;
    // The patient's banner: the sandbox read it from the FHIR server.
    wait_for(client, &page_has(&fhir.patient_id), "the patient's banner").await?;
    wait_for(
        client,
        "document.querySelectorAll(\"input[id^='react-select']\").length >= 2",
        "the PAMA tab",
    )
    .await?;

    // A lumbar MRI for chronic low back pain: the companion's card.
    pick(
        client,
        0,
        "lumbar",
        "Magnetic resonance (eg, proton) imaging, spinal canal and contents, lumbar; without contrast",
    )
    .await?;
    pick(client, 1, "chronic low back pain", "Chronic low back pain").await?;
    wait_for(
        client,
        &page_has("Try this patient with a dry-needling order"),
        "the companion's card",
    )
    .await?;
    let offered = seen
        .lock()
        .unwrap()
        .companion_answers
        .iter()
        .rev()
        .find(|a| a["cards"].as_array().is_some_and(|c| !c.is_empty()))
        .cloned()
        .ok_or("the page shows a card the service never answered")?;
    let card = &offered["cards"][0];
    assert_eq!(card["suggestions"][0]["actions"][0]["resource"]["id"], DRAFT_ID);
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser");
    std::fs::create_dir_all(&shots).unwrap();
    client
        .execute(
            "[...document.querySelectorAll('button')].find(b => b.textContent.includes('Make this draft'))\
             .scrollIntoView({block: 'center'});",
            vec![],
        )
        .await
        .map_err(|e| e.to_string())?;
    screenshot(client, &shots.join(format!("sandbox-companion-{mode}.png"))).await?;

    // Take its suggestion: the draft becomes dry needling and the real card comes.
    click_button(client, "Make this draft a dry-needling order").await?;
    wait_for(
        client,
        &page_has("Dry needling is not recommended for chronic low back pain"),
        "the real card",
    )
    .await?;
    wait_for(
        client,
        "!document.body.innerText.includes('Try this patient with a dry-needling order')",
        "the companion's card gone",
    )
    .await?;
    // docs/sandbox.md's picture is the open mode's; JWT mode's is kept beside it.
    let name = if mode == "open" {
        "sandbox-card.png".to_string()
    } else {
        format!("sandbox-card-{mode}.png")
    };
    screenshot(client, &shots.join(name)).await?;

    // The suggestion's feedback reached the service, with its id; dismissing the real card sends its own.
    click_button(client, "Dismiss").await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = stored_feedback(fx).await;
        let settled = rows.len() >= 2 && rows.iter().all(|r| !r.4);
        if settled || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let feedback = seen.lock().unwrap().feedback.clone();
    let accepted = feedback
        .iter()
        .flat_map(|f| f["feedback"].as_array().cloned().unwrap_or_default())
        .find(|f| f["outcome"] == "accepted")
        .ok_or(format!("no accepted feedback: {feedback:?}"))?;
    assert_eq!(accepted["card"], card["uuid"]);
    assert_eq!(accepted["acceptedSuggestions"][0]["id"], card["suggestions"][0]["uuid"]);
    // In the store: the companion's card accepted with its suggestion, the real card overridden, both cards known.
    let companion_row = rows
        .iter()
        .find(|r| r.0 == card["uuid"].as_str().unwrap())
        .ok_or(format!("the companion's feedback is not in the store: {rows:?}"))?;
    assert_eq!(companion_row.1, COMPANION_ID);
    assert_eq!(companion_row.2, "accepted");
    assert!(
        companion_row
            .3
            .contains(card["suggestions"][0]["uuid"].as_str().unwrap())
    );
    let real_row = rows
        .iter()
        .find(|r| r.1 == "dry-needling-order-select")
        .ok_or(format!("the real card's feedback is not in the store: {rows:?}"))?;
    assert_eq!(real_row.2, "overridden");
    assert!(
        rows.iter().all(|r| !r.4),
        "feedback for a card the log does not know: {rows:?}"
    );
    // The sandbox read the patient and prefetched the record from the FHIR server.
    let log = fhir.log();
    assert!(log.iter().any(|l| l == "POST Condition/_search"), "{log:?}");
    Ok(())
}

//! Fetching what prefetch lacks from a real HTTP FHIR server on loopback (tests/common/fhir_server.rs): the
//! same answer as with prefetch, parallel searches, paging, the deadline, every failure mode, token forwarding
//! and the allowlist.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use common::fhir_server::{Fault, FhirServer, counting_listener};
use common::{SELECT, TODAY, fixture, send_with, state, without_uuids};
use dry_needling_cds::config::Config;
use dry_needling_cds::fetch::{Allowlist, FetchSettings, Fetcher, http_client};
use dry_needling_cds::service::{Limits, gather, prepare};
use dry_needling_cds::wire::PREFETCH;
use dry_needling_cds::{AppState, Knowledge, app};
use serde_json::Value;
use tower::ServiceExt;

/// A real patient with conditions, medication requests and procedures.
const PATIENT: &str = "real/clbp-neck-ibuprofen.order-select.json";
/// A patient whose verdict needs medications and procedures.
const MYOFASCIAL: &str = "rules/myofascial-care-documented.json";
const TOKEN: &str = "test-access-token-7f3c";

/// The service, allowed to call `servers` (with a token) and `open` (without).
fn service(servers: &[&str], open: &[&str], settings: FetchSettings) -> AppState {
    let allowlist = Allowlist {
        servers: servers.iter().map(|s| s.to_string()).collect(),
        open_servers: open.iter().map(|s| s.to_string()).collect(),
        fhir_base: None,
    };
    AppState {
        fetcher: Arc::new(Fetcher::new(http_client(), settings, allowlist)),
        ..state()
    }
}

/// The fixture without its prefetch, pointed at `fhir_server`, with or without a token.
fn without_prefetch(path: &str, fhir_server: &str, token: Option<&str>) -> Vec<u8> {
    let mut request: Value = serde_json::from_slice(&fixture(path)).unwrap();
    let object = request.as_object_mut().unwrap();
    object.remove("prefetch");
    object.insert("fhirServer".into(), fhir_server.into());
    match token {
        Some(token) => {
            let authorization = serde_json::json!({"access_token": token, "token_type": "Bearer",
                "expires_in": 300, "scope": "patient/*.read", "subject": "dry-needling-cds"});
            object.insert("fhirAuthorization".into(), authorization);
        }
        None => {
            object.remove("fhirAuthorization");
        }
    }
    serde_json::to_vec(&request).unwrap()
}

async fn call(state: AppState, body: Vec<u8>) -> (u16, Value) {
    let request = Request::post(SELECT)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let reply = send_with(state, request).await;
    (reply.status.as_u16(), reply.json())
}

fn settings() -> FetchSettings {
    FetchSettings::default()
}

#[tokio::test]
async fn fetched_record_gives_the_same_cards_as_prefetch() {
    for path in [PATIENT, MYOFASCIAL, "real/oa-knee-naproxen.order-select.json"] {
        let server = FhirServer::start(&fixture(path)).await;
        let state = service(&[&server.origin()], &[], settings());
        let (status, fetched) = call(state.clone(), without_prefetch(path, &server.base(), Some(TOKEN))).await;
        let (_, prefetched) = call(state, fixture(path)).await;
        assert_eq!(status, 200, "{path}: {fetched}");
        assert!(!fetched["cards"].as_array().unwrap().is_empty(), "{path}");
        assert_eq!(without_uuids(fetched), without_uuids(prefetched), "{path}");
        let log = server.log();
        let mut types: Vec<&str> = log.iter().map(|l| l.resource_type.as_str()).collect();
        types.sort();
        assert_eq!(
            types,
            [
                "AllergyIntolerance",
                "Condition",
                "MedicationRequest",
                "MedicationStatement",
                "Procedure"
            ],
            "{path}"
        );
    }
}

#[tokio::test]
async fn token_goes_to_the_fhir_server_and_queries_match_the_templates() {
    let server = FhirServer::start(&fixture(PATIENT)).await;
    let state = service(&[&server.origin()], &[], settings());
    let (status, _) = call(state, without_prefetch(PATIENT, &server.base(), Some(TOKEN))).await;
    assert_eq!(status, 200);
    let patient: Value = serde_json::from_slice(&fixture(PATIENT)).unwrap();
    let patient_id = patient["context"]["patientId"].as_str().unwrap();
    let log = server.log();
    // Every prefetch template but the Patient's: the four kinds of data and the AllergyIntolerances.
    assert_eq!(log.len(), 5);
    for logged in log {
        assert_eq!(logged.authorization.as_deref(), Some(&*format!("Bearer {TOKEN}")));
        // Exactly the prefetch template's parameters (the medication searches' `_include` too).
        let (_, template) = PREFETCH
            .iter()
            .find(|(_, t)| t.starts_with(&format!("{}?", logged.resource_type)))
            .unwrap();
        let (_, parameters) = template.split_once('?').unwrap();
        let expected: HashMap<String, String> = parameters
            .split('&')
            .map(|pair| {
                let (name, value) = pair.split_once('=').unwrap();
                (name.to_string(), value.replace("{{context.patientId}}", patient_id))
            })
            .collect();
        assert_eq!(logged.query, expected, "{}", logged.resource_type);
        assert!(logged.accept.unwrap_or_default().contains("application/fhir+json"));
    }
}

#[tokio::test]
async fn patient_ids_are_url_encoded() {
    let server = FhirServer::start(&fixture(PATIENT)).await;
    let state = service(&[&server.origin()], &[], settings());
    let mut body: Value = serde_json::from_slice(&without_prefetch(PATIENT, &server.base(), Some(TOKEN))).unwrap();
    body["context"]["patientId"] = "a&b=c d".into();
    let _ = call(state, serde_json::to_vec(&body).unwrap()).await;
    let log = server.log();
    // The four kinds of data, and the AllergyIntolerances prefetch did not send.
    assert_eq!(log.len(), 5);
    assert!(
        log.iter()
            .all(|l| l.query.get("patient").map(String::as_str) == Some("a&b=c d"))
    );
}

#[tokio::test]
async fn searches_run_in_parallel() {
    let server = FhirServer::start(&fixture(PATIENT)).await;
    server.set(|b| b.latency = Duration::from_millis(400));
    let state = service(&[&server.origin()], &[], settings());
    let started = Instant::now();
    let (status, _) = call(state, without_prefetch(PATIENT, &server.base(), Some(TOKEN))).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(server.log().len(), 5);
    // Five searches of 400 ms each: about 400 ms together, 2000 ms one after another.
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1000), "not parallel: {elapsed:?}");
}

#[tokio::test]
async fn pages_are_followed() {
    let server = FhirServer::start(&fixture(PATIENT)).await;
    server.set(|b| b.page_size = Some(10));
    let state = service(&[&server.origin()], &[], settings());
    let (status, paged) = call(state.clone(), without_prefetch(PATIENT, &server.base(), Some(TOKEN))).await;
    assert_eq!(status, 200);
    let (_, prefetched) = call(state, fixture(PATIENT)).await;
    assert_eq!(without_uuids(paged), without_uuids(prefetched));
    // 151 procedures in pages of 10.
    let procedure_pages = server.log().iter().filter(|l| l.resource_type == "Procedure").count();
    assert_eq!(procedure_pages, 16);
}

#[tokio::test]
async fn too_many_pages_or_entries_make_the_data_unavailable() {
    let server = FhirServer::start(&fixture(PATIENT)).await;
    // 36 conditions, 22 medication requests and 151 procedures, in pages of 10.
    server.set(|b| b.page_size = Some(10));
    let capped = FetchSettings {
        max_pages: 5,
        ..settings()
    };
    let state = service(&[&server.origin()], &[], capped);
    let (status, body) = call(state, without_prefetch(PATIENT, &server.base(), Some(TOKEN))).await;
    let procedure_pages = server.log().iter().filter(|l| l.resource_type == "Procedure").count();
    assert_eq!(procedure_pages, 5);
    // This patient's verdict does not rest on procedures: the card comes, and says what was not checked.
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("procedures could not be checked"), "{body}");

    let few_entries = FetchSettings {
        max_entries: 40,
        ..settings()
    };
    let state = service(&[&server.origin()], &[], few_entries);
    let (status, body) = call(state, without_prefetch(PATIENT, &server.base(), Some(TOKEN))).await;
    assert_eq!(status, 200);
    assert!(body.to_string().contains("procedures could not be checked"), "{body}");
}

#[tokio::test]
async fn a_prefetched_bundle_with_a_next_page_is_completed_from_the_server() {
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let state = service(&[&server.origin()], &[], settings());
    let mut request: Value = serde_json::from_slice(&fixture(MYOFASCIAL)).unwrap();
    request["fhirServer"] = server.base().into();
    request["fhirAuthorization"] = serde_json::json!({"access_token": TOKEN, "token_type": "Bearer"});
    let next = format!("{}/Procedure?patient=whatever&_page=0", server.base());
    request["prefetch"]["procedures"]["link"] = serde_json::json!([{"relation": "next", "url": next}]);
    let (status, _) = call(state, serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(status, 200);
    // Only the missing page (and the AllergyIntolerances, which prefetch did not send).
    let log: Vec<_> = server
        .log()
        .into_iter()
        .filter(|l| l.resource_type != "AllergyIntolerance")
        .collect();
    assert_eq!(log.len(), 1, "only the missing page: {log:?}");
    assert_eq!(log[0].resource_type, "Procedure");
    assert_eq!(log[0].query.get("_page").map(String::as_str), Some("0"));
}

#[tokio::test]
async fn the_deadline_bounds_a_slow_server() {
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    server.set(|b| b.latency = Duration::from_secs(10));
    let short = FetchSettings {
        deadline: Duration::from_millis(300),
        ..settings()
    };
    let state = service(&[&server.origin()], &[], short);
    let started = Instant::now();
    let (status, body) = call(state, without_prefetch(MYOFASCIAL, &server.base(), Some(TOKEN))).await;
    let elapsed = started.elapsed();
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["resourceType"], "OperationOutcome");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[tokio::test]
async fn every_failure_makes_that_data_unavailable_never_a_5xx() {
    let (elsewhere, elsewhere_connections) = counting_listener().await;
    let faults = [
        Fault::Status(500),
        Fault::Status(401),
        Fault::Status(404),
        Fault::Malformed,
        Fault::NotABundle,
        Fault::Outcome,
        Fault::Huge(2 * 1024 * 1024),
        Fault::Redirect(format!("http://{elsewhere}/fhir/MedicationRequest")),
    ];
    let small = FetchSettings {
        max_body_bytes: 1024 * 1024,
        ..settings()
    };
    for fault in faults {
        let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
        // The medication request is the conservative care this patient's verdict depends on.
        server.set(|b| {
            b.faults.insert("MedicationRequest".to_string(), fault.clone());
        });
        let state = service(&[&server.origin()], &[], small);
        let (status, body) = call(state, without_prefetch(MYOFASCIAL, &server.base(), Some(TOKEN))).await;
        assert_eq!(status, 412, "{fault:?}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome", "{fault:?}");
        let text = body.to_string();
        assert!(text.contains("MedicationRequest"), "{fault:?}: {text}");
        assert!(
            !text.contains(TOKEN) && !text.contains("127.0.0.1"),
            "{fault:?}: {text}"
        );
    }
    assert_eq!(elsewhere_connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn next_links_to_another_origin_are_not_followed() {
    let (elsewhere, elsewhere_connections) = counting_listener().await;
    let server = FhirServer::start(&fixture(PATIENT)).await;
    server.set(|b| {
        b.faults
            .insert("Procedure".to_string(), Fault::NextTo(format!("http://{elsewhere}")));
    });
    let state = service(&[&server.origin()], &[], settings());
    let (status, body) = call(state, without_prefetch(PATIENT, &server.base(), Some(TOKEN))).await;
    // The first page is kept (what it says is true), but the set is incomplete.
    assert_eq!(status, 200, "{body}");
    assert!(body.to_string().contains("procedures could not be checked"), "{body}");
    assert_eq!(elsewhere_connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn one_malformed_entry_does_not_spoil_the_search() {
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    server.set(|b| {
        b.faults.insert("MedicationRequest".to_string(), Fault::BadEntry);
    });
    let state = service(&[&server.origin()], &[], settings());
    let (status, fetched) = call(state, without_prefetch(MYOFASCIAL, &server.base(), Some(TOKEN))).await;
    assert_eq!(status, 200, "{fetched}");
    let detail = fetched["cards"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("ibuprofen"), "the good entry counts: {detail}");
    assert!(detail.contains("1 record entries could not be read"), "{detail}");
}

#[tokio::test]
async fn servers_off_the_allowlist_receive_no_connection() {
    let (address, connections) = counting_listener().await;
    let off_list = format!("http://{address}/fhir");
    let allowed = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let state = service(&[&allowed.origin()], &[], settings());
    let (status, body) = call(state.clone(), without_prefetch(MYOFASCIAL, &off_list, Some(TOKEN))).await;
    assert_eq!(status, 412, "{body}");
    // An open-server entry for the same host on another port does not cover it either.
    let other_port = format!("http://127.0.0.1:{}", address.port() + 1);
    let state = service(&[], &[&other_port], settings());
    let (status, _) = call(state, without_prefetch(MYOFASCIAL, &off_list, None)).await;
    assert_eq!(status, 412);
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(allowed.log().is_empty());
}

#[tokio::test]
async fn without_a_token_only_open_servers_are_called() {
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let state = service(&[&server.origin()], &[], settings());
    let (status, body) = call(state, without_prefetch(MYOFASCIAL, &server.base(), None)).await;
    assert_eq!(status, 412);
    assert_eq!(server.connections(), 0);
    // The 412 says why the server was not called, and what would let it be (issue 23: the workbench's advice).
    let said = body.to_string();
    assert!(
        said.contains("the request's fhirServer was not called: its origin is not on this service's allowlist"),
        "{said}"
    );
    assert!(said.contains("open_servers for calls without"), "{said}");

    let state = service(&[], &[&server.origin()], settings());
    let (status, _) = call(state, without_prefetch(MYOFASCIAL, &server.base(), None)).await;
    assert_eq!(status, 200);
    assert!(server.log().iter().all(|l| l.authorization.is_none()));
}

#[tokio::test]
async fn loopback_servers_are_allowed_only_when_configured() {
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let body = without_prefetch(MYOFASCIAL, &server.base(), None);
    let (status, _) = call(service(&[], &[], settings()), body.clone()).await;
    assert_eq!(status, 412);
    let listed = service(&[], &[&server.origin()], settings());
    let (status, _) = call(listed, body).await;
    assert_eq!(status, 200);
    assert_eq!(server.log().len(), 5);
}

#[tokio::test]
async fn a_web_page_cannot_make_the_open_service_read_a_loopback_server() {
    // Issue 11, item 6: the development configuration (open, on loopback, nothing listed) answered a hook sent
    // from any origin by reading whatever loopback FHIR server it named, and put that server's data in the
    // card. Now the service reads only servers the operator listed; this one is not.
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let state = AppState::configure(
        Knowledge::embedded().unwrap(),
        Config::default(),
        "127.0.0.1:8080".parse().unwrap(),
        false,
    )
    .unwrap();
    let state = AppState {
        today: Some(TODAY),
        ..state
    };
    let request = Request::post(SELECT)
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(Body::from(without_prefetch(MYOFASCIAL, &server.base(), None)))
        .unwrap();
    let response = app(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 412, "the data stays unavailable");
    assert!(server.log().is_empty(), "the loopback server was contacted");
}

#[tokio::test]
async fn no_fetch_when_no_dry_needling_order_or_complete_prefetch() {
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let state = service(&[&server.origin()], &[], settings());
    let body = without_prefetch("rules/not-dry-needling-exercise.json", &server.base(), Some(TOKEN));
    let (status, body) = call(state.clone(), body).await;
    assert_eq!((status, body["cards"].as_array().map(Vec::len)), (200, Some(0)));
    let mut complete: Value = serde_json::from_slice(&fixture(MYOFASCIAL)).unwrap();
    complete["fhirServer"] = server.base().into();
    let (status, _) = call(state, serde_json::to_vec(&complete).unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_failed_prefetch_key_is_searched_again_and_replaced_not_doubled() {
    let server = FhirServer::start(&fixture(PATIENT)).await;
    let state = service(&[&server.origin()], &[], settings());
    let mut request: Value = serde_json::from_slice(&fixture(PATIENT)).unwrap();
    request["fhirServer"] = server.base().into();
    request["fhirAuthorization"] = serde_json::json!({"access_token": TOKEN, "token_type": "Bearer"});
    // The EHR's own search for conditions failed half way: some entries, then an error.
    let outcome = serde_json::json!({"resource": {"resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "timeout"}]}});
    request["prefetch"]["conditions"]["entry"]
        .as_array_mut()
        .unwrap()
        .push(outcome);
    let (status, refetched) = call(state.clone(), serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(status, 200, "{refetched}");
    let log: Vec<_> = server
        .log()
        .into_iter()
        .filter(|l| l.resource_type != "AllergyIntolerance")
        .collect();
    assert_eq!(log.len(), 1, "only the failed key: {log:?}");
    assert_eq!(log[0].resource_type, "Condition");
    let (_, prefetched) = call(state.clone(), fixture(PATIENT)).await;
    assert_eq!(without_uuids(refetched), without_uuids(prefetched));
    // And the record holds each condition once, not the partial prefetch plus the new search.
    let body = serde_json::to_vec(&request).unwrap();
    let mut prepared = prepare(&state.knowledge, &Limits::default(), "dry-needling-order-select", &body).unwrap();
    gather(&mut prepared, &state.fetcher, None).await;
    let clean = fixture(PATIENT);
    let expected = prepare(
        &state.knowledge,
        &Limits::default(),
        "dry-needling-order-select",
        &clean,
    )
    .unwrap();
    assert_eq!(prepared.record.conditions.len(), expected.record.conditions.len());
}

/// MYOFASCIAL with its ibuprofen named only by `medicationReference`; `medication` is where the Medication is:
/// `"include"` (an entry of the Bundle, as `_include` brings it), `"contained"`, or `"none"`.
fn ibuprofen_by_reference(medication: &str) -> Value {
    let mut request: Value = serde_json::from_slice(&fixture(MYOFASCIAL)).unwrap();
    let entries = request["prefetch"]["medicationRequests"]["entry"]
        .as_array_mut()
        .unwrap();
    let resource = entries[0]["resource"].as_object_mut().unwrap();
    let code = resource.remove("medicationCodeableConcept").unwrap();
    let definition = serde_json::json!({"resourceType": "Medication", "id": "med-ibu", "code": code});
    match medication {
        "include" => {
            resource.insert(
                "medicationReference".into(),
                serde_json::json!({"reference": "Medication/med-ibu"}),
            );
            entries.push(serde_json::json!({"resource": definition, "search": {"mode": "include"}}));
        }
        "contained" => {
            resource.insert(
                "medicationReference".into(),
                serde_json::json!({"reference": "#med-ibu"}),
            );
            resource.insert("contained".into(), serde_json::json!([definition]));
        }
        _ => {
            resource.insert(
                "medicationReference".into(),
                serde_json::json!({"reference": "Medication/med-ibu"}),
            );
        }
    }
    request
}

#[tokio::test]
async fn a_drug_named_by_reference_counts_as_if_coded_inline() {
    let state = service(&[], &[], settings());
    let (_, inline) = call(state.clone(), fixture(MYOFASCIAL)).await;
    for medication in ["include", "contained"] {
        let body = serde_json::to_vec(&ibuprofen_by_reference(medication)).unwrap();
        let (status, answer) = call(state.clone(), body).await;
        assert_eq!(status, 200, "{medication}: {answer}");
        assert_eq!(without_uuids(answer), without_uuids(inline.clone()), "{medication}");
    }
    // The reference alone names nothing: the answer is not the same (so the Medication above was what counted).
    let body = serde_json::to_vec(&ibuprofen_by_reference("none")).unwrap();
    let (status, unresolved) = call(state, body).await;
    assert_eq!(status, 200);
    assert_ne!(without_uuids(unresolved), without_uuids(inline));
}

#[tokio::test]
async fn fetched_searches_include_the_referenced_medications() {
    let request = serde_json::to_vec(&ibuprofen_by_reference("include")).unwrap();
    let server = FhirServer::start(&request).await;
    let state = service(&[&server.origin()], &[], settings());
    let mut body: Value = serde_json::from_slice(&request).unwrap();
    body.as_object_mut().unwrap().remove("prefetch");
    body["fhirServer"] = server.base().into();
    body["fhirAuthorization"] = serde_json::json!({"access_token": TOKEN, "token_type": "Bearer"});
    let (status, fetched) = call(state.clone(), serde_json::to_vec(&body).unwrap()).await;
    assert_eq!(status, 200, "{fetched}");
    let (_, inline) = call(state, fixture(MYOFASCIAL)).await;
    assert_eq!(without_uuids(fetched), without_uuids(inline));
    let requests = server
        .log()
        .into_iter()
        .find(|l| l.resource_type == "MedicationRequest")
        .unwrap();
    assert_eq!(
        requests.query.get("_include").map(String::as_str),
        Some("MedicationRequest:medication")
    );
}

/// The AllergyIntolerances that prefetch did not send are searched for: an NSAID allergy on the server makes the
/// card name acetaminophen, exactly as when it is prefetched.
#[tokio::test]
async fn allergies_are_fetched_when_prefetch_lacks_them() {
    const ALLERGY: &str = "review/third/nsaid-allergy-no-analgesic-acute-lbp.json";
    let server = FhirServer::start(&fixture(ALLERGY)).await;
    let state = service(&[&server.origin()], &[], settings());
    let (status, fetched) = call(state.clone(), without_prefetch(ALLERGY, &server.base(), Some(TOKEN))).await;
    assert_eq!(status, 200, "{fetched}");
    assert!(server.log().iter().any(|l| l.resource_type == "AllergyIntolerance"));
    let detail = fetched["cards"][0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("NSAID allergy or intolerance is on file"), "{detail}");
    let (_, prefetched) = call(state, fixture(ALLERGY)).await;
    assert_eq!(without_uuids(fetched), without_uuids(prefetched));
}

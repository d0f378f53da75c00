//! `fhirAuthorization`'s `scope` and `patient` (issue 25, item 4), against a real HTTP FHIR server on loopback
//! (tests/common/fhir_server.rs): searches the token's scopes do not allow never reach the server and the answer
//! names the missing scope; a token issued for another patient is refused before anything is fetched.
//!
//! Each case's expected answer was written before it was run.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::fhir_server::FhirServer;
use common::{SELECT, fixture, send_with, state, without_uuids};
use dry_needling_cds::AppState;
use dry_needling_cds::fetch::{Allowlist, FetchSettings, Fetcher, http_client};
use dry_needling_cds::service::{MissingDataAnswer, MissingDataPolicy};
use serde_json::{Value, json};

/// A patient whose verdict needs the problem list, both medication kinds and the procedures.
const MYOFASCIAL: &str = "rules/myofascial-care-documented.json";
const PATIENT_ID: &str = "rule-patient";
const TOKEN: &str = "test-access-token-scopes-41d2";
const DATA_TYPES: [&str; 4] = ["Condition", "MedicationStatement", "MedicationRequest", "Procedure"];

/// The service, allowed to call `server` with a token.
fn service(server: &FhirServer) -> AppState {
    let allowlist = Allowlist {
        servers: vec![server.origin()],
        open_servers: Vec::new(),
        fhir_base: None,
    };
    AppState {
        fetcher: Arc::new(Fetcher::new(http_client(), FetchSettings::default(), allowlist)),
        ..state()
    }
}

/// MYOFASCIAL pointed at `server`, without its prefetch, with a token carrying `authorization`'s extra fields
/// (`scope`, `patient`…).
fn request(server: &FhirServer, authorization: Value) -> Value {
    let mut request: Value = serde_json::from_slice(&fixture(MYOFASCIAL)).unwrap();
    request.as_object_mut().unwrap().remove("prefetch");
    request["fhirServer"] = server.base().into();
    let mut token = json!({"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
        "subject": "dry-needling-cds"});
    token
        .as_object_mut()
        .unwrap()
        .extend(authorization.as_object().unwrap().clone());
    request["fhirAuthorization"] = token;
    request
}

async fn call(state: AppState, body: &Value) -> (u16, Value) {
    let request = Request::post(SELECT)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let reply = send_with(state, request).await;
    (reply.status.as_u16(), reply.json())
}

/// The resource types the server was asked for, sorted.
fn searched(server: &FhirServer) -> Vec<String> {
    let mut types: Vec<String> = server.log().into_iter().map(|l| l.resource_type).collect();
    types.sort();
    types
}

fn diagnostics(outcome: &Value) -> Vec<String> {
    outcome["issue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["diagnostics"].as_str().unwrap().to_string())
        .collect()
}

/// The answer with the full prefetch, for comparison.
async fn prefetched(state: AppState) -> Value {
    call(state, &serde_json::from_slice(&fixture(MYOFASCIAL)).unwrap())
        .await
        .1
}

#[tokio::test]
async fn only_the_searches_the_scopes_allow_reach_the_server_and_the_412_names_the_rest() {
    // Expected: only Condition is searched for (not even AllergyIntolerance); the answer is the 412 naming the
    // three kinds of care data, each with the scope it lacks.
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let body = request(&server, json!({"scope": "openid fhirUser launch patient/Condition.rs"}));
    let (status, outcome) = call(service(&server), &body).await;
    assert_eq!(searched(&server), ["Condition"]);
    assert_eq!(status, 412, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    let said = diagnostics(&outcome);
    for resource_type in ["MedicationStatement", "MedicationRequest", "Procedure"] {
        assert!(
            said.iter()
                .any(|d| d.starts_with(&format!("{resource_type} data is unavailable"))),
            "{said:?}"
        );
        let scope = format!(
            "{resource_type} was not searched for on the request's fhirServer: fhirAuthorization's scope does not \
             allow reading and searching it; it needs `patient/{resource_type}.rs` (SMART v2) or \
             `patient/{resource_type}.read` (v1)"
        );
        assert!(said.contains(&scope), "{resource_type}: {said:?}");
    }
    // Condition came: neither its data nor its scope is named.
    assert!(!said.iter().any(|d| d.starts_with("Condition")), "{said:?}");
    let text = outcome.to_string();
    assert!(!text.contains(TOKEN) && !text.contains(PATIENT_ID) && !text.contains("127.0.0.1"));
}

#[tokio::test]
async fn the_data_unavailable_card_names_the_missing_scope() {
    // Expected, with `[missing_data]` all `card`: one data-unavailable card whose lines for the three care kinds
    // say which scope the token lacks; nothing else changes.
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let state = AppState {
        missing_data: MissingDataPolicy::all(MissingDataAnswer::Card),
        ..service(&server)
    };
    let body = request(&server, json!({"scope": "patient/Condition.rs"}));
    let (status, answer) = call(state, &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(searched(&server), ["Condition"]);
    let card = &answer["cards"][0];
    assert_eq!(card["extension"]["dry-needling-cds-card"], "data-unavailable");
    let detail = card["detail"].as_str().unwrap();
    for resource_type in ["MedicationStatement", "MedicationRequest", "Procedure"] {
        let line = detail
            .lines()
            .find(|l| l.contains(&format!("({resource_type})")))
            .unwrap_or_else(|| panic!("{resource_type}: {detail}"));
        assert!(
            line.contains(&format!(
                "Not searched for: the EHR's access token does not allow reading and searching {resource_type}; it \
                 needs `patient/{resource_type}.rs` (SMART v2) or `patient/{resource_type}.read` (v1)"
            )),
            "{line}"
        );
    }
    assert!(!detail.contains("(Condition)"), "the problem list came: {detail}");
}

#[tokio::test]
async fn smart_v1_patient_star_read_sends_every_search() {
    // Expected: the four kinds and the AllergyIntolerances are searched for, and the card is the prefetch's.
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let (status, fetched) = call(service(&server), &request(&server, json!({"scope": "patient/*.read"}))).await;
    assert_eq!(status, 200, "{fetched}");
    let mut all: Vec<&str> = DATA_TYPES.to_vec();
    all.push("AllergyIntolerance");
    all.sort();
    assert_eq!(searched(&server), all);
    assert_eq!(
        without_uuids(fetched),
        without_uuids(prefetched(service(&server)).await)
    );
    // SMART v2 `user/*.rs` and v1 `system/*.*` alike.
    for scope in ["user/*.rs", "system/*.*", "launch/patient patient/*.cruds openid"] {
        let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
        let (status, _) = call(service(&server), &request(&server, json!({"scope": scope}))).await;
        assert_eq!(status, 200, "{scope}");
        assert_eq!(searched(&server).len(), 5, "{scope}");
    }
}

#[tokio::test]
async fn a_read_only_v2_scope_does_not_allow_the_search() {
    // `patient/MedicationRequest.r` reads one MedicationRequest by id; it does not search them. Expected: every
    // search but MedicationRequest's is sent, and the 412 names MedicationRequest and its scope only.
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let scope = "patient/Condition.rs patient/MedicationStatement.rs patient/MedicationRequest.r \
                 patient/Procedure.rs patient/AllergyIntolerance.rs";
    let (status, outcome) = call(service(&server), &request(&server, json!({"scope": scope}))).await;
    assert_eq!(
        searched(&server),
        ["AllergyIntolerance", "Condition", "MedicationStatement", "Procedure"]
    );
    assert_eq!(status, 412, "{outcome}");
    let said = diagnostics(&outcome);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said[0].starts_with("MedicationRequest data is unavailable"), "{said:?}");
    assert!(
        said[1].starts_with("MedicationRequest was not searched for")
            && said[1].contains("`patient/MedicationRequest.rs`"),
        "{said:?}"
    );
    // And `s` without `r`, or a parameterised scope, no more than `r` alone.
    for lacking in [
        "patient/MedicationRequest.s",
        "patient/MedicationRequest.rs?status=active",
    ] {
        let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
        let scope = format!("patient/Condition.rs patient/MedicationStatement.rs {lacking} patient/Procedure.rs");
        let (status, _) = call(service(&server), &request(&server, json!({"scope": scope}))).await;
        assert_eq!(status, 412, "{lacking}");
        assert!(
            !searched(&server).contains(&"MedicationRequest".to_string()),
            "{lacking}"
        );
    }
}

#[tokio::test]
async fn without_scope_every_search_is_sent_as_before() {
    // Expected: no `scope` (or a blank one) says nothing about the token's reach: all five searches, and the
    // prefetch's card.
    for authorization in [json!({}), json!({"scope": ""}), json!({"scope": "  "})] {
        let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
        let (status, fetched) = call(service(&server), &request(&server, authorization.clone())).await;
        assert_eq!(status, 200, "{authorization}: {fetched}");
        assert_eq!(searched(&server).len(), 5, "{authorization}");
        assert_eq!(
            without_uuids(fetched),
            without_uuids(prefetched(service(&server)).await),
            "{authorization}"
        );
    }
}

#[tokio::test]
async fn prefetched_data_counts_whatever_the_scopes() {
    // A token with no resource scope at all, and the full prefetch. Expected: nothing fetched, the prefetch's card.
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let mut body: Value = serde_json::from_slice(&fixture(MYOFASCIAL)).unwrap();
    body["fhirServer"] = server.base().into();
    body["fhirAuthorization"] = json!({"access_token": TOKEN, "token_type": "Bearer", "scope": "openid fhirUser"});
    let (status, answer) = call(service(&server), &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(without_uuids(answer), without_uuids(prefetched(service(&server)).await));
    // AllergyIntolerance is the one key this prefetch lacks; it is out of scope too, so not searched.
    assert_eq!(server.connections(), 0);
    // Expected: with the problem list taken out of that prefetch, the 412 names Condition and its scope, and
    // nothing else (the medications and procedures were prefetched).
    body["prefetch"].as_object_mut().unwrap().remove("conditions");
    let (status, outcome) = call(service(&server), &body).await;
    assert_eq!(status, 412, "{outcome}");
    let said = diagnostics(&outcome);
    assert_eq!(said.len(), 2, "{said:?}");
    assert!(said[0].starts_with("Condition data is unavailable"), "{said:?}");
    assert!(said[1].contains("`patient/Condition.rs` (SMART v2)"), "{said:?}");
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_token_for_another_patient_is_refused_and_nothing_is_fetched() {
    // Expected: 400, `invalid`, saying the two differ without quoting either; no connection to the FHIR server.
    let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
    let other = "someone-else-9c1f";
    let body = request(&server, json!({"scope": "patient/*.read", "patient": other}));
    let (status, outcome) = call(service(&server), &body).await;
    assert_eq!(status, 400, "{outcome}");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "invalid");
    assert_eq!(
        diagnostics(&outcome),
        [
            "`fhirAuthorization.patient` is not `context.patientId`: the access token was issued for another patient \
          than the one this call is about"
        ]
    );
    let text = outcome.to_string();
    assert!(
        !text.contains(other) && !text.contains(PATIENT_ID) && !text.contains(TOKEN),
        "{text}"
    );
    assert_eq!(server.connections(), 0);
    // Expected: the same with the full prefetch (nothing to fetch): the request contradicts itself whatever it
    // carries, and `Patient/<other>` is the other patient too.
    let mut full: Value = serde_json::from_slice(&fixture(MYOFASCIAL)).unwrap();
    full["fhirServer"] = server.base().into();
    full["fhirAuthorization"] =
        json!({"access_token": TOKEN, "token_type": "Bearer", "patient": format!("Patient/{other}")});
    let (status, _) = call(service(&server), &full).await;
    assert_eq!(status, 400);
    assert_eq!(server.connections(), 0);
}

#[tokio::test]
async fn a_token_for_this_patient_goes_on_as_usual() {
    // Expected: `patient` equal to `context.patientId` (bare or as `Patient/<id>`): all five searches and the
    // prefetch's card.
    for patient in [PATIENT_ID.to_string(), format!("Patient/{PATIENT_ID}")] {
        let server = FhirServer::start(&fixture(MYOFASCIAL)).await;
        let body = request(&server, json!({"scope": "patient/*.read", "patient": patient}));
        let (status, fetched) = call(service(&server), &body).await;
        assert_eq!(status, 200, "{patient}: {fetched}");
        assert_eq!(searched(&server).len(), 5, "{patient}");
        assert_eq!(
            without_uuids(fetched),
            without_uuids(prefetched(service(&server)).await)
        );
    }
}

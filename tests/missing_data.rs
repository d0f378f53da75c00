//! The missing-data policy (`[missing_data]`): 412, the spec's answer, by default; a warning card instead for the
//! kinds a site sets to `card`, because some EHRs and the CDS Hooks sandbox show a 412 as "all clear". Through the
//! real router, and at the service level for what the log and metrics see ([`HookSummary::unavailable`]).
//!
//! Each case's expected answer was written before it was run.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use dry_needling_cds::AppState;
use dry_needling_cds::config::Config;
use dry_needling_cds::record::DataKind;
use dry_needling_cds::service::{HookError, Limits, MissingDataAnswer, MissingDataPolicy, finish, prepare};
use serde_json::{Value, json};

const CARD: MissingDataAnswer = MissingDataAnswer::Card;

fn with_policy(policy: MissingDataPolicy) -> AppState {
    AppState {
        missing_data: policy,
        ..state()
    }
}

/// A rule fixture with some prefetch keys taken out (the fixtures name an `fhirServer` that is not allowlisted,
/// so nothing is fetched: the keys stay missing).
fn without_keys(path: &str, keys: &[&str]) -> Vec<u8> {
    let mut request: Value = serde_json::from_slice(&fixture(path)).unwrap();
    for key in keys {
        request["prefetch"].as_object_mut().unwrap().remove(*key);
    }
    serde_json::to_vec(&request).unwrap()
}

async fn call(policy: MissingDataPolicy, body: Vec<u8>) -> Reply {
    let request = Request::post(path_for(&body))
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    send_with(with_policy(policy), request).await
}

fn card_ids(reply: &Reply) -> Vec<String> {
    reply.json()["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["extension"]["dry-needling-cds-card"].as_str().unwrap().to_string())
        .collect()
}

/// The words that would make a card permissive; no answer to missing data may carry them.
fn assert_not_permissive(card: &Value) {
    assert_eq!(card["indicator"], "warning", "{card}");
    for field in ["summary", "detail"] {
        let text = card[field].as_str().unwrap().to_lowercase();
        assert!(!text.contains("may be considered"), "{field}: {text}");
        assert!(!text.contains("may consider"), "{field}: {text}");
    }
}

/// The policy changes nothing unless it is asked to: no configuration, no change.
#[tokio::test]
async fn the_default_policy_is_the_412_of_before() {
    // Expected: 412 naming Condition only (the rules stop at the conditions), exactly as without the policy.
    let body = without_keys("rules/myofascial-care-documented.json", &["conditions"]);
    let reply = call(MissingDataPolicy::default(), body.clone()).await;
    assert_eq!(reply.status, 412);
    let before = post(path_for(&body), body).await;
    assert_eq!(reply.status, before.status);
    assert_eq!(reply.json(), before.json());
    let issues = reply.json()["issue"].as_array().unwrap().clone();
    // The data, and why the request's fhirServer (not on this test service's empty allowlist) was not called.
    assert_eq!(issues.len(), 2, "{issues:?}");
    assert!(
        issues[1]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("the request's fhirServer was not called")
    );
    assert!(
        issues[0]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("Condition data is unavailable")
    );
    // Expected: the medication fixture's 412 names both medication kinds, as its snapshot does.
    let reply = call(
        MissingDataPolicy::default(),
        fixture("rules/prefetch-medications-missing-undecided.json"),
    )
    .await;
    assert_eq!(reply.status, 412);
    // Both medication kinds, then the refused fhirServer.
    assert_eq!(reply.json()["issue"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn conditions_set_to_card_answers_one_warning_card_naming_the_problem_list() {
    // Expected: 200, exactly one card, data-unavailable, warning, naming the problem list (and no other data:
    // medications and procedures came), saying what the guideline requires, and nothing permissive.
    let body = without_keys("rules/myofascial-care-documented.json", &["conditions"]);
    let reply = call(MissingDataPolicy::default().with(DataKind::Conditions, CARD), body).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.bytes));
    assert_eq!(card_ids(&reply), ["data-unavailable"]);
    let card = &reply.json()["cards"][0];
    assert_not_permissive(card);
    let summary = card["summary"].as_str().unwrap();
    assert_eq!(
        summary,
        "Dry needling: problem list not checked; confirm indication and conservative care"
    );
    let detail = card["detail"].as_str().unwrap();
    assert!(detail.contains("**Problem list** (Condition)"), "{detail}");
    for other in ["Medication statements", "Medication orders", "**Procedures**"] {
        assert!(!detail.contains(other), "{other} came and is named: {detail}");
    }
    for requirement in [
        "chronic low back pain",
        "osteoarthritis",
        "patellofemoral pain",
        "headache",
        "manual therapy",
        "acute or subacute myofascial pain",
        "acetaminophen or an NSAID",
        "heat therapy",
        "self-care education",
        "never the first treatment",
    ] {
        assert!(detail.contains(requirement), "{requirement}: {detail}");
    }
    // Like every warning card: the source, the footer, override reasons, and the order's removal.
    assert!(card["source"]["label"].as_str().is_some_and(|l| !l.is_empty()));
    assert!(detail.ends_with("Supplementary to clinical judgement._"), "{detail}");
    assert!(!card["overrideReasons"].as_array().unwrap().is_empty());
    assert_eq!(card["selectionBehavior"], "at-most-one");
    let action = &card["suggestions"][0]["actions"][0];
    assert_eq!(action["type"], "delete");
    assert_eq!(action["resourceId"], json!("ServiceRequest/dn-1"));
    assert!(card.get("links").is_none());
}

#[tokio::test]
async fn one_kind_left_at_412_keeps_the_412() {
    // Conditions and procedures are both missing; conditions may be a card, procedures may not. Expected: the
    // same 412 as with the default policy (naming Condition, where the rules stopped).
    let body = without_keys("rules/myofascial-care-documented.json", &["conditions", "procedures"]);
    let policy = MissingDataPolicy::default()
        .with(DataKind::Conditions, CARD)
        .with(DataKind::Procedures, MissingDataAnswer::Status412);
    let reply = call(policy, body.clone()).await;
    assert_eq!(reply.status, 412);
    assert_eq!(reply.json(), post(path_for(&body), body.clone()).await.json());
    // Expected: with procedures set to card too, one card naming both.
    let reply = call(policy.with(DataKind::Procedures, CARD), body).await;
    assert_eq!(reply.status, 200);
    let card = &reply.json()["cards"][0];
    assert_not_permissive(card);
    assert_eq!(
        card["summary"],
        "Dry needling: problem list and procedures not checked; confirm indication and conservative care"
    );
    // Expected: with only one of the two medication kinds set to card, the medication fixture stays 412.
    let body = fixture("rules/prefetch-medications-missing-undecided.json");
    let one = MissingDataPolicy::default().with(DataKind::MedicationStatements, CARD);
    assert_eq!(call(one, body.clone()).await.status, 412);
    let both = one.with(DataKind::MedicationRequests, CARD);
    let reply = call(both, body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(card_ids(&reply), ["data-unavailable"]);
    let card = &reply.json()["cards"][0];
    assert_not_permissive(card);
    assert!(
        card["summary"]
            .as_str()
            .unwrap()
            .contains("medication statements and medication orders not checked"),
        "{card}"
    );
}

#[tokio::test]
async fn when_the_order_alone_decides_the_card_policy_changes_nothing() {
    // A chronic-low-back-pain reason and no prefetch at all. Expected: the usual "not recommended" card with its
    // note about what could not be checked, the same as under the default policy (uuids aside).
    let body = fixture("rules/prefetch-absent-reason-decides.json");
    let carded = call(MissingDataPolicy::all(CARD), body.clone()).await;
    let default = call(MissingDataPolicy::default(), body).await;
    assert_eq!((carded.status.as_u16(), default.status.as_u16()), (200, 200));
    assert_eq!(card_ids(&carded), ["against-chronic-low-back-pain"]);
    assert_eq!(without_uuids(carded.json()), without_uuids(default.json()));
}

#[tokio::test]
async fn nothing_sent_and_everything_set_to_card_names_all_four() {
    // No prefetch and no reason on the order. Expected: one warning card naming the four kinds, summary under 140.
    let reply = call(
        MissingDataPolicy::all(CARD),
        fixture("rules/prefetch-absent-no-reason.json"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let card = &reply.json()["cards"][0];
    assert_not_permissive(card);
    let summary = card["summary"].as_str().unwrap();
    assert_eq!(
        summary,
        "Dry needling: problem list, medication statements, medication orders and procedures not checked; \
         confirm indication and conservative care"
    );
    assert!(summary.chars().count() < 140);
    let detail = card["detail"].as_str().unwrap();
    for resource in [
        "(Condition)",
        "(MedicationStatement)",
        "(MedicationRequest)",
        "(Procedure)",
    ] {
        assert!(detail.contains(resource), "{resource}: {detail}");
    }
    // Expected: `default = "card"` in the configuration has the same effect as naming every kind.
    let config = Config::parse("[missing_data]\ndefault = \"card\"\n", std::path::Path::new(".")).unwrap();
    assert_eq!(config.missing_data, MissingDataPolicy::all(CARD));
}

#[tokio::test]
async fn with_two_orders_only_the_undecided_one_gets_the_data_unavailable_card() {
    // Order-sign with a neck-pain order and a chronic-low-back-pain order, conditions missing. Expected: the
    // neck order needs the conditions (cervical osteoarthritis would outrank neck pain), the low-back order is
    // decided by its reason: [data-unavailable, against-chronic-low-back-pain], in the orders' order.
    let body = without_keys("rules/order-sign-two-orders.json", &["conditions"]);
    let reply = call(
        MissingDataPolicy::default().with(DataKind::Conditions, CARD),
        body.clone(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(card_ids(&reply), ["data-unavailable", "against-chronic-low-back-pain"]);
    let cards = reply.json()["cards"].as_array().unwrap().clone();
    assert_eq!(
        cards[0]["suggestions"][0]["actions"][0]["resourceId"],
        "ServiceRequest/dn-neck"
    );
    // Expected: under the default policy the whole call is the 412, as before.
    assert_eq!(call(MissingDataPolicy::default(), body).await.status, 412);
}

/// What the log line and metrics see: the kinds named on data-unavailable cards; a 412 keeps its kinds.
#[test]
fn the_summary_lists_the_kinds_behind_data_unavailable_cards() {
    let knowledge = dry_needling_cds::Knowledge::embedded().unwrap();
    let run = |body: &[u8], policy: MissingDataPolicy| {
        let prepared = prepare(&knowledge, &Limits::default(), "dry-needling-order-select", body).unwrap();
        finish(prepared, &knowledge, TODAY, &policy)
    };
    let body = without_keys("rules/myofascial-care-documented.json", &["conditions"]);
    // Expected: one card, unavailable = [Conditions].
    let (response, summary) = run(&body, MissingDataPolicy::all(CARD)).unwrap();
    assert_eq!((response.cards.len(), summary.cards), (1, 1));
    assert_eq!(summary.unavailable, [DataKind::Conditions]);
    // Expected: the 412 carries Conditions.
    match run(&body, MissingDataPolicy::default()) {
        Err(HookError::MissingData(kinds, _)) => assert_eq!(kinds, [DataKind::Conditions]),
        other => panic!("expected a 412, got {:?}", other.map(|(_, s)| s)),
    }
    // Expected: a complete record names nothing.
    let (_, summary) = run(
        &fixture("rules/myofascial-care-documented.json"),
        MissingDataPolicy::all(CARD),
    )
    .unwrap();
    assert!(summary.unavailable.is_empty());
    // Expected: a card decided by the order alone is not a data-unavailable card, even with data missing.
    let (_, summary) = run(
        &fixture("rules/prefetch-absent-reason-decides.json"),
        MissingDataPolicy::all(CARD),
    )
    .unwrap();
    assert!(summary.unavailable.is_empty());
}

/// The configuration reaches the hooks: `[missing_data] conditions = "card"` through `AppState::configure`.
#[tokio::test]
async fn the_configured_policy_reaches_the_hooks() {
    let config = Config::parse("[missing_data]\nconditions = \"card\"\n", std::path::Path::new(".")).unwrap();
    let mut state = AppState::configure(
        dry_needling_cds::Knowledge::embedded().unwrap(),
        config,
        "127.0.0.1:8080".parse().unwrap(),
        false,
    )
    .unwrap();
    state.today = Some(TODAY);
    assert_eq!(
        state.missing_data,
        MissingDataPolicy::default().with(DataKind::Conditions, CARD)
    );
    let body = without_keys("rules/myofascial-care-documented.json", &["conditions"]);
    let request = Request::post(SELECT)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let reply = send_with(state, request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(card_ids(&reply), ["data-unavailable"]);
}

/// The whole answer, frozen (uuids redacted), for reviewers of the card's wording.
#[tokio::test]
async fn snapshot_of_the_data_unavailable_card() {
    let body = without_keys("rules/myofascial-care-documented.json", &["conditions"]);
    let json = call(MissingDataPolicy::default().with(DataKind::Conditions, CARD), body)
        .await
        .json();
    insta::assert_json_snapshot!("data_unavailable", json, {
        ".cards[].uuid" => "[uuid]",
        ".cards[].suggestions[].uuid" => "[uuid]",
        // Changes with every edit of cards/; checked against the loaded content in tests/versions.rs.
        ".cards[].extension[\"dry-needling-cds-content-version\"]" => "[content version]",
    });
}

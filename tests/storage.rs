//! The store wired into the service, through the real router: the card log (what it keeps, and that it keeps
//! nothing of the patient), feedback (stored once, unknown cards kept, comments only when configured), a store
//! that is slow or down (hook answers unaffected, feedback 503 so the EHR resends, readiness says so), and
//! analytics (their own credential, the page, the CSV). Scenarios run on SQLite and, when
//! `DRY_NEEDLING_CDS_TEST_POSTGRES_URL` is set, on PostgreSQL (see `tests/common/store.rs`).
//!
//! Expected values are written from the fixtures and the guideline, not read back from a run.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use common::store::{Fixture, Raw, on_both_backends};
use common::{Reply, SELECT, fixture, send_with, state};
use dry_needling_cds::AppState;
use dry_needling_cds::Knowledge;
use dry_needling_cds::config::Config;
use dry_needling_cds::http::{AnalyticsAccess, Storage};
use dry_needling_cds::store::{CardLog, CardLogWriter, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SELECT_ID: &str = "dry-needling-order-select";
/// Brenda Jackson (Synthea): chronic low back pain; the guideline's answer is "not recommended".
const LOW_BACK: &str = "real/brenda-jackson-low-back.order-select.json";
const LOW_BACK_CARD: &str = "against-chronic-low-back-pain";
const REASONS: &str = "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes";

on_both_backends!(
    cards_are_logged_with_ids_only,
    feedback_is_stored_once_and_unknown_cards_are_kept,
    override_comments_are_kept_only_when_configured,
    analytics_count_what_clinicians_did,
    analytics_per_tenant,
);

// ---------------------------------------------------------------------------------------------------------
// Helpers.

/// The router's state with a store: open access (loopback), the fixtures' "today".
async fn with_store(store: Store, keep_override_comments: bool, queue: usize) -> (AppState, CardLogWriter) {
    let (card_log, writer) = CardLog::start(store.clone(), queue);
    let mut state = state();
    state.storage = Some(Storage {
        store,
        card_log,
        keep_override_comments,
    });
    (state, writer)
}

async fn post(state: &AppState, uri: &str, body: Vec<u8>) -> Reply {
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap();
    send_with(state.clone(), request).await
}

async fn get(state: &AppState, uri: &str, authorization: Option<&str>) -> Reply {
    let mut request = Request::get(uri);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    send_with(state.clone(), request.body(Body::empty()).unwrap()).await
}

fn feedback_uri() -> String {
    format!("{SELECT}/feedback")
}

/// Waits until the card log has `n` rows (the writer wakes every 100 ms), at most 10 s.
async fn logged(fx: &Fixture, n: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = fx.count("SELECT COUNT(*) FROM cards").await;
        if rows == n {
            return;
        }
        assert!(Instant::now() < deadline, "card log has {rows} rows, expected {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every string in a JSON document, at any depth.
fn strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// Every text cell of the store's two data tables.
async fn stored_text(fx: &Fixture) -> Vec<String> {
    let mut cells = Vec::new();
    for sql in [
        "SELECT uuid || '|' || service_id || '|' || card || '|' || indicator || '|' || stance || '|' || \
         suggestion_uuids || '|' || COALESCE(client_issuer, '') || '|' || COALESCE(tenant, '') || '|' || \
         hook_instance || '|' || COALESCE(content_version, '') FROM cards",
        "SELECT card_uuid || '|' || outcome || '|' || service_id || '|' || accepted_suggestions || '|' || \
         COALESCE(override_reason_code, '') || '|' || COALESCE(override_reason_system, '') || '|' || \
         COALESCE(user_comment, '') || '|' || COALESCE(client_issuer, '') FROM feedback",
    ] {
        for row in fx.text(sql).await {
            cells.extend(row.split('|').map(str::to_string));
        }
    }
    cells
}

fn overridden(card: &str, code: &str, at: &str, comment: Option<&str>) -> Value {
    let mut reason = json!({"reason": {"system": REASONS, "code": code}});
    if let Some(comment) = comment {
        reason["userComment"] = json!(comment);
    }
    json!({"card": card, "outcome": "overridden", "overrideReason": reason, "outcomeTimestamp": at})
}

fn accepted(card: &str, suggestion: &str, at: &str) -> Value {
    json!({"card": card, "outcome": "accepted", "acceptedSuggestions": [{"id": suggestion}], "outcomeTimestamp": at})
}

fn body(items: &[Value]) -> Vec<u8> {
    serde_json::to_vec(&json!({ "feedback": items })).unwrap()
}

/// Calls order-select with the low-back fixture; returns the card's uuid and its first suggestion's uuid.
async fn low_back_card(state: &AppState) -> (String, String) {
    let reply = post(state, SELECT, fixture(LOW_BACK)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let cards = reply.json()["cards"].clone();
    assert_eq!(cards.as_array().map(Vec::len), Some(1), "{cards}");
    assert_eq!(cards[0]["extension"]["dry-needling-cds-card"], LOW_BACK_CARD);
    let uuid = cards[0]["uuid"].as_str().unwrap().to_string();
    let suggestion = cards[0]["suggestions"][0]["uuid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (uuid, suggestion)
}

// ---------------------------------------------------------------------------------------------------------
// Scenarios on both backends.

/// Every card returned is logged with its ids, template, indicator and stance, and no string of the request
/// (names, ids, codes, dates, the FHIR server) is stored, apart from the `hookInstance` that names the call.
async fn cards_are_logged_with_ids_only(fx: &Fixture) {
    let (state, writer) = with_store(fx.open().await, false, 100).await;
    let request: Value = serde_json::from_slice(&fixture(LOW_BACK)).unwrap();
    let reply = post(&state, SELECT, fixture(LOW_BACK)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let card = reply.json()["cards"][0].clone();
    logged(fx, 1).await;
    let row = fx
        .text(
            "SELECT uuid || ' ' || service_id || ' ' || card || ' ' || indicator || ' ' || stance || ' ' || \
             hook_instance || ' ' || COALESCE(client_issuer, '-') FROM cards",
        )
        .await;
    assert_eq!(
        row,
        [format!(
            "{} {SELECT_ID} {LOW_BACK_CARD} warning not_recommended {} -",
            card["uuid"].as_str().unwrap(),
            request["hookInstance"].as_str().unwrap()
        )]
    );
    let suggestions: Vec<String> = card["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["uuid"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !suggestions.is_empty(),
        "the not-recommended card suggests alternatives"
    );
    let stored = fx.text("SELECT suggestion_uuids FROM cards").await;
    assert_eq!(serde_json::from_str::<Vec<String>>(&stored[0]).unwrap(), suggestions);
    // The content version that wrote the card, as the card itself says.
    assert_eq!(
        fx.text("SELECT content_version FROM cards").await,
        [card["extension"]["dry-needling-cds-content-version"].as_str().unwrap()]
    );
    assert_eq!(
        fx.text("SELECT content_version FROM cards").await,
        [state.knowledge.version.label.as_str()]
    );

    let mut from_request = Vec::new();
    strings(&request, &mut from_request);
    let allowed = [
        request["hookInstance"].as_str().unwrap(),
        request["hook"].as_str().unwrap(),
    ];
    let cells = stored_text(fx).await;
    for text in from_request
        .iter()
        .filter(|s| s.len() >= 6 && !allowed.contains(&s.as_str()))
    {
        assert!(
            !cells.iter().any(|cell| cell.contains(text.as_str())),
            "the store holds `{text}` from the patient's record"
        );
    }
    writer.finish(Duration::from_secs(5)).await;
}

/// The spec lets an EHR resend feedback: the same items count once. Feedback for a card uuid never issued is
/// kept and flagged, not dropped.
async fn feedback_is_stored_once_and_unknown_cards_are_kept(fx: &Fixture) {
    let (state, writer) = with_store(fx.open().await, false, 100).await;
    let (uuid, _) = low_back_card(&state).await;
    logged(fx, 1).await;
    let items = [overridden(
        &uuid,
        "does-not-align-preferences",
        "2026-11-23T10:00:00Z",
        None,
    )];
    let first = post(&state, &feedback_uri(), body(&items)).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(
        first.json(),
        json!({"received": 1, "stored": 1, "duplicates": 0, "unknownCards": 0})
    );
    let again = post(&state, &feedback_uri(), body(&items)).await;
    assert_eq!(
        again.json(),
        json!({"received": 1, "stored": 0, "duplicates": 1, "unknownCards": 0})
    );
    let unknown = post(
        &state,
        &feedback_uri(),
        body(&[accepted(
            "00000000-0000-4000-8000-000000000000",
            "x",
            "2026-11-23T10:01:00Z",
        )]),
    )
    .await;
    assert_eq!(
        unknown.json(),
        json!({"received": 1, "stored": 1, "duplicates": 0, "unknownCards": 1})
    );
    assert_eq!(fx.count("SELECT COUNT(*) FROM feedback").await, 2);
    assert_eq!(
        fx.count("SELECT COUNT(*) FROM feedback WHERE unknown_card = TRUE")
            .await,
        1
    );
    // A bad item spoils its request (400, nothing stored), not the items stored before.
    let bad = post(
        &state,
        &feedback_uri(),
        body(&[accepted(&uuid, "s", "2026-11-23T10:02:00Z"), json!({"card": uuid})]),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(fx.count("SELECT COUNT(*) FROM feedback").await, 2);
    writer.finish(Duration::from_secs(5)).await;
}

/// `userComment` is free text a clinician may fill with patient details: dropped unless the deployment keeps
/// comments; the reason's code and system are always kept.
async fn override_comments_are_kept_only_when_configured(fx: &Fixture) {
    for keep in [false, true] {
        let (state, writer) = with_store(fx.open().await, keep, 100).await;
        let (uuid, _) = low_back_card(&state).await;
        let at = if keep {
            "2026-11-23T11:00:00Z"
        } else {
            "2026-11-23T10:00:00Z"
        };
        let items = [overridden(
            &uuid,
            "cds-not-applicable",
            at,
            Some("Jane Doe prefers needles"),
        )];
        assert_eq!(post(&state, &feedback_uri(), body(&items)).await.status, StatusCode::OK);
        let comments = fx
            .text(
                &*format!(
                    "SELECT COALESCE(user_comment, '(none)') || ' ' || override_reason_code || ' ' || \
                 override_reason_system FROM feedback WHERE card_uuid = '{uuid}'"
                )
                .leak(),
            )
            .await;
        let expected = if keep { "Jane Doe prefers needles" } else { "(none)" };
        assert_eq!(comments, [format!("{expected} cds-not-applicable {REASONS}")]);
        writer.finish(Duration::from_secs(5)).await;
    }
}

/// Three calls, three cards: one overridden twice (the latest counts), one accepted, one without feedback.
async fn analytics_count_what_clinicians_did(fx: &Fixture) {
    let (state, writer) = with_store(fx.open().await, false, 100).await;
    let (a, _) = low_back_card(&state).await;
    let (b, b_suggestion) = low_back_card(&state).await;
    let (_c, _) = low_back_card(&state).await;
    logged(fx, 3).await;
    let items = [
        accepted(&a, "x", "2026-11-23T10:00:00Z"),
        overridden(&a, "does-not-align-preferences", "2026-11-23T10:05:00Z", None),
        accepted(&b, &b_suggestion, "2026-11-23T10:00:00Z"),
    ];
    assert_eq!(post(&state, &feedback_uri(), body(&items)).await.status, StatusCode::OK);
    let reply = get(&state, "/analytics", None).await;
    assert_eq!(reply.status, StatusCode::OK);
    let analytics = reply.json();
    assert_eq!(
        analytics["templates"],
        json!([{
            "serviceId": SELECT_ID, "card": LOW_BACK_CARD, "shown": 3, "accepted": 1, "overridden": 1,
            "noFeedback": 1, "overrideRate": 0.5,
            "overrideReasons": [{"system": REASONS, "code": "does-not-align-preferences", "count": 1}],
        }])
    );
    assert_eq!(
        analytics["services"],
        json!([{"serviceId": SELECT_ID, "shown": 3, "accepted": 1, "overridden": 1, "noFeedback": 1, "overrideRate": 0.5}])
    );
    let csv = get(&state, "/analytics.csv", None).await;
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        String::from_utf8(csv.bytes).unwrap(),
        format!(
            "service_id,card,shown,accepted,overridden,no_feedback,override_rate\n\
             {SELECT_ID},{LOW_BACK_CARD},3,1,1,1,0.5000\n"
        )
    );
    let page = get(&state, "/analytics.html", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8(page.bytes).unwrap();
    assert_eq!(html.matches("<svg").count(), 2, "two charts");
    assert!(html.contains(LOW_BACK_CARD));
    // The service's own words for the reason, not the bare code.
    assert!(
        html.contains("Recommendation does not align with patient preferences or values (1)"),
        "{html}"
    );
    writer.finish(Duration::from_secs(5)).await;
}

/// Two tenants of one issuer (docs/tenants.md): the card log records each card's tenant, and `?tenant=` counts
/// only that tenant's cards, in the JSON, the CSV and the page, which say which tenant.
async fn analytics_per_tenant(fx: &Fixture) {
    let mut state = configured(&format!(
        "{CLIENT_TOML}\n[[client.tenants]]\nid = \"site-a\"\n\n[[client.tenants]]\nid = \"site <b>\"\n"
    ));
    state.analytics = AnalyticsAccess::Open;
    let store = fx.open().await;
    let (card_log, writer) = CardLog::start(store.clone(), 100);
    state.storage = Some(Storage {
        store,
        card_log,
        keep_override_comments: false,
    });
    let call = |tenant: &'static str, path: String, body: Vec<u8>| {
        let state = state.clone();
        async move {
            let token = common::es384_token_with(
                &format!("http://127.0.0.1:8080{path}"),
                &uuid::Uuid::new_v4().to_string(),
                json!({"tenant": tenant}),
            );
            let request = Request::post(path)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::from(body))
                .unwrap();
            send_with(state, request).await
        }
    };
    let mut a_cards = Vec::new();
    for tenant in ["site-a", "site-a", "site <b>"] {
        let reply = call(tenant, SELECT.to_string(), fixture(LOW_BACK)).await;
        assert_eq!(reply.status, StatusCode::OK);
        if tenant == "site-a" {
            a_cards.push(reply.json()["cards"][0]["uuid"].as_str().unwrap().to_string());
        }
    }
    logged(fx, 3).await;
    assert_eq!(
        fx.text("SELECT tenant FROM cards ORDER BY tenant").await,
        ["site <b>", "site-a", "site-a"]
    );
    let items = [overridden(
        &a_cards[0],
        "does-not-align-preferences",
        "2026-11-23T10:05:00Z",
        None,
    )];
    assert_eq!(
        call("site-a", feedback_uri(), body(&items)).await.status,
        StatusCode::OK
    );
    // Expected: site-a 2 shown, 1 overridden; the other site 1 shown, no feedback; all 3; an unknown tenant none.
    for (query, tenant, shown, overridden) in [
        ("?tenant=site-a", json!("site-a"), 3 - 1, 1),
        ("?tenant=site%20%3Cb%3E", json!("site <b>"), 1, 0),
        ("", Value::Null, 3, 1),
    ] {
        let reply = get(&state, &format!("/analytics{query}"), None).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}");
        let analytics = reply.json();
        assert_eq!(analytics["tenant"], tenant, "{query}");
        assert_eq!(analytics["services"][0]["shown"], shown, "{query}");
        assert_eq!(analytics["services"][0]["overridden"], overridden, "{query}");
    }
    let none = get(&state, "/analytics?tenant=site-z", None).await.json();
    assert_eq!(
        (none["tenant"].clone(), none["templates"].clone()),
        (json!("site-z"), json!([]))
    );
    let csv = get(&state, "/analytics.csv?tenant=site-a", None).await;
    assert_eq!(
        String::from_utf8(csv.bytes).unwrap(),
        format!(
            "service_id,card,shown,accepted,overridden,no_feedback,override_rate\n\
             {SELECT_ID},{LOW_BACK_CARD},2,0,1,1,1.0000\n"
        )
    );
    // The page names the tenant, escaped, and its links keep it.
    let page = get(&state, "/analytics.html?tenant=site%20%3Cb%3E&since=2026-01-01", None).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8(page.bytes).unwrap();
    assert!(html.contains("Tenant <strong>site &lt;b&gt;</strong>"), "{html}");
    assert!(!html.contains("site <b>"), "{html}");
    assert!(
        html.contains("/analytics.csv?table=weeks&amp;since=2026-01-01&amp;tenant=site+%3Cb%3E"),
        "{html}"
    );
    for bad in ["?tenant=", "?tenant=a%0Ab", &format!("?tenant={}", "x".repeat(300))] {
        let reply = get(&state, &format!("/analytics{bad}"), None).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    writer.finish(Duration::from_secs(5)).await;
}

// ---------------------------------------------------------------------------------------------------------
// A store that is slow or down (SQLite, where a lock can be held from outside).

/// Another connection holds SQLite's write lock: every card-log write waits 5 s and then fails. Hook answers
/// must not wait for that; feedback is refused with 503 and `Retry-After` (the EHR resends); once the lock is
/// released, the queued cards are written, and every card is either written or counted as dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_store_delays_no_hook_answer() {
    let fx = Fixture::sqlite("locked").await;
    let (state, writer) = with_store(fx.open().await, false, 4).await;
    let Raw::Sqlite(raw) = &fx.raw else { unreachable!() };
    let mut blocker = raw.acquire().await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut *blocker).await.unwrap();
    // The first card: the writer takes it and waits for the lock (within its 100 ms tick).
    low_back_card(&state).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    const CALLS: usize = 12;
    for i in 0..CALLS {
        let started = Instant::now();
        low_back_card(&state).await;
        // Far below the 5 s a write waits for the lock: the answer did not wait for the store.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "call {i} took {:?} while the store was locked",
            started.elapsed()
        );
    }
    let storage = state.storage.as_ref().unwrap();
    assert_eq!(
        storage.card_log.dropped(),
        (CALLS - 4) as u64,
        "the writer holds the first card; of the next 12, the queue of 4 takes 4 and the rest are dropped"
    );
    let started = Instant::now();
    let refused = post(
        &state,
        &feedback_uri(),
        body(&[accepted("c", "s", "2026-11-23T10:00:00Z")]),
    )
    .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers[header::RETRY_AFTER], "30");
    assert!(started.elapsed() < Duration::from_secs(7), "{:?}", started.elapsed());
    sqlx::query("ROLLBACK").execute(&mut *blocker).await.unwrap();
    drop(blocker);
    // What was queued (and the batch in hand, once its retry succeeds) is written; the rest was counted.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = fx.count("SELECT COUNT(*) FROM cards").await as u64;
        let dropped = storage.card_log.dropped();
        if rows + dropped == CALLS as u64 + 1 && storage.card_log.queued() == 0 {
            assert!(rows > 0, "the queued cards were written after the lock was released");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rows {rows} + dropped {dropped} != 1 + {CALLS}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    writer.finish(Duration::from_secs(5)).await;
    fx.finish().await;
}

/// The store is gone (its pool closed): hooks still answer, feedback gets 503, readiness says `degraded` but
/// stays 200 (taking instances out of rotation would make a store outage a CDS outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down() {
    let fx = Fixture::sqlite("down").await;
    let store = fx.open().await;
    let (state, writer) = with_store(store.clone(), false, 100).await;
    let ready = get(&state, "/readyz", None).await;
    assert_eq!(ready.json()["status"], "ready");
    assert_eq!(ready.json()["checks"]["store"]["ok"], true);
    store.close().await;
    low_back_card(&state).await;
    let refused = post(
        &state,
        &feedback_uri(),
        body(&[accepted("c", "s", "2026-11-23T10:00:00Z")]),
    )
    .await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.json()["issue"][0]["code"], "transient");
    let ready = get(&state, "/readyz", None).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["status"], "degraded");
    assert_eq!(ready.json()["checks"]["store"]["ok"], false);
    writer.finish(Duration::from_secs(10)).await;
    fx.finish().await;
}

// ---------------------------------------------------------------------------------------------------------
// Analytics access.

const CLIENT_TOML: &str = r#"
public_base_url = "http://127.0.0.1:8080"

[[client]]
issuer = "https://ehr.test.example"
jwks_file = "test-jwks.json"
algorithms = ["ES384"]
"#;

fn configured(toml: &str) -> AppState {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
    let config = Config::parse(toml, &dir).unwrap_or_else(|e| panic!("{e}"));
    let listen = "127.0.0.1:8080".parse().unwrap();
    let Ok(state) = AppState::configure(Knowledge::embedded().unwrap(), config, listen, false) else {
        panic!("refused to start");
    };
    state
}

/// A valid EHR token for `/analytics`: it must not open analytics.
fn ehr_token() -> String {
    ehr_token_for("/analytics")
}

/// A valid EHR token for a call to `path`, with a fresh `jti`.
fn ehr_token_for(path: &str) -> String {
    common::es384_token(
        &format!("http://127.0.0.1:8080{path}"),
        &uuid::Uuid::new_v4().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_need_their_own_credential() {
    let fx = Fixture::sqlite("access").await;
    let store = fx.open().await;
    let token = "correct horse battery staple";
    let digest = hex(&Sha256::digest(token.as_bytes()));
    // Verified mode without an analytics credential: off, whoever asks.
    let mut off = configured(CLIENT_TOML);
    assert_eq!(off.analytics, AnalyticsAccess::Off);
    let (card_log, writer) = CardLog::start(store.clone(), 10);
    off.storage = Some(Storage {
        store: store.clone(),
        card_log: card_log.clone(),
        keep_override_comments: false,
    });
    let reply = get(&off, "/analytics", Some(&format!("Bearer {token}"))).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        reply.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("token_sha256")
    );

    let mut on = configured(&format!("{CLIENT_TOML}\n[analytics]\ntoken_sha256 = \"{digest}\"\n"));
    on.storage = off.storage.clone();
    let basic = |user_password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_password)
        )
    };
    for uri in ["/analytics", "/analytics.csv", "/analytics.html"] {
        let none = get(&on, uri, None).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            none.headers[header::WWW_AUTHENTICATE],
            r#"Basic realm="analytics", charset="UTF-8""#,
            "a browser asks for the credential"
        );
        let ehr = get(&on, uri, Some(&format!("Bearer {}", ehr_token()))).await;
        assert_eq!(
            ehr.status,
            StatusCode::UNAUTHORIZED,
            "{uri}: an EHR token is not an analytics credential"
        );
        let wrong = get(&on, uri, Some(&basic("cds-team:correct horse battery"))).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(
            get(&on, uri, Some(&format!("Bearer {token}"))).await.status,
            StatusCode::OK,
            "{uri}"
        );
        assert_eq!(
            get(&on, uri, Some(&basic(&format!("cds-team:{token}")))).await.status,
            StatusCode::OK,
            "{uri}"
        );
    }
    // And the analytics credential opens no hook.
    let hook = Request::post(SELECT)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from(fixture(LOW_BACK)))
        .unwrap();
    assert_eq!(send_with(on.clone(), hook).await.status, StatusCode::UNAUTHORIZED);
    // Bad windows are 400s with an OperationOutcome.
    for query in [
        "?since=2026-12-01&until=2026-11-01",
        "?since=soon",
        "?patient=1",
        "?table=patients",
    ] {
        let reply = get(&on, &format!("/analytics.csv{query}"), Some(&format!("Bearer {token}"))).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(reply.json()["resourceType"], "OperationOutcome");
    }
    drop(card_log);
    writer.finish(Duration::from_secs(5)).await;
    fx.finish().await;
}

/// The shared `jti` cache is consulted for every signed call; when it fails, calls are judged by the process's
/// own cache (a replay to this instance is still refused) and do not wait for the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shared_replay_cache_falls_back_to_the_local_one() {
    let fx = Fixture::sqlite("shared-replay").await;
    let store = fx.open().await;
    let state = configured(CLIENT_TOML);
    let dry_needling_cds::http::Access::Verify(verifier) = state.access.as_ref() else {
        panic!("verified mode");
    };
    verifier.share_replay_cache(store.clone());
    let call = |token: String| {
        let state = state.clone();
        async move {
            let request = Request::post(SELECT)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::from(fixture(LOW_BACK)))
                .unwrap();
            send_with(state, request).await.status
        }
    };
    let first = ehr_token_for(SELECT);
    assert_eq!(call(first.clone()).await, StatusCode::OK);
    assert_eq!(
        fx.count("SELECT COUNT(*) FROM jti_seen").await,
        1,
        "the shared cache has the jti"
    );
    assert_eq!(call(first).await, StatusCode::UNAUTHORIZED);
    store.close().await;
    let second = ehr_token_for(SELECT);
    assert_eq!(
        call(second.clone()).await,
        StatusCode::OK,
        "accepted while the store is down"
    );
    assert_eq!(
        call(second).await,
        StatusCode::UNAUTHORIZED,
        "a replay to this instance, refused"
    );
    assert_eq!(call(ehr_token_for(SELECT)).await, StatusCode::OK);
    fx.finish().await;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A full disk seen from outside: `/readyz` says `degraded` with `writesFailing` while writes fail, feedback gets
/// `503` with `Retry-After` (the EHR resends it), and once space comes back both recover without a restart.
#[tokio::test]
async fn a_full_disk_degrades_readiness_and_feedback_until_space_comes_back() {
    let dir = std::env::temp_dir().join(format!("dncds-full-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("store.sqlite3");
    let config = dry_needling_cds::store::StoreConfig::Sqlite { path: path.clone() };
    Store::open(&config).await.expect("create").close().await;
    let raw = sqlx::sqlite::SqlitePool::connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&path))
        .await
        .expect("raw connection");
    let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&raw).await.unwrap();
    let store = Store::open_capped(&config, Some(pages as u64 + 20))
        .await
        .expect("open capped");
    let (state, _writer) = with_store(store, false, 100).await;
    let ready = |reply: &Reply| {
        let body: Value = serde_json::from_slice(&reply.bytes).unwrap();
        (
            body["status"].as_str().unwrap_or_default().to_string(),
            body["checks"]["store"]["writesFailing"].as_bool(),
        )
    };
    assert_eq!(
        ready(&get(&state, "/readyz", None).await),
        ("ready".to_string(), Some(false))
    );
    // Feedback with long comments-free entries until the file is full.
    let entry = |i: usize| {
        json!({"card": format!("{i:06}-{}", "c".repeat(150)), "outcome": "overridden",
            "overrideReason": {"reason": {"code": "x".repeat(150), "system": REASONS}},
            "outcomeTimestamp": "2026-11-23T10:00:00Z"})
    };
    let mut refused = None;
    for n in 0..200 {
        let items: Vec<Value> = (0..50).map(|i| entry(n * 50 + i)).collect();
        let reply = post(
            &state,
            &feedback_uri(),
            json!({ "feedback": items }).to_string().into_bytes(),
        )
        .await;
        if reply.status != StatusCode::OK {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("the capped file never filled");
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(
        ready(&get(&state, "/readyz", None).await),
        ("degraded".to_string(), Some(true))
    );
    // Space comes back.
    sqlx::query("DELETE FROM feedback").execute(&raw).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&raw)
        .await
        .unwrap();
    let reply = post(
        &state,
        &feedback_uri(),
        json!({ "feedback": [entry(999_999)] }).to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&reply.bytes)
    );
    assert_eq!(
        ready(&get(&state, "/readyz", None).await),
        ("ready".to_string(), Some(false))
    );
    raw.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! The workbench driven as a tester drives it, in real headless Chromium (Debian's `chromium`, through
//! `chromedriver` and WebDriver): pick a real patient, draft a dry-needling order with a chronic-low-back-pain
//! reason, fire order-select and see the card come into view with the focus on it (1280×800 and 1440×900); take a
//! suggestion that replaces the order and check the service received `accepted` feedback with that suggestion's
//! id, the card shows that one outcome and nothing else can be chosen on it, the form shows the order removed and
//! "Reset the draft" brings it back; dismiss a card with a reason and check the `overridden` feedback; fire every
//! bundled example with its own reason and get the card its fixture gets; see the reason list's active problems
//! first; omit the prefetch and see the 412 explained (and, with a fhirServer the service may not call, why it
//! was not called); see a discovery 401 explained; load a patient from a FHIR server and see the picker name it.
//! axe-core (vendored in `tests/vendor/axe-core/`, injected through WebDriver, so nothing is fetched) checks
//! WCAG 2.2 AA on the workbench before a card, with a card and after answering it, and on the analytics page
//! (also at 390 px: no sideways scrolling of the page, chart labels readable). Screenshots go to
//! `target/browser/`.
//!
//! Why a real browser: the page is the product for testers, and what breaks it (a script error, a Content
//! Security Policy that blocks a script, Markdown that does not render, a result below the fold) only shows in
//! one. Where Chromium or chromedriver is missing, the test says so and passes, except in CI (`CI` set), where it
//! fails: `.ci/run` installs both.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::{self, Next};
use axum::response::Response;
use common::chromium::{self, browser, start_chromedriver};
use common::fhir_server::FhirServer;
use common::store::TempDir;
use common::{SELECT, fixture, send_with, state};
use dry_needling_cds::config::Config;
use dry_needling_cds::http::{ServeSettings, Storage, serve};
use dry_needling_cds::store::{CardLog, CardLogWriter, Store, StoreConfig};
use dry_needling_cds::{AppState, Knowledge, app};
use fantoccini::{Client, Locator};
use http_body_util::BodyExt;
use serde_json::{Value, json};

const AXE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vendor/axe-core/axe.min.js");

/// Feedback bodies the service received, in order.
type Received = Arc<Mutex<Vec<Value>>>;

/// The service on a loopback port, open, with a SQLite store (for the analytics page), and every feedback body
/// it receives copied into `received`.
async fn start_service(received: Received, dir: &TempDir) -> (SocketAddr, CardLogWriter) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let record = move |request: Request, next: Next| {
        let received = received.clone();
        async move {
            if !request.uri().path().ends_with("/feedback") {
                return next.run(request).await;
            }
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            if let Ok(value) = serde_json::from_slice(&bytes) {
                received.lock().unwrap().push(value);
            }
            let response: Response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            response
        }
    };
    let store = Store::open(&StoreConfig::Sqlite {
        path: dir.0.join("store.sqlite3"),
    })
    .await
    .expect("a SQLite store");
    let (card_log, writer) = CardLog::start(store.clone(), 100);
    let mut state = state();
    state.storage = Some(Storage {
        store,
        card_log,
        keep_override_comments: false,
    });
    let router = app(state).layer(middleware::from_fn(record));
    tokio::spawn(serve(
        listener,
        router,
        ServeSettings::default(),
        std::future::pending(),
    ));
    (address, writer)
}

/// The service with a trusted client (`fixtures/auth/`): every hook and discovery call needs a JWT.
async fn start_service_with_clients() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
    let clients = format!(
        "public_base_url = \"http://{address}\"\n[[client]]\nissuer = \"https://ehr.test.example\"\n\
         jwks_file = \"test-jwks.json\"\nalgorithms = [\"ES384\"]\n"
    );
    let state = AppState::configure(
        Knowledge::embedded().unwrap(),
        Config::parse(&clients, &dir).unwrap(),
        address,
        false,
    )
    .unwrap();
    tokio::spawn(serve(
        listener,
        app(state),
        ServeSettings::default(),
        std::future::pending(),
    ));
    address
}

/// Evaluates `condition` (a JavaScript expression) until it is true, for at most 10 s.
async fn wait_for(client: &Client, condition: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = client
            .execute(&format!("return !!({condition});"), vec![])
            .await
            .unwrap();
        if value == Value::Bool(true) {
            return;
        }
        if Instant::now() > deadline {
            let status = client.execute("return document.body.innerText;", vec![]).await.unwrap();
            panic!(
                "{what}: not within 10 s; the page says:\n{}",
                status.as_str().unwrap_or("")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of a JavaScript expression.
async fn eval(client: &Client, expression: &str) -> Value {
    client
        .execute(&format!("return ({expression});"), vec![])
        .await
        .unwrap()
}

/// Sets a `<select>` to the option whose value is `value`, as a keyboard user would, firing `change`.
async fn select(client: &Client, id: &str, value: &str) {
    let element = client.find(Locator::Id(id)).await.unwrap();
    element.select_by_value(value).await.unwrap();
}

/// Saves what the window shows, as it is (the page scrolls the result into view itself).
async fn screenshot(client: &Client, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../browser");
    std::fs::create_dir_all(&dir).unwrap();
    let png = client.screenshot().await.unwrap();
    std::fs::write(dir.join(name), png).unwrap();
}

/// Runs axe-core on the page (injected through WebDriver: the page's Content Security Policy allows no script
/// but its own, and nothing is fetched) and fails with every WCAG 2.0, 2.1 and 2.2 A/AA violation, of any impact.
async fn axe(client: &Client, when: &str) {
    let loaded = eval(client, "typeof window.axe === 'object'").await;
    if loaded != Value::Bool(true) {
        let source = std::fs::read_to_string(AXE).expect("tests/vendor/axe-core/axe.min.js");
        client.execute(&source, vec![]).await.expect("axe-core loads");
    }
    let result = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { runOnly: { type: 'tag', values:
                 ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] } })
               .then((r) => done(r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.map((n) => ({ target: n.target, summary: n.failureSummary })) }))))
               .catch((e) => done({ error: String(e) }));",
            vec![],
        )
        .await
        .expect("axe runs");
    assert!(
        result == json!([]),
        "axe-core, {when}: violations:\n{}",
        serde_json::to_string_pretty(&result).unwrap()
    );
}

/// The lowest contrast (WCAG ratio) of the focus outline (the `:focus-visible` rule, drawn on a probe) and of
/// the borders of the page's text fields, selects and buttons, each against white and the panels' background.
const CONTRAST: &str = "(() => {
    const luminance = (color) => {
      const [r, g, b] = color.match(/[\\d.]+/g).slice(0, 3).map((v) => Number(v) / 255)
        .map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
      return 0.2126 * r + 0.7152 * g + 0.0722 * b;
    };
    const ratio = (a, b) => {
      const [x, y] = [luminance(a), luminance(b)].sort((p, q) => q - p);
      return (x + 0.05) / (y + 0.05);
    };
    const panel = getComputedStyle(document.querySelector('section')).backgroundColor;
    const worst = (color) => Math.min(ratio(color, 'rgb(255, 255, 255)'), ratio(color, panel));
    const rule = [...document.styleSheets].flatMap((s) => [...s.cssRules])
      .find((r) => r.selectorText === ':focus-visible');
    const probe = document.createElement('div');
    probe.style.outline = rule.style.getPropertyValue('outline');
    document.body.append(probe);
    const outline = worst(getComputedStyle(probe).outlineColor);
    probe.remove();
    const controls = [...document.querySelectorAll('main input:not([type=checkbox]), main select, main button')]
      .filter((e) => e.offsetParent);
    const borders = Math.min(...controls.map((e) => worst(getComputedStyle(e).borderTopColor)));
    return { outline, borders };
  })()";

/// Whether the element `css` is in the window (its top edge between the window's top and bottom) and the focus
/// is inside the element `focus`.
async fn in_view_and_focused(client: &Client, css: &str, focus: &str) -> (bool, bool) {
    let value = client
        .execute(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();
             const focused = document.activeElement && document.activeElement.closest(arguments[1]);
             return [r.top >= 0 && r.top < window.innerHeight - 20, !!focused];",
            vec![json!(css), json!(focus)],
        )
        .await
        .unwrap();
    (value[0] == true, value[1] == true)
}

/// The JSON the page shows in `pre` `id` (the last request or response).
async fn shown_json(client: &Client, id: &str) -> Value {
    let text = eval(client, &format!("document.getElementById('{id}').textContent")).await;
    serde_json::from_str(text.as_str().unwrap()).unwrap()
}

async fn click(client: &Client, css: &str) {
    client.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

async fn type_into(client: &Client, css: &str, text: &str) {
    let element = client.find(Locator::Css(css)).await.unwrap();
    element.clear().await.unwrap();
    element.send_keys(text).await.unwrap();
}

async fn text_of(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Picks a bundled patient and waits until the page shows it.
async fn pick(client: &Client, id: &str) {
    select(client, "patient", id).await;
    wait_for(
        client,
        &format!("document.querySelector('#patient-summary').dataset.patient === '{id}'"),
        id,
    )
    .await;
}

/// Picks the real patient (another one first, so that the page really reloads it) and sends with a reason.
async fn draft_and_send(client: &Client, reason: &str) {
    pick(client, "brenda-jackson-low-back").await;
    pick(client, "clbp-neck-ibuprofen").await;
    send_with_reason(client, reason).await;
}

/// Chooses the patient's condition whose label contains `reason`, fires the hook and waits for a card.
async fn send_with_reason(client: &Client, reason: &str) {
    let option = client
        .execute(
            "return [...document.querySelectorAll('#reason option')].find(o => o.textContent.includes(arguments[0]))?.value;",
            vec![json!(reason)],
        )
        .await
        .unwrap();
    let option = option
        .as_str()
        .unwrap_or_else(|| panic!("no reason option with {reason}"));
    select(client, "reason", option).await;
    fire(client).await;
}

/// Fires the hook and waits for a card.
async fn fire(client: &Client) {
    click(client, "#send").await;
    wait_for(client, "document.querySelector('#cards .card .summary')", "a card").await;
}

/// The card templates of a response, in order.
fn templates(response: &Value) -> Vec<String> {
    response["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["extension"]["dry-needling-cds-card"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_tester_drafts_an_order_sees_the_card_and_sends_feedback() {
    if !chromium::available("browser test") {
        return;
    }
    let received: Received = Arc::default();
    let dir = TempDir(std::env::temp_dir().join(format!("dn-browser-store-{}", std::process::id())));
    let (service, writer) = start_service(received.clone(), &dir).await;
    let (_driver, port) = start_chromedriver().await;
    let client = browser(port, "workbench", (1280, 800)).await;
    let outcome = run(&client, service, &received).await;
    let _ = client.close().await;
    writer.finish(Duration::from_secs(5)).await;
    outcome.unwrap_or_else(|e| panic!("{e}"));
}

#[allow(clippy::too_many_lines)] // one tester's session, step by step in one browser, as a script reads; each step
// is a few lines with its own assertion message
async fn run(client: &Client, service: SocketAddr, received: &Received) -> Result<(), String> {
    client.set_window_size(1280, 800).await.map_err(|e| e.to_string())?;
    client
        .goto(&format!("http://{service}/"))
        .await
        .map_err(|e| e.to_string())?;
    wait_for(
        client,
        "document.querySelectorAll('#patient option').length > 5 && document.querySelector('#patient-summary').dataset.patient",
        "the patient list",
    )
    .await;

    // A favicon of its own, served under the page's Content Security Policy (no 404 on every load).
    let icon = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             const link = document.querySelector('link[rel=icon]');
             if (!link) return done('no link');
             fetch(link.href).then((r) => done(`${r.status} ${r.headers.get('content-type')}`));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(icon, "200 image/svg+xml", "the favicon");
    axe(client, "before a card").await;
    // What axe does not measure (WCAG 1.4.11): the focus outline and the controls' borders, at least 3:1
    // against white and against the panels.
    let contrast = eval(client, CONTRAST).await;
    assert!(
        contrast["outline"].as_f64().unwrap() >= 3.0 && contrast["borders"].as_f64().unwrap() >= 3.0,
        "non-text contrast: {contrast}"
    );

    // The reason list: the active problems first, the rest grouped apart; the summary lists the active ones.
    pick(client, "clbp-neck-ibuprofen").await;
    let groups = eval(
        client,
        "[...document.querySelectorAll('#reason optgroup')].map((g) => [g.label, g.children.length])",
    )
    .await;
    assert_eq!(
        groups,
        json!([["Active problems", 9], ["Resolved, inactive or without status", 27]]),
        "the reason list's groups"
    );
    let active = eval(
        client,
        "[...document.querySelectorAll('#reason optgroup:first-of-type option')].every((o) => o.textContent.includes(', active'))",
    )
    .await;
    assert_eq!(active, true, "only active problems in the first group");
    let summary = text_of(client, "#patient-summary").await;
    assert!(
        summary.contains("Active conditions (9)") && summary.contains("Chronic low back pain"),
        "{summary}"
    );

    // A dry-needling order for chronic low back pain: the card says it is not recommended, and comes into view
    // with the focus on it, at 1280×800 (the form fills the first screen).
    draft_and_send(client, "Chronic low back pain").await;
    let summary = text_of(client, "#cards .card .summary").await;
    assert!(
        summary.contains("not recommended for chronic low back pain"),
        "{summary}"
    );
    let detail = client.find(Locator::Css("#cards .card .detail strong")).await;
    assert!(detail.is_ok(), "the detail's Markdown was not rendered");
    assert_eq!(
        in_view_and_focused(client, "#cards .card .summary", "#cards .card").await,
        (true, true),
        "at 1280×800 the card is in view and focused"
    );
    screenshot(client, "workbench-card.png").await;
    axe(client, "with a card").await;

    // Take the first suggestion, which replaces the order: the service receives `accepted` with that
    // suggestion's id; the card shows its one outcome and offers nothing else; the form shows the order removed,
    // as the draft list does; "Reset the draft" brings it back.
    let response = shown_json(client, "response-json").await;
    let card = &response["cards"][0];
    let suggestion = &card["suggestions"][0];
    assert!(
        suggestion["actions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["type"] == "delete"),
        "the first suggestion removes the order: {suggestion}"
    );
    let before = received.lock().unwrap().len();
    click(client, "#cards .card button.suggestion").await;
    wait_for(client, "document.querySelector('#cards .card .outcome')", "the outcome").await;
    let accepted = received.lock().unwrap().last().cloned().expect("feedback received");
    assert_eq!(accepted["feedback"][0]["outcome"], "accepted");
    assert_eq!(accepted["feedback"][0]["card"], card["uuid"]);
    assert_eq!(
        accepted["feedback"][0]["acceptedSuggestions"][0]["id"],
        suggestion["uuid"]
    );
    let outcome = text_of(client, "#cards .card .outcome").await;
    assert!(
        outcome.starts_with(&format!("Accepted: {}", suggestion["label"].as_str().unwrap()))
            && outcome.contains("Reset the draft"),
        "{outcome}"
    );
    let controls = eval(
        client,
        "document.querySelectorAll('#cards .card button, #cards .card select').length",
    )
    .await;
    assert_eq!(controls, 0, "one outcome per card: nothing left to choose on it");
    assert_eq!(received.lock().unwrap().len(), before + 1, "one feedback for the card");
    let focused = in_view_and_focused(client, "#cards .card .outcome", "#cards .card .outcome").await;
    assert_eq!(focused, (true, true), "the outcome is shown and focused");
    let drafts = text_of(client, "#draft-list").await;
    assert!(!drafts.contains("ServiceRequest/dn-1"), "{drafts}");
    assert_eq!(
        eval(client, "document.getElementById('order-fields').disabled").await,
        true
    );
    assert_eq!(
        eval(client, "document.getElementById('order-removed').hidden").await,
        false
    );
    axe(client, "after answering a card").await;
    screenshot(client, "workbench-answered.png").await;
    client
        .execute("document.getElementById('draft-panel').scrollIntoView();", vec![])
        .await
        .unwrap();
    screenshot(client, "workbench-order-removed.png").await;
    click(client, "#reset-draft").await;
    let drafts = text_of(client, "#draft-list").await;
    assert!(
        drafts.contains("ServiceRequest/dn-1: Dry needling, for Chronic low back pain"),
        "the order as the form shows it: {drafts}"
    );
    assert!(
        !drafts.contains("97110"),
        "the suggestion's order is gone too: {drafts}"
    );
    assert_eq!(
        eval(client, "document.getElementById('order-fields').disabled").await,
        false
    );
    assert_eq!(
        eval(client, "document.getElementById('order-removed').hidden").await,
        true
    );
    fire(client).await;
    let request = shown_json(client, "request-json").await;
    let order = &request["context"]["draftOrders"]["entry"][0]["resource"];
    assert_eq!(order["id"], "dn-1", "{request}");
    assert!(
        order["reasonReference"][0]["display"]
            .as_str()
            .unwrap()
            .contains("Chronic low back pain")
    );

    // Dismiss a new card with its first override reason: the service receives `overridden` with it, and the
    // card shows it.
    let response = shown_json(client, "response-json").await;
    let card = &response["cards"][0];
    let reason = &card["overrideReasons"][0];
    assert!(reason["code"].is_string(), "the card has override reasons: {card}");
    let dropdown = client.find(Locator::Css("#cards .card .actions select")).await.unwrap();
    dropdown.select_by_value("0").await.unwrap();
    click(client, "#cards .card button.dismiss").await;
    wait_for(client, "document.querySelector('#cards .card .outcome')", "the outcome").await;
    let overridden = received.lock().unwrap().last().cloned().expect("feedback received");
    assert_eq!(overridden["feedback"][0]["outcome"], "overridden");
    assert_eq!(overridden["feedback"][0]["card"], card["uuid"]);
    assert_eq!(
        overridden["feedback"][0]["overrideReason"]["reason"]["code"],
        reason["code"]
    );
    let outcome = text_of(client, "#cards .card .outcome").await;
    assert_eq!(outcome, format!("Dismissed: {}", reason["display"].as_str().unwrap()));
    let controls = eval(client, "document.querySelectorAll('#cards .card button').length").await;
    assert_eq!(controls, 0, "a dismissed card offers no suggestion any more");

    // At 1440×900 too, the result comes into view with the focus on it.
    client.set_window_size(1440, 900).await.map_err(|e| e.to_string())?;
    client
        .execute(
            "window.scrollTo(0, 0); document.getElementById('send').focus();",
            vec![],
        )
        .await
        .unwrap();
    fire(client).await;
    assert_eq!(
        in_view_and_focused(client, "#cards .card .summary", "#cards .card").await,
        (true, true),
        "at 1440×900 the card is in view and focused"
    );

    // Every bundled example fires with its own reason and gets the card its fixture gets.
    let examples = eval(
        client,
        "[...document.querySelectorAll('#patient option')].map((o) => o.value).filter((v) => v.startsWith('rule-'))",
    )
    .await;
    let examples: Vec<String> = serde_json::from_value(examples).unwrap();
    assert_eq!(examples.len(), 4, "{examples:?}");
    let mut seen = Vec::new();
    for example in &examples {
        let name = example.strip_prefix("rule-").unwrap();
        let body = fixture(&format!("rules/{name}.json"));
        let request: Value = serde_json::from_slice(&body).unwrap();
        let direct = send_with(
            state(),
            axum::http::Request::post(SELECT)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .json();
        pick(client, example).await;
        let expected = &request["context"]["draftOrders"]["entry"][0]["resource"];
        if let Some(display) = expected["reasonCode"][0]["coding"][0]["display"].as_str() {
            let drafts = text_of(client, "#draft-list").await;
            assert!(drafts.contains(&format!("for {display}")), "{example}: {drafts}");
        }
        select(client, "hook", "order-select").await;
        fire(client).await;
        let sent = shown_json(client, "request-json").await;
        let order = &sent["context"]["draftOrders"]["entry"][0]["resource"];
        for field in ["system", "code"] {
            assert_eq!(
                order["reasonCode"][0]["coding"][0][field], expected["reasonCode"][0]["coding"][0][field],
                "{example}: the example's own reason"
            );
        }
        let got = templates(&shown_json(client, "response-json").await);
        assert_eq!(got, templates(&direct), "{example}: the card its fixture gets");
        assert!(!got.is_empty(), "{example}: a card");
        seen.push(got);
    }
    seen.dedup();
    assert_eq!(seen.len(), examples.len(), "each example its own card: {seen:?}");

    // Omit the record and give no reason: the 412 is shown with what to do, in view.
    pick(client, "clbp-neck-ibuprofen").await;
    for key in ["conditions", "medicationStatements", "medicationRequests", "procedures"] {
        select(client, &format!("prefetch-{key}"), "omit").await;
    }
    select(client, "reason", "none").await;
    click(client, "#send").await;
    wait_for(client, "document.querySelector('#status .problem')", "the error").await;
    let problem = text_of(client, "#status .problem").await;
    assert!(problem.contains("HTTP 412"), "{problem}");
    assert!(problem.contains("needs data"), "{problem}");
    assert_eq!(
        in_view_and_focused(client, "#status", "#status").await,
        (true, true),
        "the error is in view and focused"
    );
    screenshot(client, "workbench-412.png").await;

    // The same with a fhirServer the service may not call (not on its allowlist): the advice says why, not
    // "give a fhirServer".
    let fhir = FhirServer::start(&fixture("real/clbp-neck-ibuprofen.order-select.json")).await;
    let origin = fhir.base();
    let origin = origin.trim_end_matches('/');
    let origin = &origin[..origin[8..].find('/').map_or(origin.len(), |i| i + 8)];
    type_into(client, "#fhir-server", &fhir.base()).await;
    click(client, "#send").await;
    wait_for(client, "document.querySelector('#status .problem')", "the error").await;
    let problem = text_of(client, "#status .problem").await;
    assert!(problem.contains("HTTP 412"), "{problem}");
    assert!(
        problem.contains(&format!("--fhir-server {origin}")) && !problem.contains("give a fhirServer"),
        "{problem}"
    );
    // The service's own reason, from the OperationOutcome.
    assert!(
        problem.contains(&format!(
            "The service refused to call {origin} (its origin is not on this service's allowlist"
        )),
        "{problem}"
    );
    client
        .find(Locator::Id("fhir-server"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();

    // A discovery 401 (a service with trusted clients): explained.
    let verifying = start_service_with_clients().await;
    type_into(client, "#discovery", &format!("http://{verifying}/cds-services")).await;
    click(client, "#send").await;
    wait_for(client, "document.querySelector('#status .problem')", "the error").await;
    let problem = text_of(client, "#status .problem").await;
    assert!(
        problem.contains("HTTP 401") && problem.contains("sends no JWT"),
        "{problem}"
    );
    type_into(client, "#discovery", &format!("http://{service}/cds-services")).await;

    // A patient loaded from a FHIR server by the browser, as the sandbox does: the picker names it, the same
    // record, the same card.
    for key in ["conditions", "medicationStatements", "medicationRequests", "procedures"] {
        select(client, &format!("prefetch-{key}"), "as-is").await;
    }
    pick(client, "brenda-jackson-low-back").await;
    click(client, "#fhir-load summary").await;
    type_into(client, "#fhir-base", &fhir.base()).await;
    let patient_id = "ca15b832-01e4-41dd-6a52-97bd3e5510cb";
    type_into(client, "#fhir-patient", patient_id).await;
    click(client, "#fhir-load-button").await;
    wait_for(
        client,
        "document.querySelector('#patient-summary').textContent.includes('Active conditions (9)')",
        "the patient loaded from the FHIR server",
    )
    .await;
    assert!(fhir.log().len() >= 3, "the browser searched the FHIR server");
    let picked = eval(
        client,
        "document.querySelector('#patient').selectedOptions[0].textContent",
    )
    .await;
    assert!(
        picked.as_str().unwrap().contains(patient_id),
        "the picker names the loaded patient: {picked}"
    );
    send_with_reason(client, "Chronic low back pain").await;
    let summary = text_of(client, "#cards .card .summary").await;
    assert!(
        summary.contains("not recommended for chronic low back pain"),
        "{summary}"
    );

    // A narrow window: one column, nothing wider than the window.
    client.set_window_size(420, 900).await.map_err(|e| e.to_string())?;
    wait_for(
        client,
        "document.documentElement.scrollWidth <= window.innerWidth",
        "no horizontal scrolling at 420 px",
    )
    .await;
    screenshot(client, "workbench-narrow.png").await;
    axe(client, "the workbench at 420 px").await;

    // The analytics page, with the feedback just sent: WCAG 2.2 AA, a main landmark, charts with a text
    // alternative; at 390 px the page does not scroll sideways and the chart labels stay readable.
    client.set_window_size(1280, 800).await.map_err(|e| e.to_string())?;
    client
        .goto(&format!("http://{service}/analytics.html"))
        .await
        .map_err(|e| e.to_string())?;
    wait_for(client, "document.querySelector('main svg')", "the analytics page").await;
    let names = eval(
        client,
        "[...document.querySelectorAll('svg')].map((s) => s.getAttribute('role') === 'img' && \
         document.getElementById(s.getAttribute('aria-labelledby'))?.textContent)",
    )
    .await;
    assert!(
        names.as_array().unwrap().len() == 2
            && names
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n.as_str().is_some_and(|n| n.len() > 20)),
        "every chart is an image with a name: {names}"
    );
    let icon = eval(client, "document.querySelector('link[rel=icon]')?.getAttribute('href')").await;
    assert_eq!(icon, "data:,", "no favicon request from the analytics page");
    axe(client, "the analytics page").await;
    client.set_window_size(390, 844).await.map_err(|e| e.to_string())?;
    wait_for(
        client,
        "document.documentElement.scrollWidth <= window.innerWidth",
        "no horizontal scrolling of the analytics page at 390 px",
    )
    .await;
    // A label's size as drawn: its font size, scaled as the chart is.
    let smallest = eval(
        client,
        "[...document.querySelectorAll('svg text')].filter((t) => t.textContent.trim()).map((t) => {
           const svg = t.ownerSVGElement;
           const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
           return [parseFloat(getComputedStyle(t).fontSize) * scale, t.textContent];
         }).sort((a, b) => a[0] - b[0])[0]",
    )
    .await;
    assert!(
        smallest[0].as_f64().unwrap() >= 12.0,
        "chart labels at 390 px are drawn too small: {smallest}"
    );
    axe(client, "the analytics page at 390 px").await;
    screenshot(client, "analytics-narrow.png").await;
    Ok(())
}

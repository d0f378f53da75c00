//! What operators see (issue 13): `/metrics` after known traffic, where it is served and to whom, and the start-up
//! line that says which URL EHRs must call.
//!
//! Why the real binary: the metrics recorder is process-wide, so exact counts need a process of their own; and
//! the start-up line and the second listener are `main`'s.

mod common;

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use common::process::Service;
use common::{SELECT, SIGN, fixture, send_with, state};
use dry_needling_cds::http::MetricsExposure;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(address: SocketAddr, path: &str, body: Vec<u8>, token: Option<&str>) -> StatusCode {
    let mut request = client()
        .post(format!("http://{address}{path}"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let status = request.send().await.unwrap().status();
    StatusCode::from_u16(status.as_u16()).unwrap()
}

async fn get(address: SocketAddr, path: &str) -> (StatusCode, String) {
    let response = client().get(format!("http://{address}{path}")).send().await.unwrap();
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.text().await.unwrap())
}

/// The value of the sample `name{labels}` in a scrape (labels exactly as rendered), or `None`.
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_known_traffic_and_carry_no_caller_text() {
    let service = Service::start_with("", &["--metrics-listen", "127.0.0.1:0"]);
    let line = service.wait_for_line("metrics_address=");
    let at = line.find("metrics_address=").unwrap() + "metrics_address=".len();
    let metrics: SocketAddr = line[at..].split(' ').next().unwrap().parse().unwrap();
    let main = service.address;

    // The traffic, with what each must count (written before running it).
    for _ in 0..2 {
        // Neck pain: the card that prefers manual therapy with exercise (warning).
        assert_eq!(
            post(main, SELECT, fixture("rules/neck-pain.json"), None).await,
            StatusCode::OK
        );
    }
    // No reason and no conditions: 412 naming the conditions.
    let status = post(main, SELECT, fixture("rules/prefetch-absent-no-reason.json"), None).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    // Medications missing, but the order decides: a card that notes both medication kinds as unchecked.
    let status = post(
        main,
        SELECT,
        fixture("rules/prefetch-medications-missing-but-decided.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // Two orders on order-sign.
    assert_eq!(
        post(main, SIGN, fixture("rules/order-sign-two-orders.json"), None).await,
        StatusCode::OK
    );
    let feedback = json!({"feedback": [{"card": "4a5c5d2e-8f3b-4c1d-9e6f-7a8b9c0d1e2f", "outcome": "overridden",
        "overrideReason": {"reason": {"code": "patient-refused", "system": "http://example.org"}},
        "outcomeTimestamp": "2026-11-23T10:00:00Z"}]});
    let path = format!("{SELECT}/feedback");
    let status = post(main, &path, serde_json::to_vec(&feedback).unwrap(), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(main, "/no-such-page-secret").await.0, StatusCode::NOT_FOUND);
    let status = post(main, "/cds-services/evil-service-name", b"{}".to_vec(), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // With a separate listener, the main port has no /metrics.
    assert_eq!(get(main, "/metrics").await.0, StatusCode::NOT_FOUND);

    let (status, scrape) = get(metrics, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let expect = |series: &str, value: f64| {
        assert_eq!(sample(&scrape, series), Some(value), "{series}\n{scrape}");
    };
    let select = "route=\"/cds-services/dry-needling-order-select\"";
    expect(&format!("cds_http_requests_total{{{select},status=\"200\"}}"), 3.0);
    expect(&format!("cds_http_requests_total{{{select},status=\"412\"}}"), 1.0);
    expect(
        "cds_http_requests_total{route=\"/cds-services/dry-needling-order-sign\",status=\"200\"}",
        1.0,
    );
    expect(
        "cds_http_requests_total{route=\"/cds-services/dry-needling-order-select/feedback\",status=\"200\"}",
        1.0,
    );
    expect("cds_http_requests_total{route=\"unmatched\",status=\"404\"}", 1.0);
    expect(
        "cds_http_requests_total{route=\"/cds-services/{id}\",status=\"404\"}",
        1.0,
    );
    expect(&format!("cds_http_request_duration_seconds_count{{{select}}}"), 4.0);
    expect(
        "cds_cards_total{service=\"dry-needling-order-select\",card=\"neck-pain-prefer-manual-therapy\",indicator=\"warning\"}",
        2.0,
    );
    expect("cds_data_unavailable_total{kind=\"conditions\",answer=\"412\"}", 1.0);
    expect(
        "cds_data_unavailable_total{kind=\"medicationStatements\",answer=\"note\"}",
        1.0,
    );
    expect(
        "cds_data_unavailable_total{kind=\"medicationRequests\",answer=\"note\"}",
        1.0,
    );
    expect("cds_feedback_total{outcome=\"overridden\"}", 1.0);
    expect("cds_hooks_in_flight", 0.0);
    let sign_cards: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("cds_cards_total{service=\"dry-needling-order-sign\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(sign_cards, 2.0, "one card per order on order-sign\n{scrape}");
    assert!(scrape.contains("# HELP cds_cards_total"), "{scrape}");
    for secret in [
        "rule-patient",
        "28db0a57",
        "no-such-page-secret",
        "evil-service-name",
        "patient-refused",
    ] {
        assert!(!scrape.contains(secret), "`{secret}` in the scrape\n{scrape}");
    }
    // Every card reaches the card log (2 neck pain, 1 decided without medications, 2 on order-sign), written
    // in batches after the answers: polled for up to 5 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (_, scrape) = get(metrics, "/metrics").await;
        let written = sample(&scrape, "cds_card_log_total{outcome=\"written\"}");
        if written == Some(5.0) {
            assert_eq!(sample(&scrape, "cds_card_log_queued"), Some(0.0), "{scrape}");
            assert!(!scrape.contains("outcome=\"queue_full\""), "{scrape}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{written:?} cards written\n{scrape}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The metrics listener serves nothing else.
    assert_eq!(get(metrics, "/cds-services").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(metrics, "/healthz").await.0, StatusCode::OK);
}

fn es_token(aud: &str, jti: &str) -> String {
    common::es384_token(aud, jti)
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn client_config(public_base_url: &str) -> String {
    format!(
        "public_base_url = \"{public_base_url}\"\n[[client]]\nissuer = \"https://ehr.test.example\"\n\
         jwks_file = \"{}/fixtures/auth/test-jwks.json\"\nalgorithms = [\"ES384\"]\n",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[tokio::test]
async fn refusals_by_reason_and_the_replay_cache_are_counted() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let service = Service::start_with(
        &client_config("http://127.0.0.1:1"),
        &["--listen", &listen, "--public-base-url", &base],
    );
    let line = service.wait_for_line("max_connections=");
    assert!(line.contains(&format!("EHRs must call {base}/cds-services")), "{line}");
    let main = service.address;
    let body = || fixture("rules/neck-pain.json");
    assert_eq!(post(main, SELECT, body(), None).await, StatusCode::UNAUTHORIZED);
    let token = es_token(&format!("{base}{SELECT}"), "jti-1");
    assert_eq!(post(main, SELECT, body(), Some(&token)).await, StatusCode::OK);
    assert_eq!(post(main, SELECT, body(), Some(&token)).await, StatusCode::UNAUTHORIZED);
    let wrong = es_token(&format!("http://localhost:{port}{SELECT}"), "jti-2");
    assert_eq!(post(main, SELECT, body(), Some(&wrong)).await, StatusCode::UNAUTHORIZED);
    let (status, scrape) = get(main, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "loopback peers read /metrics on the main port");
    for (series, value) in [
        ("cds_auth_refusals_total{reason=\"missing_token\"}", 1.0),
        ("cds_auth_refusals_total{reason=\"replay\"}", 1.0),
        ("cds_auth_refusals_total{reason=\"audience\"}", 1.0),
        ("cds_replay_cache_entries", 1.0),
        (
            "cds_http_requests_total{route=\"/cds-services/dry-needling-order-select\",status=\"401\"}",
            3.0,
        ),
    ] {
        assert_eq!(sample(&scrape, series), Some(value), "{series}\n{scrape}");
    }
    assert!(!scrape.contains("jti-1"), "{scrape}");
    // The aud refusal said what it expected and what came, with the fix.
    let line = service.wait_for_line("the token's aud is");
    assert!(
        line.contains(&format!("--public-base-url http://localhost:{port}")),
        "{line}"
    );
}

#[tokio::test]
async fn a_public_base_url_that_this_listener_cannot_serve_is_named_at_start() {
    // The sandbox configuration (public_base_url on port 8080) run on another port.
    let service = Service::start_with(&client_config("http://127.0.0.1:8080"), &[]);
    let line = service.wait_for_line("max_connections=");
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains(&format!("--public-base-url http://{}", service.address)),
        "{line}"
    );
}

#[tokio::test]
async fn metrics_on_the_main_port_answer_loopback_peers_only() {
    let mut state = state();
    let version = state.knowledge.version.label.clone();
    state.metrics = Some(dry_needling_cds::ops::metrics::install(&version).unwrap());
    let request = |peer: Option<&str>| {
        let mut request = Request::get("/metrics").body(Body::empty()).unwrap();
        if let Some(peer) = peer {
            let peer: SocketAddr = peer.parse().unwrap();
            request.extensions_mut().insert(ConnectInfo(peer));
        }
        request
    };
    let reply = send_with(state.clone(), request(Some("127.0.0.1:40000"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    // The content's version, as an info metric.
    let info = format!("cds_content_info{{version=\"{version}\"}} 1");
    let text = String::from_utf8_lossy(&reply.bytes);
    assert!(text.contains(&info), "{info} missing from:\n{text}");
    // An IPv4 scraper on a dual-stack `[::]` listener.
    let reply = send_with(state.clone(), request(Some("[::ffff:127.0.0.1]:40000"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let reply = send_with(state.clone(), request(Some("[::1]:40000"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    for peer in [Some("10.0.0.5:40000"), Some("[2001:db8::1]:40000"), None] {
        let reply = send_with(state.clone(), request(peer)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{peer:?}");
    }
    state.metrics_exposure = MetricsExposure::SeparateListener;
    let reply = send_with(state, request(Some("127.0.0.1:40000"))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "with a separate listener");
}

#[tokio::test]
async fn fhir_searches_are_counted_by_kind_and_outcome() {
    let path = "rules/neck-pain.json";
    let server = common::fhir_server::FhirServer::start(&fixture(path)).await;
    let service = Service::start_with("", &["--fhir-server", &server.origin()]);
    let mut body: serde_json::Value = serde_json::from_slice(&fixture(path)).unwrap();
    body.as_object_mut().unwrap().remove("prefetch");
    body["fhirServer"] = json!(server.base());
    // All four kinds fetched once, successfully.
    let status = post(service.address, SELECT, serde_json::to_vec(&body).unwrap(), None).await;
    assert_eq!(status, StatusCode::OK);
    // A server nobody listed: not contacted, each kind counted as `not_allowed`.
    body["fhirServer"] = json!("https://fhir.unlisted.example/R4");
    let status = post(service.address, SELECT, serde_json::to_vec(&body).unwrap(), None).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (_, scrape) = get(service.address, "/metrics").await;
    for kind in ["conditions", "medicationStatements", "medicationRequests", "procedures"] {
        for (outcome, value) in [("ok", 1.0), ("not_allowed", 1.0)] {
            let series = format!("cds_fhir_searches_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}");
            assert_eq!(sample(&scrape, &series), Some(value), "{series}\n{scrape}");
        }
    }
    assert_eq!(
        sample(&scrape, "cds_fhir_fetch_duration_seconds_count"),
        Some(1.0),
        "{scrape}"
    );
    assert!(!scrape.contains("unlisted"), "{scrape}");
}

/// The field names the "JSON log fields" table of `docs/operations.md` documents.
fn documented_log_fields() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let table = doc
        .split("## JSON log fields")
        .nth(1)
        .expect("docs/operations.md has a JSON log fields section");
    let mut fields = Vec::new();
    for row in table
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
    {
        let first = row.split('|').nth(1).unwrap_or_default();
        fields.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    fields
}

#[tokio::test]
async fn every_json_log_field_is_documented_and_none_is_empty() {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let service = Service::start_with(&client_config(&base), &["--listen", &listen, "--log-format", "json"]);
    let main = service.address;
    // Accepted, refused for aud (with its details), refused without a token, feedback without an override
    // reason, a FHIR server not contacted.
    let token = |path: &str, jti: &str| es_token(&format!("{base}{path}"), jti);
    let mut body: serde_json::Value = serde_json::from_slice(&fixture("rules/neck-pain.json")).unwrap();
    body.as_object_mut().unwrap().remove("prefetch");
    let body = serde_json::to_vec(&body).unwrap();
    assert_eq!(
        post(main, SELECT, body, Some(&token(SELECT, "a"))).await,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        post(main, SELECT, fixture("rules/neck-pain.json"), Some(&token(SIGN, "b"))).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(main, SELECT, fixture("rules/neck-pain.json"), None).await,
        StatusCode::UNAUTHORIZED
    );
    let feedback = format!("{SELECT}/feedback");
    let entry =
        json!({"feedback": [{"card": "c1", "outcome": "overridden", "outcomeTimestamp": "2026-11-23T10:00:00Z"}]});
    let status = post(
        main,
        &feedback,
        serde_json::to_vec(&entry).unwrap(),
        Some(&token(&feedback, "c")),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    service.wait_for_line("\"feedback\"");
    service.terminate();
    service.wait_for_line("\"stopped\"");
    let documented = documented_log_fields();
    let mut seen = std::collections::BTreeSet::new();
    for line in service.log() {
        let value: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let object = value.as_object().unwrap();
        let span = object.get("span").and_then(|s| s.as_object());
        for (key, value) in object.iter().chain(span.into_iter().flatten()) {
            assert!(
                documented.iter().any(|d| d == key) || key == "name",
                "`{key}` is not in docs/operations.md's JSON log fields: {line}"
            );
            assert_ne!(value, &json!(""), "`{key}` is empty: {line}");
            seen.insert(key.clone());
        }
    }
    for key in [
        "timestamp",
        "level",
        "message",
        "span",
        "status",
        "latency_us",
        "reason",
        "expected",
        "received",
        "card",
    ] {
        assert!(seen.contains(key), "no line had `{key}`");
    }
    assert!(
        !seen.contains("override_reason"),
        "an absent override reason was logged"
    );
}

#[tokio::test]
async fn jwks_fetches_are_counted() {
    // A JWKS URL on loopback serving the remote key set; a token with a kid only there makes one fetch.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    let jwks = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/auth/remote-jwks.json")).unwrap();
    let router = axum::Router::new().fallback(move || {
        let jwks = jwks.clone();
        async move { ([("content-type", "application/json")], jwks) }
    });
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let config = format!(
        "public_base_url = \"{base}\"\n[[client]]\nissuer = \"https://ehr.test.example\"\njwks_url = \"{jwks_url}\"\nalgorithms = [\"ES384\"]\n"
    );
    let listen = format!("127.0.0.1:{port}");
    let service = Service::start_with(&config, &["--listen", &listen]);
    let key = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/auth/es384-other-private.pem"
    ))
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for jti in ["j1", "j2"] {
        let claims = json!({"iss": "https://ehr.test.example", "aud": format!("{base}{SELECT}"), "iat": now,
                            "exp": now + 300, "jti": jti});
        let header = Header {
            kid: Some("remote-es384".to_string()),
            ..Header::new(Algorithm::ES384)
        };
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_pem(&key).unwrap()).unwrap();
        let status = post(service.address, SELECT, fixture("rules/neck-pain.json"), Some(&token)).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (_, scrape) = get(service.address, "/metrics").await;
    assert_eq!(
        sample(&scrape, "cds_jwks_fetches_total{outcome=\"ok\"}"),
        Some(1.0),
        "{scrape}"
    );
    assert_eq!(sample(&scrape, "cds_replay_cache_entries"), Some(2.0), "{scrape}");
}

#[tokio::test]
async fn data_unavailable_cards_are_counted() {
    let service = Service::start_with("[missing_data]\ndefault = \"card\"\n", &[]);
    let status = post(
        service.address,
        SELECT,
        fixture("rules/prefetch-absent-no-reason.json"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (_, scrape) = get(service.address, "/metrics").await;
    for series in [
        "cds_data_unavailable_total{kind=\"conditions\",answer=\"card\"}",
        "cds_cards_total{service=\"dry-needling-order-select\",card=\"data-unavailable\",indicator=\"warning\"}",
    ] {
        assert_eq!(sample(&scrape, series), Some(1.0), "{series}\n{scrape}");
    }
    assert_eq!(
        sample(
            &scrape,
            "cds_data_unavailable_total{kind=\"conditions\",answer=\"412\"}"
        ),
        None
    );
}

/// A container sets the public URL from the environment: with trusted clients and no `public_base_url` in the
/// file, `DRY_NEEDLING_CDS_PUBLIC_BASE_URL` (like `--public-base-url`) satisfies the requirement; with neither,
/// the service refuses to start and says what to set.
#[tokio::test]
async fn the_public_base_url_may_come_from_the_environment_instead_of_the_file() {
    let without = client_config("http://127.0.0.1:1").replace("public_base_url = \"http://127.0.0.1:1\"\n", "");
    assert!(!without.contains("public_base_url"));
    let dir = std::env::temp_dir().join(format!("dn-public-url-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(&path, &without).unwrap();
    // Refused without it.
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_dry-needling-cds"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env("DRY_NEEDLING_CDS_DATA_DIR", dir.join("data"))
        .env_remove("DRY_NEEDLING_CDS_PUBLIC_BASE_URL")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("DRY_NEEDLING_CDS_PUBLIC_BASE_URL"), "{stderr}");
    // Started with it: the start-up line names the URL EHRs must call.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dry-needling-cds"))
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env("DRY_NEEDLING_CDS_DATA_DIR", dir.join("data"))
        .env("DRY_NEEDLING_CDS_PUBLIC_BASE_URL", "https://cds.example.org")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let started = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("max_connections"))
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !started.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = started.join().unwrap().expect("the service started");
    assert!(line.contains("https://cds.example.org/cds-services"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_run_killed_with_sigkill_is_reported_by_the_next_start() {
    // Before: kill -9 lost the card log's queue with no trace anywhere.
    let dir = std::env::temp_dir().join(format!("dn-unclean-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.to_str().unwrap().to_string();
    let mut first = Service::start_with("", &["--data-dir", &data]);
    assert_eq!(
        post(first.address, SELECT, fixture("rules/neck-pain.json"), None).await,
        StatusCode::OK
    );
    // The card log writes every 100 ms; then the process is killed without a chance to say so.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    first.child.kill().unwrap();
    first.wait(std::time::Duration::from_secs(5)).expect("killed");

    let second = Service::start_with("", &["--data-dir", &data]);
    let line = second.wait_for_line("ended without a clean shutdown");
    assert!(line.contains("cards_written=1"), "{line}");
    assert!(!line.contains("last_card_log_write=none"), "{line}");
    let (_, scrape) = get(second.address, "/metrics").await;
    assert_eq!(sample(&scrape, "cds_unclean_stops_total"), Some(1.0), "{scrape}");
    second.terminate();
    let mut second = second;
    second
        .wait(std::time::Duration::from_secs(10))
        .expect("stops on SIGTERM");

    // A clean stop leaves nothing to report.
    let third = Service::start_with("", &["--data-dir", &data]);
    let (_, scrape) = get(third.address, "/metrics").await;
    assert_eq!(sample(&scrape, "cds_unclean_stops_total"), None, "{scrape}");
    assert!(
        !third.log().iter().any(|l| l.contains("without a clean shutdown")),
        "{:?}",
        third.log()
    );
    drop(third);
    let _ = std::fs::remove_dir_all(&dir);
}

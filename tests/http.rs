//! The HTTP edge through the real router: discovery, every class of bad input, CORS, feedback, snapshots,
//! and one test over a real socket.

mod common;

use axum::body::Body;
use axum::http::Request;
use common::*;
use dry_needling_cds::service::Limits;
use serde_json::{Value, json};

#[tokio::test]
async fn discovery_lists_one_service_per_hook_with_prefetch() {
    let reply = get("/cds-services").await;
    assert_eq!(reply.status, 200);
    let json = reply.json();
    let services = json["services"].as_array().unwrap();
    let hooks: Vec<&str> = services.iter().map(|s| s["hook"].as_str().unwrap()).collect();
    assert_eq!(hooks, ["order-select", "order-sign"]);
    assert_ne!(services[0]["id"], services[1]["id"]);
    for s in services {
        for field in ["title", "description", "usageRequirements", "id"] {
            assert!(s[field].as_str().is_some_and(|v| !v.is_empty()), "{field}");
        }
        let prefetch = s["prefetch"].as_object().unwrap();
        let queries: Vec<&str> = prefetch.values().map(|v| v.as_str().unwrap()).collect();
        for resource in ["Condition?", "MedicationStatement?", "MedicationRequest?", "Procedure?"] {
            assert!(queries.iter().any(|q| q.starts_with(resource)), "{resource}");
        }
        assert_eq!(prefetch["patient"], "Patient/{{context.patientId}}");
        for (key, resource) in [
            ("medicationStatements", "MedicationStatement"),
            ("medicationRequests", "MedicationRequest"),
        ] {
            let include = format!("&_include={resource}:medication");
            assert!(prefetch[key].as_str().unwrap().ends_with(&include), "{key}");
        }
        // Only tokens the spec allows, and only the one every order hook provides.
        for q in queries {
            assert_eq!(q.matches("{{").count(), 1, "{q}");
            assert!(
                q.contains("?patient={{context.patientId}}") || q == "Patient/{{context.patientId}}",
                "{q}"
            );
        }
    }
    // The content version changes with every edit of cards/; checked against the loaded content in
    // tests/versions.rs.
    insta::assert_json_snapshot!("discovery", json, {
        ".services[].version" => "[content version]",
        ".services[].extension[\"dry-needling-cds-content\"].version" => "[content version]",
        ".services[].extension[\"dry-needling-cds-content\"].digest" => "[digest]",
    });
}

fn issue_text(reply: &Reply) -> String {
    let json = reply.json();
    assert_eq!(json["resourceType"], "OperationOutcome");
    json["issue"][0]["diagnostics"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_with_an_operation_outcome() {
    let good = String::from_utf8(fixture("rules/neck-pain.json")).unwrap();
    let wrong_hook = good.replace("\"order-select\"", "\"order-sign\"");
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (SELECT, b"{not json".to_vec(), 400, "not valid JSON"),
        (SELECT, b"".to_vec(), 400, "not valid JSON"),
        (SELECT, vec![0xff, 0xfe], 400, "UTF-8"),
        (SELECT, b"[]".to_vec(), 400, "JSON object"),
        (SELECT, b"\"text\"".to_vec(), 400, "JSON object"),
        (SELECT, br#"{"hookInstance":"x","context":{}}"#.to_vec(), 400, "`hook`"),
        (
            SELECT,
            br#"{"hook":"order-select","context":{}}"#.to_vec(),
            400,
            "`hookInstance`",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x"}"#.to_vec(),
            400,
            "`context`",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":"p"}"#.to_vec(),
            400,
            "`context`",
        ),
        (
            SELECT,
            br#"{"hook":7,"hookInstance":"x","context":{}}"#.to_vec(),
            400,
            "`hook`",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":{"selections":"a"}}"#.to_vec(),
            400,
            "selections",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":{},"prefetch":5}"#.to_vec(),
            400,
            "prefetch",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":{},"fhirAuthorization":"t"}"#.to_vec(),
            400,
            "fhirAuthorization",
        ),
        (SELECT, wrong_hook.into_bytes(), 400, "handles `order-select`"),
        // The envelope is strict (issue 11, item 8): a broken client hears so, rather than getting no cards.
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":{"draftOrders":5}}"#.to_vec(),
            400,
            "`context.draftOrders` must be a FHIR Bundle",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":{"draftOrders":"Bundle"}}"#.to_vec(),
            400,
            "`context.draftOrders` must be a FHIR Bundle",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":{"draftOrders":{"resourceType":"ServiceRequest"}}}"#
                .to_vec(),
            400,
            "`context.draftOrders` must be a FHIR Bundle",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":{"draftOrders":{"resourceType":"Bundle","entry":{}}}}"#
                .to_vec(),
            400,
            "`context.draftOrders` must be a FHIR Bundle",
        ),
        (
            SELECT,
            br#"{"hook":"order-select","hookInstance":"x","context":{},"fhirAuthorization":{"access_token":"t","token_type":"Bearer"}}"#
                .to_vec(),
            400,
            "`fhirServer` is required when `fhirAuthorization` is given",
        ),
        // A path segment that is not UTF-8 once decoded: the path extractor's own rejection is plain text.
        ("/cds-services/%ff", b"{}".to_vec(), 400, "service id in the URL"),
        ("/cds-services/%ff/feedback", b"{}".to_vec(), 400, "service id in the URL"),
        (
            "/cds-services/no-such-service",
            good.clone().into_bytes(),
            404,
            "no CDS service",
        ),
        (
            "/cds-services/no-such-service/feedback",
            br#"{"feedback":[]}"#.to_vec(),
            404,
            "no CDS service",
        ),
        ("/elsewhere", good.into_bytes(), 404, "no such endpoint"),
    ];
    for (uri, body, status, message) in cases {
        let reply = post(uri, body.clone()).await;
        assert_eq!(reply.status, status, "{uri} {}", String::from_utf8_lossy(&body));
        let text = issue_text(&reply);
        assert!(text.contains(message), "{uri}: {text}");
        assert!(
            !text.to_lowercase().contains("panic") && !text.contains("src/"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_wrong_hook_is_not_quoted_back() {
    let body = String::from_utf8(fixture("rules/neck-pain.json"))
        .unwrap()
        .replace("\"order-select\"", &format!("\"{}\"", "x".repeat(100_000)));
    let reply = post(SELECT, body).await;
    assert_eq!(reply.status, 400);
    assert!(reply.bytes.len() < 1_000, "{} bytes", reply.bytes.len());
    assert!(!issue_text(&reply).contains("xxx"));
}

#[tokio::test]
async fn content_over_its_caps_is_413_naming_the_field_and_the_limit() {
    // Issue 11, item 4: 60,000 copies of one dry-needling order got 60,000 cards (180 MB). Each cap is checked
    // with a small limit, so the requests stay small.
    let mut state = state();
    state.limits = Limits {
        max_draft_orders: 3,
        max_cards: 2,
        max_prefetch_entries: 5,
    };
    let base: Value = serde_json::from_slice(&fixture("rules/myofascial-care-documented.json")).unwrap();
    let order = base["context"]["draftOrders"]["entry"][0].clone();
    let with_orders = |n: usize, selected: usize| {
        let mut request = base.clone();
        let entries: Vec<Value> = (0..n)
            .map(|i| {
                let mut entry = order.clone();
                entry["resource"]["id"] = json!(format!("dn-{i}"));
                entry
            })
            .collect();
        request["context"]["draftOrders"]["entry"] = json!(entries);
        let selections: Vec<String> = (0..selected).map(|i| format!("ServiceRequest/dn-{i}")).collect();
        request["context"]["selections"] = json!(selections);
        serde_json::to_vec(&request).unwrap()
    };
    let call = |body: Vec<u8>| {
        let state = state.clone();
        async move {
            let request = Request::post(SELECT)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            send_with(state, request).await
        }
    };
    let within = call(with_orders(2, 2)).await;
    assert_eq!(within.status, 200);
    assert_eq!(within.json()["cards"].as_array().unwrap().len(), 2);
    let reply = call(with_orders(4, 1)).await;
    assert_eq!(reply.status, 413);
    assert!(issue_text(&reply).contains("`context.draftOrders` has more than 3 entries"));
    let reply = call(with_orders(3, 3)).await;
    assert_eq!(reply.status, 413);
    assert!(issue_text(&reply).contains("more than 2 dry-needling orders"));
    let mut padded = base.clone();
    let conditions = padded["prefetch"]["conditions"]["entry"].as_array().unwrap().clone();
    let mut entries = conditions.clone();
    while entries.len() <= 5 {
        entries.extend(conditions.iter().cloned());
    }
    padded["prefetch"]["conditions"]["entry"] = json!(entries);
    let reply = call(serde_json::to_vec(&padded).unwrap()).await;
    assert_eq!(reply.status, 413);
    assert!(issue_text(&reply).contains("prefetch `conditions` has more than 5 entries"));
}

#[tokio::test]
async fn error_messages_never_echo_patient_data() {
    let body = br#"{"hook":"order-select","hookInstance":"x","context":{"patientId":{"name":"Jane Doe 1970-01-01"}}}"#;
    let reply = post(SELECT, body.to_vec()).await;
    assert_eq!(reply.status, 400);
    assert!(!String::from_utf8_lossy(&reply.bytes).contains("Jane"));
}

#[tokio::test]
async fn wrong_method_is_405_with_json() {
    for (method, uri) in [
        ("GET", SELECT),
        ("DELETE", SELECT),
        ("POST", "/cds-services"),
        ("PUT", "/cds-services/dry-needling-order-sign/feedback"),
    ] {
        let reply = send(Request::builder().method(method).uri(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(reply.status, 405, "{method} {uri}");
        assert!(issue_text(&reply).contains("method"));
    }
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let mut state = state();
    state.body_limit = 1024;
    let body = vec![b' '; 4096];
    let request = Request::post(SELECT)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let reply = send_with(state.clone(), request).await;
    assert_eq!(reply.status, 413);
    assert!(issue_text(&reply).contains("1024"));
    // Also when the client declares the length up front.
    let request = Request::post(SELECT)
        .header("content-length", "999999")
        .body(Body::from(vec![b' '; 999_999]))
        .unwrap();
    assert_eq!(send_with(state, request).await.status, 413);
    // Feedback, which is not subject to admission, has a limit of its own (1 MiB), whatever the body limit.
    let request = Request::post("/cds-services/dry-needling-order-select/feedback")
        .header("content-type", "application/json")
        .body(Body::from(vec![b' '; 1024 * 1024 + 1]))
        .unwrap();
    let reply = send(request).await;
    assert_eq!(reply.status, 413);
    assert!(issue_text(&reply).contains("1048576"));
}

#[tokio::test]
async fn the_default_limit_takes_a_large_real_prefetch() {
    // The largest real fixture, inflated past axum's 2 MiB default by repeating its Condition entries.
    let mut request: Value = serde_json::from_slice(&fixture("real/oa-knee-naproxen.order-select.json")).unwrap();
    let entries = request["prefetch"]["conditions"]["entry"].as_array().unwrap().clone();
    let mut many = Vec::new();
    while serde_json::to_vec(&many).unwrap().len() < 3 * 1024 * 1024 {
        many.extend(entries.iter().cloned());
    }
    request["prefetch"]["conditions"]["entry"] = Value::Array(many);
    let reply = post(SELECT, serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["cards"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn content_types_that_ehrs_send_are_accepted() {
    for content_type in [
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("Application/JSON"),
        Some("application/fhir+json"),
        None,
    ] {
        let mut request = Request::post(SELECT);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let reply = send(request.body(Body::from(fixture("rules/neck-pain.json"))).unwrap()).await;
        assert_eq!(reply.status, 200, "{content_type:?}");
        assert_eq!(reply.headers["content-type"], "application/json");
    }
}

/// In open mode no token stops a web page the developer visits: its "simple" cross-origin POSTs (no preflight)
/// can only be `text/plain`, a form or multipart, and every one of them is refused, on the hooks and feedback.
#[tokio::test]
async fn open_mode_refuses_bodies_a_cross_origin_page_can_send_without_preflight() {
    for path in [SELECT, "/cds-services/dry-needling-order-select/feedback"] {
        for content_type in [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let request = Request::post(path)
                .header("content-type", content_type)
                .body(Body::from(fixture("rules/neck-pain.json")))
                .unwrap();
            let reply = send(request).await;
            assert_eq!(reply.status, 415, "{path} {content_type}");
            assert_eq!(reply.json()["resourceType"], "OperationOutcome");
        }
    }
}

#[tokio::test]
async fn no_dry_needling_order_answers_empty_cards_without_reading_prefetch() {
    // The prefetch is garbage: it must not matter when there is nothing to assess.
    let mut request: Value = serde_json::from_slice(&fixture("rules/not-dry-needling-exercise.json")).unwrap();
    request["prefetch"] = json!({"conditions": {"resourceType": "Bundle", "entry": "broken"}});
    let reply = post(SELECT, serde_json::to_vec(&request).unwrap()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"cards": []}));
}

#[tokio::test]
async fn cors_preflight_on_every_route() {
    for uri in [
        "/cds-services",
        SELECT,
        SIGN,
        "/cds-services/dry-needling-order-select/feedback",
    ] {
        let request = Request::builder()
            .method("OPTIONS")
            .uri(uri)
            .header("origin", "http://localhost:3000")
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "authorization,content-type")
            .header("access-control-request-private-network", "true")
            .body(Body::empty())
            .unwrap();
        let reply = send(request).await;
        assert!(reply.status.is_success(), "{uri}: {}", reply.status);
        let h = &reply.headers;
        assert_eq!(h["access-control-allow-origin"], "*", "{uri}");
        let allowed = h["access-control-allow-headers"].to_str().unwrap().to_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
        assert_eq!(h["access-control-allow-private-network"], "true", "{uri}");
    }
    // Plain responses carry the origin header too, errors included.
    let request = Request::get("/cds-services")
        .header("origin", "http://localhost:3000")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(request).await.headers["access-control-allow-origin"], "*");
    let request = Request::post(SELECT)
        .header("origin", "http://localhost:3000")
        .body(Body::from("{"))
        .unwrap();
    let reply = send(request).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn feedback_is_validated_as_the_spec_defines_it() {
    let uri = "/cds-services/dry-needling-order-select/feedback";
    let accepted = json!({"feedback": [{
        "card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "accepted",
        "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
        "outcomeTimestamp": "2026-11-23T10:15:00Z"}]});
    let overridden = json!({"feedback": [{
        "card": "9368d37b-283f-44a0-93ea-547cebab93ed", "outcome": "overridden",
        "overrideReason": {"reason": {"system": "http://terminology.hl7.org/CodeSystem/non-adherence-reason-codes",
            "code": "does-not-align-preferences", "display": "x"}, "userComment": "Patient prefers it"},
        "outcomeTimestamp": "2026-11-23T10:15:00.123-05:00"}, {
        "card": "a", "outcome": "overridden", "outcomeTimestamp": "2026-11-23T10:15:00Z"}]});
    for (body, received) in [(&accepted, 1), (&overridden, 2)] {
        let reply = post(uri, serde_json::to_vec(body).unwrap()).await;
        assert_eq!(reply.status, 200, "{body}");
        assert_eq!(
            reply.json(),
            json!({ "received": received }),
            "a JSON body, like every other answer"
        );
    }
    let bad: Vec<(Value, &str)> = vec![
        (json!([{"card": "a"}]), "`feedback` array"),
        (json!({"card": "a", "outcome": "accepted"}), "`feedback` array"),
        (json!({"feedback": []}), "must not be empty"),
        (json!({"feedback": ["x"]}), "must be an object"),
        (
            json!({"feedback": [{"outcome": "overridden", "outcomeTimestamp": "2026-11-23T10:15:00Z"}]}),
            "card",
        ),
        (
            json!({"feedback": [{"card": "a", "outcome": "ignored", "outcomeTimestamp": "2026-11-23T10:15:00Z"}]}),
            "outcome",
        ),
        (
            json!({"feedback": [{"card": "a", "outcome": "accepted", "outcomeTimestamp": "2026-11-23T10:15:00Z"}]}),
            "acceptedSuggestions",
        ),
        (
            json!({"feedback": [{"card": "a", "outcome": "accepted", "acceptedSuggestions": [{}], "outcomeTimestamp": "2026-11-23T10:15:00Z"}]}),
            "`id`",
        ),
        (
            json!({"feedback": [{"card": "a", "outcome": "overridden"}]}),
            "outcomeTimestamp",
        ),
        (
            json!({"feedback": [{"card": "a", "outcome": "overridden", "outcomeTimestamp": "yesterday"}]}),
            "outcomeTimestamp",
        ),
        (
            json!({"feedback": [{"card": "a", "outcome": "overridden", "overrideReason": "no", "outcomeTimestamp": "2026-11-23T10:15:00Z"}]}),
            "overrideReason",
        ),
        (
            json!({"feedback": [{"card": "a", "outcome": "overridden", "overrideReason": {"reason": {"display": "x"}}, "outcomeTimestamp": "2026-11-23T10:15:00Z"}]}),
            "Coding",
        ),
    ];
    for (body, message) in bad {
        let reply = post(uri, serde_json::to_vec(&body).unwrap()).await;
        assert_eq!(reply.status, 400, "{body}");
        assert!(issue_text(&reply).contains(message), "{body}: {}", issue_text(&reply));
    }
}

/// Whole responses, frozen; card and suggestion uuids are random, so they are redacted.
#[tokio::test]
async fn snapshots_of_whole_responses() {
    for (name, file) in [
        ("clbp_real_patient", "real/clbp-neck-ibuprofen.order-select.json"),
        ("neck_pain", "rules/neck-pain.json"),
        ("myofascial_may_consider", "rules/myofascial-care-documented.json"),
        ("myofascial_low_back_no_heat", "rules/myofascial-low-back-no-heat.json"),
        ("not_first_line_no_care", "rules/no-indication-no-care.json"),
        ("history_unavailable", "rules/prefetch-absent-reason-decides.json"),
        ("missing_data_412", "rules/prefetch-medications-missing-undecided.json"),
    ] {
        let body = fixture(file);
        let json = post(path_for(&body), body).await.json();
        insta::assert_json_snapshot!(name, json, {
            ".cards[].uuid" => "[uuid]",
            ".cards[].suggestions[].uuid" => "[uuid]",
            // Changes with every edit of cards/; checked against the loaded content in tests/versions.rs.
            ".cards[].extension[\"dry-needling-cds-content-version\"]" => "[content version]",
        });
    }
}

/// The service over a real TCP socket, as an EHR or the sandbox reaches it.
#[tokio::test]
async fn serves_over_a_real_socket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    // Served as production serves it (`http::serve`: HTTP/1.1 with time-outs and a connection cap).
    let settings = dry_needling_cds::http::ServeSettings::default();
    let server = tokio::spawn(dry_needling_cds::http::serve(
        listener,
        dry_needling_cds::app(state()),
        settings,
        std::future::pending(),
    ));

    let body = fixture("rules/clbp-reason-code.json");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {SELECT} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let json: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert!(
        json["cards"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("chronic low back pain")
    );
    server.abort();
}

/// Only the declared prefetch keys are kept, in one pass: a body of a million tiny keys is answered at once.
#[tokio::test]
async fn many_prefetch_keys_cost_one_pass() {
    let mut body = String::from(r#"{"hook":"order-select","hookInstance":"x","context":{},"prefetch":{"#);
    for i in 0..300_000 {
        body.push_str(&format!("\"k{i}\":0,"));
    }
    body.push_str(r#""conditions":null}}"#);
    let started = std::time::Instant::now();
    let reply = post(common::SELECT, body).await;
    assert_eq!(reply.status, 200);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// The tester's workbench (issue 12): served in open mode, with its assets and the bundled patients; a Content
/// Security Policy that allows scripts from this origin only.
#[tokio::test]
async fn the_workbench_page_and_its_patients_are_served_in_open_mode() {
    let page = get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    let html = String::from_utf8(page.bytes.clone()).unwrap();
    assert!(html.contains("/workbench/app.js"));
    assert!(
        !html.contains("src=\"http") && !html.contains("href=\"http"),
        "loads nothing from elsewhere"
    );
    for asset in ["app.js", "style.css", "vendor/marked.min.js", "vendor/purify.min.js"] {
        let reply = get(&format!("/workbench/{asset}")).await;
        assert_eq!(reply.status, 200, "{asset}");
    }
    assert_eq!(get("/workbench/../Cargo.toml").await.status, 404);
    assert_eq!(get("/workbench/no-such-file.js").await.status, 404);
    let list = get("/workbench/patients").await.json();
    let ids: Vec<&str> = list["patients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"clbp-neck-ibuprofen") && ids.contains(&"rule-myofascial-care-documented"),
        "{ids:?}"
    );
    let patient = get("/workbench/patients/clbp-neck-ibuprofen").await.json();
    assert_eq!(patient["patientId"], "ca15b832-01e4-41dd-6a52-97bd3e5510cb");
    assert!(patient["prefetch"]["conditions"]["entry"].as_array().unwrap().len() > 10);
    assert_eq!(get("/workbench/patients/nobody").await.status, 404);
    let wrong = post("/", "{}").await;
    assert_eq!(wrong.status, 405);
    assert!(issue_text(&wrong).contains("method"));
}

#[tokio::test]
async fn the_workbench_is_off_with_trusted_clients_unless_the_configuration_turns_it_on() {
    use dry_needling_cds::config::Config;
    use dry_needling_cds::web::Workbench;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
    let clients = "public_base_url = \"https://cds.example.org\"\n[[client]]\nissuer = \"https://ehr.test.example\"\n\
                   jwks_file = \"test-jwks.json\"\nalgorithms = [\"ES384\"]\n";
    let start = |toml: &str, listen: &str| {
        dry_needling_cds::AppState::configure(
            dry_needling_cds::Knowledge::embedded().unwrap(),
            Config::parse(toml, &dir).unwrap(),
            listen.parse().unwrap(),
            true,
        )
        .unwrap()
    };
    assert_eq!(start("", "127.0.0.1:8080").workbench, Workbench::On);
    assert_eq!(
        start("", "0.0.0.0:8080").workbench,
        Workbench::Off,
        "--insecure-no-auth elsewhere"
    );
    assert_eq!(start(clients, "127.0.0.1:8080").workbench, Workbench::Off);
    let enabled = start(&format!("{clients}[workbench]\nenabled = true\n"), "0.0.0.0:8080");
    assert_eq!(enabled.workbench, Workbench::On);
    // Off: its paths are unknown paths. On with clients: the page needs no token, the hooks still do.
    let off = start(clients, "127.0.0.1:8080");
    let request = || Request::get("/").body(Body::empty()).unwrap();
    assert_ne!(send_with(off, request()).await.status, 200);
    assert_eq!(send_with(enabled.clone(), request()).await.status, 200);
    let hook = Request::post(SELECT)
        .header("content-type", "application/json")
        .body(Body::from(fixture("rules/neck-pain.json")))
        .unwrap();
    assert_eq!(send_with(enabled, hook).await.status, 401);
}

/// Health checks answer without a token, in any mode, and say nothing about patients or clients.
#[tokio::test]
async fn health_and_readiness_answer_without_a_token() {
    use dry_needling_cds::config::Config;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
    let clients = "public_base_url = \"https://cds.example.org\"\n[[client]]\nissuer = \"https://ehr.test.example\"\n\
                   jwks_file = \"test-jwks.json\"\nalgorithms = [\"ES384\"]\n";
    let verified = dry_needling_cds::AppState::configure(
        dry_needling_cds::Knowledge::embedded().unwrap(),
        Config::parse(clients, &dir).unwrap(),
        "0.0.0.0:8080".parse().unwrap(),
        false,
    )
    .unwrap();
    for state in [state(), verified] {
        let live = send_with(state.clone(), Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!(live.status, 200);
        assert_eq!(live.json(), json!({"status": "ok"}));
        let ready = send_with(state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
        assert_eq!(ready.status, 200);
        assert_eq!(ready.json()["status"], "ready");
        assert_eq!(ready.json()["checks"]["content"]["services"], 2);
    }
    let wrong = post("/healthz", "{}").await;
    assert_eq!(wrong.status, 405);
    assert!(issue_text(&wrong).contains("method"));
}

/// Open on loopback, a page that rebinds its own name to 127.0.0.1 sends its own name as `Host`: refused, on
/// every route; loopback names and the configured public host are served. And only the hooks answer other
/// origins (CORS): analytics, metrics and the workbench's data are for this origin only.
#[tokio::test]
async fn open_on_loopback_answers_loopback_host_names_only_and_cors_only_on_the_hooks() {
    let mut state = state();
    state.loopback_hosts_only = Some(dry_needling_cds::http::LoopbackHosts {
        public_host: Some("cds.example.org".into()),
    });
    let get = |path: &str, host: &str| {
        Request::get(path)
            .header("host", host)
            .header("origin", "https://evil.example")
            .body(Body::empty())
            .unwrap()
    };
    for host in [
        "evil.example",
        "evil.example:8080",
        "127.0.0.1.evil.example",
        "localhost.evil.example",
    ] {
        for path in ["/cds-services", "/analytics", "/healthz", "/"] {
            let reply = send_with(state.clone(), get(path, host)).await;
            assert_eq!(reply.status, 403, "{path} {host}");
        }
    }
    for host in [
        "localhost:8080",
        "127.0.0.1:8080",
        "[::1]:8080",
        "app.localhost",
        "cds.example.org",
    ] {
        let reply = send_with(state.clone(), get("/cds-services", host)).await;
        assert_eq!(reply.status, 200, "{host}");
        assert_eq!(reply.headers["access-control-allow-origin"], "*", "{host}");
        let reply = send_with(state.clone(), get("/healthz", host)).await;
        assert_eq!(reply.status, 200, "{host}");
        assert!(!reply.headers.contains_key("access-control-allow-origin"), "{host}");
    }
}

/// The content's version, where an integrator or an operator looks for it: each discovery entry (`version`
/// and the extension), every card, and `/readyz`; all the version the service loaded.
#[tokio::test]
async fn the_content_version_is_in_discovery_on_every_card_and_in_readiness() {
    let version = dry_needling_cds::Knowledge::embedded().unwrap().version;
    let discovery = send(Request::get("/cds-services").body(Body::empty()).unwrap())
        .await
        .json();
    for service in discovery["services"].as_array().unwrap() {
        assert_eq!(service["version"], version.label.as_str());
        let content = &service["extension"]["dry-needling-cds-content"];
        assert_eq!(content["version"], version.label.as_str());
        assert_eq!(content["declared"], version.declared.as_str());
        assert_eq!(content["digest"], version.digest.as_str());
    }
    let body = fixture("real/clbp-neck-ibuprofen.order-select.json");
    let cards = post(path_for(&body), body).await.json();
    let cards = cards["cards"].as_array().unwrap();
    assert!(!cards.is_empty());
    for card in cards {
        assert_eq!(
            card["extension"]["dry-needling-cds-content-version"],
            version.label.as_str()
        );
    }
    let ready = send(Request::get("/readyz").body(Body::empty()).unwrap()).await.json();
    assert_eq!(ready["checks"]["content"]["version"], version.label.as_str());
}

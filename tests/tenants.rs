//! Tenants (docs/tenants.md): several tenants under one issuer, each with its own policy, chosen by the verified
//! token's `tenant` claim; through the real configuration parser, `AppState::configure` and the router. The
//! refusal of an unlisted tenant (with its logged reason) is in `tests/auth.rs`, with the other refusals;
//! analytics per tenant on both store backends in `tests/storage.rs`.
//!
//! Each case's expected answer was written before it was run.

mod common;

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{Reply, SELECT, SIGN, TODAY, fixture, send_with};
use dry_needling_cds::companion::SandboxCompanion;
use dry_needling_cds::config::Config;
use dry_needling_cds::http::{Access, StartError};
use dry_needling_cds::service::MissingDataPolicy;
use dry_needling_cds::{AppState, Knowledge};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const BASE: &str = "http://127.0.0.1:8080";
const ISSUER: &str = "https://ehr.test.example";
const COMPANION: &str = "/cds-services/dry-needling-sandbox-companion";
const COMPANION_ID: &str = "dry-needling-sandbox-companion";
const SELECT_ID: &str = "dry-needling-order-select";
const SIGN_ID: &str = "dry-needling-order-sign";

/// One issuer, Oracle Health-like: three tenants. `card-site` answers missing conditions with a card and has the
/// companion on; `strict-site` keeps the global 412 and the global companion (off); `select-only` uses only
/// order-select.
const TENANTS: &str = r#"
public_base_url = "http://127.0.0.1:8080"

[[client]]
issuer = "https://ehr.test.example"
jwks_file = "test-jwks.json"
algorithms = ["ES384"]

[[client.tenants]]
id = "card-site"
missing_data = { conditions = "card" }
sandbox_companion = true

[[client.tenants]]
id = "strict-site"

[[client.tenants]]
id = "select-only"
services = ["dry-needling-order-select"]
"#;

fn auth_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth")
}

fn configured(toml: &str) -> AppState {
    let config = Config::parse(toml, &auth_dir()).unwrap_or_else(|e| panic!("config refused: {e}\n{toml}"));
    let Ok(mut state) = AppState::configure(
        Knowledge::embedded().unwrap(),
        config,
        "127.0.0.1:8080".parse().unwrap(),
        false,
    ) else {
        panic!("the service refused to start");
    };
    state.today = Some(TODAY);
    state
}

/// A valid token of the test issuer for `path`, with `tenant` as its claim (none when `None`).
fn token(path: &str, tenant: Option<&str>) -> String {
    let pem = std::fs::read(auth_dir().join("es384-private.pem")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = json!({"iss": ISSUER, "aud": format!("{BASE}{path}"), "iat": now, "exp": now + 300,
        "jti": uuid::Uuid::new_v4().to_string()});
    if let Some(tenant) = tenant {
        claims["tenant"] = json!(tenant);
    }
    let header = Header {
        kid: Some("test-es384".to_string()),
        ..Header::new(Algorithm::ES384)
    };
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

async fn post_as(state: &AppState, path: &str, body: Vec<u8>, tenant: Option<&str>) -> Reply {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", token(path, tenant)))
        .body(Body::from(body))
        .unwrap();
    send_with(state.clone(), request).await
}

async fn discovery_as(state: &AppState, tenant: Option<&str>) -> Vec<String> {
    let request = Request::get("/cds-services")
        .header("authorization", format!("Bearer {}", token("/cds-services", tenant)))
        .body(Body::empty())
        .unwrap();
    let reply = send_with(state.clone(), request).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// The myofascial fixture without its problem list: the rules need it (412 by default).
fn without_conditions() -> Vec<u8> {
    let mut request: Value = serde_json::from_slice(&fixture("rules/myofascial-care-documented.json")).unwrap();
    request["prefetch"].as_object_mut().unwrap().remove("conditions");
    serde_json::to_vec(&request).unwrap()
}

/// One feedback entry (for a card the service never issued: accepted and counted, with no store).
fn feedback() -> Vec<u8> {
    serde_json::to_vec(&json!({"feedback": [{
        "card": "4a5c5d2e-8f3b-4c1d-9e6f-7a8b9c0d1e2f",
        "outcome": "accepted",
        "acceptedSuggestions": [{"id": "b1c2d3e4-f5a6-4b7c-8d9e-0f1a2b3c4d5e"}],
        "outcomeTimestamp": "2026-11-23T10:00:00Z"
    }]}))
    .unwrap()
}

fn card_ids(reply: &Reply) -> Vec<String> {
    reply.json()["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["extension"]["dry-needling-cds-card"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn two_tenants_of_one_issuer_answer_missing_data_each_their_own_way() {
    let state = configured(TENANTS);
    // Expected: the card site gets 200 and the data-unavailable card; the strict site, under the global policy
    // (all 412), the 412 naming the problem list; for the same request.
    let body = without_conditions();
    let card = post_as(&state, SELECT, body.clone(), Some("card-site")).await;
    assert_eq!(card.status, StatusCode::OK, "{}", String::from_utf8_lossy(&card.bytes));
    assert_eq!(card_ids(&card), ["data-unavailable"]);
    let strict = post_as(&state, SELECT, body.clone(), Some("strict-site")).await;
    assert_eq!(strict.status, StatusCode::PRECONDITION_FAILED);
    assert!(
        strict.json()["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("Condition data is unavailable")
    );
    // A tenant that sets nothing follows the global policy, whatever it is: with `[missing_data] conditions =
    // "card"`, the strict site gets the card too, and a tenant that sets `conditions = "412"` keeps its 412.
    let global_card = configured(&format!("{TENANTS}\n[missing_data]\nconditions = \"card\"\n"));
    let reply = post_as(&global_card, SELECT, body.clone(), Some("strict-site")).await;
    assert_eq!(card_ids(&reply), ["data-unavailable"]);
    let own_412 = configured(&format!(
        "{}\n[missing_data]\nconditions = \"card\"\n",
        TENANTS.replace(
            "id = \"strict-site\"",
            "id = \"strict-site\"\nmissing_data = { conditions = \"412\" }"
        )
    ));
    let reply = post_as(&own_412, SELECT, body, Some("strict-site")).await;
    assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED);
}

#[tokio::test]
async fn the_companion_answers_only_the_tenants_that_have_it_on() {
    let state = configured(TENANTS);
    assert_eq!(state.sandbox_companion, SandboxCompanion::Off, "off globally");
    // Expected: discovery lists it for the card site only; the card site's call is answered (200), the strict
    // site's is 404 like any unknown service's.
    assert!(
        discovery_as(&state, Some("card-site"))
            .await
            .contains(&COMPANION_ID.to_string())
    );
    assert!(
        !discovery_as(&state, Some("strict-site"))
            .await
            .contains(&COMPANION_ID.to_string())
    );
    let draft = fixture("rules/neck-pain.json");
    let on = post_as(&state, COMPANION, draft.clone(), Some("card-site")).await;
    assert_eq!(on.status, StatusCode::OK, "{}", String::from_utf8_lossy(&on.bytes));
    let off = post_as(&state, COMPANION, draft.clone(), Some("strict-site")).await;
    assert_eq!(off.status, StatusCode::NOT_FOUND);
    // Its feedback likewise.
    let feedback = feedback();
    let path = format!("{COMPANION}/feedback");
    assert_eq!(
        post_as(&state, &path, feedback.clone(), Some("card-site")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post_as(&state, &path, feedback, Some("strict-site")).await.status,
        StatusCode::NOT_FOUND
    );
    // On globally, a tenant can turn it off: the others keep it.
    let global_on = configured(&format!(
        "{}\n[sandbox_companion]\nenabled = true\n",
        TENANTS.replace("sandbox_companion = true", "sandbox_companion = false")
    ));
    assert_eq!(
        post_as(&global_on, COMPANION, draft.clone(), Some("card-site"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_as(&global_on, COMPANION, draft, Some("strict-site")).await.status,
        StatusCode::OK
    );
    assert!(
        !discovery_as(&global_on, Some("card-site"))
            .await
            .contains(&COMPANION_ID.to_string())
    );
}

#[tokio::test]
async fn a_tenant_calls_and_sees_only_its_services() {
    let state = configured(TENANTS);
    // Expected: discovery lists order-select alone for the select-only site, both services for the others; its
    // order-sign call and feedback are 404, its order-select call is answered.
    assert_eq!(discovery_as(&state, Some("select-only")).await, [SELECT_ID]);
    let all = discovery_as(&state, Some("strict-site")).await;
    assert!(
        all.contains(&SELECT_ID.to_string()) && all.contains(&SIGN_ID.to_string()),
        "{all:?}"
    );
    let sign_body = fixture("rules/order-sign-two-orders.json");
    assert_eq!(
        post_as(&state, SIGN, sign_body.clone(), Some("select-only"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        post_as(&state, SIGN, sign_body, Some("strict-site")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        post_as(&state, SELECT, fixture("rules/neck-pain.json"), Some("select-only"))
            .await
            .status,
        StatusCode::OK
    );
    let feedback = feedback();
    assert_eq!(
        post_as(&state, &format!("{SIGN}/feedback"), feedback, Some("select-only"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn tenant_mistakes_are_named() {
    let parse = |toml: &str| Config::parse(toml, &auth_dir()).map(|_| ()).unwrap_err();
    // Each change is made to the strict site's entry.
    let strict = "id = \"strict-site\"";
    for (replacement, named) in [
        ("id = \"card-site\"", "tenant `card-site` is listed twice"),
        ("id = \"\"", "must not be empty"),
        ("id = \" strict-site\"", "must not be empty or start or end with spaces"),
        ("id = \"strict-site\"\nunknown = 1", "unknown field"),
        (
            "id = \"strict-site\"\nmissing_data = { conditions = \"Card\" }",
            "missing_data conditions = \"Card\"",
        ),
        ("id = \"strict-site\"\nservices = []", "services = []"),
    ] {
        let error = parse(&TENANTS.replace(strict, replacement));
        assert!(error.contains(named), "{replacement}: {error}");
    }
    let both = TENANTS.replace("algorithms = [\"ES384\"]", "algorithms = [\"ES384\"]\ntenant = \"one\"");
    assert!(parse(&both).contains("`tenant` and [[client.tenants]] are both set"));
    let twice = format!(
        "{TENANTS}\n[[client]]\nissuer = \"{ISSUER}\"\njwks_file = \"test-jwks.json\"\nalgorithms = [\"ES384\"]\n"
    );
    assert!(parse(&twice).contains("[[client.tenants]]"), "the message says how");
    // A service the content does not have stops the start, naming it.
    let config = Config::parse(
        &TENANTS.replace("[\"dry-needling-order-select\"]", "[\"dry-needling\"]"),
        &auth_dir(),
    )
    .unwrap();
    let started = AppState::configure(
        Knowledge::embedded().unwrap(),
        config,
        "127.0.0.1:8080".parse().unwrap(),
        false,
    );
    let Err(error @ StartError::UnknownTenantService { .. }) = started else {
        panic!("started with an unknown service");
    };
    assert!(error.to_string().contains("`dry-needling`"), "{error}");
}

// ---------------------------------------------------------------------------------------------------------
// Migration: today's configuration files keep working unchanged.

/// `config.toml` of the ConfigMap in `deploy/kubernetes.yaml`: the block under `config.toml: |`.
fn deploy_config() -> String {
    let yaml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes.yaml")).unwrap();
    let start = yaml.find("config.toml: |\n").expect("the ConfigMap's config.toml") + "config.toml: |\n".len();
    yaml[start..]
        .lines()
        .take_while(|line| line.is_empty() || line.starts_with("    "))
        .map(|line| line.strip_prefix("    ").unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_shipped_configurations_load_unchanged_with_no_tenant_policy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let configs = [
        (
            "config/example.toml",
            Config::load(&root.join("config/example.toml")).unwrap(),
        ),
        (
            "config/sandbox.toml",
            Config::load(&root.join("config/sandbox.toml")).unwrap(),
        ),
        ("deploy/kubernetes.yaml", Config::parse(&deploy_config(), root).unwrap()),
    ];
    for (name, config) in configs {
        assert!(!config.clients.is_empty(), "{name}: trusted clients");
        for client in &config.clients {
            assert!(client.tenants.is_empty(), "{name}: no [[client.tenants]]");
        }
        assert_eq!(config.missing_data, MissingDataPolicy::default(), "{name}");
        let state = AppState::configure(
            Knowledge::embedded().unwrap(),
            config,
            "127.0.0.1:8080".parse().unwrap(),
            false,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let Access::Verify(verifier) = state.access.as_ref() else {
            panic!("{name}: verified mode");
        };
        assert_eq!(verifier.tenants().count(), 0, "{name}");
    }
}

#[tokio::test]
async fn a_client_with_one_tenant_or_none_behaves_as_before() {
    let single = TENANTS.split("[[client.tenants]]").next().unwrap().to_string();
    // Without `tenant`: any token, with or without the claim, under the global policy (412).
    let state = configured(&single);
    for tenant in [None, Some("card-site"), Some("anything")] {
        let reply = post_as(&state, SELECT, without_conditions(), tenant).await;
        assert_eq!(reply.status, StatusCode::PRECONDITION_FAILED, "{tenant:?}");
    }
    // With `tenant = "hospital-a"`: that claim only (the refusal's reason stays `tenant`, in tests/auth.rs), and
    // the global policy: `[missing_data]` applies, the companion is the global one.
    let state = configured(&format!(
        "{single}tenant = \"hospital-a\"\n\n[missing_data]\nconditions = \"card\"\n"
    ));
    let reply = post_as(&state, SELECT, without_conditions(), Some("hospital-a")).await;
    assert_eq!(card_ids(&reply), ["data-unavailable"]);
    assert_eq!(
        post_as(&state, SELECT, without_conditions(), Some("hospital-b"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_as(&state, COMPANION, fixture("rules/neck-pain.json"), Some("hospital-a"))
            .await
            .status,
        StatusCode::NOT_FOUND,
        "off, as before"
    );
    let Access::Verify(verifier) = state.access.as_ref() else {
        panic!("verified mode");
    };
    assert_eq!(verifier.tenants().count(), 0);
}

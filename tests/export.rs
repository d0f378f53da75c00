//! The content as FHIR (docs/export.md): `/fhir/…` through the real router, on in open mode and with
//! `[export] routes = true`, absent (404) with trusted clients by default; `export --fhir DIR` run as the real
//! binary, every file it writes read back through fhir-sdk's R4 models; every value-set code of the content and
//! every service of discovery in the export.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Request, header};
use dry_needling_cds::config::Config;
use dry_needling_cds::export::{CANONICAL_BASE, SOURCE_EXTENSION, value_set_id};
use dry_needling_cds::{AppState, Knowledge, app};
use serde_json::Value;
use tower::ServiceExt;

const BINARY: &str = env!("CARGO_BIN_EXE_dry-needling-cds");

/// A trusted client, as in `fixtures/auth/`: the service is in JWT mode.
const CLIENT_TOML: &str = r#"
public_base_url = "http://127.0.0.1:8080"
[[client]]
issuer = "https://ehr.test.example"
jwks_file = "test-jwks.json"
algorithms = ["ES384", "RS384"]
"#;

fn configured(toml: &str) -> AppState {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
    let config = Config::parse(toml, &dir).unwrap_or_else(|e| panic!("config refused: {e}\n{toml}"));
    let listen: SocketAddr = "127.0.0.1:8080".parse().unwrap();
    AppState::configure(Knowledge::embedded().unwrap(), config, listen, false).expect("the service starts")
}

/// Status, content type and body of a GET.
async fn get(state: &AppState, path: &str) -> (u16, String, Vec<u8>) {
    let request = Request::get(path)
        .header(header::HOST, "127.0.0.1:8080")
        .body(Body::empty())
        .unwrap();
    let response = app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, content_type, body.to_vec())
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("JSON")
}

const ROUTES: [&str; 4] = [
    "/fhir/ValueSet",
    "/fhir/ValueSet/order.dry-needling",
    "/fhir/PlanDefinition",
    "/fhir/PlanDefinition/dry-needling-order-select",
];

#[tokio::test]
async fn open_mode_serves_the_export_and_every_discovered_service_has_a_plan_definition() {
    let state = AppState::new(Knowledge::embedded().unwrap());
    let (status, content_type, body) = get(&state, "/fhir/ValueSet").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/fhir+json");
    let bundle = json(&body);
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "searchset");
    let entries = bundle["entry"].as_array().unwrap();
    assert_eq!(bundle["total"], entries.len());
    assert_eq!(entries.len(), state.knowledge.value_sets.len());
    for entry in entries {
        let resource = &entry["resource"];
        assert_eq!(resource["resourceType"], "ValueSet");
        assert_eq!(entry["fullUrl"], resource["url"]);
        assert!(resource["url"].as_str().unwrap().starts_with(CANONICAL_BASE));
    }

    // Each id answers its resource, the same as in the Bundle.
    let (status, content_type, body) = get(&state, "/fhir/ValueSet/order.dry-needling").await;
    assert_eq!((status, content_type.as_str()), (200, "application/fhir+json"));
    let value_set = json(&body);
    assert_eq!(value_set["id"], "order.dry-needling");
    assert!(entries.iter().any(|e| e["resource"] == value_set));
    let codes: Vec<&str> = value_set["expansion"]["contains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    for code in ["20560", "20561", "231082000"] {
        assert!(codes.contains(&code), "{code}");
    }

    // Every service discovery lists has its PlanDefinition, triggered by its hook.
    let (_, _, body) = get(&state, "/cds-services").await;
    let discovery = json(&body);
    let (status, content_type, body) = get(&state, "/fhir/PlanDefinition").await;
    assert_eq!((status, content_type.as_str()), (200, "application/fhir+json"));
    let plans = json(&body);
    let services = discovery["services"].as_array().unwrap();
    assert!(!services.is_empty());
    assert_eq!(plans["total"], services.len());
    for service in services {
        let id = service["id"].as_str().unwrap();
        let (status, _, body) = get(&state, &format!("/fhir/PlanDefinition/{id}")).await;
        assert_eq!(status, 200, "{id}");
        let plan = json(&body);
        assert_eq!(plan["action"][0]["trigger"][0]["name"], service["hook"]);
        assert_eq!(plan["title"], service["title"]);
        let inputs = plan["action"][0]["input"].as_array().unwrap();
        for (key, query) in service["prefetch"].as_object().unwrap() {
            let input = inputs.iter().find(|i| i["id"] == key.as_str()).unwrap();
            assert_eq!(&input["extension"][0]["valueString"], query, "{id} {key}");
        }
    }
}

#[tokio::test]
async fn an_unknown_id_is_404_with_an_operation_outcome_that_does_not_quote_it() {
    let state = AppState::new(Knowledge::embedded().unwrap());
    for path in ["/fhir/ValueSet/no-such-set", "/fhir/PlanDefinition/no-such-service"] {
        let (status, _, body) = get(&state, path).await;
        assert_eq!(status, 404, "{path}");
        let outcome = json(&body);
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        assert_eq!(outcome["issue"][0]["code"], "not-found");
        let text = outcome["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(text.contains("GET /fhir/"), "{text}");
        assert!(!text.contains("no-such"), "{text}");
    }
    // Read-only.
    let request = Request::post("/fhir/ValueSet")
        .header(header::HOST, "127.0.0.1:8080")
        .header(header::CONTENT_TYPE, "application/fhir+json")
        .body(Body::from("{}"))
        .unwrap();
    let response = app(state).oneshot(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
}

#[tokio::test]
async fn with_trusted_clients_the_routes_are_absent_unless_configured() {
    let trusted = configured(CLIENT_TOML);
    for path in ROUTES {
        let (status, _, body) = get(&trusted, path).await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(json(&body)["resourceType"], "OperationOutcome");
    }
    let on = configured(&format!("{CLIENT_TOML}\n[export]\nroutes = true\n"));
    for path in ROUTES {
        let (status, content_type, _) = get(&on, path).await;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "application/fhir+json"),
            "{path}"
        );
    }
    // And off in open mode when the configuration says so.
    let off = configured("[export]\nroutes = false\n");
    for path in ROUTES {
        assert_eq!(get(&off, path).await.0, 404, "{path}");
    }
    let open = configured("");
    assert_eq!(get(&open, ROUTES[0]).await.0, 200);
    // A misspelt key stops the start, like every other.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth");
    assert!(Config::parse("[export]\nroute = true\n", &dir).is_err());
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dn-cds-export-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The real binary writes one file per resource, each one fhir-sdk's R4 models read, with every code of the
/// content's value sets and every service.
#[test]
fn export_writes_every_value_set_and_service_as_r4_resources() {
    let dir = temp_dir("cli").join("nested");
    let output = std::process::Command::new(BINARY)
        .args(["export", "--fhir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let knowledge = Knowledge::embedded().unwrap();
    assert!(
        stdout.contains(&format!(
            "wrote {} ValueSets and {} PlanDefinitions to {}",
            knowledge.value_sets.len(),
            knowledge.services.len(),
            dir.display()
        )),
        "{stdout}"
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), knowledge.value_sets.len() + knowledge.services.len());
    for file in &files {
        assert!(stdout.contains(&file.display().to_string()), "{}", file.display());
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.contains("\n  \""), "pretty-printed: {}", file.display());
        let resource: Value = serde_json::from_str(&text).unwrap();
        let name = file.file_name().unwrap().to_string_lossy();
        let expected = format!(
            "{}-{}.json",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        assert_eq!(name, expected);
        let checked = match resource["resourceType"].as_str().unwrap() {
            "ValueSet" => fhir_check::value_set(resource),
            "PlanDefinition" => fhir_check::plan_definition(for_fhir_sdk(resource)),
            other => panic!("{other}"),
        };
        assert_eq!(checked, Ok(()), "{name}");
    }
    // Every code the content lists, in its set's file, with its source.
    for (set, listed) in &knowledge.value_sets {
        let path = dir.join(format!("ValueSet-{}.json", value_set_id(set)));
        let value_set: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut concepts = std::collections::HashMap::new();
        for include in value_set["compose"]["include"].as_array().unwrap() {
            for concept in include["concept"].as_array().unwrap() {
                concepts.insert(
                    (include["system"].as_str().unwrap(), concept["code"].as_str().unwrap()),
                    concept,
                );
            }
        }
        for row in listed {
            // A code both code files list is exported once, as the first writes it.
            let Some(concept) = concepts.get(&(row.system.as_str(), row.code.as_str())) else {
                assert!(
                    listed.iter().any(|r| r.system == row.system
                        && r.code != row.code
                        && r.code.replace('.', "").eq_ignore_ascii_case(&row.code.replace('.', ""))),
                    "{set}: {} {} not exported",
                    row.system,
                    row.code
                );
                continue;
            };
            assert!(
                concept["extension"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["url"] == SOURCE_EXTENSION && e["valueString"].as_str() == Some(&*row.source)),
                "{set} {}",
                row.code
            );
        }
    }
    std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
}

/// fhir-sdk reads `Expression.language` as a closed list where R4's binding is extensible: the conditions in
/// words (`text/plain`, valid R4) are given a listed code for the check, and only they.
fn for_fhir_sdk(mut plan: Value) -> Value {
    fn swap(value: &mut Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("expression") && map.get("language") == Some(&Value::from("text/plain")) {
                    map.insert("language".to_string(), "text/cql-expression".into());
                }
                map.values_mut().for_each(swap);
            }
            Value::Array(items) => items.iter_mut().for_each(swap),
            _ => {}
        }
    }
    swap(&mut plan);
    plan
}

#[test]
fn export_into_an_unwritable_directory_fails_with_a_clear_message() {
    let parent = temp_dir("unwritable");
    std::fs::create_dir_all(&parent).unwrap();
    // A file where the directory should be: no directory can be made there, whoever runs the test.
    let blocked = parent.join("a-file");
    std::fs::write(&blocked, "not a directory").unwrap();
    let output = std::process::Command::new(BINARY)
        .args(["export", "--fhir"])
        .arg(blocked.join("out"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "Error: cannot write the FHIR export to {}",
            blocked.join("out").display()
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    std::fs::remove_dir_all(&parent).unwrap();
}

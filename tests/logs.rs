//! What the service logs while fetching from a failing FHIR server: reasons, never the token, a URL or the
//! patient id. Alone in its own test binary, because tracing caches per-callsite interest process-wide: a test
//! running beside it on another thread could hide these events from the subscriber this test installs.

mod common;

use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use common::fhir_server::{Fault, FhirServer};
use common::{SELECT, fixture, send_with, state};
use dry_needling_cds::AppState;
use dry_needling_cds::fetch::{Allowlist, FetchSettings, Fetcher, http_client};
use serde_json::Value;

const PATIENT: &str = "real/clbp-neck-ibuprofen.order-select.json";
const TOKEN: &str = "test-access-token-7f3c";

#[tokio::test]
async fn logs_carry_no_token_url_or_patient_id() {
    use std::io::Write;
    #[derive(Clone, Default)]
    struct Buffer(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("trace,fhir_sdk=warn")
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = FhirServer::start(&fixture(PATIENT)).await;
    server.set(|b| {
        b.faults.insert("Procedure".to_string(), Fault::Status(500));
        b.faults.insert("Condition".to_string(), Fault::Malformed);
    });
    let allowlist = Allowlist {
        servers: vec![server.origin()],
        open_servers: Vec::new(),
        fhir_base: None,
    };
    let state = AppState {
        fetcher: Arc::new(Fetcher::new(http_client(), FetchSettings::default(), allowlist)),
        ..state()
    };
    let mut body: Value = serde_json::from_slice(&fixture(PATIENT)).unwrap();
    body.as_object_mut().unwrap().remove("prefetch");
    body["fhirServer"] = server.base().into();
    body["fhirAuthorization"] = serde_json::json!({"access_token": TOKEN, "token_type": "Bearer"});
    let request = Request::post(SELECT)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap();
    let _ = send_with(state.clone(), request).await;
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let patient: Value = serde_json::from_slice(&fixture(PATIENT)).unwrap();
    let patient_id = patient["context"]["patientId"].as_str().unwrap();
    assert!(logs.contains("FHIR search failed"), "{logs}");
    for secret in [TOKEN, patient_id, "patient=", &server.origin()] {
        assert!(!logs.contains(secret), "logs contain {secret}:\n{logs}");
    }

    // Issue 25, item 4: searches out of scope and a token for another patient are logged with
    // `fhirAuthorization.subject` (caller text: escaped), never the token or either patient id.
    buffer.0.lock().unwrap().clear();
    let other_patient = "another-patient-5e0b";
    for extra in [
        serde_json::json!({"scope": "patient/Condition.rs"}),
        serde_json::json!({"scope": "patient/*.read", "patient": other_patient}),
    ] {
        let mut body: Value = serde_json::from_slice(&fixture(PATIENT)).unwrap();
        body.as_object_mut().unwrap().remove("prefetch");
        body["fhirServer"] = server.base().into();
        let mut authorization =
            serde_json::json!({"access_token": TOKEN, "token_type": "Bearer", "subject": "cds\nforged line"});
        authorization
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body["fhirAuthorization"] = authorization;
        let request = Request::post(SELECT)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap();
        let _ = send_with(state.clone(), request).await;
    }
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("FHIR searches not sent"), "{logs}");
    assert!(
        logs.contains("fhirAuthorization.patient is not context.patientId"),
        "{logs}"
    );
    assert!(logs.contains("cds\\u{a}forged line"), "{logs}");
    assert!(!logs.contains("cds\nforged"), "{logs}");
    for secret in [TOKEN, patient_id, other_patient, "patient=", &server.origin()] {
        assert!(!logs.contains(secret), "logs contain {secret}:\n{logs}");
    }
}

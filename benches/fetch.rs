//! Hook latency when the record comes from the FHIR server instead of prefetch: a loopback FHIR server
//! (tests/common/fhir_server.rs) answers each search in 50 ms, serving the largest real patient in `fixtures/`.
//! The four searches run at once, so the floor is one search: about 50 ms plus the service's own work.
//!
//! Run: `cargo bench --bench fetch`

#[path = "../tests/common/fhir_server.rs"]
mod fhir_server;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use criterion::{Criterion, criterion_group, criterion_main};
use dry_needling_cds::fetch::{Allowlist, FetchSettings, Fetcher, http_client};
use dry_needling_cds::{AppState, Knowledge, app};
use fhir_server::FhirServer;
use serde_json::Value;
use tower::ServiceExt;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/real/oa-knee-naproxen.order-select.json"
);

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let fixture = std::fs::read(FIXTURE).unwrap();
    let server = runtime.block_on(FhirServer::start(&fixture));
    server.set(|b| b.latency = Duration::from_millis(50));
    let mut request: Value = serde_json::from_slice(&fixture).unwrap();
    request.as_object_mut().unwrap().remove("prefetch");
    request["fhirServer"] = server.base().into();
    request["fhirAuthorization"] = serde_json::json!({"access_token": "bench", "token_type": "Bearer"});
    let body = serde_json::to_vec(&request).unwrap();
    let allowlist = Allowlist {
        servers: vec![server.origin()],
        open_servers: Vec::new(),
        fhir_base: None,
    };
    let state = AppState {
        today: Some(time::macros::date!(2026 - 11 - 23)),
        fetcher: Arc::new(Fetcher::new(http_client(), FetchSettings::default(), allowlist)),
        ..AppState::new(Knowledge::embedded().unwrap())
    };
    let router = app(state);
    let mut group = c.benchmark_group("hook with FHIR fetch");
    group.sample_size(30);
    group.bench_function("4 searches at 50 ms each", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let request = Request::post("/cds-services/dry-needling-order-select")
                    .header("content-type", "application/json")
                    .body(Body::from(body.clone()))
                    .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

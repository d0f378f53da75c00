//! Several instances behind one load balancer, sharing one PostgreSQL: a token used at one instance is refused
//! at the other (the shared `jti` cache), and both write one card log. Two real service processes; PostgreSQL
//! from `DRY_NEEDLING_CDS_TEST_POSTGRES_URL` (`.ci/run` starts one; without it the test says so and passes,
//! unless `CI` is set).
//!
//! `shared_replay_latency` (ignored by default) measures what the shared check adds to a signed call:
//!
//! ```text
//! cargo test --release --test instances -- --ignored --nocapture
//! ```

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fixture;
use common::process::Service;
use common::store::{Fixture, postgres_not_run};
use dry_needling_cds::store::StoreConfig;

const SELECT: &str = "/cds-services/dry-needling-order-select";
/// Both instances are reached through one public URL, as behind a load balancer; tokens name it.
const PUBLIC: &str = "http://cds.test.example";

fn config() -> String {
    format!(
        "public_base_url = \"{PUBLIC}\"\n[[client]]\nissuer = \"https://ehr.test.example\"\n\
         jwks_file = \"{}/fixtures/auth/test-jwks.json\"\nalgorithms = [\"ES384\"]\n",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn token(jti: &str) -> String {
    common::es384_token(&format!("{PUBLIC}{SELECT}"), jti)
}

async fn call(client: &reqwest::Client, address: SocketAddr, token: &str) -> u16 {
    client
        .post(format!("http://{address}{SELECT}"))
        .header("content-type", "application/json")
        .bearer_auth(token)
        .body(fixture("rules/neck-pain.json"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn postgres_url(fx: &Fixture) -> String {
    match &fx.config {
        StoreConfig::Postgres { url } => url.clone(),
        StoreConfig::Sqlite { .. } => unreachable!("a PostgreSQL fixture"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_used_at_one_instance_is_refused_at_another() {
    let Some(fx) = Fixture::postgres("instances").await else {
        return postgres_not_run();
    };
    let url = postgres_url(&fx);
    let a = Service::start_with(&config(), &["--postgres-url", &url]);
    let b = Service::start_with(&config(), &["--postgres-url", &url]);
    for service in [&a, &b] {
        let line = service.wait_for_line("store ready");
        assert!(line.contains("replay_shared=true"), "{line}");
        assert!(!line.contains(&url), "the URL is not logged: {line}");
    }
    let client = reqwest::Client::new();
    let first = token("replayed-across-instances");
    assert_eq!(call(&client, a.address, &first).await, 200, "first use, at A");
    assert_eq!(call(&client, b.address, &first).await, 401, "the same token at B");
    assert_eq!(call(&client, a.address, &first).await, 401, "and again at A");
    let second = token("first-used-at-b");
    assert_eq!(call(&client, b.address, &second).await, 200, "first use, at B");
    assert_eq!(call(&client, a.address, &second).await, 401, "the same token at A");
    assert_eq!(fx.count("SELECT COUNT(*) FROM jti_seen").await, 2);
    // Both instances write the one card log (one card per accepted call; the writer wakes every 100 ms).
    let deadline = Instant::now() + Duration::from_secs(10);
    while fx.count("SELECT COUNT(*) FROM cards").await < 2 {
        assert!(Instant::now() < deadline, "the card log has both instances' cards");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let issuers = fx.text("SELECT DISTINCT client_issuer FROM cards").await;
    assert_eq!(issuers, ["https://ehr.test.example"]);
    let refused = b.wait_for_line("request refused");
    assert!(refused.contains("reason=jti already used"), "{refused}");
    drop((a, b));
    fx.finish().await;
}

/// Median and 99th percentile of 400 sequential signed calls (each with a fresh `jti`) to an instance with the
/// shared cache and to one without, alternating, so that both see the same machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --release --ignored --nocapture"]
async fn shared_replay_latency() {
    let Some(fx) = Fixture::postgres("latency").await else {
        return postgres_not_run();
    };
    let url = postgres_url(&fx);
    let shared = Service::start_with(&config(), &["--postgres-url", &url]);
    let local = Service::start(&config());
    let client = reqwest::Client::new();
    const CALLS: usize = 400;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for i in 0..CALLS + 20 {
        for (address, times, label) in [(shared.address, &mut with, "s"), (local.address, &mut without, "l")] {
            let token = token(&format!("latency-{label}-{i}"));
            let started = Instant::now();
            assert_eq!(call(&client, address, &token).await, 200);
            // The first 20 warm up connections and caches.
            if i >= 20 {
                times.push(started.elapsed());
            }
        }
    }
    let summary = |times: &mut Vec<Duration>| {
        times.sort();
        (times[times.len() / 2], times[times.len() * 99 / 100])
    };
    let (with_p50, with_p99) = summary(&mut with);
    let (without_p50, without_p99) = summary(&mut without);
    println!(
        "signed call, {CALLS} sequential: shared jti cache (PostgreSQL) p50 {with_p50:?} p99 {with_p99:?}; \
         this process's cache only p50 {without_p50:?} p99 {without_p99:?}; added p50 {:?}",
        with_p50.saturating_sub(without_p50)
    );
    drop((shared, local));
    fx.finish().await;
}

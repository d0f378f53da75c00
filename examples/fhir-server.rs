//! The tests' loopback FHIR server (tests/common/fhir_server.rs) as a program, for load tests: it serves one
//! fixture patient's searches with a fixed latency.
//!
//! Run: `cargo run --release --example fhir-server -- FIXTURE LATENCY_MS` (prints its base URL, then serves
//! until killed).

#[path = "../tests/common/fhir_server.rs"]
mod fhir_server;

use std::time::Duration;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let fixture = args.next().expect("usage: fhir-server FIXTURE LATENCY_MS");
    let latency: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let server = fhir_server::FhirServer::start(&std::fs::read(&fixture).expect("fixture")).await;
    server.set(|b| b.latency = Duration::from_millis(latency));
    println!("{}", server.base());
    std::future::pending::<()>().await;
}

//! The floor the load test measures the service against (issue 26): an axum server that does the least work
//! possible with the same bytes. `GET /cds-services` answers a static document (the service's own discovery,
//! read from a file); `POST /cds-services/{id}` reads the body and checks that it is JSON without building
//! anything (`serde::de::IgnoredAny`), then answers `{"cards":[]}`.
//!
//! Why a floor rather than absolute figures: the VM's speed drifts from run to run, but two servers measured in
//! the same run on the same cores drift together, so the ratio says what the service's own work costs.
//!
//! Run: `cargo run --release --example floor -- ADDRESS DISCOVERY_FILE` (serves until killed).

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(address), Some(discovery)) = (args.next(), args.next()) else {
        eprintln!("usage: floor ADDRESS DISCOVERY_FILE");
        std::process::exit(2);
    };
    let discovery = Bytes::from(std::fs::read(&discovery).expect("the discovery document"));
    let app = Router::new()
        .route(
            "/cds-services",
            get(move || {
                let discovery = discovery.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], discovery) }
            }),
        )
        .route("/cds-services/{id}", post(scan))
        // The service's own body limit.
        .layer(DefaultBodyLimit::max(dry_needling_cds::http::DEFAULT_BODY_LIMIT));
    let listener = tokio::net::TcpListener::bind(&address).await.expect("the address");
    axum::serve(listener, app).await.expect("serve");
}

/// Checks the body is JSON, building nothing.
async fn scan(body: Bytes) -> impl IntoResponse {
    match serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        Ok(_) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            &b"{\"cards\":[]}"[..],
        ),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            &b"{\"error\":\"not JSON\"}"[..],
        ),
    }
}

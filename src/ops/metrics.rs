//! The metrics recorder and `/metrics`.
//!
//! The `metrics` facade is called where things happen (`metrics::counter!` and friends; a no-op until a recorder
//! is installed, so the library and its tests run without one); [`install`] sets the process-wide Prometheus
//! recorder once, in `main`. Rendering is the exporter crate's; the service serves the text itself rather than
//! through the crate's own HTTP listener, so that `/metrics` shares the hardened server of [`crate::http::serve()`]
//! and its address rules: on its own listen address (`--metrics-listen`), or else on the main port for loopback
//! peers only.

use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use crate::record::DataKind;

/// Every metric the service records, with its help text; `docs/operations.md` lists the same.
pub const REQUESTS: &str = "cds_http_requests_total";
pub const REQUEST_DURATION: &str = "cds_http_request_duration_seconds";
pub const CARDS: &str = "cds_cards_total";
pub const DATA_UNAVAILABLE: &str = "cds_data_unavailable_total";
pub const FHIR_SEARCHES: &str = "cds_fhir_searches_total";
pub const FHIR_FETCH_DURATION: &str = "cds_fhir_fetch_duration_seconds";
pub const AUTH_REFUSALS: &str = "cds_auth_refusals_total";
pub const JWKS_FETCHES: &str = "cds_jwks_fetches_total";
pub const REPLAY_CACHE: &str = "cds_replay_cache_entries";
pub const HOOKS_IN_FLIGHT: &str = "cds_hooks_in_flight";
pub const HOOKS_SHED: &str = "cds_hooks_shed_total";
pub const FEEDBACK: &str = "cds_feedback_total";
pub const FEEDBACK_SHED: &str = "cds_feedback_shed_total";
pub const CARD_LOG: &str = "cds_card_log_total";
pub const CARD_LOG_QUEUE: &str = "cds_card_log_queued";
pub const STORE_ERRORS: &str = "cds_store_errors_total";
pub const SHARED_REPLAY_DURATION: &str = "cds_shared_replay_check_duration_seconds";
pub const CONNECTIONS_REFUSED: &str = "cds_connections_refused_total";
pub const SLOW_REQUESTS: &str = "cds_slow_requests_total";
pub const UNCLEAN_STOPS: &str = "cds_unclean_stops_total";
pub const CONTENT_INFO: &str = "cds_content_info";

/// Seconds: from well under a millisecond (a call without a dry-needling order) to the request time-out.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The rendering side of the installed recorder.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Installs the process-wide recorder, with `cds_content_info{version}` set. Fails if one is already installed.
pub fn install(content_version: &str) -> Result<Metrics, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)?
        .install_recorder()?;
    describe();
    // An info metric (as Prometheus's `build_info` convention): a dashboard joins on it to show, and alert on,
    // instances answering from different content.
    metrics::gauge!(CONTENT_INFO, "version" => content_version.to_string()).set(1.0);
    Ok(Metrics { handle })
}

impl Metrics {
    /// The Prometheus text exposition, with the gauges read now: `in_flight` hook calls, `replay` cache
    /// entries (`None` when tokens are not verified) and cards queued for the card log (`None` without a store).
    pub fn render(&self, in_flight: usize, replay: Option<usize>, card_log_queued: Option<usize>) -> String {
        metrics::gauge!(HOOKS_IN_FLIGHT).set(in_flight as f64);
        if let Some(queued) = card_log_queued {
            metrics::gauge!(CARD_LOG_QUEUE).set(queued as f64);
        }
        if let Some(entries) = replay {
            metrics::gauge!(REPLAY_CACHE).set(entries as f64);
        }
        // Histograms keep their buckets; upkeep only drains what recording left pending.
        self.handle.run_upkeep();
        self.handle.render()
    }
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "HTTP requests answered, by route (the route template, or the service id for hook and feedback routes) and status"
    );
    describe_histogram!(REQUEST_DURATION, metrics::Unit::Seconds, "Time to answer, by route");
    describe_counter!(CARDS, "Cards returned, by service, card template and indicator");
    describe_counter!(
        DATA_UNAVAILABLE,
        "Data kinds that could not be had, by kind and by what the answer was: 412, a data-unavailable card, \
         or a note on a card the order decided alone"
    );
    describe_counter!(
        FHIR_SEARCHES,
        "FHIR searches run for missing prefetch, by data kind and outcome"
    );
    describe_histogram!(
        FHIR_FETCH_DURATION,
        metrics::Unit::Seconds,
        "Time spent fetching from the FHIR server, per hook call that fetched"
    );
    describe_counter!(AUTH_REFUSALS, "Requests refused with 401, by reason");
    describe_counter!(JWKS_FETCHES, "Fetches of a trusted client's JWKS, by outcome");
    describe_gauge!(REPLAY_CACHE, "jti values remembered against replay");
    describe_gauge!(HOOKS_IN_FLIGHT, "Hook calls admitted and not yet answered");
    describe_counter!(
        HOOKS_SHED,
        "Hook calls refused with 503 because too many were in progress"
    );
    describe_counter!(FEEDBACK, "Feedback entries received, by outcome");
    describe_counter!(
        FEEDBACK_SHED,
        "Feedback calls refused with 503 because the feedback bodies in progress held their byte budget"
    );
    describe_counter!(
        CARD_LOG,
        "Cards for the card log, by outcome: written, or dropped because the queue was full or the store failed"
    );
    describe_gauge!(CARD_LOG_QUEUE, "Cards waiting to be written to the card log");
    describe_gauge!(
        CONTENT_INFO,
        "Always 1, labelled with the version of the guidance content this process answers from"
    );
    describe_counter!(STORE_ERRORS, "Store operations that failed, by operation");
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections refused with 503 at once, by reason: peer_share (the peer address held its share of the slots)"
    );
    describe_counter!(
        UNCLEAN_STOPS,
        "Earlier runs of this instance found at start-up to have ended without a clean shutdown (kill -9, a crash)"
    );
    describe_counter!(
        SLOW_REQUESTS,
        "Connections closed because a request arrived too slowly, by reason: deadline, rate, between_requests"
    );
    describe_histogram!(
        SHARED_REPLAY_DURATION,
        metrics::Unit::Seconds,
        "Time to check a jti in the shared (PostgreSQL) replay cache"
    );
}

/// The label for a data kind.
pub fn kind_label(kind: DataKind) -> &'static str {
    kind.key()
}

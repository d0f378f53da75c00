//! What operators watch: metrics in the Prometheus text format. (Health and readiness are plain endpoints of
//! [`crate::http`]; logs are `tracing`'s.)
//!
//! Why a layer of its own: counting is cross-cutting (the edge, the FHIR fetch, the verifier and the service
//! each count what they see), but what is exposed, under which names and labels, and to whom, is one decision,
//! kept here. Labels are closed sets (routes, service ids and card ids from the content, data kinds, refusal
//! reasons): never a hookInstance, patient, URL or other caller text, so a caller can neither learn patient data
//! from a scrape nor grow the series without bound.

pub mod metrics;

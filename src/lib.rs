//! A CDS Hooks 2.0 service that answers dry-needling orders (`order-select`, `order-sign`) with
//! guideline-based cards.
//!
//! Data flows one way, and each module owns one step:
//!
//! | step | module | knows |
//! |---|---|---|
//! | connections, routing, CORS, auth, admission, limits, error → status | [`http`] | HTTP |
//! | JWT verification, trusted clients | [`auth`] | JWTs, JWKS |
//! | tenants under one issuer and each one's policy (missing data, companion, services) | [`tenant`] | policy |
//! | the configuration file | [`config`] | TOML |
//! | the application state from the configuration (the composition root) | [`mod@app`] | both |
//! | fetching what prefetch lacks | [`fetch`] | FHIR REST, the allowlist |
//! | request, discovery, card and feedback JSON | [`wire`] | CDS Hooks shapes |
//! | `fhirAuthorization.scope` read once: which searches the token allows | [`scopes`] | SMART scopes |
//! | FHIR JSON (R4, STU3, DSTU2) → record | [`fhir`] | FHIR shapes |
//! | the patient record | [`record`] | plain types |
//! | the guideline: concepts, episodes, care, verdict | [`assess`] | pure functions, no I/O, cannot fail |
//! | the rules' words: cards, value sets and their lookups, phrases, policy | [`assess::vocabulary`] | codes, phrases |
//! | assessment → card | [`render`] | templates |
//! | cards as plain text for reviewers (`evaluate --format text`) | [`cardtext`] | nothing |
//! | content in `cards/`, checked at start and by `check-content` | [`content`] | files, validation |
//! | one hook call end to end | [`service`] | the order of steps |
//! | the content as FHIR: value sets as `ValueSet`s, services as `PlanDefinition`s (`export`, `/fhir/…`) | [`export`] | FHIR JSON, canonical URLs |
//! | the sandbox companion: a testing aid that turns a sandbox imaging draft into dry needling | [`companion`] | drafts, suggestions |
//! | caller text as a log field (escaped, truncated) | [`logsafe`] | nothing |
//! | the tester's workbench page and its bundled patients | [`web`] | static files |
//! | metrics for operators (names, labels, `/metrics`) | [`ops`] | Prometheus text |
//! | card log, feedback, override analytics, shared `jti` cache | [`store`] | SQLite, PostgreSQL |
//!
//! `main.rs` is only the command line, configuration, telemetry and serving. See `ARCHITECTURE.md`.

// A `pub` item the crate does not export says more than it means: `pub(crate)` where only the crate uses it.
#![warn(unreachable_pub)]

pub mod app;
pub mod assess;
pub mod auth;
pub mod cardtext;
pub mod companion;
pub mod config;
pub mod content;
pub mod export;
pub mod fetch;
pub mod fhir;
pub mod http;
pub mod logsafe;
pub mod ops;
pub mod quote;
pub mod record;
pub mod render;
pub mod scopes;
pub mod service;
pub mod store;
pub mod tenant;
pub mod web;
pub mod wire;

pub use content::{ContentSource, Knowledge};
pub use http::{AppState, app};

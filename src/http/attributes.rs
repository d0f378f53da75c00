//! `GET /source-attributes` (JSON) and `GET /source-attributes.html` (a page): the source attributes of every
//! service and card template (ONC HTI-1), from [`crate::web::attributes`].
//!
//! Why no token and every mode: they hold no patient data and no client's, only what the content says about
//! itself, and an EHR (or a person it sends there) must be able to read them wherever the service answers, as
//! the FHIR export is read. Both answers are computed once, when the state is built, and only copied out.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

use super::AppState;
use crate::content::Knowledge;
use crate::service::{SOURCE_ATTRIBUTES_PAGE_PATH, SOURCE_ATTRIBUTES_PATH};
use crate::web::attributes;

/// Both answers, serialized once from the content.
#[derive(Debug, Clone)]
pub struct SourceAttributeAnswers {
    json: Bytes,
    html: Bytes,
}

impl SourceAttributeAnswers {
    pub fn new(knowledge: &Knowledge) -> SourceAttributeAnswers {
        let json = serde_json::to_vec_pretty(&attributes::document(knowledge)).unwrap_or_default();
        let html = attributes::page(knowledge, SOURCE_ATTRIBUTES_PATH);
        SourceAttributeAnswers {
            json: Bytes::from(json),
            html: Bytes::from(html),
        }
    }
}

pub(super) fn routes(state: &Arc<AppState>) -> Router {
    Router::new()
        .route(SOURCE_ATTRIBUTES_PATH, get(json))
        .route(SOURCE_ATTRIBUTES_PAGE_PATH, get(page))
        .with_state(state.clone())
}

async fn json(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.source_attributes.json.clone(),
    )
        .into_response()
}

async fn page(State(state): State<Arc<AppState>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // No script at all; the style is inline.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; \
                 form-action 'none'; frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        state.source_attributes.html.clone(),
    )
        .into_response()
}

//! `GET /fhir/ValueSet`, `/fhir/ValueSet/{id}`, `/fhir/PlanDefinition`, `/fhir/PlanDefinition/{id}`: the content
//! as FHIR ([`crate::export`]), read-only, as `application/fhir+json`. A type's route answers its searchset
//! Bundle (every resource; no search parameters), an id's the resource or 404 with an OperationOutcome.
//!
//! Why here: only the edge knows HTTP; the answers themselves are computed once ([`super::FhirRoutes`]) and
//! only copied out. Off, every `/fhir/…` path is the common 404 (also with trusted clients, without a token).

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

use super::{ApiError, AppState, FhirRoutes};
use crate::export::ResourceType;

const FHIR_JSON: &str = "application/fhir+json";

/// The routes, when the export is on; none otherwise.
pub(super) fn routes(state: &Arc<AppState>) -> Router {
    if matches!(state.fhir_export, FhirRoutes::Off) {
        // Absent, and said so without a token (with trusted clients an unknown path would otherwise get 401).
        return Router::new().route("/fhir/{*path}", get(|| async { ApiError::NoRoute }));
    }
    Router::new()
        .route("/fhir/ValueSet", get(|s| search(s, ResourceType::ValueSet)))
        .route("/fhir/ValueSet/{id}", get(|s, id| read(s, id, ResourceType::ValueSet)))
        .route("/fhir/PlanDefinition", get(|s| search(s, ResourceType::PlanDefinition)))
        .route(
            "/fhir/PlanDefinition/{id}",
            get(|s, id| read(s, id, ResourceType::PlanDefinition)),
        )
        .with_state(state.clone())
}

fn fhir_json(body: Body) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

async fn search(State(state): State<Arc<AppState>>, kind: ResourceType) -> Response {
    let Some(catalogue) = state.fhir_export.catalogue(&state.knowledge) else {
        return ApiError::NoRoute.into_response();
    };
    // The Bundle's chunks share the resources' bytes: nothing is serialised or copied into one buffer here.
    let chunks = catalogue
        .search(kind)
        .into_iter()
        .map(Ok::<_, std::convert::Infallible>);
    fhir_json(Body::from_stream(futures::stream::iter(chunks)))
}

async fn read(State(state): State<Arc<AppState>>, Path(id): Path<String>, kind: ResourceType) -> Response {
    let Some(catalogue) = state.fhir_export.catalogue(&state.knowledge) else {
        return ApiError::NoRoute.into_response();
    };
    match catalogue.read(kind, &id) {
        Some(bytes) => fhir_json(Body::from(bytes)),
        None => ApiError::UnknownResource(kind.name()).into_response(),
    }
}

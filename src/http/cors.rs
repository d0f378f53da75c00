//! CORS for browser clients such as the CDS Hooks sandbox: any origin (services are public and use bearer
//! tokens, not cookies), the `Authorization` header, and Chromium's private-network preflight.
//!
//! Why by hand, when tower-http's `CorsLayer` did the same (and the tests below check that every answer's headers
//! are still exactly its answer's): the router clones each route's layers for every request, and `CorsLayer`'s
//! clone, the header map it builds and the `Vary` value it joins anew on every call were a tenth of what a request
//! that does nothing cost (issue 26's profile). Our policy is fixed, so every header value here is a constant.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;

const ANY_ORIGIN: HeaderValue = HeaderValue::from_static("*");
const VARY: HeaderValue =
    HeaderValue::from_static("origin, access-control-request-method, access-control-request-headers");
const METHODS: HeaderValue = HeaderValue::from_static("GET,POST,OPTIONS");
const HEADERS: HeaderValue = HeaderValue::from_static("authorization,content-type,accept");
/// A day: browsers cap it lower (Chromium at two hours), which is fine.
const MAX_AGE: HeaderValue = HeaderValue::from_static("86400");
const TRUE: HeaderValue = HeaderValue::from_static("true");
const REQUEST_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-request-private-network");
const ALLOW_PRIVATE_NETWORK: HeaderName = HeaderName::from_static("access-control-allow-private-network");

/// The middleware, for routes that need nothing else from the edge (`/fhir/…`, `/source-attributes`).
pub(super) async fn layer(request: Request, next: Next) -> Response {
    around(request, |request| next.run(request)).await
}

/// Answers a preflight (any `OPTIONS` request) at once; otherwise runs `inner` and adds the CORS headers to its
/// response, whatever it is (a refusal too: a browser must be able to read why).
pub(super) async fn around<F, Fut>(request: Request, inner: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let private_network = request.headers().get(REQUEST_PRIVATE_NETWORK) == Some(&TRUE);
    if request.method() == Method::OPTIONS {
        return preflight(private_network);
    }
    let mut response = inner(request).await;
    let headers = response.headers_mut();
    // `Vary` may have values already: added, never replaced.
    headers.append(header::VARY, VARY);
    common(headers, private_network);
    response
}

fn preflight(private_network: bool) -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    let headers = response.headers_mut();
    headers.insert(header::VARY, VARY);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, METHODS);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HEADERS);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    common(headers, private_network);
    response
}

fn common(headers: &mut HeaderMap, private_network: bool) {
    if private_network {
        headers.insert(ALLOW_PRIVATE_NETWORK, TRUE);
    }
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY_ORIGIN);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use tower::ServiceExt;
    use tower_http::cors::{Any, CorsLayer};

    use super::*;

    /// The policy as tower-http's `CorsLayer` said it, before it was written out here.
    fn reference() -> CorsLayer {
        CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .allow_private_network(true)
            .max_age(Duration::from_secs(24 * 60 * 60))
    }

    fn routes() -> Router {
        Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/varies",
                post(|| async { ([(header::VARY, "accept-encoding")], "varies").into_response() }),
            )
            .fallback(|| async { StatusCode::NOT_FOUND })
    }

    /// Headers as a sorted list of (name, value), every value of a repeated name kept.
    async fn headers(app: Router, request: Request) -> (StatusCode, Vec<(String, String)>) {
        let response = app.oneshot(request).await.unwrap();
        let mut pairs: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        pairs.sort();
        (response.status(), pairs)
    }

    #[tokio::test]
    async fn every_answer_carries_the_headers_tower_http_gave() {
        let requests = || {
            let build = |method: Method, path: &str, extra: &[(&str, &str)]| {
                let mut request = Request::builder().method(method).uri(path);
                for (name, value) in extra {
                    request = request.header(*name, *value);
                }
                request.body(Body::empty()).unwrap()
            };
            vec![
                build(Method::GET, "/ok", &[]),
                build(Method::GET, "/ok", &[("origin", "https://sandbox.cds-hooks.org")]),
                build(Method::POST, "/varies", &[("origin", "http://localhost:3000")]),
                build(Method::GET, "/nowhere", &[("origin", "http://localhost:3000")]),
                build(Method::DELETE, "/ok", &[]),
                build(
                    Method::OPTIONS,
                    "/ok",
                    &[
                        ("origin", "http://localhost:3000"),
                        ("access-control-request-method", "POST"),
                        ("access-control-request-headers", "authorization, content-type"),
                    ],
                ),
                build(
                    Method::OPTIONS,
                    "/nowhere",
                    &[
                        ("origin", "https://sandbox.cds-hooks.org"),
                        ("access-control-request-method", "POST"),
                        ("access-control-request-private-network", "true"),
                    ],
                ),
                build(Method::OPTIONS, "/ok", &[]),
                build(
                    Method::GET,
                    "/ok",
                    &[("access-control-request-private-network", "true")],
                ),
                build(Method::GET, "/ok", &[("access-control-request-private-network", "yes")]),
            ]
        };
        for (theirs, ours) in requests().into_iter().zip(requests()) {
            let what = format!("{} {}", ours.method(), ours.uri());
            let expected = headers(routes().layer(reference()), theirs).await;
            let got = headers(routes().layer(axum::middleware::from_fn(layer)), ours).await;
            assert_eq!(got, expected, "{what}");
        }
    }
}

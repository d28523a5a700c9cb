//! The HTTP API: one router per resource, merged here under the shared middleware
//! (request ids, tracing, timeouts, body limit).

// utoipa's generated code names the types given to `params(...)` by full path.
#![allow(unused_qualifications)]

pub mod access;
pub mod accounts;
pub mod admin;
pub mod auth;
pub mod auto_topup;
pub mod cards;
pub mod error;
pub mod extract;
pub mod health;
pub mod notices;
pub mod openapi;
pub mod pagination;
pub mod payment_pages;
pub mod portal_sessions;
pub mod pricing;
pub mod state;
pub mod topups;
pub mod usage;
pub mod views;
pub mod webhook_endpoints;
pub mod webhook_events;
pub mod webhooks;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{
        HeaderValue,
        header::{CONNECTION, CONTENT_LENGTH},
    },
    middleware::Next,
    response::{IntoResponse, Response},
};
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    trace::TraceLayer,
};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use error::ApiError;
use state::AppState;

/// Every route of the API, each with its OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(openapi::router())
        .merge(pricing::router())
        .merge(accounts::router())
        .merge(usage::router())
        .merge(admin::router())
        .merge(notices::router())
        .merge(cards::router())
        .merge(auto_topup::router())
        .merge(topups::router())
        .merge(payment_pages::router())
        .merge(portal_sessions::router())
        .merge(webhooks::router())
        .merge(webhook_events::router())
        .merge(webhook_endpoints::router())
}

pub fn router(state: AppState) -> Router {
    let http = &state.config.http;
    let timeout = Duration::from_secs(http.request_timeout_secs);
    let max_body = u64::try_from(http.max_body_bytes).unwrap_or(u64::MAX);
    let in_flight = Arc::new(Semaphore::new(http.max_requests_in_flight));
    let (routes, _) = routes().split_for_parts();
    let billing_page = crate::portal::router().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::portal::error_pages,
    ));
    let console = crate::console::router().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        crate::console::error_pages,
    ));
    routes
        .merge(billing_page)
        .merge(console)
        .fallback(|| async { ApiError::NotFound("route") })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // One stack, applied once: each `layer` call on a router wraps every route in a
        // service of its own, boxed and cloned again on every request (18% of the API's
        // CPU under load, 7.5% as one stack: benchmarks.md, section 3). The first layer
        // listed is the outermost.
        .layer(
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn(
                    move |request: Request, next: Next| {
                        let in_flight = Arc::clone(&in_flight);
                        async move {
                            // Refused before any other layer runs, so a refusal costs next
                            // to nothing when it matters most.
                            let Ok(_answering) = in_flight.try_acquire_owned() else {
                                crate::metrics::request_shed();
                                return ApiError::Overloaded.into_response();
                            };
                            next.run(request).await
                        }
                    },
                ))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(log_response),
                )
                .layer(axum::middleware::from_fn(
                    move |request: Request, next: Next| async move {
                        // Counted whatever answers it: the route, the refusal of its
                        // body's size or the deadline.
                        let counted = crate::metrics::HttpRequest::start(&request);
                        let response = within_limits(request, next, max_body, timeout).await;
                        counted.answered(&response);
                        response
                    },
                ))
                .layer(DefaultBodyLimit::max(http.max_body_bytes)),
        )
        .with_state(state)
}

/// `next`'s answer to `request`, unless the body it announces is past `max_body` or the
/// answer takes longer than `timeout`.
async fn within_limits(request: Request, next: Next, max_body: u64, timeout: Duration) -> Response {
    // A body announced past the limit is refused before anything reads the request (with
    // a key or without): nothing waits for bytes it would refuse.
    if announced_length(&request).is_some_and(|length| length > max_body) {
        let mut refused = ApiError::PayloadTooLarge.into_response();
        refused
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return refused;
    }
    // A request is abandoned at the deadline; charges run in tasks of their own and go on
    // (see `topups::in_own_task`).
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// The body length the request announces, if it announces one.
fn announced_length(request: &Request) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The operations listener: `/metrics` and the probes, kept off the public API.
pub fn ops_router(state: AppState) -> Router {
    let (probes, _) = health::router().split_for_parts();
    probes
        .route(
            "/metrics",
            axum::routing::get(|| async { crate::metrics::handle().render() }),
        )
        .fallback(|| async { ApiError::NotFound("route") })
        .with_state(state)
}

/// One line per response, in the request's span, with its status and latency as numbers
/// (tower-http's own line writes the latency as text, such as "9 ms").
fn log_response(response: &axum::response::Response, latency: Duration, _span: &tracing::Span) {
    tracing::info!(
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "request answered"
    );
}

/// One span per request, named by its route template (never by ids in the path) and
/// carrying the request id that is also returned in `x-request-id`.
fn request_span(request: &Request) -> tracing::Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

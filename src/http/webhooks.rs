//! The provider's webhooks: authenticated on the raw body, stored once per event id, then
//! handled by re-reading the payment they name.

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::HeaderMap,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract;
use super::state::AppState;
use crate::payments::signature;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(receive))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReceivedView {
    received: bool,
    /// The event was stored before; nothing was done again.
    duplicate: bool,
}

/// What is read from an event before storing it.
#[derive(Debug, Deserialize)]
struct EventHead {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: Value,
}

/// The payment provider's events. 400 and nothing stored unless the signature is valid and
/// fresh; 200 once stored (a duplicate is acknowledged without effect).
#[utoipa::path(post, path = "/v1/webhooks/payments", operation_id = "receive_webhook", tag = "webhooks", security(()),
    params(("Stripe-Signature" = String, Header, description = "`t=<unix time>,v1=<HMAC-SHA256 hex>` over `<t>.<raw body>`")),
    request_body(content = Object, description = "A provider event: `{id, type, data: {object}}`"),
    responses(
        (status = 200, body = ReceivedView),
        (status = 400, description = "`invalid_signature`, or not an event", body = ErrorBody),
    ))]
async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ReceivedView>> {
    let body = body.map_err(extract::body_refused)?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    signature::verify(
        header,
        &body,
        &state.webhook_secrets,
        state.clock.now_ms().div_euclid(1000),
        state.config.payments.webhook_tolerance_secs,
    )
    .map_err(|e| {
        tracing::warn!(error = %e, "webhook rejected");
        ApiError::InvalidSignature(e.to_string())
    })?;
    let event: EventHead = serde_json::from_slice(&body)
        .map_err(|e| ApiError::malformed(format!("webhook body is not an event: {e}"), None))?;
    let object_id = event.data.object.get("id").and_then(Value::as_str);
    let payload = String::from_utf8_lossy(&body);
    let _permit = state
        .webhook_permits
        .acquire()
        .await
        .map_err(|_| ApiError::Unavailable("webhooks are closed".into()))?;
    let new = state
        .topups
        .receive_event(&event.id, &event.kind, object_id, &payload)
        .await?;
    Ok(Json(ReceivedView {
        received: true,
        duplicate: !new,
    }))
}

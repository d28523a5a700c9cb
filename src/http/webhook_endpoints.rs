//! The host's webhook endpoints (admin keys) and their deliveries (staff): where topupd
//! sends its events, signed as Standard Webhooks, and what became of each.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    auth::{Caller, STAFF},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
    state::AppState,
};
use crate::{
    clock::rfc3339,
    db::{
        webhook_endpoints::{EndpointChange, EndpointRow, NewEndpoint},
        webhook_outbox::{AttemptRow, DeliveryRow, DeliveryState, ReplayOutcome},
    },
    domain::{
        api_key::Role,
        validation::FieldErrors,
        webhook::{EventType, Subscription, check_url},
    },
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(show, change, delete))
        .routes(routes!(rotate_secret))
        .routes(routes!(deliveries))
        .routes(routes!(delivery))
        .routes(routes!(replay))
}

const ADMIN: &[Role] = &[Role::Admin];
const MAX_DESCRIPTION: usize = 500;

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEndpointView {
    id: String,
    url: String,
    description: String,
    /// The event types it receives, or `["*"]` for all.
    events: Vec<String>,
    /// A disabled endpoint receives nothing; one is disabled when a delivery fails every try.
    enabled: bool,
    /// Why it was disabled by topupd, if it was.
    disabled_reason: Option<String>,
    /// The signing secret (`whsec_...`): only in the answers that create or rotate it.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Until when the secret before the last rotation also signs.
    previous_secret_expires_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl WebhookEndpointView {
    fn of(row: EndpointRow, with_secret: bool) -> Self {
        Self {
            events: row.event_types(),
            secret: with_secret.then_some(row.secret),
            id: row.id,
            url: row.url,
            description: row.description,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            previous_secret_expires_at: row.previous_secret_until.map(rfc3339),
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewWebhookEndpointBody {
    /// An absolute `https` (or `http`) URL, without credentials.
    url: String,
    /// Event types to receive, or `["*"]` for all, those added later included.
    #[schema(example = json!(["topup.succeeded", "auto_topup.paused"]))]
    events: Vec<String>,
    /// Up to 500 characters.
    #[serde(default)]
    description: String,
}

/// Adds an endpoint, enabled, with a new signing secret (shown in this answer only). Admin
/// keys only.
#[utoipa::path(post, path = "/v1/admin/webhook-endpoints", operation_id = "create_webhook_endpoint",
    tag = "host webhooks", request_body = NewWebhookEndpointBody,
    responses((status = 201, description = "Added; `secret` signs its deliveries", body = WebhookEndpointView)))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewWebhookEndpointBody>,
) -> ApiResult<(StatusCode, Json<WebhookEndpointView>)> {
    caller.require(ADMIN)?;
    let mut errors = FieldErrors::new();
    let url = body.url.trim();
    if let Err(e) = check_url("url", url) {
        errors.merge(e);
    }
    check_description(&mut errors, &body.description);
    let events = Subscription::parse("events", &body.events);
    let events = match events {
        Ok(events) => errors.into_result(events),
        Err(e) => {
            errors.merge(e);
            Err(errors)
        }
    }
    .map_err(ApiError::invalid)?;
    let new = NewEndpoint {
        url: url.to_owned(),
        description: body.description,
        events,
    };
    let row = state
        .db
        .create_webhook_endpoint(&new, &caller.actor(), state.clock.now_ms())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(WebhookEndpointView::of(row, true)),
    ))
}

fn check_description(errors: &mut FieldErrors, description: &str) {
    if !description.is_empty() {
        errors.require_text("description", description, MAX_DESCRIPTION);
    }
}

/// The endpoints, newest first. Admin keys only.
#[utoipa::path(get, path = "/v1/admin/webhook-endpoints", operation_id = "list_webhook_endpoints",
    tag = "host webhooks", params(PageParams),
    responses((status = 200, body = PageView<WebhookEndpointView>)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<WebhookEndpointView>>> {
    caller.require(ADMIN)?;
    let endpoints = state.db.webhook_endpoints(page.page_request()?).await?;
    Ok(Json(PageView::try_from_page(endpoints, |row| {
        Ok::<_, ApiError>(WebhookEndpointView::of(row, false))
    })?))
}

/// One endpoint. Admin keys only.
#[utoipa::path(get, path = "/v1/admin/webhook-endpoints/{endpoint_id}", operation_id = "get_webhook_endpoint",
    tag = "host webhooks", params(("endpoint_id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, body = WebhookEndpointView),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    ))]
async fn show(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookEndpointView>> {
    caller.require(ADMIN)?;
    let row = state
        .db
        .webhook_endpoint(&id)
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok(Json(WebhookEndpointView::of(row, false)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEndpointChangeBody {
    url: Option<String>,
    events: Option<Vec<String>>,
    description: Option<String>,
    /// `true` turns a disabled endpoint back on: the deliveries still waiting go out, in
    /// order, and it receives new events again.
    enabled: Option<bool>,
}

/// Changes an endpoint; fields left out stay as they are. Admin keys only.
#[utoipa::path(patch, path = "/v1/admin/webhook-endpoints/{endpoint_id}", operation_id = "change_webhook_endpoint",
    tag = "host webhooks", request_body = WebhookEndpointChangeBody,
    params(("endpoint_id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, body = WebhookEndpointView),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    ))]
async fn change(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<WebhookEndpointChangeBody>,
) -> ApiResult<Json<WebhookEndpointView>> {
    caller.require(ADMIN)?;
    let mut errors = FieldErrors::new();
    let url = body.url.as_deref().map(str::trim);
    if let Some(Err(e)) = url.map(|url| check_url("url", url)) {
        errors.merge(e);
    }
    if let Some(description) = &body.description {
        check_description(&mut errors, description);
    }
    let events = match body
        .events
        .as_deref()
        .map(|e| Subscription::parse("events", e))
    {
        Some(Err(e)) => {
            errors.merge(e);
            None
        }
        Some(Ok(events)) => Some(events),
        None => None,
    };
    errors.into_result(()).map_err(ApiError::invalid)?;
    let change = EndpointChange {
        url: url.map(str::to_owned),
        description: body.description,
        events,
        enabled: body.enabled,
    };
    let row = state
        .db
        .change_webhook_endpoint(&id, &change, &caller.actor(), state.clock.now_ms())
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok(Json(WebhookEndpointView::of(row, false)))
}

/// Removes an endpoint with its deliveries. Admin keys only.
#[utoipa::path(delete, path = "/v1/admin/webhook-endpoints/{endpoint_id}", operation_id = "delete_webhook_endpoint",
    tag = "host webhooks", params(("endpoint_id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    ))]
async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    caller.require(ADMIN)?;
    if state
        .db
        .delete_webhook_endpoint(&id, &caller.actor(), state.clock.now_ms())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("webhook endpoint"))
    }
}

/// Gives the endpoint a new signing secret (in this answer only). For the next 24 hours
/// each delivery carries a signature by the previous secret too, so the receiver can
/// switch without refusing any. Admin keys only.
#[utoipa::path(post, path = "/v1/admin/webhook-endpoints/{endpoint_id}/rotate-secret",
    operation_id = "rotate_webhook_endpoint_secret", tag = "host webhooks",
    params(("endpoint_id" = String, Path, description = "The endpoint's id")),
    responses(
        (status = 200, description = "Rotated; `secret` is the new one", body = WebhookEndpointView),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    ))]
async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookEndpointView>> {
    caller.require(ADMIN)?;
    let row = state
        .db
        .rotate_webhook_secret(&id, &caller.actor(), state.clock.now_ms())
        .await?
        .ok_or(ApiError::NotFound("webhook endpoint"))?;
    Ok(Json(WebhookEndpointView::of(row, true)))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryView {
    id: String,
    endpoint_id: String,
    /// The message's id: the `webhook-id` header, the same on every try and replay.
    message_id: String,
    #[schema(value_type = EventType)]
    event_type: String,
    account_id: String,
    #[schema(value_type = DeliveryState)]
    state: String,
    attempts: i64,
    next_attempt_at: String,
    /// The status the endpoint last answered, if it answered.
    last_status: Option<i64>,
    last_error: Option<String>,
    created_at: String,
    delivered_at: Option<String>,
    failed_at: Option<String>,
}

impl From<DeliveryRow> for WebhookDeliveryView {
    fn from(d: DeliveryRow) -> Self {
        Self {
            id: d.id,
            endpoint_id: d.endpoint_id,
            message_id: d.message_id,
            event_type: d.event_type,
            account_id: d.account_id,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: rfc3339(d.next_attempt_at),
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: rfc3339(d.created_at),
            delivered_at: d.delivered_at.map(rfc3339),
            failed_at: d.failed_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookTryView {
    at: String,
    /// The HTTP status, when the endpoint answered.
    status: Option<i64>,
    error: Option<String>,
    duration_ms: i64,
}

impl From<AttemptRow> for WebhookTryView {
    fn from(a: AttemptRow) -> Self {
        Self {
            at: rfc3339(a.attempted_at),
            status: a.status,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookDeliveryDetailView {
    #[serde(flatten)]
    delivery: WebhookDeliveryView,
    /// The body as sent and signed: `type`, `timestamp` and `data`.
    #[schema(value_type = Object)]
    payload: Value,
    /// Every try, oldest first.
    tries: Vec<WebhookTryView>,
}

#[derive(Debug, Deserialize)]
struct DeliveryParams {
    state: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

/// An endpoint's deliveries, newest first; `?state=failed` for those that gave up. Support
/// and admin keys.
#[utoipa::path(get, path = "/v1/admin/webhook-endpoints/{endpoint_id}/deliveries",
    operation_id = "list_webhook_deliveries", tag = "host webhooks",
    params(
        ("endpoint_id" = String, Path, description = "The endpoint's id"),
        ("state" = inline(Option<DeliveryState>), Query, description = "Only deliveries in this state"),
        PageParams,
    ),
    responses(
        (status = 200, body = PageView<WebhookDeliveryView>),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    ))]
async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> ApiResult<Json<PageView<WebhookDeliveryView>>> {
    caller.require(STAFF)?;
    let page = params.page.page_request()?;
    let filter = match params.state.as_deref() {
        None => None,
        Some(s) => Some(DeliveryState::parse(s).ok_or_else(|| {
            ApiError::malformed_fields(FieldErrors::single(
                "state",
                "must be pending, sending, delivered or failed",
            ))
        })?),
    };
    if state.db.webhook_endpoint(&id).await?.is_none() {
        return Err(ApiError::NotFound("webhook endpoint"));
    }
    let rows = state.db.deliveries(&id, filter, page).await?;
    Ok(Json(PageView::try_from_page(rows, |row| {
        Ok::<_, ApiError>(row.into())
    })?))
}

/// One delivery with its payload and every try. Support and admin keys.
#[utoipa::path(get, path = "/v1/admin/webhook-deliveries/{delivery_id}", operation_id = "get_webhook_delivery",
    tag = "host webhooks", params(("delivery_id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 200, body = WebhookDeliveryDetailView),
        (status = 404, description = "No such delivery", body = ErrorBody),
    ))]
async fn delivery(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookDeliveryDetailView>> {
    caller.require(STAFF)?;
    let row = state
        .db
        .delivery(&id)
        .await?
        .ok_or(ApiError::NotFound("webhook delivery"))?;
    let tries = state.db.delivery_attempts(&id).await?;
    Ok(Json(detail(row, tries)))
}

fn detail(row: DeliveryRow, tries: Vec<AttemptRow>) -> WebhookDeliveryDetailView {
    WebhookDeliveryDetailView {
        payload: serde_json::from_str(&row.body).unwrap_or(Value::Null),
        delivery: row.into(),
        tries: tries.into_iter().map(Into::into).collect(),
    }
}

/// Sends a delivered or failed delivery's message to its endpoint again, as a new
/// delivery (same `webhook-id`, so a receiver that keeps ids ignores a repeat), after the
/// endpoint's others for the account. Support and admin keys.
#[utoipa::path(post, path = "/v1/admin/webhook-deliveries/{delivery_id}/replay",
    operation_id = "replay_webhook_delivery", tag = "host webhooks",
    params(("delivery_id" = String, Path, description = "The delivery's id")),
    responses(
        (status = 201, description = "The new delivery", body = WebhookDeliveryDetailView),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "It is still waiting or being sent", body = ErrorBody),
    ))]
async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<(StatusCode, Json<WebhookDeliveryDetailView>)> {
    caller.require(STAFF)?;
    match state
        .db
        .replay_delivery(&id, &caller.actor(), state.clock.now_ms())
        .await?
    {
        ReplayOutcome::Replayed(row) => Ok((StatusCode::CREATED, Json(detail(row, Vec::new())))),
        ReplayOutcome::InFlight(row) => Err(ApiError::Conflict(format!(
            "delivery {} is {}; it will be tried without a replay",
            row.id, row.state
        ))),
        ReplayOutcome::NotFound => Err(ApiError::NotFound("webhook delivery")),
    }
}

//! Support's view of the provider's stored events: the ones that failed too often (dead),
//! and sending one through again.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    auth::{Caller, STAFF},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiPath, ApiQuery},
    state::AppState,
};
use crate::{
    clock::rfc3339,
    db::webhooks::{EventRequeue, EventState, StoredEvent},
    domain::validation::FieldErrors,
};

const MAX_LISTED: u32 = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(requeue))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventView {
    id: String,
    /// The provider's event type, such as `payment_intent.succeeded`.
    #[serde(rename = "type")]
    kind: String,
    /// The id of the object the event is about.
    object_id: Option<String>,
    state: EventState,
    /// Tries that failed.
    attempts: i64,
    last_error: Option<String>,
    received_at: String,
    processed_at: Option<String>,
    /// When it is tried next, while pending.
    next_attempt_at: Option<String>,
    dead_at: Option<String>,
}

impl From<StoredEvent> for WebhookEventView {
    fn from(event: StoredEvent) -> Self {
        let state = event.state();
        Self {
            next_attempt_at: (state == EventState::Pending).then(|| rfc3339(event.next_attempt_at)),
            state,
            id: event.id,
            kind: event.kind,
            object_id: event.object_id,
            attempts: event.attempts,
            last_error: event.last_error,
            received_at: rfc3339(event.received_at),
            processed_at: event.processed_at.map(rfc3339),
            dead_at: event.dead_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    /// `dead` (the default), `pending` or `processed`.
    #[param(value_type = Option<EventState>)]
    state: Option<String>,
    /// How many to return, 1 to 500 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookEventsView {
    /// The newest first.
    data: Vec<WebhookEventView>,
}

/// Stored provider events in one state, the newest first: `dead` ones failed every try
/// and wait for support. Support and admin keys.
#[utoipa::path(get, path = "/v1/admin/webhook-events", operation_id = "list_webhook_events", tag = "webhooks", params(ListParams),
    responses((status = 200, body = WebhookEventsView)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<WebhookEventsView>> {
    caller.require(STAFF)?;
    let mut errors = FieldErrors::new();
    let wanted = match params.state.as_deref() {
        None => Some(EventState::Dead),
        Some(s) => EventState::parse(s),
    };
    if wanted.is_none() {
        errors.add("state", "must be dead, pending or processed");
    }
    let limit = match params.limit.as_deref().map(str::parse::<u32>) {
        None => Some(100),
        Some(Ok(n)) if (1..=MAX_LISTED).contains(&n) => Some(n),
        Some(_) => {
            errors.add(
                "limit",
                format!("must be an integer from 1 to {MAX_LISTED}"),
            );
            None
        }
    };
    let (Some(wanted), Some(limit)) = (wanted, limit) else {
        return Err(ApiError::malformed_fields(errors));
    };
    let events = state.db.events_in(wanted, limit).await?;
    Ok(Json(WebhookEventsView {
        data: events.into_iter().map(WebhookEventView::from).collect(),
    }))
}

/// Makes a dead event due again, from a fresh count of tries; audited. Support and admin
/// keys.
#[utoipa::path(post, path = "/v1/admin/webhook-events/{id}/requeue", operation_id = "requeue_webhook_event", tag = "webhooks",
    params(("id" = String, Path, description = "The provider's event id")),
    responses(
        (status = 200, body = WebhookEventView),
        (status = 404, description = "No such event", body = ErrorBody),
        (status = 409, description = "The event is not dead", body = ErrorBody),
    ))]
async fn requeue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<WebhookEventView>> {
    caller.require(STAFF)?;
    match state.topups.requeue_event(&id, &caller.actor()).await? {
        EventRequeue::Requeued(event) => Ok(Json(event.into())),
        EventRequeue::NotDead(event) => Err(ApiError::Conflict(format!(
            "event {} is {}; only dead events can be requeued",
            event.id,
            event.state().as_str()
        ))),
        EventRequeue::NotFound => Err(ApiError::NotFound("webhook event")),
    }
}

//! Support's view of the notice outbox: what failed, and sending it again.

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::{
    auth::{Caller, STAFF},
    error::{ApiError, ApiResult},
    extract::{ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
};
use crate::{
    app::AppState,
    clock::rfc3339,
    db::notices::{NoticeRow, NoticeState, RequeueOutcome},
    domain::validation::FieldErrors,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/notices", get(list))
        .route("/v1/admin/notices/{id}/requeue", post(requeue))
}

#[derive(Debug, Serialize)]
struct NoticeView {
    id: String,
    kind: String,
    account_id: String,
    recipient: String,
    subject: String,
    message_id: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: String,
    next_attempt_at: String,
    sent_at: Option<String>,
    failed_at: Option<String>,
}

impl From<NoticeRow> for NoticeView {
    fn from(n: NoticeRow) -> Self {
        Self {
            id: n.id,
            kind: n.kind,
            account_id: n.account_id,
            recipient: n.recipient,
            subject: n.subject,
            message_id: n.message_id,
            state: n.state,
            attempts: n.attempts,
            last_error: n.last_error,
            created_at: rfc3339(n.created_at),
            next_attempt_at: rfc3339(n.next_attempt_at),
            sent_at: n.sent_at.map(rfc3339),
            failed_at: n.failed_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ListParams {
    state: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

/// Notices, newest first; `?state=failed` for those that need support.
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> ApiResult<Json<PageView<NoticeView>>> {
    caller.require(STAFF)?;
    let page = params.page.page_request()?;
    let filter = match params.state.as_deref() {
        None => None,
        Some(s) => Some(NoticeState::parse(s).ok_or_else(|| {
            ApiError::malformed_fields(FieldErrors::single(
                "state",
                "must be pending, sending, sent or failed",
            ))
        })?),
    };
    let notices = state.db.notices(filter, page).await?;
    Ok(Json(PageView::try_from_page(notices, |n| {
        Ok::<_, ApiError>(NoticeView::from(n))
    })?))
}

/// Sends a failed notice again, from a fresh attempt count.
async fn requeue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<NoticeView>> {
    caller.require(STAFF)?;
    match state
        .db
        .requeue_notice(&id, &caller.actor(), state.clock.now_ms())
        .await?
    {
        RequeueOutcome::Requeued(notice) => Ok(Json(notice.into())),
        RequeueOutcome::NotFailed(notice) => Err(ApiError::Conflict(format!(
            "notice {} is {}; only failed notices can be requeued",
            notice.id, notice.state
        ))),
        RequeueOutcome::NotFound => Err(ApiError::NotFound("notice")),
    }
}

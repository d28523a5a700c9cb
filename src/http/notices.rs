//! Support's view of the notice outbox: what failed, and sending it again.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    auth::{Caller, STAFF},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
    state::AppState,
};
use crate::{
    clock::rfc3339,
    db::notices::{NoticeRow, NoticeState, RequeueOutcome},
    domain::validation::FieldErrors,
    notices::templates::Letterhead,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(requeue))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NoticeView {
    id: String,
    #[schema(value_type = crate::domain::notice::NoticeKind)]
    kind: String,
    account_id: String,
    recipient: String,
    subject: String,
    message_id: String,
    /// `pending`, `sending`, `sent` or `failed`.
    state: String,
    attempts: i64,
    last_error: Option<String>,
    created_at: String,
    next_attempt_at: String,
    sent_at: Option<String>,
    failed_at: Option<String>,
}

impl NoticeView {
    /// The notice as support sees it, its subject rendered under `head` as it is sent.
    pub(crate) fn of(n: NoticeRow, head: &Letterhead) -> Self {
        Self {
            subject: crate::notices::render(&n, head).subject,
            id: n.id,
            kind: n.kind,
            account_id: n.account_id,
            recipient: n.recipient,
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

/// Notices, newest first; `?state=failed` for those that need support. Support and admin
/// keys.
#[utoipa::path(get, path = "/v1/admin/notices", operation_id = "list_notices", tag = "notices",
    params(("state" = inline(Option<NoticeState>), Query, description = "Only notices in this state"), PageParams),
    responses((status = 200, body = PageView<NoticeView>)))]
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
        Ok::<_, ApiError>(NoticeView::of(n, &state.letterhead))
    })?))
}

/// Sends a failed notice again, from a fresh attempt count. Support and admin keys.
#[utoipa::path(post, path = "/v1/admin/notices/{id}/requeue", operation_id = "requeue_notice", tag = "notices",
    params(("id" = String, Path, description = "The notice's id")),
    responses(
        (status = 200, body = NoticeView),
        (status = 404, description = "No such notice", body = ErrorBody),
        (status = 409, description = "The notice has not failed", body = ErrorBody),
    ))]
async fn requeue(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<NoticeView>> {
    caller.require(STAFF)?;
    match state.outbox.requeue(&id, &caller.actor()).await? {
        RequeueOutcome::Requeued(notice) => Ok(Json(NoticeView::of(notice, &state.letterhead))),
        RequeueOutcome::NotFailed(notice) => Err(ApiError::Conflict(format!(
            "notice {} is {}; only failed notices can be requeued",
            notice.id, notice.state
        ))),
        RequeueOutcome::NotFound => Err(ApiError::NotFound("notice")),
    }
}

//! What waits for support: paused accounts and flagged top-ups, notices that could not be
//! sent, and provider events that could not be handled, each requeued from its row.

use axum::{extract::State, http::StatusCode, response::Response};
use minijinja::context;

use super::{
    accounts::account_rows,
    session::{Staff, TokenForm},
    shown,
};
use crate::{
    db::{
        PageRequest, notices::NoticeState, notices::RequeueOutcome, webhooks::EventRequeue,
        webhooks::EventState,
    },
    http::{
        notices::NoticeView, state::AppState, views::TopupView, webhook_events::WebhookEventView,
    },
    portal::{
        form::{PageForm, PagePath},
        render::PageResult,
    },
};

const LISTED: u32 = 100;

pub async fn paused(State(state): State<AppState>, staff: Staff) -> PageResult<Response> {
    let paused = state.db.paused_accounts(LISTED).await?;
    let flagged = state.db.flagged_attempts(LISTED).await?;
    let ctx = context! {
        ..staff.frame("paused", "Paused and flagged"),
        ..context! {
            paused => account_rows(&state, &paused).await?,
            flagged => shown(flagged.into_iter().map(TopupView::from).collect::<Vec<_>>()),
        }
    };
    Ok(state
        .pages
        .render(StatusCode::OK, "console/paused.html", ctx))
}

pub async fn notices(State(state): State<AppState>, staff: Staff) -> PageResult<Response> {
    notices_page(&state, &staff, None).await
}

async fn notices_page(
    state: &AppState,
    staff: &Staff,
    outcome: Option<(bool, String)>,
) -> PageResult<Response> {
    let failed = state
        .db
        .notices(
            Some(NoticeState::Failed),
            PageRequest {
                limit: LISTED,
                before: None,
            },
        )
        .await?
        .items;
    let rows: Vec<NoticeView> = failed
        .into_iter()
        .map(|n| NoticeView::of(n, &state.letterhead))
        .collect();
    let ctx = context! {
        ..staff.frame("notices", "Failed notices"),
        ..context! {
            notices => shown(&rows),
            outcome => outcome.map(|(ok, text)| context! { ok, text }),
        }
    };
    Ok(state
        .pages
        .render(StatusCode::OK, "console/notices.html", ctx))
}

pub async fn requeue_notice(
    State(state): State<AppState>,
    staff: Staff,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult<Response> {
    staff.check_form(&form.csrf)?;
    let outcome = match state.outbox.requeue(&id, &staff.actor()).await? {
        RequeueOutcome::Requeued(notice) => (
            true,
            format!(
                "Notice {} to {} is queued to be sent again.",
                notice.id, notice.recipient
            ),
        ),
        RequeueOutcome::NotFailed(notice) => (
            false,
            format!(
                "Notice {} is {}; only failed notices are requeued.",
                notice.id, notice.state
            ),
        ),
        RequeueOutcome::NotFound => (false, format!("There is no notice {id}.")),
    };
    notices_page(&state, &staff, Some(outcome)).await
}

pub async fn webhooks(State(state): State<AppState>, staff: Staff) -> PageResult<Response> {
    webhooks_page(&state, &staff, None).await
}

async fn webhooks_page(
    state: &AppState,
    staff: &Staff,
    outcome: Option<(bool, String)>,
) -> PageResult<Response> {
    let dead = state.db.events_in(EventState::Dead, LISTED).await?;
    let rows: Vec<WebhookEventView> = dead.into_iter().map(WebhookEventView::from).collect();
    let ctx = context! {
        ..staff.frame("webhooks", "Dead webhook events"),
        ..context! {
            events => shown(&rows),
            outcome => outcome.map(|(ok, text)| context! { ok, text }),
        }
    };
    Ok(state
        .pages
        .render(StatusCode::OK, "console/webhooks.html", ctx))
}

pub async fn requeue_event(
    State(state): State<AppState>,
    staff: Staff,
    PagePath(id): PagePath<String>,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult<Response> {
    staff.check_form(&form.csrf)?;
    let outcome = match state.topups.requeue_event(&id, &staff.actor()).await? {
        EventRequeue::Requeued(event) => (
            true,
            format!("Event {} is due to be handled again.", event.id),
        ),
        EventRequeue::NotDead(event) => (
            false,
            format!(
                "Event {} is {}; only dead events are requeued.",
                event.id,
                event.state().as_str()
            ),
        ),
        EventRequeue::NotFound => (false, format!("There is no event {id}.")),
    };
    webhooks_page(&state, &staff, Some(outcome)).await
}

//! Auto top-up: the settings and state of an account (and why it did or did not top up),
//! the customer's retry of a paused top-up, and support's view and resume.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    access::{AccountId, visible_account},
    auth::{Caller, STAFF},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
    state::AppState,
    topups::{in_own_task, purchase_answer, still_charging},
    views::{PauseView, TopupView, pause_view},
};
use crate::{
    clock::{Millis, rfc3339},
    db::{
        DbError,
        audit::Actor,
        auto_topup::{LoggedDecision, SettingsUpdate},
    },
    domain::{
        account::Account,
        api_key::Role,
        attempt::AttemptState,
        auto_topup::{
            AutoTopupState, Decision, PauseReason, decide, validate_bounds, validate_notice_minutes,
        },
        card_health::Health,
        credits::Millicredits,
        spend_cap,
        validation::FieldErrors,
    },
    topups::{
        auto::{RetryOutcome, TriedNow},
        card_health::CardReport,
    },
};

const MAX_NOTE_LEN: usize = 500;
const MAX_LISTED: u32 = 500;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(settings, update))
        .routes(routes!(decisions))
        .routes(routes!(retry))
        .routes(routes!(cancel_announced))
        .routes(routes!(resume))
        .routes(routes!(admin_list))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionView {
    /// The scan's rule applied now: `due`, `not_enabled`, `paused`, `in_progress`,
    /// `above_threshold` or `rate_limited`.
    decision: &'static str,
    balance: Millicredits,
    threshold: Option<Millicredits>,
    target: Option<Millicredits>,
    /// When the rule allows an automatic top-up next, if nothing changes; null when it
    /// cannot until someone acts (off, paused, or a top-up in progress).
    next_eligible_at: Option<String>,
    /// The scheduled scan that would charge it then, if the balance is below the
    /// threshold; null as `next_eligible_at` is, or when no scan is scheduled.
    next_top_up_at: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScanView {
    decision: String,
    balance: Millicredits,
    threshold: Option<Millicredits>,
    target: Option<Millicredits>,
    next_eligible_at: Option<String>,
    topup_id: Option<String>,
    decided_at: String,
    /// The decision in words, with its figures.
    reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AutoTopupView {
    account_id: String,
    enabled: bool,
    threshold: Option<Millicredits>,
    target: Option<Millicredits>,
    payment_method_id: Option<String>,
    state: AutoTopupState,
    pause: Option<PauseView>,
    enabled_by: Option<String>,
    enabled_at: Option<String>,
    last_topup: Option<TopupView>,
    /// The card automatic top-ups charge, and whether it will work at the next likely
    /// top-up.
    card: ChargedCardView,
    /// The monthly spend cap and this month's automatic top-ups; null without a cap.
    spend_cap: Option<SpendCapView>,
    /// The IANA time zone whose calendar months the cap counts.
    time_zone: String,
    /// While auto top-up is off, the customer is emailed when the balance falls below
    /// the low-balance line.
    low_balance_email: bool,
    /// Minutes before each automatic charge the customer is told of it; null for none.
    advance_notice_minutes: Option<i64>,
    /// Saved cards tried in this order within the same top-up when the card charged
    /// first is declined.
    backup_payment_method_ids: Vec<String>,
    /// The automatic charge announced to the customer and not made yet.
    announced: Option<AnnouncedView>,
    /// Why it would or would not top up now, by the scan's rule.
    decision: DecisionView,
    /// What the scan last decided for this account.
    last_scan: Option<ScanView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnnouncedView {
    credits: Millicredits,
    amount_cents: i64,
    amount_usd: String,
    /// From when it is charged, by the first scan then.
    at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargedCardView {
    /// `ok`, `expired`, `expires_before_next_top_up` or `missing` (no card to charge).
    health: Health,
    payment_method_id: Option<String>,
    brand: Option<String>,
    last4: Option<String>,
    exp_month: Option<i64>,
    exp_year: Option<i64>,
    /// When the next automatic top-up is likely, at the pace the balance fell since the
    /// last one; null when nothing says (no top-up yet, or nothing used since).
    next_top_up_likely_at: Option<String>,
}

impl From<CardReport> for ChargedCardView {
    fn from(report: CardReport) -> Self {
        let card = report.card;
        Self {
            health: report.health,
            payment_method_id: card.as_ref().map(|c| c.id.clone()),
            brand: card.as_ref().map(|c| c.brand.clone()),
            last4: card.as_ref().map(|c| c.last4.clone()),
            exp_month: card.as_ref().map(|c| c.exp_month),
            exp_year: card.as_ref().map(|c| c.exp_year),
            next_top_up_likely_at: report.next_top_up_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpendCapView {
    cap_cents: i64,
    cap_usd: String,
    /// This month's automatic top-ups so far, those in progress included.
    spent_cents: i64,
    spent_usd: String,
    /// The month counted, in the account's time zone: the cap starts again at its end.
    month_starts_at: String,
    month_ends_at: String,
}

async fn spend_cap_view(
    state: &AppState,
    account: &Account,
    now: Millis,
) -> ApiResult<Option<SpendCapView>> {
    let Some(cap) = account.auto_topup.monthly_cap else {
        return Ok(None);
    };
    let month = spend_cap::month_of(now, account.time_zone);
    let spent = state
        .db
        .auto_spend_since(&account.id, month.starts_at)
        .await?;
    Ok(Some(SpendCapView {
        cap_cents: cap.0,
        cap_usd: cap.to_string(),
        spent_cents: spent.0,
        spent_usd: spent.to_string(),
        month_starts_at: rfc3339(month.starts_at),
        month_ends_at: rfc3339(month.ends_at),
    }))
}

pub(crate) async fn view(state: &AppState, account: Account) -> ApiResult<AutoTopupView> {
    let now = state.clock.now_ms();
    let spend_cap = spend_cap_view(state, &account, now).await?;
    let card = state.topups.card_report(&account).await?.into();
    let in_progress = state.db.open_attempt_of(&account.id).await?.is_some();
    let decision = decide(&account.standing(in_progress), now);
    let last_topup = state
        .db
        .latest_auto_attempt(&account.id)
        .await?
        .map(TopupView::from);
    let last_scan = state.db.decision(&account.id).await?.map(|d| ScanView {
        decision: d.decision,
        balance: Millicredits(d.balance),
        threshold: d.threshold.map(Millicredits),
        target: d.target.map(Millicredits),
        next_eligible_at: d.next_eligible_at.map(rfc3339),
        topup_id: d.attempt_id,
        decided_at: rfc3339(d.decided_at),
        reason: d.reason,
    });
    Ok(AutoTopupView {
        state: account.auto_topup_state(in_progress),
        pause: pause_view(&account),
        card,
        spend_cap,
        time_zone: account.time_zone.name().to_owned(),
        low_balance_email: account.auto_topup.low_balance_email,
        advance_notice_minutes: account.auto_topup.notice_minutes,
        backup_payment_method_ids: account.auto_topup.backup_cards.clone(),
        announced: account
            .auto_topup
            .planned
            .filter(|_| account.auto_topup.notice_minutes.is_some())
            .map(|plan| AnnouncedView {
                credits: Millicredits::whole(plan.charge.credits),
                amount_cents: plan.charge.amount.0,
                amount_usd: plan.charge.amount.to_string(),
                at: rfc3339(plan.at),
            }),
        decision: DecisionView {
            decision: decision.as_str(),
            balance: account.balance,
            threshold: account.auto_topup.threshold,
            target: account.auto_topup.target,
            next_eligible_at: decision
                .next_eligible_at(now, account.auto_topup.window_ends_at)
                .map(rfc3339),
            next_top_up_at: decision
                .next_top_up_at(
                    now,
                    account.auto_topup.window_ends_at,
                    &state.config.auto_topup.scan_schedule,
                )
                .map(rfc3339),
        },
        account_id: account.id,
        enabled: account.auto_topup.enabled,
        threshold: account.auto_topup.threshold,
        target: account.auto_topup.target,
        payment_method_id: account.auto_topup.payment_method_id,
        enabled_by: account.auto_topup.enabled_by,
        enabled_at: account.auto_topup.enabled_at.map(rfc3339),
        last_topup,
        last_scan,
    })
}

/// The settings and state, why it would or would not top up now, and what the scan last
/// decided.
#[utoipa::path(get, path = "/v1/accounts/{id}/auto-topup", operation_id = "get_auto_topup", tag = "auto top-up", params(AccountId),
    responses(
        (status = 200, body = AutoTopupView),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn settings(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
) -> ApiResult<Json<AutoTopupView>> {
    let account = visible_account(&state, &caller, &id).await?;
    Ok(Json(view(&state, account).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoggedDecisionView {
    /// What the scan decided: `charged`, `due`, `not_enabled`, `paused`, `in_progress`,
    /// `above_threshold`, `rate_limited`, `spend_cap_reached` (and paused for it),
    /// `announced` (the charge told to the customer first) or `declined` (an automatic
    /// charge's card was declined: `reason` says whether a backup card is tried next).
    decision: String,
    /// The same in words, with the figures it was taken on.
    reason: String,
    balance: Millicredits,
    threshold: Option<Millicredits>,
    target: Option<Millicredits>,
    next_eligible_at: Option<String>,
    /// The top-up the decision made, when it charged.
    topup_id: Option<String>,
    decided_at: String,
}

/// Every decision the scan took about the account, newest first, for as long as
/// `auto_topup.decision_retention_days` keeps them.
#[utoipa::path(get, path = "/v1/accounts/{id}/auto-topup/decisions", operation_id = "list_auto_topup_decisions", tag = "auto top-up",
    params(AccountId, PageParams),
    responses(
        (status = 200, body = PageView<LoggedDecisionView>),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn decisions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<LoggedDecisionView>>> {
    let page = params.page_request()?;
    visible_account(&state, &caller, &id).await?;
    let logged = state.db.decisions(&id, page).await?;
    Ok(Json(PageView::try_from_page(logged, |logged| {
        Ok::<_, ApiError>(LoggedDecisionView::from(logged))
    })?))
}

impl From<LoggedDecision> for LoggedDecisionView {
    fn from(logged: LoggedDecision) -> Self {
        let d = logged.decision;
        Self {
            decision: d.decision,
            reason: d.reason,
            balance: Millicredits(d.balance),
            threshold: d.threshold.map(Millicredits),
            target: d.target.map(Millicredits),
            next_eligible_at: d.next_eligible_at.map(rfc3339),
            topup_id: d.attempt_id,
            decided_at: rfc3339(d.decided_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsBody {
    enabled: bool,
    /// Credits, 100 to 99,000; top up when the balance falls below this. Required to
    /// enable.
    #[serde(default, deserialize_with = "crate::domain::number::optional_decimal")]
    #[schema(value_type = Option<f64>)]
    threshold: Option<Decimal>,
    /// Credits, 1,100 to 100,000 and at least 1,000 above the threshold; top up to this.
    /// Required to enable.
    #[serde(default, deserialize_with = "crate::domain::number::optional_decimal")]
    #[schema(value_type = Option<f64>)]
    target: Option<Decimal>,
    /// A saved card to charge instead of the default one.
    #[serde(default)]
    payment_method_id: Option<String>,
    /// The most automatic top-ups may charge in a calendar month, in dollars (whole
    /// cents, 1.00 to 1,000,000.00); `null` removes the cap, and leaving it out keeps it.
    /// Reaching it pauses auto top-up (`spend_cap_reached`) until the month ends.
    #[serde(default, deserialize_with = "present_decimal")]
    #[schema(value_type = Option<f64>)]
    monthly_spend_cap: Option<Option<Decimal>>,
    /// The IANA time zone whose calendar months the cap counts (`UTC` until set);
    /// leaving it out keeps it.
    #[serde(default)]
    time_zone: Option<String>,
    /// While auto top-up is off, email the customer when the balance falls below the
    /// low-balance line, once each time it does (off until asked for); leaving it out
    /// keeps it.
    #[serde(default)]
    low_balance_email: Option<bool>,
    /// Minutes (5 to 1,440) before each automatic charge the customer is emailed of it,
    /// with a link to cancel it; `null` for no notice, and leaving it out keeps it.
    #[serde(default, deserialize_with = "present_whole")]
    #[schema(value_type = Option<i64>)]
    advance_notice_minutes: Option<Option<i64>>,
    /// Up to 5 other saved cards, tried in this order within the same top-up when the
    /// card charged first is declined (a decline, not a request to authenticate); `[]`
    /// for none, and leaving it out keeps them.
    #[serde(default)]
    backup_payment_method_ids: Option<Vec<String>>,
}

/// A whole number that may be given as `null`: `Some(None)` then, and `None` when left
/// out.
fn present_whole<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<i64>>, D::Error> {
    crate::domain::number::optional_whole(deserializer).map(Some)
}

/// A field that may be given as `null`: `Some(None)` then, and `None` when left out.
fn present_decimal<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Decimal>>, D::Error> {
    crate::domain::number::optional_decimal(deserializer).map(Some)
}

/// Saves the settings. Only this request turns auto top-up on, and it records who did;
/// turning it off needs nothing else. Support keys may only turn it off (`{"enabled":
/// false}`); enabling it, or changing its amounts or card, is for the customer or an admin.
#[utoipa::path(put, path = "/v1/accounts/{id}/auto-topup", operation_id = "update_auto_topup", tag = "auto top-up",
    params(AccountId), request_body = SettingsBody,
    responses(
        (status = 200, body = AutoTopupView),
        (status = 403, description = "A support key asked for more than turning it off", body = ErrorBody),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn update(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiJson(body): ApiJson<SettingsBody>,
) -> ApiResult<Json<AutoTopupView>> {
    visible_account(&state, &caller, &id).await?;
    // Turning it on, and what it charges and on which card, are the customer's decision
    // (or an admin's), never support's. Support's write can only turn it off, so no
    // interleaving with the customer's writes can leave it on by support's hand.
    if caller.role == Role::Support {
        let only_off = !body.enabled
            && body.threshold.is_none()
            && body.target.is_none()
            && body.payment_method_id.is_none()
            && body.monthly_spend_cap.is_none()
            && body.time_zone.is_none()
            && body.low_balance_email.is_none()
            && body.advance_notice_minutes.is_none()
            && body.backup_payment_method_ids.is_none();
        if !only_off {
            return Err(ApiError::Forbidden);
        }
        let account = state
            .accounts
            .turn_off_auto_topup(&id, &caller.actor())
            .await?
            .ok_or(ApiError::NotFound("account"))?;
        return Ok(Json(view(&state, account).await?));
    }
    let asked = AskedSettings {
        enabled: body.enabled,
        threshold: body.threshold,
        target: body.target,
        payment_method_id: body.payment_method_id,
        monthly_spend_cap: body.monthly_spend_cap,
        time_zone: body.time_zone,
        low_balance_email: body.low_balance_email,
        advance_notice_minutes: body.advance_notice_minutes,
        backup_cards: body.backup_payment_method_ids,
    };
    let update = checked_settings(&state, &id, asked)
        .await?
        .map_err(ApiError::invalid)?;
    let account = state
        .accounts
        .set_auto_topup(&id, &update, &caller.actor())
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    Ok(Json(view(&state, account).await?))
}

/// Settings as the API or the billing page asked for them, unchecked.
#[derive(Debug, Clone, Default)]
pub struct AskedSettings {
    pub enabled: bool,
    pub threshold: Option<Decimal>,
    pub target: Option<Decimal>,
    pub payment_method_id: Option<String>,
    /// `None` keeps the cap; `Some(None)` removes it.
    pub monthly_spend_cap: Option<Option<Decimal>>,
    /// `None` keeps the time zone.
    pub time_zone: Option<String>,
    /// `None` keeps the choice.
    pub low_balance_email: Option<bool>,
    /// `None` keeps the notice; `Some(None)` asks for none.
    pub advance_notice_minutes: Option<Option<i64>>,
    /// `None` keeps the backup cards.
    pub backup_cards: Option<Vec<String>>,
}

/// The most backup cards an account may have.
const MAX_BACKUP_CARDS: usize = 5;

/// Settings asked for (by the API or the billing page), checked: both bounds or neither
/// (to turn it off), within the published bounds, a card of the account's own, a cap in
/// whole cents within its bounds, and a time zone by its IANA name. The errors name the
/// fields.
pub async fn checked_settings(
    state: &AppState,
    account_id: &str,
    asked: AskedSettings,
) -> Result<Result<SettingsUpdate, FieldErrors>, DbError> {
    let AskedSettings {
        enabled,
        threshold,
        target,
        payment_method_id,
        monthly_spend_cap,
        time_zone,
        low_balance_email,
        advance_notice_minutes,
        backup_cards,
    } = asked;
    let mut errors = FieldErrors::new();
    if enabled
        && state
            .db
            .account(account_id)
            .await?
            .is_some_and(|account| account.closed.is_some())
    {
        errors.add(
            "enabled",
            "the account is closed: auto top-up cannot be turned on",
        );
    }
    let bounds = match (threshold, target) {
        (Some(threshold), Some(target)) => match validate_bounds(threshold, target) {
            Ok((threshold, target)) => (Some(threshold), Some(target)),
            Err(problems) => {
                errors.merge(problems);
                (None, None)
            }
        },
        (None, None) if !enabled => (None, None),
        (threshold, target) => {
            for (field, value) in [("threshold", threshold), ("target", target)] {
                if value.is_none() {
                    errors.add(
                        field,
                        "required with the other bound, and to enable auto top-up",
                    );
                }
            }
            (None, None)
        }
    };
    if payment_method_id.is_some() || backup_cards.is_some() {
        let saved = state.db.saved_cards(account_id).await?;
        let is_saved = |card: &String| saved.iter().any(|c| &c.id == card);
        if payment_method_id
            .as_ref()
            .is_some_and(|card| !is_saved(card))
        {
            errors.add(
                "payment_method_id",
                "must be one of the account's saved payment methods",
            );
        }
        if let Some(cards) = &backup_cards {
            let mut distinct = cards.clone();
            distinct.sort();
            distinct.dedup();
            if cards.len() > MAX_BACKUP_CARDS {
                errors.add(
                    "backup_payment_method_ids",
                    format!("must list at most {MAX_BACKUP_CARDS} cards"),
                );
            } else if distinct.len() != cards.len() {
                errors.add("backup_payment_method_ids", "must not list a card twice");
            } else if !cards.iter().all(is_saved) {
                errors.add(
                    "backup_payment_method_ids",
                    "must list only the account's saved payment methods",
                );
            }
        }
    }
    let monthly_cap = monthly_spend_cap.map(|cap| {
        cap.and_then(|dollars| {
            spend_cap::validate_cap(dollars)
                .map_err(|problems| errors.merge(problems))
                .ok()
        })
    });
    let time_zone = time_zone.and_then(|name| {
        spend_cap::parse_time_zone(&name)
            .map_err(|problems| errors.merge(problems))
            .ok()
    });
    let notice_minutes = advance_notice_minutes.map(|minutes| {
        minutes.and_then(|m| {
            validate_notice_minutes(m)
                .map_err(|problems| errors.merge(problems))
                .ok()
        })
    });
    let (threshold, target) = bounds;
    Ok(errors.into_result(SettingsUpdate {
        enabled,
        threshold,
        target,
        payment_method_id,
        monthly_cap,
        time_zone,
        low_balance_email,
        notice_minutes,
        backup_cards,
    }))
}

/// Cancels the automatic charge announced to the customer: nothing is charged for it,
/// auto top-up stays on, and the next charge is announced no sooner than the rate-limit
/// window allows one.
#[utoipa::path(delete, path = "/v1/accounts/{id}/auto-topup/announced", operation_id = "cancel_announced_topup", tag = "auto top-up", params(AccountId),
    responses(
        (status = 200, body = AutoTopupView),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
        (status = 409, description = "No charge is announced", body = ErrorBody),
    ))]
async fn cancel_announced(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
) -> ApiResult<Json<AutoTopupView>> {
    visible_account(&state, &caller, &id).await?;
    match state
        .db
        .cancel_announced(
            &id,
            &caller.actor(),
            state.clock.now_ms(),
            state.config.auto_topup.window_ms(),
        )
        .await?
    {
        None => Err(ApiError::NotFound("account")),
        Some(false) => Err(ApiError::Conflict(
            "no automatic charge of this account is announced".into(),
        )),
        Some(true) => {
            let account = state
                .db
                .account(&id)
                .await?
                .ok_or(ApiError::NotFound("account"))?;
            Ok(Json(view(&state, account).await?))
        }
    }
}

/// The customer completes a paused top-up now, outside the rate-limit window, with the
/// current default card. Resumes auto top-up when paid.
#[utoipa::path(post, path = "/v1/accounts/{id}/auto-topup/retry", operation_id = "retry_auto_topup", tag = "auto top-up", params(AccountId),
    responses(
        (status = 201, description = "Paid, credited and resumed", body = TopupView),
        (status = 202, description = "Waiting for the customer (`next_action.url`) or the provider", body = TopupView),
        (status = 200, description = "Nothing worth charging (the balance is within the smallest purchase of the target): resumed without a charge", body = AutoTopupView),
        (status = 402, description = "`payment_failed`: declined; still paused", body = ErrorBody),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
        (status = 409, description = "Not paused, paused for a dispute or a refund (support resumes those), paused at the monthly spend cap (raise it, or wait for the month's end), or a top-up is in progress", body = ErrorBody),
    ))]
async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
) -> ApiResult<Response> {
    caller.require_account(&id, &[Role::Support, Role::Admin])?;
    let (topups, account, actor) = (state.topups.clone(), id.clone(), caller.actor());
    let retried = in_own_task(&state, async move {
        topups.retry_paused(&account, &actor).await
    })
    .await;
    let Some(retried) = retried else {
        return still_charging(&state, &id).await;
    };
    match retried? {
        RetryOutcome::Charged(attempt) => purchase_answer(attempt),
        RetryOutcome::ResumedWithoutCharge => {
            let account = state
                .db
                .account(&id)
                .await?
                .ok_or(ApiError::NotFound("account"))?;
            Ok((StatusCode::OK, Json(view(&state, account).await?)).into_response())
        }
        RetryOutcome::NotPaused => Err(ApiError::Conflict(
            "auto top-up is not paused; there is nothing to retry".into(),
        )),
        RetryOutcome::HeldForSupport(reason) => Err(ApiError::Conflict(format!(
            "auto top-up is paused because a top-up's charge was {}; support resumes it",
            reason.as_str()
        ))),
        RetryOutcome::CapReached { until } => Err(ApiError::Conflict(cap_reached(until))),
        RetryOutcome::Busy(open) => Err(ApiError::Conflict(format!(
            "top-up {} of this account is {}; complete or wait for it first",
            open.id, open.state
        ))),
        RetryOutcome::AccountNotFound => Err(ApiError::NotFound("account")),
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeBody {
    /// Why support resumes it; kept in the audit log.
    note: String,
    /// Charge now if the balance is below the threshold, even inside the window.
    #[serde(default)]
    try_now: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResumedView {
    auto_topup: AutoTopupView,
    /// The top-up charged at once when `try_now` asked for it.
    topup: Option<TopupView>,
    pub outcome: ResumeOutcome,
    /// What happened, in a sentence for the support agent.
    pub message: String,
}

/// What a resume did, with its try if one was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResumeOutcome {
    /// Resumed; no charge was asked for.
    Resumed,
    /// Resumed and charged.
    Charged,
    /// Resumed; the charge is still in progress.
    ChargePending,
    /// Resumed, then the charge was declined: paused again as `payment_failed`.
    ChargeFailed,
    /// Resumed, then the bank asked the customer to authenticate: paused again.
    AuthenticationRequired,
    /// Resumed; nothing was charged now (see `message`).
    NotCharged,
    /// Resumed, then paused again by a dispute or a refund reported meanwhile.
    PausedAgain,
}

impl ResumeOutcome {
    /// The resume's own try left the account paused again.
    pub fn paused_again(self) -> bool {
        matches!(
            self,
            Self::ChargeFailed | Self::AuthenticationRequired | Self::PausedAgain
        )
    }
}

/// The outcome of a resume, judged from the account as it stands after it.
fn resume_outcome(tried: &TriedNow, account: &Account) -> (ResumeOutcome, String) {
    let off = if account.auto_topup.enabled {
        ""
    } else {
        " Auto top-up itself is off: nothing is charged until the customer turns it on."
    };
    let (outcome, message) = match tried {
        TriedNow::NotAsked => (
            ResumeOutcome::Resumed,
            "Resumed; the next scan charges the account if it is due.".to_owned(),
        ),
        TriedNow::Charged(attempt) => match account.paused() {
            Some(PauseReason::PaymentFailed) => (
                ResumeOutcome::ChargeFailed,
                format!(
                    "Resumed, but the charge tried now was declined ({}); auto top-up is paused again.",
                    attempt.decline_code.as_deref().unwrap_or("card_declined")
                ),
            ),
            Some(reason @ (PauseReason::Disputed | PauseReason::Refunded)) => (
                ResumeOutcome::PausedAgain,
                format!(
                    "Resumed, but the provider reported a charge {} meanwhile; auto top-up is paused again.",
                    reason.as_str()
                ),
            ),
            Some(PauseReason::SpendCapReached) => (
                ResumeOutcome::PausedAgain,
                "Resumed, but the charge would take this month's automatic top-ups past the customer's spend cap; auto top-up is paused until the month ends or the customer raises the cap.".to_owned(),
            ),
            Some(PauseReason::AuthenticationRequired) => (
                ResumeOutcome::AuthenticationRequired,
                "Resumed, but the bank asks the customer to authenticate the charge tried now; auto top-up is paused again until they do.".to_owned(),
            ),
            None if attempt.state == AttemptState::Succeeded => (
                ResumeOutcome::Charged,
                format!(
                    "Resumed and charged: {} credits for {}.",
                    attempt.credits, attempt.amount
                ),
            ),
            None => (
                ResumeOutcome::ChargePending,
                format!(
                    "Resumed; the charge tried now is {} and settles on its own.",
                    attempt.state
                ),
            ),
        },
        TriedNow::NotDue(Decision::SpendCapReached { until, .. }) => (
            ResumeOutcome::PausedAgain,
            format!(
                "Resumed, but the charge tried now would take this month's automatic top-ups past the customer's spend cap: paused again until {}, or until the customer raises the cap.",
                rfc3339(*until)
            ),
        ),
        TriedNow::NotDue(decision) => (
            ResumeOutcome::NotCharged,
            format!(
                "Resumed; nothing was charged now ({}).",
                decision.as_str().replace('_', " ")
            ),
        ),
        TriedNow::NothingWorthCharging => (
            ResumeOutcome::NotCharged,
            "Resumed; nothing was charged now: the balance is within the smallest purchase of the target.".to_owned(),
        ),
        TriedNow::Busy(open) => (
            ResumeOutcome::NotCharged,
            format!(
                "Resumed; nothing was charged now: top-up {} is {}.",
                open.id, open.state
            ),
        ),
    };
    (outcome, format!("{message}{off}"))
}

/// Why a pause at the spend cap is not ended by paying or by support.
fn cap_reached(until: Option<Millis>) -> String {
    format!(
        "auto top-up is paused because this month's automatic top-ups reached the monthly spend cap; it starts again at {}, or when the customer raises or removes the cap",
        until.map_or_else(|| "the month's end".to_owned(), rfc3339)
    )
}

/// Support resumes a paused auto top-up, with a note; audited. Support and admin keys.
/// With `try_now`, `outcome` says what the charge did: a try that fails again leaves the
/// account paused, and the customer is told it is back on only if it is.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/auto-topup/resume", operation_id = "resume_auto_topup", tag = "auto top-up",
    params(AccountId), request_body = ResumeBody,
    responses(
        (status = 200, body = ResumedView),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "Not paused, or paused at the customer's monthly spend cap (theirs to raise)", body = ErrorBody),
    ))]
async fn resume(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiJson(body): ApiJson<ResumeBody>,
) -> ApiResult<Json<ResumedView>> {
    caller.require(STAFF)?;
    resume_with_note(&state, &id, caller.actor(), &body.note, body.try_now)
        .await
        .map(Json)
}

/// Support's resume of the account's pause, with `note` (named if missing) and its try if
/// `try_now`; the outcome in words. Shared by the API and the console.
pub async fn resume_with_note(
    state: &AppState,
    id: &str,
    actor: Actor,
    note: &str,
    try_now: bool,
) -> ApiResult<ResumedView> {
    let note = note.trim();
    let mut errors = FieldErrors::new();
    errors.require_text("note", note, MAX_NOTE_LEN);
    errors.into_result(()).map_err(ApiError::invalid)?;
    if let Some(pause) = state.db.account(id).await?.and_then(|a| a.auto_topup.pause)
        && pause.reason == PauseReason::SpendCapReached
    {
        return Err(ApiError::Conflict(cap_reached(pause.until)));
    }
    let (topups, account_id, note) = (state.topups.clone(), id.to_owned(), note.to_owned());
    let resumed = in_own_task(state, async move {
        topups.resume(&account_id, &actor, &note, try_now).await
    })
    .await;
    let account = || async {
        state
            .db
            .account(id)
            .await?
            .ok_or(ApiError::NotFound("account"))
    };
    // Still charging at the deadline: the resume is done and the charge goes on.
    let Some(resumed) = resumed else {
        let topup = state.db.open_attempt_of(id).await?.map(TopupView::from);
        return Ok(ResumedView {
            auto_topup: view(state, account().await?).await?,
            topup,
            outcome: ResumeOutcome::ChargePending,
            message: "Resumed; the charge tried now is still in progress and settles on its own."
                .to_owned(),
        });
    };
    let Some(tried) = resumed? else {
        account().await?;
        return Err(ApiError::Conflict(format!(
            "auto top-up of account {id} is not paused"
        )));
    };
    let account = account().await?;
    let (outcome, message) = resume_outcome(&tried, &account);
    let topup = match tried {
        TriedNow::Charged(attempt) => Some(TopupView::from(attempt)),
        _ => None,
    };
    Ok(ResumedView {
        auto_topup: view(state, account).await?,
        topup,
        outcome,
        message,
    })
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct AdminListParams {
    /// `paused`, the only listing (and the default).
    #[param(pattern = "^paused$")]
    state: Option<String>,
    /// How many of each to return, 1 to 500 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PausedView {
    account_id: String,
    email: String,
    name: String,
    reason: Option<String>,
    decline_code: Option<String>,
    since: Option<String>,
}

impl From<Account> for PausedView {
    fn from(a: Account) -> Self {
        let pause = pause_view(&a);
        Self {
            reason: pause.as_ref().and_then(|p| p.reason.clone()),
            decline_code: pause.as_ref().and_then(|p| p.decline_code.clone()),
            since: pause.and_then(|p| p.since),
            account_id: a.id,
            email: a.email,
            name: a.name,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminListView {
    /// Paused accounts, longest paused first.
    paused: Vec<PausedView>,
    /// Top-ups unresolved for too long, oldest first.
    flagged: Vec<TopupView>,
    /// Top-ups whose charge at the provider and credit in the ledger disagree, as the
    /// daily check (or `topupd reconcile`) last found them, longest flagged first.
    provider_mismatches: Vec<MismatchView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MismatchView {
    topup_id: String,
    account_id: String,
    /// What disagrees, with the figures.
    detail: String,
    flagged_at: String,
}

/// Paused accounts, flagged top-ups and top-ups at odds with the provider: what support
/// should look at. Support and admin keys.
#[utoipa::path(get, path = "/v1/admin/auto-topups", operation_id = "list_auto_topup_issues", tag = "auto top-up", params(AdminListParams),
    responses((status = 200, body = AdminListView)))]
async fn admin_list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AdminListParams>,
) -> ApiResult<Json<AdminListView>> {
    caller.require(STAFF)?;
    let mut errors = FieldErrors::new();
    if params.state.as_deref().is_some_and(|s| s != "paused") {
        errors.add("state", "only paused is supported");
    }
    let limit = match params.limit.as_deref().map(str::parse::<u32>) {
        None => 100,
        Some(Ok(n)) if (1..=MAX_LISTED).contains(&n) => n,
        Some(_) => {
            errors.add(
                "limit",
                format!("must be an integer from 1 to {MAX_LISTED}"),
            );
            100
        }
    };
    errors.into_result(()).map_err(ApiError::malformed_fields)?;
    let paused = state.db.paused_accounts(limit).await?;
    let flagged = state.db.flagged_attempts(limit).await?;
    let mismatched = state.db.mismatched_topups(limit).await?;
    Ok(Json(AdminListView {
        paused: paused.into_iter().map(PausedView::from).collect(),
        flagged: flagged.into_iter().map(TopupView::from).collect(),
        provider_mismatches: mismatched
            .into_iter()
            .map(|m| MismatchView {
                topup_id: m.topup_id,
                account_id: m.account_id,
                detail: m.detail,
                flagged_at: rfc3339(m.flagged_at),
            })
            .collect(),
    }))
}

//! The overview: the balance, the low-balance warning, and auto top-up in words: what it
//! does next, or why it is paused and the one thing to do.

use axum::{extract::State, http::StatusCode, response::Response};
use minijinja::{Value, context};

use super::{account, credits, when};
use crate::{
    db::payment_methods::SavedCard,
    domain::{
        account::Account,
        attempt::AttemptState,
        auto_topup::{Decision, PauseReason, charge_to_target, decide},
        card_health::{self, Health},
        credits::Millicredits,
    },
    http::state::AppState,
    notices::templates::decline_reason,
    portal::{form::PageQuery, links::COMPLETE_PATH, render::PageResult, session::Customer},
    topups::card_health::CardReport,
};

#[derive(Debug, serde::Deserialize)]
pub struct Shown {
    cancelled: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    customer: Customer,
    PageQuery(shown): PageQuery<Shown>,
) -> PageResult<Response> {
    let account = account(&state, &customer).await?;
    let open = state.db.open_attempt_of(&account.id).await?;
    let decision = decide(&account.standing(open.is_some()), state.clock.now_ms());
    let warning_at = account.low_balance_line(state.config.low_balance_warning());
    // A pause comes first, as `auto_topup.state` says it everywhere: a payment waiting for
    // the customer is both, and the pause says what to do.
    let auto = match open.filter(|_| account.paused().is_none()) {
        Some(open) => context! {
            state => "in_progress",
            words => format!(
                "A top-up of {} for {} is {}.",
                credits(open.credits),
                open.amount,
                if open.state == AttemptState::RequiresAction {
                    "waiting for you to confirm it"
                } else {
                    "in progress"
                }
            ),
            action => (open.state == AttemptState::RequiresAction).then(|| context! {
                label => "Confirm the payment", href => COMPLETE_PATH,
            }),
        },
        None => auto_topup(&state, &account, decision),
    };
    let card_warning = if account.auto_topup.enabled {
        card_warning(&state.topups.card_report(&account).await?)
    } else {
        None
    };
    let announced = account
        .auto_topup
        .planned
        .filter(|_| account.auto_topup.notice_minutes.is_some())
        .map(|plan| {
            context! {
                amount => plan.charge.amount.to_string(),
                credits => credits(Millicredits::whole(plan.charge.credits)),
                at => when(plan.at),
            }
        });
    let ctx = context! {
        ..customer.frame("overview", "Overview"),
        ..context! {
            announced,
            cancelled => shown.cancelled.is_some(),
            card_warning,
            balance => credits(account.balance),
            below_zero => account.balance.0 < 0,
            low => account.balance < warning_at,
            warning_at => credits(warning_at),
            auto,
        }
    };
    Ok(state.pages.render(StatusCode::OK, "overview.html", ctx))
}

/// Why the card auto top-up charges will not work, when it will not.
fn card_warning(report: &CardReport) -> Option<String> {
    let card = |c: &SavedCard| {
        format!(
            "Your {} expires at the end of {}",
            card_health::card_name(&c.brand, &c.last4),
            card_health::expiry_month(c.exp_month, c.exp_year)
        )
    };
    match (report.health, &report.card) {
        (Health::Ok, _) => None,
        (Health::Missing, _) | (_, None) => {
            Some("Automatic top-ups have no card to charge.".to_owned())
        }
        (Health::Expired, Some(c)) => Some(format!(
            "Your {} has expired: automatic top-ups would be declined.",
            card_health::card_name(&c.brand, &c.last4)
        )),
        (Health::ExpiresBeforeNextTopUp, Some(c)) => Some(format!(
            "{}, before your next automatic top-up is likely{}.",
            card(c),
            report
                .next_top_up_at
                .map(|at| format!(" (around {})", when(at)))
                .unwrap_or_default()
        )),
    }
}

/// Auto top-up in words, when no top-up is in progress.
fn auto_topup(state: &AppState, account: &Account, decision: Decision) -> Value {
    let settings = &account.auto_topup;
    if let Some(pause) = &settings.pause {
        let (words, action) = match pause.reason {
            PauseReason::PaymentFailed => (
                format!(
                    "Since {}: the last payment was declined ({}).",
                    when(pause.since),
                    decline_reason(pause.code.as_deref().unwrap_or("card_declined"))
                        .trim_end_matches('.')
                ),
                Some(("Retry the payment", COMPLETE_PATH)),
            ),
            PauseReason::AuthenticationRequired => (
                format!(
                    "Since {}: your bank asks you to confirm a payment.",
                    when(pause.since)
                ),
                Some(("Confirm the payment", COMPLETE_PATH)),
            ),
            PauseReason::Disputed => (
                format!(
                    "Since {}: a payment was disputed with your bank. Our support team resumes automatic top-ups once it is settled; write to them with any question.",
                    when(pause.since)
                ),
                None,
            ),
            PauseReason::SpendCapReached => (
                format!(
                    "Since {}: this month's automatic top-ups reached your monthly limit{}. They start again {}, or when you raise the limit.",
                    when(pause.since),
                    settings
                        .monthly_cap
                        .map(|cap| format!(" of {cap}"))
                        .unwrap_or_default(),
                    pause
                        .until
                        .map_or_else(|| "next month".to_owned(), |at| format!("on {}", when(at)))
                ),
                Some(("Raise the limit", "/billing/auto-topup")),
            ),
            PauseReason::Refunded => (
                format!(
                    "Since {}: a payment was refunded, so we do not charge your card again on our own. Write to our support team to turn automatic top-ups back on.",
                    when(pause.since)
                ),
                None,
            ),
        };
        return context! {
            state => "paused",
            words,
            action => action.map(|(label, href)| context! { label, href }),
        };
    }
    let (Some(threshold), Some(target), true) =
        (settings.threshold, settings.target, settings.enabled)
    else {
        return context! {
            state => "off",
            words => "Your balance is not topped up automatically.",
            action => context! { label => "Turn on auto top-up", href => "/billing/auto-topup" },
        };
    };
    let now = state.clock.now_ms();
    let next_check = decision.next_top_up_at(
        now,
        settings.window_ends_at,
        &state.config.auto_topup.scan_schedule,
    );
    let charge = charge_to_target(
        account.balance,
        target,
        state.config.credit_price_cents,
        state.config.payments.min_topup_cents,
    );
    let next = match (decision, charge) {
        (Decision::Due | Decision::RateLimited { .. }, Some(charge))
            if account.balance < threshold =>
        {
            format!(
                "it will charge {} for {}",
                charge.amount,
                credits(Millicredits::whole(charge.credits))
            )
        }
        _ => format!(
            "your balance is not below {}, so it will charge nothing",
            credits(threshold)
        ),
    };
    context! {
        state => "active",
        words => format!(
            "When your balance falls below {}, we top it up to {}.",
            credits(threshold),
            credits(target)
        ),
        next => match next_check {
            Some(at) => format!("Next check {}: {next}.", when(at)),
            None => format!("At the next check, {next}."),
        },
    }
}

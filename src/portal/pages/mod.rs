//! One module per page of the billing page, and what several of them show the same way.

pub mod cards;
pub mod history;
pub mod overview;
pub mod purchase;
pub mod settings;
pub mod usage;

use axum::http::StatusCode;
use minijinja::{Value, context};

use super::{
    render::{PageError, PageResult},
    session::Customer,
};
use crate::{
    clock::Millis,
    db::payment_methods::SavedCard,
    domain::{
        account::Account,
        attempt::{Attempt, AttemptState, AttemptTrigger},
        card_health,
        credits::Millicredits,
        validation::FieldErrors,
    },
    http::state::AppState,
    notices::templates::{decline_reason, long_date},
};

/// The session's account.
async fn account(state: &AppState, customer: &Customer) -> PageResult<Account> {
    state
        .db
        .account(customer.account_id())
        .await?
        .ok_or(PageError::NotFound)
}

/// How a page answers a form: 422 when a field is wrong, with the errors by field for
/// the template to show beside each.
pub(crate) fn form_outcome(errors: &FieldErrors) -> (StatusCode, Value) {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let by_field = Value::from_pairs(
        errors
            .iter()
            .map(|(field, problem)| (field.to_owned(), problem.to_owned())),
    );
    (status, by_field)
}

pub(crate) fn credits(amount: Millicredits) -> String {
    format!("{} credits", amount.to_display())
}

pub(crate) fn when(ms: Millis) -> String {
    long_date(ms)
}

/// "Visa ending 4242".
fn card_name(card: &SavedCard) -> String {
    card_health::card_name(&card.brand, &card.last4)
}

/// The card an attempt charged, named if it is still saved.
fn charged_card(attempt: &Attempt, cards: &[SavedCard]) -> String {
    cards
        .iter()
        .find(|card| card.id == attempt.payment_method_id)
        .map_or_else(|| "A card no longer saved".to_owned(), card_name)
}

/// What became of a purchase or top-up, in words.
fn outcome(attempt: &Attempt) -> String {
    match attempt.state {
        AttemptState::Succeeded if attempt.refunded.0 > 0 => {
            format!("Paid; {} refunded", attempt.refunded)
        }
        AttemptState::Succeeded => "Paid".to_owned(),
        AttemptState::Failed => {
            let code = attempt.decline_code.as_deref().unwrap_or("card_declined");
            let reason = decline_reason(code);
            format!("Declined: {reason}")
        }
        AttemptState::Canceled => "Cancelled: it was not confirmed in time".to_owned(),
        AttemptState::RequiresAction => "Waiting for you to confirm it".to_owned(),
        _ => "In progress".to_owned(),
    }
}

fn trigger(attempt: &Attempt) -> &'static str {
    match attempt.trigger {
        AttemptTrigger::Auto => "Automatic top-up",
        AttemptTrigger::Manual => "Purchase",
        AttemptTrigger::Retry => "Retried top-up",
    }
}

/// One purchase or top-up as the pages list it.
fn attempt_row(attempt: &Attempt, cards: &[SavedCard]) -> Value {
    context! {
        id => attempt.id.clone(),
        date => when(attempt.created_at),
        kind => trigger(attempt),
        credits => credits(attempt.credits),
        amount => attempt.amount.to_string(),
        card => charged_card(attempt, cards),
        outcome => outcome(attempt),
        paid => attempt.state == AttemptState::Succeeded,
        waiting => attempt.state == AttemptState::RequiresAction,
        transaction => attempt.provider_payment_id.clone(),
    }
}

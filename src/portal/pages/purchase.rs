//! Paying on the page: buying credits (a package or a number of one's own), the outcome
//! of one payment (where the bank's 3-D Secure page sends the customer back), and the page
//! a notice lands on, which confirms the payment waiting for the customer or retries the
//! paused top-up with the current card.
//!
//! A double click or a reload never charges twice: the purchase form carries a key of its
//! own, sent as the purchase's idempotency key, and every charge answers with a redirect,
//! so a reload repeats a read.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use minijinja::{Value, context};
use serde::Deserialize;

use super::{account, attempt_row, card_name, credits, form_outcome};
use crate::{
    domain::{
        attempt::{Attempt, AttemptState},
        auto_topup::PauseReason,
        credits::Millicredits,
        money::Cents,
        validation::{FieldErrors, id_rule, is_id},
    },
    http::{state::AppState, topups::in_own_task},
    portal::{
        form::{PageForm, PagePath},
        links::{COMPLETE_PATH, payment_path},
        render::{PageError, PageResult},
        session::Customer,
    },
    topups::{OnSession, PurchaseError, auto::RetryOutcome},
};

#[derive(Debug, Default, Deserialize)]
pub struct BuyForm {
    csrf: String,
    request_key: String,
    /// A package's credits, or `custom`.
    #[serde(default)]
    choice: String,
    #[serde(default)]
    custom: String,
}

pub async fn page(State(state): State<AppState>, customer: Customer) -> PageResult<Response> {
    buy_page(&state, &customer, &BuyForm::default(), &FieldErrors::new()).await
}

pub async fn buy(
    State(state): State<AppState>,
    customer: Customer,
    PageForm(form): PageForm<BuyForm>,
) -> PageResult<Response> {
    customer.check_form(&form.csrf)?;
    if !is_id(&form.request_key, 64) {
        return Err(PageError::BadRequest(format!(
            "request_key: {}",
            id_rule(64)
        )));
    }
    let mut errors = FieldErrors::new();
    let credits = match form.choice.as_str() {
        "" => {
            errors.add("choice", "choose a package or enter a number of credits");
            None
        }
        "custom" => match form.custom.trim().replace(',', "").parse::<i64>() {
            Ok(credits) => Some(credits),
            Err(_) => {
                errors.add("custom", "must be a whole number of credits, such as 2500");
                None
            }
        },
        package => match package.parse::<i64>() {
            Ok(credits) if state.config.payments.packages.contains(&credits) => Some(credits),
            _ => {
                errors.add("choice", "choose one of the packages");
                None
            }
        },
    };
    let Some(credits) = credits else {
        return buy_page(&state, &customer, &form, &errors).await;
    };
    let (topups, account_id) = (state.topups.clone(), customer.account_id().to_owned());
    // The page's own keys, apart from any the host's backend sends.
    let key = format!("billing_page:{}", form.request_key);
    let charged = in_own_task(&state, async move {
        topups.purchase(&account_id, credits, Some(&key)).await
    })
    .await;
    let Some(charged) = charged else {
        return still_charging(&state, &customer).await;
    };
    let field = if form.choice == "custom" {
        "custom"
    } else {
        "choice"
    };
    let problem = match charged {
        Ok(attempt) => return Ok(after_charge(&attempt)),
        Err(PurchaseError::InvalidAmount(message)) => message,
        Err(PurchaseError::NoPaymentMethod) => {
            "add a card first: you have no saved card to pay with".to_owned()
        }
        Err(PurchaseError::Busy(open)) => return Ok(to_payment(&open)),
        Err(PurchaseError::KeyReused) => {
            "this form was already sent for another amount; choose again".to_owned()
        }
        Err(PurchaseError::Closed) => "this account is closed: nothing can be bought".to_owned(),
        Err(PurchaseError::AccountNotFound) => return Err(PageError::NotFound),
        Err(PurchaseError::Db(error)) => return Err(error.into()),
    };
    errors.add(field, problem);
    buy_page(&state, &customer, &form, &errors).await
}

async fn buy_page(
    state: &AppState,
    customer: &Customer,
    form: &BuyForm,
    errors: &FieldErrors,
) -> PageResult<Response> {
    let payments = &state.config.payments;
    let price = state.config.credit_price_cents;
    let packages: Vec<Value> = payments
        .packages
        .iter()
        .filter_map(|&credits| {
            let amount = Cents::for_credits(credits, price)?;
            Some(context! {
                value => credits.to_string(),
                credits => self::credits(Millicredits::whole(credits)),
                amount => amount.to_string(),
                chosen => form.choice == credits.to_string(),
            })
        })
        .collect();
    let card = state.db.default_card(customer.account_id()).await?;
    let (status, errors) = form_outcome(errors);
    let ctx = context! {
        ..customer.frame("buy", "Buy credits"),
        ..context! {
            packages,
            custom_chosen => form.choice == "custom",
            custom => form.custom.clone(),
            min_amount => Cents(payments.min_topup_cents).to_string(),
            max_amount => Cents(payments.max_topup_cents).to_string(),
            min_credits => (payments.min_topup_cents + price - 1) / price,
            max_credits => payments.max_topup_cents / price,
            price => Cents(price).to_string(),
            card => card.as_ref().map(card_name),
            // A fresh key each time the form is shown: one purchase per showing.
            request_key => uuid::Uuid::new_v4().simple().to_string(),
            errors,
        }
    };
    Ok(state.pages.render(status, "buy.html", ctx))
}

/// After a charge: to the bank's page if it wants the customer to authenticate, else to
/// the payment's outcome.
fn after_charge(attempt: &Attempt) -> Response {
    match (&attempt.state, &attempt.next_action_url) {
        (AttemptState::RequiresAction, Some(url)) => Redirect::to(url).into_response(),
        _ => to_payment(attempt),
    }
}

fn to_payment(attempt: &Attempt) -> Response {
    Redirect::to(&payment_path(&attempt.id)).into_response()
}

/// A charge still running when the request must answer: its page shows it in progress.
async fn still_charging(state: &AppState, customer: &Customer) -> PageResult<Response> {
    Ok(
        match state.db.open_attempt_of(customer.account_id()).await? {
            Some(open) => to_payment(&open),
            None => Redirect::to("/billing/history").into_response(),
        },
    )
}

/// The outcome of one payment, brought up to date with the provider while it is open.
pub async fn outcome(
    State(state): State<AppState>,
    customer: Customer,
    PagePath(id): PagePath<String>,
) -> PageResult<Response> {
    let attempt = state
        .db
        .attempt(&id)
        .await?
        .filter(|a| a.account_id == customer.account_id())
        .ok_or(PageError::NotFound)?;
    // Only a payment the provider holds is asked after; one not sent yet is the
    // reconciler's to resume, not a page view's.
    let attempt = match attempt.state {
        AttemptState::RequiresAction | AttemptState::Processing => {
            state.topups.refresh(attempt).await?
        }
        _ => attempt,
    };
    let account = account(&state, &customer).await?;
    let cards = state.db.saved_cards(&account.id).await?;
    let ctx = context! {
        ..customer.frame("history", "Payment"),
        ..context! {
            payment => attempt_row(&attempt, &cards),
            settled => attempt.state.is_terminal(),
            balance => credits(account.balance),
        }
    };
    Ok(state.pages.render(StatusCode::OK, "payment.html", ctx))
}

/// What waits for the customer: a payment to confirm, a paused top-up to retry, or
/// nothing.
pub async fn complete_page(
    State(state): State<AppState>,
    customer: Customer,
) -> PageResult<Response> {
    let account = account(&state, &customer).await?;
    let open = state.db.open_attempt_of(&account.id).await?;
    let card = state.db.default_card(&account.id).await?;
    let (waiting, pause): (Option<Value>, Option<&str>) = match (&open, account.paused()) {
        (Some(open), _) if open.state == AttemptState::RequiresAction => (
            Some(context! {
                credits => credits(open.credits),
                amount => open.amount.to_string(),
            }),
            None,
        ),
        (_, Some(reason)) => (None, Some(reason.as_str())),
        _ => (None, None),
    };
    let in_progress = open
        .as_ref()
        .filter(|o| o.state != AttemptState::RequiresAction)
        .map(|o| o.id.clone());
    let held = account
        .paused()
        .is_some_and(|reason| !reason.ended_by_payment());
    let declined = account.auto_topup.pause.as_ref().and_then(|p| {
        (p.reason == PauseReason::PaymentFailed).then(|| {
            crate::notices::templates::decline_reason(p.code.as_deref().unwrap_or("card_declined"))
        })
    });
    let ctx = context! {
        ..customer.frame("complete", "Complete your payment"),
        ..context! {
            waiting,
            pause,
            held,
            declined,
            in_progress,
            card => card.as_ref().map(card_name),
        }
    };
    Ok(state.pages.render(StatusCode::OK, "complete.html", ctx))
}

#[derive(Debug, Deserialize)]
pub struct CompleteForm {
    csrf: String,
    /// `confirm` the waiting payment, or `retry` the paused top-up.
    action: String,
}

/// Confirms the waiting payment (to the bank's page if it asks) or retries the paused
/// top-up. A second press finds nothing left to do and shows where things stand.
pub async fn complete(
    State(state): State<AppState>,
    customer: Customer,
    PageForm(form): PageForm<CompleteForm>,
) -> PageResult<Response> {
    customer.check_form(&form.csrf)?;
    let account_id = customer.account_id().to_owned();
    let back = || Redirect::to(COMPLETE_PATH).into_response();
    match form.action.as_str() {
        "confirm" => {
            let Some(open) = state
                .db
                .open_attempt_of(&account_id)
                .await?
                .filter(|a| a.state == AttemptState::RequiresAction)
            else {
                return Ok(back());
            };
            Ok(match state.topups.confirm_on_session(open).await? {
                OnSession::Authenticate(url) => Redirect::to(&url).into_response(),
                OnSession::Settled(attempt) => to_payment(&attempt),
            })
        }
        "retry" => {
            let (topups, actor, id) = (state.topups.clone(), customer.actor(), account_id.clone());
            let retried = in_own_task(
                &state,
                async move { topups.retry_paused(&id, &actor).await },
            )
            .await;
            let Some(retried) = retried else {
                return still_charging(&state, &customer).await;
            };
            Ok(match retried? {
                RetryOutcome::Charged(attempt) => after_charge(&attempt),
                RetryOutcome::Busy(open) => to_payment(&open),
                RetryOutcome::ResumedWithoutCharge => Redirect::to(customer.home()).into_response(),
                RetryOutcome::NotPaused
                | RetryOutcome::HeldForSupport(_)
                | RetryOutcome::CapReached { .. } => back(),
                RetryOutcome::AccountNotFound => return Err(PageError::NotFound),
            })
        }
        _ => Err(PageError::BadRequest(
            "action: must be confirm or retry".to_owned(),
        )),
    }
}

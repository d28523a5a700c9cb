//! Payment methods: the saved cards with the default marked and an "expires soon" note,
//! adding one through the provider's Checkout page (setup mode: no card data passes
//! through topupd), making one the default, removing one.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
};
use chrono::Datelike;
use minijinja::context;
use serde::Deserialize;

use super::card_name;
use crate::{
    clock::Millis,
    db::payment_methods::Removal,
    http::state::AppState,
    payments::types::CheckoutSession,
    portal::{
        form::{PageForm, PagePath, PageQuery},
        render::{PageError, PageResult},
        session::{Customer, TokenForm},
    },
    topups::cards::SaveCardError,
};

const PAGE: &str = "/billing/payment-methods";
const SAVED_PATH: &str = "/billing/payment-methods/saved";

#[derive(Debug, Deserialize)]
pub struct Shown {
    done: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    customer: Customer,
    PageQuery(shown): PageQuery<Shown>,
) -> PageResult<Response> {
    let now = state.clock.now_ms();
    let cards: Vec<_> = state
        .db
        .saved_cards(customer.account_id())
        .await?
        .iter()
        .map(|card| {
            context! {
                id => card.id.clone(),
                name => card_name(card),
                expiry => format!("{:02}/{}", card.exp_month, card.exp_year),
                note => expiry_note(card.exp_month, card.exp_year, now),
                default => card.is_default,
            }
        })
        .collect();
    let notice = shown.done.as_deref().and_then(|done| {
        Some(match done {
            "saved" => "Your card is saved.",
            "saving" => "Your card is being saved; it shows here within a minute. Reload to see it.",
            "cancelled" => "No card was added.",
            "default" => "Your default card is changed.",
            "removed" => "The card is removed.",
            "in_use" => "That card is being charged for a top-up in progress; remove it once the top-up is done.",
            _ => return None,
        })
    });
    let ctx = context! {
        ..customer.frame("cards", "Payment methods"),
        ..context! { cards, notice },
    };
    Ok(state.pages.render(StatusCode::OK, "cards.html", ctx))
}

/// "Expired", or "Expires soon" in a card's last two months.
fn expiry_note(month: i64, year: i64, now: Millis) -> Option<&'static str> {
    let today = chrono::DateTime::from_timestamp_millis(now)?;
    let months_now = i64::from(today.year()) * 12 + i64::from(today.month0());
    let months_left = year * 12 + (month - 1) - months_now;
    match months_left {
        ..0 => Some("Expired"),
        0..=1 => Some("Expires soon"),
        _ => None,
    }
}

/// To the provider's page that takes a new card.
pub async fn add(
    State(state): State<AppState>,
    customer: Customer,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult<Response> {
    customer.check_form(&form.csrf)?;
    match state
        .topups
        .card_checkout(customer.account_id(), SAVED_PATH)
        .await
    {
        Ok(CheckoutSession { url: Some(url), .. }) => Ok(Redirect::to(&url).into_response()),
        Ok(_) => Err(PageError::Db(crate::db::DbError::Corrupt(
            "the provider's Checkout Session has no page".into(),
        ))),
        Err(SaveCardError::Db(error)) => Err(error.into()),
        Err(error) => {
            tracing::warn!(%error, "the provider's card page could not be opened");
            Ok(state.pages.message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Cards cannot be added right now",
                "The payment provider did not answer. Nothing was changed; try again in a few minutes.",
            ))
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct SavedParams {
    session_id: Option<String>,
    cancelled: Option<String>,
}

/// Where the provider's page sends the customer back. The card is saved now, from what
/// the provider says of the session, if it is this account's (the webhook would save it
/// too, once). Only a Checkout Session's id is passed on to the provider.
pub async fn saved(
    State(state): State<AppState>,
    customer: Customer,
    PageQuery(params): PageQuery<SavedParams>,
) -> PageResult<Response> {
    let done = match (params.session_id, params.cancelled) {
        (Some(session), None) if !is_checkout_session_id(&session) => {
            return Err(PageError::BadRequest(
                "session_id: must be a Checkout Session's id, cs_ and up to 255 letters, digits or _".to_owned(),
            ));
        }
        (Some(session), None) => match state
            .topups
            .save_checkout_card(&session, Some(customer.account_id()))
            .await
        {
            Ok(Some(_)) => "saved",
            Ok(None) => "saving",
            Err(SaveCardError::Db(error)) => return Err(error.into()),
            Err(error) => {
                tracing::warn!(%error, "a card saved at the provider could not be read back yet");
                "saving"
            }
        },
        _ => "cancelled",
    };
    Ok(Redirect::to(&format!("{PAGE}?done={done}")).into_response())
}

/// `cs_` and 1 to 255 letters, digits or `_`, as Stripe's Checkout Session ids are.
fn is_checkout_session_id(id: &str) -> bool {
    id.strip_prefix("cs_").is_some_and(|rest| {
        (1..=255).contains(&rest.len())
            && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

pub async fn make_default(
    State(state): State<AppState>,
    customer: Customer,
    PagePath(pm): PagePath<String>,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult<Response> {
    customer.check_form(&form.csrf)?;
    state
        .topups
        .make_default_card(customer.account_id(), &pm, None)
        .await?
        .ok_or(PageError::NotFound)?;
    Ok(Redirect::to(&format!("{PAGE}?done=default")).into_response())
}

pub async fn remove(
    State(state): State<AppState>,
    customer: Customer,
    PagePath(pm): PagePath<String>,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult<Response> {
    customer.check_form(&form.csrf)?;
    let done = match state
        .topups
        .remove_card(customer.account_id(), &pm, None)
        .await?
    {
        Removal::Removed(_) => "removed",
        Removal::InUse => "in_use",
        // Already removed (a second press): the list shows where things stand.
        Removal::NotFound => "removed",
    };
    Ok(Redirect::to(&format!("{PAGE}?done={done}")).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-21T10:30:00Z
    const NOV_2026: Millis = 1_795_257_000_000;

    #[test]
    fn only_checkout_session_ids_reach_the_provider() {
        for good in ["cs_test_a1B2c3", "cs_live_x", "cs_1"] {
            assert!(is_checkout_session_id(good), "{good}");
        }
        let long = format!("cs_{}", "a".repeat(256));
        for bad in [
            "",
            "cs_",
            "seti_123",
            "cs_../../v1/charges",
            "cs_a b",
            "cs_a%2F",
            &long,
        ] {
            assert!(!is_checkout_session_id(bad), "{bad}");
        }
    }

    #[test]
    fn cards_expiring_this_or_next_month_are_marked() {
        assert_eq!(expiry_note(10, 2026, NOV_2026), Some("Expired"));
        assert_eq!(expiry_note(11, 2026, NOV_2026), Some("Expires soon"));
        assert_eq!(expiry_note(12, 2026, NOV_2026), Some("Expires soon"));
        assert_eq!(expiry_note(1, 2027, NOV_2026), None);
        assert_eq!(expiry_note(12, 2030, NOV_2026), None);
    }
}

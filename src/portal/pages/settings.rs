//! Auto top-up settings: on or off with the consent the customer gives, the threshold
//! and target within the published bounds, and the card. An error is shown beside its
//! field and nothing is saved.

use axum::{
    extract::State,
    response::{IntoResponse, Redirect, Response},
};
use minijinja::context;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{account, card_name, credits, form_outcome};
use crate::{
    domain::{
        account::Account,
        auto_topup::{MAX_TARGET, MAX_THRESHOLD, MIN_GAP, MIN_TARGET, MIN_THRESHOLD},
        money::{Cents, group_thousands},
        spend_cap::{MAX_CAP_CENTS, MIN_CAP_CENTS},
        validation::FieldErrors,
    },
    http::{
        auto_topup::{AskedSettings, checked_settings},
        state::AppState,
    },
    portal::{
        form::{PageForm, PageQuery},
        render::{PageError, PageResult},
        session::{Customer, TokenForm},
    },
};

/// What the customer agrees to by turning auto top-up on; shown beside the switch.
fn consent(rate_limit_hours: u32) -> String {
    format!(
        "I authorise charging my saved card, without asking me each time, whenever my balance falls below the threshold, enough to bring it back to the target, at most once every {rate_limit_hours} hours. I can turn this off at any time."
    )
}

#[derive(Debug, Default, Deserialize)]
pub struct SettingsForm {
    csrf: String,
    enabled: Option<String>,
    consent: Option<String>,
    #[serde(default)]
    threshold: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    card: String,
    /// Dollars; empty is no cap.
    #[serde(default)]
    monthly_spend_cap: String,
    low_balance_email: Option<String>,
    /// Minutes; empty is no notice.
    #[serde(default)]
    advance_notice_minutes: String,
}

#[derive(Debug, Deserialize)]
pub struct Shown {
    saved: Option<String>,
}

pub async fn page(
    State(state): State<AppState>,
    customer: Customer,
    PageQuery(shown): PageQuery<Shown>,
) -> PageResult<Response> {
    let account = account(&state, &customer).await?;
    let settings = &account.auto_topup;
    let form = SettingsForm {
        enabled: settings.enabled.then(|| "on".to_owned()),
        consent: settings.enabled.then(|| "on".to_owned()),
        threshold: settings
            .threshold
            .map(|t| t.to_display().replace(',', ""))
            .unwrap_or_default(),
        target: settings
            .target
            .map(|t| t.to_display().replace(',', ""))
            .unwrap_or_default(),
        card: settings.payment_method_id.clone().unwrap_or_default(),
        monthly_spend_cap: settings
            .monthly_cap
            .map(|cap| cap.to_string().replace(['$', ','], ""))
            .unwrap_or_default(),
        low_balance_email: settings.low_balance_email.then(|| "on".to_owned()),
        advance_notice_minutes: settings
            .notice_minutes
            .map(|m| m.to_string())
            .unwrap_or_default(),
        ..SettingsForm::default()
    };
    let saved = shown.saved.is_some();
    settings_page(
        &state,
        &customer,
        &account,
        &form,
        &FieldErrors::new(),
        saved,
    )
    .await
}

pub async fn save(
    State(state): State<AppState>,
    customer: Customer,
    PageForm(form): PageForm<SettingsForm>,
) -> PageResult<Response> {
    customer.check_form(&form.csrf)?;
    let account = account(&state, &customer).await?;
    let enabled = form.enabled.is_some();
    let mut errors = FieldErrors::new();
    let threshold = number(&mut errors, "threshold", &form.threshold);
    let target = number(&mut errors, "target", &form.target);
    if enabled && form.consent.is_none() {
        errors.add("consent", "tick the box to agree to automatic charges");
    }
    let monthly_spend_cap = dollars(&mut errors, &form.monthly_spend_cap);
    let asked = AskedSettings {
        enabled,
        threshold,
        target,
        payment_method_id: (!form.card.is_empty()).then(|| form.card.clone()),
        monthly_spend_cap: Some(monthly_spend_cap),
        time_zone: None,
        low_balance_email: Some(form.low_balance_email.is_some()),
        advance_notice_minutes: Some(minutes(&mut errors, &form.advance_notice_minutes)),
        // The page does not order backup cards; those set through the API stay.
        backup_cards: None,
    };
    let checked = checked_settings(&state, &account.id, asked).await?;
    let update = match checked {
        Ok(update) if errors.is_empty() => update,
        Ok(_) => return settings_page(&state, &customer, &account, &form, &errors, false).await,
        Err(problems) => {
            errors.merge(problems);
            return settings_page(&state, &customer, &account, &form, &errors, false).await;
        }
    };
    state
        .accounts
        .set_auto_topup(&account.id, &update, &customer.actor())
        .await?
        .ok_or(PageError::NotFound)?;
    Ok(Redirect::to("/billing/auto-topup?saved=1").into_response())
}

fn grouped(credits: i64) -> String {
    group_thousands(credits.unsigned_abs())
}

/// A number of credits as typed: digits, with thousands separators allowed. Empty is
/// none (allowed only to turn auto top-up off).
fn number(errors: &mut FieldErrors, field: &str, text: &str) -> Option<Decimal> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|c| *c != ',' && *c != ' ')
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    match cleaned.parse::<Decimal>() {
        Ok(value) => Some(value),
        Err(_) => {
            errors.add(field, "must be a number of credits, such as 1000");
            None
        }
    }
}

/// Minutes as typed. Empty is none.
fn minutes(errors: &mut FieldErrors, text: &str) -> Option<i64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.parse::<i64>().map_or_else(
        |_| {
            errors.add(
                "advance_notice_minutes",
                "must be a number of minutes, such as 60",
            );
            None
        },
        Some,
    )
}

/// A cap in dollars as typed: a `$` and thousands separators allowed. Empty is no cap.
fn dollars(errors: &mut FieldErrors, text: &str) -> Option<Decimal> {
    let cleaned: String = text
        .trim()
        .chars()
        .filter(|c| !matches!(c, ',' | ' ' | '$'))
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    cleaned.parse::<Decimal>().map_or_else(
        |_| {
            errors.add(
                "monthly_spend_cap",
                "must be an amount in dollars, such as 250 or 99.50",
            );
            None
        },
        Some,
    )
}

/// The settings page with `form` as typed and its `errors`.
async fn settings_page(
    state: &AppState,
    customer: &Customer,
    account: &Account,
    form: &SettingsForm,
    errors: &FieldErrors,
    saved: bool,
) -> PageResult<Response> {
    let cards: Vec<_> = state
        .db
        .saved_cards(&account.id)
        .await?
        .iter()
        .map(|card| {
            context! {
                id => card.id.clone(),
                name => card_name(card),
                default => card.is_default,
                chosen => card.id == form.card,
            }
        })
        .collect();
    let (status, errors) = form_outcome(errors);
    let ctx = context! {
        ..customer.frame("auto-topup", "Auto top-up"),
        ..context! {
            saved,
            enabled => form.enabled.is_some(),
            consent => form.consent.is_some(),
            consent_text => consent(state.config.auto_topup.rate_limit_hours),
            threshold => form.threshold.clone(),
            target => form.target.clone(),
            monthly_spend_cap => form.monthly_spend_cap.clone(),
            low_balance_email => form.low_balance_email.is_some(),
            advance_notice_minutes => form.advance_notice_minutes.clone(),
            low_balance_line => credits(state.config.low_balance_warning()),
            time_zone => account.time_zone.name(),
            cap_bounds => context! { min => Cents(MIN_CAP_CENTS).to_string(), max => Cents(MAX_CAP_CENTS).to_string() },
            cards,
            errors,
            bounds => context! {
                min_threshold => grouped(MIN_THRESHOLD), max_threshold => grouped(MAX_THRESHOLD),
                min_target => grouped(MIN_TARGET), max_target => grouped(MAX_TARGET),
                gap => grouped(MIN_GAP),
            },
        }
    };
    Ok(state.pages.render(status, "auto_topup.html", ctx))
}

/// Cancels the automatic charge announced to the customer, from the overview's button.
pub async fn cancel_announced(
    State(state): State<AppState>,
    customer: Customer,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult<Response> {
    customer.check_form(&form.csrf)?;
    // A second press finds nothing announced: the overview shows where things stand.
    state
        .db
        .cancel_announced(
            customer.account_id(),
            &customer.actor(),
            state.clock.now_ms(),
            state.config.auto_topup.window_ms(),
        )
        .await?;
    Ok(Redirect::to("/billing?cancelled=1").into_response())
}

//! Saved payment methods of an account.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    access::{AccountId, visible_account},
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath},
    state::AppState,
};
use crate::{
    clock::rfc3339,
    db::payment_methods::{Removal, SavedCard},
    domain::validation::{FieldErrors, is_id},
    topups::cards::{CARD_SAVED_PATH, SaveCardError},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, add))
        .routes(routes!(checkout))
        .routes(routes!(setup))
        .routes(routes!(make_default))
        .routes(routes!(remove))
}

/// One saved card of an account.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct CardPath {
    /// The account's id.
    id: String,
    /// The saved card's payment method id.
    pm: String,
}

/// Staff acting on a customer's cards are audited; the customer's own changes are not.
fn staff_actor(caller: &Caller) -> Option<crate::db::audit::Actor> {
    (caller.role != crate::domain::api_key::Role::Customer).then(|| caller.actor())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CardView {
    id: String,
    brand: String,
    last4: String,
    exp_month: i64,
    exp_year: i64,
    default: bool,
    created_at: String,
}

impl From<SavedCard> for CardView {
    fn from(card: SavedCard) -> Self {
        Self {
            id: card.id,
            brand: card.brand,
            last4: card.last4,
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            default: card.is_default,
            created_at: rfc3339(card.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CardList {
    data: Vec<CardView>,
}

/// The account's saved cards.
#[utoipa::path(get, path = "/v1/accounts/{id}/payment-methods", operation_id = "list_payment_methods", tag = "payment methods",
    params(AccountId),
    responses(
        (status = 200, body = CardList),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
) -> ApiResult<Json<CardList>> {
    visible_account(&state, &caller, &id).await?;
    let cards = state.db.saved_cards(&id).await?;
    Ok(Json(CardList {
        data: cards.into_iter().map(CardView::from).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCardBody {
    /// The provider's payment method id, e.g. `pm_card_visa` on the stub or in test mode.
    payment_method_id: String,
    /// Make it the default (the first card always is).
    #[serde(default)]
    default: bool,
}

/// Attaches a payment method the customer created at the provider and saves it.
#[utoipa::path(post, path = "/v1/accounts/{id}/payment-methods", operation_id = "add_payment_method", tag = "payment methods",
    params(AccountId), request_body = NewCardBody,
    responses(
        (status = 201, body = CardView),
        (status = 402, description = "`payment_failed`: the provider refused the card", body = ErrorBody),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
        (status = 503, description = "The provider is unavailable; nothing was saved", body = ErrorBody),
    ))]
async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiJson(body): ApiJson<NewCardBody>,
) -> ApiResult<(StatusCode, Json<CardView>)> {
    visible_account(&state, &caller, &id).await?;
    let pm = body.payment_method_id.trim();
    if !is_id(pm, 255) || pm.contains('/') {
        return Err(ApiError::invalid(FieldErrors::single(
            "payment_method_id",
            "must be the provider's payment method id, such as pm_card_visa",
        )));
    }
    let staff = staff_actor(&caller);
    let card = state
        .topups
        .save_card(&id, pm, body.default, staff.as_ref())
        .await
        .map_err(save_error)?;
    Ok((StatusCode::CREATED, Json(card.into())))
}

/// What a customer is told when a card could not be saved, or saving could not start.
fn save_error(error: SaveCardError) -> ApiError {
    match error {
        SaveCardError::AccountNotFound => ApiError::NotFound("account"),
        SaveCardError::UnknownCard(message) => ApiError::invalid(FieldErrors::single(
            "payment_method_id",
            format!("the payment provider cannot use it: {message}"),
        )),
        SaveCardError::Refused { code, message } => ApiError::PaymentFailed {
            decline_code: code,
            message,
            topup: None,
        },
        SaveCardError::ProviderUnavailable(error) => {
            tracing::warn!(%error, "card not saved: provider unavailable");
            ApiError::Unavailable(
                "the payment provider is unavailable; nothing was saved, try again".into(),
            )
        }
        SaveCardError::InUse(card) => ApiError::Conflict(format!(
            "a top-up in progress charges card {card}; try again once it has settled"
        )),
        SaveCardError::Db(error) => error.into(),
    }
}

/// Where to send the customer to save a card on the provider's page.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckoutView {
    /// The Checkout Session.
    id: String,
    /// The provider's page; send the customer's browser there. It comes back to
    /// topupd's page, which saves the card.
    url: String,
}

/// Opens the provider's page for saving a card (Stripe Checkout in `setup` mode): no card
/// data passes through topupd or the host. The customer comes back to
/// `/v1/payments/card-saved`, and the `checkout.session.completed` webhook saves the card
/// (re-read from the provider). The account's first card becomes its default.
#[utoipa::path(post, path = "/v1/accounts/{id}/payment-methods/checkout", operation_id = "start_card_checkout", tag = "payment methods",
    params(AccountId),
    responses(
        (status = 201, body = CheckoutView),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
        (status = 503, description = "The provider is unavailable", body = ErrorBody),
    ))]
async fn checkout(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
) -> ApiResult<(StatusCode, Json<CheckoutView>)> {
    visible_account(&state, &caller, &id).await?;
    let session = state
        .topups
        .card_checkout(&id, CARD_SAVED_PATH)
        .await
        .map_err(save_error)?;
    let url = session.url.ok_or_else(|| {
        ApiError::Unavailable("the payment provider gave no page for saving a card".into())
    })?;
    Ok((
        StatusCode::CREATED,
        Json(CheckoutView {
            id: session.id,
            url,
        }),
    ))
}

/// What a card form of the host's own needs to save a card with Stripe.js.
#[derive(Debug, Serialize, ToSchema)]
pub struct SetupView {
    /// The SetupIntent.
    id: String,
    /// Give it to Stripe.js (`confirmCardSetup` / `confirmSetup`); not to be logged.
    client_secret: String,
    /// `payments.publishable_key`, for Stripe.js; null when not configured.
    publishable_key: Option<String>,
}

/// Starts saving a card through the host's own card form: the answer's client secret and
/// publishable key let Stripe.js collect and confirm the card; the `setup_intent.succeeded`
/// webhook then saves it. The account's first card becomes its default.
#[utoipa::path(post, path = "/v1/accounts/{id}/payment-methods/setup-intents", operation_id = "start_card_setup", tag = "payment methods",
    params(AccountId),
    responses(
        (status = 201, body = SetupView),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
        (status = 503, description = "The provider is unavailable", body = ErrorBody),
    ))]
async fn setup(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
) -> ApiResult<(StatusCode, Json<SetupView>)> {
    visible_account(&state, &caller, &id).await?;
    let setup = state.topups.card_setup(&id).await.map_err(save_error)?;
    let client_secret = setup.client_secret.ok_or_else(|| {
        ApiError::Unavailable("the payment provider gave the setup no client secret".into())
    })?;
    let key = &state.config.payments.publishable_key;
    Ok((
        StatusCode::CREATED,
        Json(SetupView {
            id: setup.id,
            client_secret,
            publishable_key: (!key.is_empty()).then(|| key.clone()),
        }),
    ))
}

/// Makes a saved card the default one.
#[utoipa::path(post, path = "/v1/accounts/{id}/payment-methods/{pm}/default", operation_id = "make_default_payment_method", tag = "payment methods",
    params(CardPath),
    responses(
        (status = 200, body = CardView),
        (status = 404, description = "No such account or card", body = ErrorBody),
    ))]
async fn make_default(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(CardPath { id, pm }): ApiPath<CardPath>,
) -> ApiResult<Json<CardView>> {
    visible_account(&state, &caller, &id).await?;
    let card = state
        .topups
        .make_default_card(&id, &pm, staff_actor(&caller).as_ref())
        .await?
        .ok_or(ApiError::NotFound("payment method"))?;
    Ok(Json(card.into()))
}

/// Removes a card, unless a top-up in progress is charging it.
#[utoipa::path(delete, path = "/v1/accounts/{id}/payment-methods/{pm}", operation_id = "remove_payment_method", tag = "payment methods",
    params(CardPath),
    responses(
        (status = 200, description = "The removed card", body = CardView),
        (status = 404, description = "No such account or card", body = ErrorBody),
        (status = 409, description = "A top-up in progress is charging it", body = ErrorBody),
    ))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(CardPath { id, pm }): ApiPath<CardPath>,
) -> ApiResult<Json<CardView>> {
    visible_account(&state, &caller, &id).await?;
    let staff = staff_actor(&caller);
    match state.topups.remove_card(&id, &pm, staff.as_ref()).await? {
        Removal::Removed(card) => Ok(Json(card.into())),
        Removal::InUse => Err(ApiError::Conflict(
            "a top-up in progress is charging this payment method; remove it once it settles"
                .into(),
        )),
        Removal::NotFound => Err(ApiError::NotFound("payment method")),
    }
}

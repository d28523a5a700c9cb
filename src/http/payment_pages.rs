//! The pages a customer's browser lands on around a payment: the confirmation page an
//! email links to, for a payment the bank would not take without the customer, and the
//! page the provider sends them back to after authenticating. HTML, no API key: the
//! signed link, or the payment's client secret, is the customer's proof.

use axum::{
    Form,
    extract::{State, rejection::FormRejection},
    http::{HeaderMap, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::ApiResult,
    extract::{ApiPath, ApiQuery},
    state::AppState,
};
use crate::{
    domain::attempt::{Attempt, AttemptState},
    notices::templates::escape,
    portal::{links, session::signed_in_customer},
    topups::{OnSession, confirm_link},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(returned))
        .routes(routes!(confirmation, confirm))
        .routes(routes!(card_saved))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct CardSavedParams {
    /// The Checkout Session the provider sends the customer back from, after saving.
    session_id: Option<String>,
    /// Present when the customer left the provider's page without saving a card.
    cancelled: Option<String>,
}

/// Where the provider's page for saving a card sends the customer back. The provider
/// comes here only once the card is set up; the `checkout.session.completed` webhook
/// saves it. The page asks nothing of the provider and shows no card, so a stranger's
/// visit (or a flood of them) costs nothing and tells nothing.
#[utoipa::path(get, path = "/v1/payments/card-saved", operation_id = "card_saved", tag = "payment methods", security(()), params(CardSavedParams),
    responses(
        (status = 200, description = "A page saying whether a card is being saved", body = String, content_type = "text/html"),
    ))]
async fn card_saved(ApiQuery(params): ApiQuery<CardSavedParams>) -> Response {
    let body = match (params.session_id, params.cancelled) {
        (Some(_), None) => {
            "<h1>Card saved</h1><p>Thank you: your card is being saved. It shows in your billing \
             settings within a minute. You can close this page.</p>"
        }
        _ => {
            "<h1>No card saved</h1><p>No card was saved. You can try again from your billing \
             settings.</p>"
        }
    };
    page(StatusCode::OK, "Saving a card", body)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReturnParams {
    /// Added by the provider when it sends the customer back: the payment's id...
    payment_intent: Option<String>,
    /// ...and its client secret, without which the page shows nothing. (The provider's
    /// `redirect_status` is not read: the outcome comes from the payment.)
    payment_intent_client_secret: Option<String>,
}

/// Where the provider sends a customer back after authenticating (`payments.return_url`),
/// with the payment's id and client secret: only the customer sent there sees the outcome.
/// A settled payment is answered from the database; an open one is read from the provider
/// at once, so the customer sees the outcome.
#[utoipa::path(get, path = "/v1/payments/return", operation_id = "payment_return", tag = "top-ups", security(()), params(ReturnParams),
    responses(
        (status = 200, description = "A page telling the customer the outcome", body = String, content_type = "text/html"),
        (status = 404, description = "No such payment, or not with this client secret", body = String, content_type = "text/html"),
    ))]
async fn returned(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ReturnParams>,
) -> ApiResult<Response> {
    let attempt = match (&params.payment_intent, &params.payment_intent_client_secret) {
        (Some(payment), Some(secret)) => {
            state
                .db
                .attempt_for_payment(payment)
                .await?
                .filter(|attempt| {
                    attempt
                        .client_secret
                        .as_deref()
                        .is_some_and(|kept| bool::from(kept.as_bytes().ct_eq(secret.as_bytes())))
                })
        }
        _ => None,
    };
    let Some(attempt) = attempt else {
        return Ok(not_found());
    };
    let attempt = if attempt.state.is_terminal() {
        attempt
    } else {
        state.topups.refresh(attempt).await?
    };
    // A customer paying on the billing page goes back to it.
    if signed_in_customer(&state, &headers)
        .await?
        .is_some_and(|customer| customer.account_id() == attempt.account_id)
    {
        return Ok(Redirect::to(&links::payment_path(&attempt.id)).into_response());
    }
    Ok(outcome_page(&attempt))
}

#[derive(Debug, Deserialize)]
struct ConfirmPath {
    id: String,
}

/// The signature of a confirmation link; the page's form posts it back. A link without
/// them, or with them mangled, finds nothing, like any wrong link.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LinkParams {
    /// Unix seconds after which the link no longer works.
    expires: Option<String>,
    /// Made for this top-up and this expiry only.
    signature: Option<String>,
}

/// The page an email's link opens when the bank would not take an automatic top-up
/// without the customer: it shows the payment and lets them confirm it, with them there.
#[utoipa::path(get, path = "/v1/payments/confirm/{id}", operation_id = "payment_confirmation", tag = "top-ups", security(()),
    params(("id" = String, Path, description = "The top-up"), LinkParams),
    responses(
        (status = 200, description = "The payment and a button to confirm it, or its outcome", body = String, content_type = "text/html"),
        (status = 404, description = "No such top-up, or the link is not its own or has expired", body = String, content_type = "text/html"),
    ))]
async fn confirmation(
    State(state): State<AppState>,
    ApiPath(ConfirmPath { id }): ApiPath<ConfirmPath>,
    ApiQuery(link): ApiQuery<LinkParams>,
) -> ApiResult<Response> {
    let Some(attempt) = linked_attempt(&state, &id, &link).await? else {
        return Ok(not_found());
    };
    if attempt.state != AttemptState::RequiresAction {
        return Ok(outcome_page(&attempt));
    }
    let body = format!(
        "<h1>Confirm your payment</h1>\
         <p>Your bank asked to confirm the automatic top-up of {credits} credits for {amount} \
         with you there. Automatic top-ups are paused until you do.</p>\
         <form method=\"post\" action=\"{action}\">\
         <input type=\"hidden\" name=\"expires\" value=\"{expires}\">\
         <input type=\"hidden\" name=\"signature\" value=\"{signature}\">\
         <button type=\"submit\">Confirm the payment of {amount}</button></form>\
         <p>Your bank may ask you to approve it on the next page.</p>",
        credits = attempt.credits.to_display(),
        amount = attempt.amount,
        action = escape(&confirm_link::path(&attempt.id)),
        expires = escape(link.expires.as_deref().unwrap_or_default()),
        signature = escape(link.signature.as_deref().unwrap_or_default()),
    );
    Ok(page(StatusCode::OK, "Confirm your payment", &body))
}

/// The customer confirms the payment: to the bank's page if it wants them to
/// authenticate, else straight to the outcome.
#[utoipa::path(post, path = "/v1/payments/confirm/{id}", operation_id = "confirm_payment", tag = "top-ups", security(()),
    params(("id" = String, Path, description = "The top-up")),
    request_body(content = String, description = "`expires` and `signature` of the link, form-encoded", content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 303, description = "To the bank's authentication page"),
        (status = 200, description = "The payment's outcome", body = String, content_type = "text/html"),
        (status = 404, description = "No such top-up, or the link is not its own or has expired", body = String, content_type = "text/html"),
    ))]
async fn confirm(
    State(state): State<AppState>,
    ApiPath(ConfirmPath { id }): ApiPath<ConfirmPath>,
    form: Result<Form<LinkParams>, FormRejection>,
) -> ApiResult<Response> {
    let link = form.map(|Form(link)| link).unwrap_or_default();
    let Some(attempt) = linked_attempt(&state, &id, &link).await? else {
        return Ok(not_found());
    };
    if attempt.state != AttemptState::RequiresAction {
        return Ok(outcome_page(&attempt));
    }
    Ok(match state.topups.confirm_on_session(attempt).await? {
        OnSession::Authenticate(url) => Redirect::to(&url).into_response(),
        OnSession::Settled(attempt) => outcome_page(&attempt),
    })
}

/// The top-up the link was made for, if it is that top-up's and has not expired.
async fn linked_attempt(
    state: &AppState,
    id: &str,
    link: &LinkParams,
) -> ApiResult<Option<Attempt>> {
    let (Some(expires), Some(signature)) = (
        link.expires.as_deref().and_then(|e| e.parse().ok()),
        link.signature.as_deref(),
    ) else {
        return Ok(None);
    };
    let now = state.topups.now_ms();
    Ok(state
        .db
        .attempt(id)
        .await?
        .filter(|attempt| confirm_link::is_valid(attempt, expires, signature, now)))
}

fn outcome_page(attempt: &Attempt) -> Response {
    let message = match attempt.state {
        AttemptState::Succeeded => "Your payment went through and the credits are in your account.",
        AttemptState::Failed | AttemptState::Canceled => {
            "Your payment did not go through. You can retry it from your billing settings."
        }
        AttemptState::RequiresAction => {
            "Your payment still waits for your confirmation. Open the link in your email again to confirm it."
        }
        _ => "Your payment is being processed; the credits are added as soon as it completes.",
    };
    page(
        StatusCode::OK,
        "Payment",
        &format!("<p>{message}</p><p>You can close this page.</p>"),
    )
}

fn not_found() -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Payment",
        "<p>We could not find this payment. The link may have expired.</p>",
    )
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Html(format!(
            "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"referrer\" content=\"no-referrer\"><title>{title}</title></head>\
             <body><main>{body}</main></body></html>"
        )),
    )
        .into_response()
}

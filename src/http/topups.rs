//! Buying credits with the default card, and the history of purchases.

use std::{future::Future, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    access::{AccountId, visible_account},
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
    state::AppState,
    views::TopupView,
};
use crate::{
    domain::{
        api_key::Role,
        attempt::{Attempt, AttemptState},
        validation::{FieldErrors, id_rule, is_id},
    },
    topups::PurchaseError,
};

/// Longest accepted Idempotency-Key header.
const MAX_KEY_LEN: usize = 255;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, purchase))
        .routes(routes!(one))
}

/// One top-up of an account.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct TopupPath {
    /// The account's id.
    id: String,
    /// The top-up's id.
    topup: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBody {
    /// Whole credits to buy; see `packages` in `GET /v1/pricing`.
    #[serde(deserialize_with = "crate::domain::number::whole")]
    credits: i64,
}

/// Charges the default card for `credits`. 201 when paid, 202 when it waits for the
/// customer (`next_action.url`) or for the provider, 402 `payment_failed` when declined.
#[utoipa::path(post, path = "/v1/accounts/{id}/topups", operation_id = "purchase", tag = "top-ups",
    params(AccountId,
        ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$",
            description = "Repeat the purchase with the same key to get the same top-up, never a second charge; 1 to 255 visible ASCII characters")),
    request_body = PurchaseBody,
    responses(
        (status = 201, description = "Paid and credited", body = TopupView),
        (status = 202, description = "Waiting for the customer (`next_action.url`) or the provider", body = TopupView),
        (status = 400, description = "`invalid_amount`: outside the purchase limits", body = ErrorBody),
        (status = 402, description = "`payment_failed`: declined; `topup` is the failed top-up", body = ErrorBody),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
        (status = 409, description = "No saved card, a top-up in progress, or the key reused for another amount", body = ErrorBody),
    ))]
async fn purchase(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PurchaseBody>,
) -> ApiResult<Response> {
    caller.require_account(&id, &[])?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .filter(|k| is_id(k, MAX_KEY_LEN))
                .ok_or_else(|| {
                    ApiError::malformed_fields(FieldErrors::single(
                        "Idempotency-Key",
                        id_rule(MAX_KEY_LEN),
                    ))
                })?,
        ),
    };
    let replay = match key {
        Some(key) => state.db.attempt_by_request_key(&id, key).await?.is_some(),
        None => false,
    };
    let topups = state.topups.clone();
    let (account, request_key) = (id.clone(), key.map(str::to_owned));
    let charged = in_own_task(&state, async move {
        topups
            .purchase(&account, body.credits, request_key.as_deref())
            .await
    })
    .await;
    let Some(charged) = charged else {
        return still_charging(&state, &id).await;
    };
    let attempt = match charged {
        Ok(attempt) => attempt,
        Err(PurchaseError::InvalidAmount(message)) => return Err(ApiError::InvalidAmount(message)),
        Err(PurchaseError::AccountNotFound) => return Err(ApiError::NotFound("account")),
        Err(
            e @ (PurchaseError::NoPaymentMethod | PurchaseError::KeyReused | PurchaseError::Closed),
        ) => {
            return Err(ApiError::Conflict(e.to_string()));
        }
        Err(PurchaseError::Busy(open)) => {
            return Err(ApiError::Conflict(format!(
                "top-up {} of this account is {}; wait for it to settle",
                open.id, open.state
            )));
        }
        Err(PurchaseError::Db(e)) => return Err(e.into()),
    };
    let mut response = purchase_answer(attempt)?;
    if replay {
        response.headers_mut().insert(
            "idempotent-replayed",
            "true".parse().expect("static header value"),
        );
    }
    Ok(response)
}

/// Runs a charge in a task of its own, so that neither a slow provider nor a client that
/// hangs up cuts it short, and waits for it until just before the request would time out.
/// `None` if it is still running then.
pub async fn in_own_task<T: Send + 'static>(
    state: &AppState,
    charge: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    let deadline = Duration::from_secs(state.config.http.request_timeout_secs)
        .saturating_sub(Duration::from_secs(1))
        .max(Duration::from_millis(500));
    match tokio::time::timeout(deadline, tokio::spawn(charge)).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(error)) => {
            tracing::error!(
                ?error,
                "charge task failed; the reconciler resumes the attempt"
            );
            None
        }
        Err(_) => None,
    }
}

/// 202 with the account's top-up in progress, for a charge still running at the deadline.
pub async fn still_charging(state: &AppState, account_id: &str) -> ApiResult<Response> {
    match state.db.open_attempt_of(account_id).await? {
        Some(open) => Ok((StatusCode::ACCEPTED, Json(TopupView::from(open))).into_response()),
        None => Err(ApiError::Unavailable(
            "the payment provider is slow to answer; the top-up goes on, see GET /v1/accounts/{id}/topups".into(),
        )),
    }
}

/// 201 when paid, 202 while waiting, 402 `payment_failed` when declined.
pub fn purchase_answer(attempt: Attempt) -> ApiResult<Response> {
    let status = match attempt.state {
        AttemptState::Succeeded => StatusCode::CREATED,
        AttemptState::Failed | AttemptState::Canceled => {
            let decline_code = attempt
                .decline_code
                .clone()
                .unwrap_or_else(|| "card_declined".into());
            let message = attempt
                .failure_message
                .clone()
                .unwrap_or_else(|| crate::notices::templates::decline_reason(&decline_code));
            return Err(ApiError::PaymentFailed {
                decline_code,
                message,
                topup: Some(Box::new(TopupView::from(attempt))),
            });
        }
        _ => StatusCode::ACCEPTED,
    };
    Ok((status, Json(TopupView::from(attempt))).into_response())
}

/// Purchases and automatic top-ups, newest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/topups", operation_id = "list_topups", tag = "top-ups", params(AccountId, PageParams),
    responses(
        (status = 200, body = PageView<TopupView>),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<TopupView>>> {
    let page = params.page_request()?;
    visible_account(&state, &caller, &id).await?;
    let topups = state.db.topups(&id, page).await?;
    Ok(Json(PageView::try_from_page(topups, |a| {
        Ok::<_, ApiError>(TopupView::from(a))
    })?))
}

/// One top-up, brought up to date with the provider first (the poll that settles a
/// payment whose webhook has not arrived).
#[utoipa::path(get, path = "/v1/accounts/{id}/topups/{topup}", operation_id = "get_topup", tag = "top-ups", params(TopupPath),
    responses(
        (status = 200, body = TopupView),
        (status = 404, description = "No such top-up on this account, or not this key's", body = ErrorBody),
    ))]
async fn one(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(TopupPath { id, topup }): ApiPath<TopupPath>,
) -> ApiResult<Json<TopupView>> {
    caller.require_account(&id, &[Role::Support, Role::Admin])?;
    let attempt = state
        .db
        .attempt(&topup)
        .await?
        .filter(|a| a.account_id == id)
        .ok_or(ApiError::NotFound("top-up"))?;
    let attempt = if attempt.state.is_terminal() {
        attempt
    } else {
        state.topups.refresh(attempt).await?
    };
    Ok(Json(attempt.into()))
}

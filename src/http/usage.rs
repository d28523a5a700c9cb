//! Metering: price and debit usage, refund it. For the product's API servers.

use axum::{
    Json,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath},
    state::AppState,
    views::{LedgerEntryView, UsageView},
};
use crate::{
    db::usage::{DebitOutcome, RefundOutcome},
    domain::{api_key::Role, pricing::PriceRequest, validation::FieldErrors},
};

/// Longest accepted `request_id` and `account_id`.
const MAX_ID_LEN: usize = 200;
/// Set on answers that repeat an earlier result instead of acting again.
const REPLAYED: (&str, &str) = ("idempotent-replayed", "true");

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(record_usage))
        .routes(routes!(refund_usage))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UsageBody {
    #[schema(pattern = "^[!-~]{1,200}$")]
    account_id: String,
    /// The caller's id for this unit of work; a repeat is answered, not debited. 1 to 200
    /// visible ASCII characters.
    #[schema(pattern = "^[!-~]{1,200}$")]
    request_id: String,
    usage: PriceRequest,
}

/// Prices the usage and debits it in one transaction; 402 with `required` and `available`
/// when the balance is short, in which case nothing changes. Service keys only.
#[utoipa::path(post, path = "/v1/usage", tag = "usage", request_body = UsageBody,
    responses(
        (status = 201, description = "Debited", body = UsageView),
        (status = 200, description = "This request_id was already debited for the same usage; the earlier record, nothing debited",
            body = UsageView, headers(("idempotent-replayed" = String, description = "`true`"))),
        (status = 402, description = "`insufficient_credits`: nothing debited", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 409, description = "This request_id was used for different usage on this account", body = ErrorBody),
    ))]
async fn record_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<UsageBody>,
) -> ApiResult<Response> {
    caller.require(&[Role::Service])?;
    let mut errors = FieldErrors::new();
    errors.require_id("account_id", &body.account_id, MAX_ID_LEN);
    errors.require_id("request_id", &body.request_id, MAX_ID_LEN);
    let quote = match state.catalogue.quote(&body.usage) {
        Ok(quote) => Some(quote),
        Err(problems) => {
            errors.nest("usage", problems);
            None
        }
    };
    let quote = match quote {
        Some(quote) if errors.is_empty() => quote,
        _ => return Err(ApiError::invalid(errors)),
    };
    let fingerprint = body.usage.fingerprint();
    let outcome = state
        .metering
        .debit(&body.account_id, &body.request_id, &body.usage, &quote)
        .await?;
    match outcome {
        DebitOutcome::Debited(record) => {
            Ok((StatusCode::CREATED, Json(UsageView::new(record)?)).into_response())
        }
        DebitOutcome::Existing(record) if record.fingerprint == fingerprint => {
            Ok(([REPLAYED], Json(UsageView::new(record)?)).into_response())
        }
        DebitOutcome::Existing(_) => Err(ApiError::Conflict(format!(
            "request_id '{}' was already used for a different request on this account",
            body.request_id
        ))),
        DebitOutcome::Insufficient { available } => {
            let account = state
                .db
                .account(&body.account_id)
                .await?
                .ok_or(ApiError::NotFound("account"))?;
            Err(ApiError::InsufficientCredits {
                required: quote.total,
                available,
                auto_topup: super::views::summary(&state, &account).await?,
            })
        }
        DebitOutcome::AccountNotFound => Err(ApiError::NotFound("account")),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundView {
    usage: UsageView,
    refund: LedgerEntryView,
}

/// Restores the credits of usage that failed on the platform side, once.
#[utoipa::path(post, path = "/v1/usage/{id}/refund", tag = "usage",
    params(("id" = String, Path, description = "The usage record's id")),
    responses(
        (status = 200, description = "Refunded now, or already refunded (`idempotent-replayed: true`)", body = RefundView,
            headers(("idempotent-replayed" = Option<String>, description = "`true` when it was refunded before"))),
        (status = 404, description = "No such usage record", body = ErrorBody),
    ))]
async fn refund_usage(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    caller.require(&[Role::Service, Role::Support, Role::Admin])?;
    let view = |record, entry| -> ApiResult<Json<RefundView>> {
        Ok(Json(RefundView {
            usage: UsageView::new(record)?,
            refund: LedgerEntryView::from(entry),
        }))
    };
    // Staff refunds are staff actions and go to the audit log; the platform's are not.
    let audited_as = (caller.role != Role::Service).then(|| caller.actor());
    let outcome = state.metering.refund(&id, audited_as.as_ref()).await?;
    match outcome {
        RefundOutcome::Refunded(record, entry) => Ok(view(record, entry)?.into_response()),
        RefundOutcome::AlreadyRefunded(record, entry) => {
            Ok(([REPLAYED], view(record, entry)?).into_response())
        }
        RefundOutcome::NotFound => Err(ApiError::NotFound("usage")),
    }
}

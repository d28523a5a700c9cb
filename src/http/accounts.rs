//! An account's balance and history, for its customer and for staff.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    access::{AccountId, visible_account},
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
    state::AppState,
    views::{AutoTopupSummary, LedgerEntryView, UsageView},
};
use crate::{
    clock::rfc3339,
    domain::{account::Account, credits::Millicredits},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(account))
        .routes(routes!(ledger))
        .routes(routes!(usage_history))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    id: String,
    email: String,
    name: String,
    balance: Millicredits,
    /// The balance is below the configured low-balance line (or the auto top-up
    /// threshold, when auto top-up is on).
    low_balance_warning: bool,
    created_at: String,
    /// The auto top-up state in a few words; details at `/auto-topup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_topup: Option<AutoTopupSummary>,
}

impl AccountView {
    pub fn new(account: Account, low_balance: Millicredits) -> Self {
        let line = match account.auto_topup.threshold {
            Some(threshold) if account.auto_topup.enabled => threshold.max(low_balance),
            _ => low_balance,
        };
        Self {
            low_balance_warning: account.balance < line,
            auto_topup: None,
            balance: account.balance,
            id: account.id,
            email: account.email,
            name: account.name,
            created_at: rfc3339(account.created_at),
        }
    }
}

/// The balance, with the auto top-up state in a few words.
#[utoipa::path(get, path = "/v1/accounts/{id}", operation_id = "get_account", tag = "accounts", params(AccountId),
    responses(
        (status = 200, body = AccountView),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn account(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
) -> ApiResult<Json<AccountView>> {
    let account = visible_account(&state, &caller, &id).await?;
    let summary = super::views::summary(&state, &account).await?;
    let mut view = AccountView::new(account, state.config.low_balance_warning());
    view.auto_topup = Some(summary);
    Ok(Json(view))
}

/// Every movement of the balance, newest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/ledger", operation_id = "list_ledger", tag = "accounts", params(AccountId, PageParams),
    responses(
        (status = 200, body = PageView<LedgerEntryView>),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<LedgerEntryView>>> {
    let page = params.page_request()?;
    visible_account(&state, &caller, &id).await?;
    let entries = state.db.ledger(&id, page).await?;
    Ok(Json(PageView::try_from_page(entries, |e| {
        Ok::<_, ApiError>(LedgerEntryView::from(e))
    })?))
}

/// Metered usage, newest first.
#[utoipa::path(get, path = "/v1/accounts/{id}/usage", operation_id = "list_usage", tag = "accounts", params(AccountId, PageParams),
    responses(
        (status = 200, body = PageView<UsageView>),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn usage_history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<UsageView>>> {
    let page = params.page_request()?;
    visible_account(&state, &caller, &id).await?;
    let records = state.db.usage_history(&id, page).await?;
    Ok(Json(PageView::try_from_page(records, UsageView::new)?))
}

//! An account's balance and history, for its customer and for staff.

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    auth::{Caller, STAFF},
    auto_topup::AutoTopupSummary,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
    usage::UsageView,
};
use crate::{
    app::AppState,
    clock::rfc3339,
    db::{accounts::Account, ledger::LedgerEntry},
    domain::credits::Millicredits,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(account))
        .routes(routes!(ledger))
        .routes(routes!(usage_history))
}

/// The `{id}` of an account's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountId {
    /// The account's id.
    pub id: String,
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
        let line = match account.auto_topup_threshold {
            Some(threshold) if account.auto_topup_enabled => threshold.max(low_balance.0),
            _ => low_balance.0,
        };
        Self {
            low_balance_warning: account.balance < line,
            auto_topup: None,
            balance: Millicredits(account.balance),
            id: account.id,
            email: account.email,
            name: account.name,
            created_at: rfc3339(account.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEntryView {
    id: i64,
    account_id: String,
    /// What moved the balance: `usage`, `refund`, `auto_topup`, `manual_topup` or
    /// `adjustment`.
    kind: String,
    /// What it belongs to (a top-up, usage record or adjustment id); unique per kind.
    reference: String,
    amount: Millicredits,
    balance_after: Millicredits,
    description: String,
    created_at: String,
}

impl From<LedgerEntry> for LedgerEntryView {
    fn from(entry: LedgerEntry) -> Self {
        Self {
            id: entry.id,
            account_id: entry.account_id,
            kind: entry.kind,
            reference: entry.reference,
            amount: Millicredits(entry.amount),
            balance_after: Millicredits(entry.balance_after),
            description: entry.description,
            created_at: rfc3339(entry.created_at),
        }
    }
}

/// The account, if this caller may see it: its customer, or staff.
pub(super) async fn visible_account(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Account> {
    caller.require_account(id, STAFF)?;
    state
        .db
        .account(id)
        .await?
        .ok_or(ApiError::NotFound("account"))
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
    let summary = super::auto_topup::summary(&state, &account).await?;
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

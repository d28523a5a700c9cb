//! An account's balance and history, for its customer and for staff.

use axum::{Json, Router, extract::State, routing::get};
use serde::Serialize;

use super::{
    auth::{Caller, STAFF},
    error::{ApiError, ApiResult},
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

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/accounts/{id}", get(account))
        .route("/v1/accounts/{id}/ledger", get(ledger))
        .route("/v1/accounts/{id}/usage", get(usage_history))
}

#[derive(Debug, Serialize)]
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
    auto_topup: Option<serde_json::Value>,
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

#[derive(Debug, Serialize)]
pub struct LedgerEntryView {
    id: i64,
    account_id: String,
    kind: String,
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

async fn account(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AccountView>> {
    let account = visible_account(&state, &caller, &id).await?;
    let summary = super::auto_topup::summary(&state, &account).await?;
    let mut view = AccountView::new(account, state.config.low_balance_warning());
    view.auto_topup = Some(summary);
    Ok(Json(view))
}

async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<LedgerEntryView>>> {
    let page = params.page_request()?;
    visible_account(&state, &caller, &id).await?;
    let entries = state.db.ledger(&id, page).await?;
    Ok(Json(PageView::try_from_page(entries, |e| {
        Ok::<_, ApiError>(LedgerEntryView::from(e))
    })?))
}

async fn usage_history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> ApiResult<Json<PageView<UsageView>>> {
    let page = params.page_request()?;
    visible_account(&state, &caller, &id).await?;
    let records = state.db.usage_history(&id, page).await?;
    Ok(Json(PageView::try_from_page(records, UsageView::new)?))
}

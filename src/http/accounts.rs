//! An account's balance and history, for its customer and for staff.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    access::{AccountId, visible_account},
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
    state::AppState,
    views::{AutoTopupSummary, LedgerEntryView, UsageView},
};
use crate::{
    clock::rfc3339,
    domain::{
        account::Account,
        api_key::Role,
        credits::Millicredits,
        validation::{FieldErrors, is_plain_email},
    },
};

/// The longest account name accepted.
const MAX_NAME_LEN: usize = 200;

/// Adds an error for a bad account email or name (trimmed), each if given.
pub(super) fn check_details(errors: &mut FieldErrors, email: Option<&str>, name: Option<&str>) {
    if email.is_some_and(|email| !is_plain_email(email)) {
        errors.add(
            "email",
            "must be a plain email address such as ops@example.com, without a name or brackets",
        );
    }
    if let Some(name) = name {
        errors.require_text("name", name, MAX_NAME_LEN);
    }
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(account, update_details))
        .routes(routes!(ledger))
        .routes(routes!(usage_history))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AccountView {
    id: String,
    email: String,
    name: String,
    /// Your own id of the account, if you gave one.
    external_id: Option<String>,
    metadata: BTreeMap<String, String>,
    balance: Millicredits,
    /// The balance is below the configured low-balance line (or the auto top-up
    /// threshold, when auto top-up is on).
    low_balance_warning: bool,
    created_at: String,
    /// When the account was closed (charged no more), if it was.
    closed_at: Option<String>,
    /// Why it was closed.
    closed_reason: Option<String>,
    /// The auto top-up state in a few words; details at `/auto-topup`.
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_topup: Option<AutoTopupSummary>,
}

impl AccountView {
    pub fn new(account: Account, low_balance: Millicredits) -> Self {
        let line = account.low_balance_line(low_balance);
        Self {
            low_balance_warning: account.balance < line,
            auto_topup: None,
            balance: account.balance,
            id: account.id,
            email: account.email,
            name: account.name,
            external_id: account.external_id,
            metadata: account.metadata,
            created_at: rfc3339(account.created_at),
            closed_at: account.closed.as_ref().map(|c| rfc3339(c.at)),
            closed_reason: account.closed.map(|c| c.reason),
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

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DetailsBody {
    email: Option<String>,
    name: Option<String>,
}

/// Changes the account's email or name (receipts and notices go to the new address); the
/// payment provider's customer follows. The account's customer, support and admin keys.
#[utoipa::path(patch, path = "/v1/accounts/{id}", operation_id = "update_account", tag = "accounts", params(AccountId), request_body = DetailsBody,
    responses(
        (status = 200, body = AccountView),
        (status = 400, description = "A bad field, named, or none given", body = ErrorBody),
        (status = 404, description = "No such account, or not this key's", body = ErrorBody),
    ))]
async fn update_details(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiJson(body): ApiJson<DetailsBody>,
) -> ApiResult<Json<AccountView>> {
    caller.require_account(&id, &[Role::Support, Role::Admin])?;
    let (email, name) = (
        body.email.as_deref().map(str::trim),
        body.name.as_deref().map(str::trim),
    );
    let mut errors = FieldErrors::new();
    if email.is_none() && name.is_none() {
        errors.add("email", "give an email, a name, or both");
    }
    check_details(&mut errors, email, name);
    errors.into_result(()).map_err(ApiError::invalid)?;
    let account = state
        .topups
        .update_account_details(&id, email, name, &caller.actor())
        .await?
        .ok_or(ApiError::NotFound("account"))?;
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

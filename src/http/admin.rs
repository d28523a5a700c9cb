//! Staff routes: accounts and keys (admin), balance adjustments and the audit log
//! (support and admin). Every change is audited in its own transaction.

use std::collections::BTreeMap;

use axum::{Json, extract::State, http::StatusCode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    access::AccountId,
    accounts::AccountView,
    auth::{Caller, STAFF},
    error::{ApiError, ApiResult, ErrorBody},
    extract::{ApiJson, ApiPath, ApiQuery},
    pagination::{PageParams, PageView},
    state::AppState,
    views::LedgerEntryView,
};
use crate::{
    clock::rfc3339,
    db::{
        accounts::{AccountFilter, NewAccount, Opened},
        audit::{Actor, AuditEntry},
        keys::StoredKey,
        ledger::{LedgerEntry, PostRefusal},
    },
    domain::{
        account::Account,
        api_key::Role,
        auto_topup::PauseReason,
        credits::Millicredits,
        validation::{FieldErrors, is_hidden_or_control, is_text},
    },
};

const MAX_LABEL_LEN: usize = 100;
const MAX_EXTERNAL_ID_LEN: usize = 255;
const MAX_METADATA_KEYS: usize = 50;
const MAX_METADATA_KEY_LEN: usize = 40;
const MAX_METADATA_VALUE_LEN: usize = 500;
const MAX_REASON_LEN: usize = 500;
/// The largest single adjustment, in credits, either way.
const MAX_ADJUSTMENT_CREDITS: i64 = 10_000_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account, find_accounts))
        .routes(routes!(adjust_balance))
        .routes(routes!(close_account))
        .routes(routes!(issue_key))
        .routes(routes!(revoke_key))
        .routes(routes!(audit_log))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccountBody {
    email: String,
    name: String,
    /// Your own id of the account, unique: opening it again with the same fields answers
    /// the account already open. 1 to 255 visible ASCII characters.
    #[serde(default)]
    external_id: Option<String>,
    /// Up to 50 keys (1 to 40 characters) with text values (at most 500 characters).
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// Opens an account with a zero balance. With an `external_id` already open, answers
/// that account (200) when the other fields are the same, or 409 when they differ. Admin
/// keys only.
#[utoipa::path(post, path = "/v1/admin/accounts", tag = "admin", request_body = NewAccountBody,
    responses(
        (status = 201, description = "Opened", body = AccountView),
        (status = 200, description = "Already open with this `external_id` and the same fields", body = AccountView),
        (status = 409, description = "Open with this `external_id` but other fields; `message` names them", body = ErrorBody),
    ))]
async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewAccountBody>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    caller.require(&[Role::Admin])?;
    let (email, name) = (body.email.trim(), body.name.trim());
    let external_id = body.external_id.as_deref().map(str::trim);
    let mut errors = FieldErrors::new();
    super::accounts::check_details(&mut errors, Some(email), Some(name));
    if let Some(external_id) = external_id {
        errors.require_id("external_id", external_id, MAX_EXTERNAL_ID_LEN);
    }
    check_metadata(&mut errors, &body.metadata);
    errors.into_result(()).map_err(ApiError::invalid)?;
    let new = NewAccount {
        email,
        name,
        external_id,
        metadata: &body.metadata,
    };
    let low = state.config.low_balance_warning();
    match state.accounts.open(&new, &caller.actor()).await? {
        Opened::Created(account) => Ok((StatusCode::CREATED, Json(AccountView::new(account, low)))),
        Opened::Existing(account) => {
            let differing: Vec<&str> = [
                ("email", account.email != email),
                ("name", account.name != name),
                ("metadata", account.metadata != body.metadata),
            ]
            .into_iter()
            .filter_map(|(field, differs)| differs.then_some(field))
            .collect();
            if differing.is_empty() {
                Ok((StatusCode::OK, Json(AccountView::new(account, low))))
            } else {
                Err(ApiError::Conflict(format!(
                    "account {} is open with this external_id and another {}",
                    account.id,
                    differing.join(", ")
                )))
            }
        }
    }
}

/// Adds an error for metadata past its limits.
fn check_metadata(errors: &mut FieldErrors, metadata: &BTreeMap<String, String>) {
    if metadata.len() > MAX_METADATA_KEYS {
        errors.add(
            "metadata",
            format!("may have at most {MAX_METADATA_KEYS} keys"),
        );
    }
    for (key, value) in metadata {
        if !is_text(key, MAX_METADATA_KEY_LEN) {
            errors.add(
                "metadata",
                format!("keys must be 1 to {MAX_METADATA_KEY_LEN} characters of text"),
            );
        } else if value.chars().count() > MAX_METADATA_VALUE_LEN
            || value.chars().any(is_hidden_or_control)
        {
            errors.add(
                &format!("metadata.{key}"),
                format!("must be at most {MAX_METADATA_VALUE_LEN} characters of text"),
            );
        }
    }
}

/// Read as text so that a bad value gets this API's own error naming the field.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccountSearch {
    /// The whole email address, in any case.
    email: Option<String>,
    /// The start of the email address, in any case.
    email_prefix: Option<String>,
    external_id: Option<String>,
    /// `active`, `in_progress`, `paused` or `off`, as each account's `auto_topup.state`.
    #[param(pattern = "^(active|in_progress|paused|off)$")]
    auto_topup_state: Option<String>,
    /// `payment_failed`, `authentication_required`, `disputed` or `refunded`.
    #[param(pattern = "^(payment_failed|authentication_required|disputed|refunded)$")]
    paused_reason: Option<String>,
    /// Credits, at most 3 decimals: only accounts whose balance is below this.
    #[param(pattern = "^-?[0-9]{1,12}(\\.[0-9]{1,3})?$")]
    balance_below: Option<String>,
    /// How many to return, 1 to 200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    cursor: Option<String>,
}

/// The account directory, newest first: every filter given must match. Support and admin.
#[utoipa::path(get, path = "/v1/admin/accounts", tag = "admin", params(AccountSearch),
    responses(
        (status = 200, body = PageView<AccountView>),
        (status = 400, description = "A filter is malformed; `fields` names it", body = ErrorBody),
    ))]
async fn find_accounts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(search): ApiQuery<AccountSearch>,
) -> ApiResult<Json<PageView<AccountView>>> {
    caller.require(STAFF)?;
    let page = PageParams {
        limit: search.limit.clone(),
        cursor: search.cursor.clone(),
    }
    .page_request()?;
    let mut errors = FieldErrors::new();
    let state_filter = search.auto_topup_state.clone();
    if state_filter
        .as_deref()
        .is_some_and(|s| !["active", "in_progress", "paused", "off"].contains(&s))
    {
        errors.add(
            "auto_topup_state",
            "must be active, in_progress, paused or off",
        );
    }
    if search
        .paused_reason
        .as_deref()
        .is_some_and(|r| PauseReason::parse(r).is_none())
    {
        errors.add(
            "paused_reason",
            "must be payment_failed, authentication_required, disputed or refunded",
        );
    }
    let balance_below = match search.balance_below.as_deref() {
        None => None,
        Some(text) => match text
            .parse()
            .ok()
            .and_then(|d| Millicredits::from_credits(d).ok())
        {
            Some(credits) => Some(credits),
            None => {
                errors.add(
                    "balance_below",
                    "must be a number of credits with at most 3 decimals",
                );
                None
            }
        },
    };
    errors.into_result(()).map_err(ApiError::malformed_fields)?;
    let filter = AccountFilter {
        email: search.email,
        email_prefix: search.email_prefix,
        external_id: search.external_id,
        state: state_filter,
        paused_reason: search.paused_reason,
        balance_below,
    };
    let found = state.db.find_accounts(&filter, page).await?;
    let low = state.config.low_balance_warning();
    Ok(Json(PageView::try_from_page(found, |account| {
        Ok::<_, ApiError>(AccountView::new(account, low))
    })?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKeyBody {
    role: Role,
    /// Required for, and only for, customer keys.
    account_id: Option<String>,
    #[serde(default)]
    label: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct KeyView {
    id: String,
    #[schema(value_type = Role)]
    role: String,
    account_id: Option<String>,
    label: String,
    created_at: String,
    revoked_at: Option<String>,
}

impl From<StoredKey> for KeyView {
    fn from(key: StoredKey) -> Self {
        Self {
            id: key.id,
            role: key.role,
            account_id: key.account_id,
            label: key.label,
            created_at: rfc3339(key.created_at),
            revoked_at: key.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedKeyView {
    #[serde(flatten)]
    key: KeyView,
    /// The key itself. It is shown this once and stored nowhere.
    token: String,
}

/// Issues an API key; the answer is the only time the key is shown. Admin keys only.
#[utoipa::path(post, path = "/v1/admin/api-keys", tag = "admin", request_body = NewKeyBody,
    responses(
        (status = 201, body = IssuedKeyView),
        (status = 404, description = "No such account", body = ErrorBody),
    ))]
async fn issue_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewKeyBody>,
) -> ApiResult<(StatusCode, Json<IssuedKeyView>)> {
    caller.require(&[Role::Admin])?;
    let mut errors = FieldErrors::new();
    match (body.role, &body.account_id) {
        (Role::Customer, None) => errors.add("account_id", "required for a customer key"),
        (Role::Service | Role::Support | Role::Admin, Some(_)) => {
            errors.add("account_id", "only customer keys are bound to an account");
        }
        _ => {}
    }
    if !body.label.is_empty() {
        errors.require_text("label", &body.label, MAX_LABEL_LEN);
    }
    errors.into_result(()).map_err(ApiError::invalid)?;
    let issued = state
        .accounts
        .issue_key(
            body.role,
            body.account_id.as_deref(),
            &body.label,
            &caller.actor(),
        )
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKeyView {
            key: issued.key.into(),
            token: issued.token,
        }),
    ))
}

/// Revokes a key, effective at once. Admin keys only.
#[utoipa::path(delete, path = "/v1/admin/api-keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key's id (`tpk_<id>_...`)")),
    responses(
        (status = 200, body = KeyView),
        (status = 404, description = "No such key", body = ErrorBody),
    ))]
async fn revoke_key(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<KeyView>> {
    caller.require(&[Role::Admin])?;
    let key = state
        .accounts
        .revoke_key(&id, &caller.actor())
        .await?
        .ok_or(ApiError::NotFound("api key"))?;
    Ok(Json(key.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// Signed: positive grants credits, negative removes them.
    #[serde(deserialize_with = "crate::domain::number::decimal")]
    #[schema(value_type = f64)]
    credits: Decimal,
    reason: String,
}

/// Grants or removes credits, with a reason; audited. Support and admin keys.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/adjustments", tag = "admin",
    params(AccountId), request_body = AdjustmentBody,
    responses(
        (status = 201, description = "The ledger entry", body = LedgerEntryView),
        (status = 404, description = "No such account", body = ErrorBody),
    ))]
async fn adjust_balance(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiJson(body): ApiJson<AdjustmentBody>,
) -> ApiResult<(StatusCode, Json<LedgerEntryView>)> {
    caller.require(STAFF)?;
    adjust_with_reason(&state, &id, body.credits, &body.reason, &caller.actor())
        .await
        .map(|entry| (StatusCode::CREATED, Json(entry.into())))
}

/// Grants (`credits` above zero) or removes credits with `reason`, both checked with the
/// field named; audited as `actor`. Shared by the API and the console.
pub async fn adjust_with_reason(
    state: &AppState,
    id: &str,
    credits: Decimal,
    reason: &str,
    actor: &Actor,
) -> ApiResult<LedgerEntry> {
    let mut errors = FieldErrors::new();
    let amount = Millicredits::from_credits(credits).ok().filter(|m| {
        m.0 != 0 && m.0.unsigned_abs() <= (MAX_ADJUSTMENT_CREDITS * 1000).unsigned_abs()
    });
    if amount.is_none() {
        errors.add(
            "credits",
            format!(
                "must be a non-zero amount of at most {MAX_ADJUSTMENT_CREDITS} credits either way, with at most 3 decimals"
            ),
        );
    }
    let reason = reason.trim();
    errors.require_text("reason", reason, MAX_REASON_LEN);
    let (Some(amount), true) = (amount, errors.is_empty()) else {
        return Err(ApiError::invalid(errors));
    };
    match state.accounts.adjust(id, amount, reason, actor).await? {
        Ok(entry) => Ok(entry),
        Err(PostRefusal::AccountNotFound) => Err(ApiError::NotFound("account")),
        Err(PostRefusal::Insufficient { available }) => {
            Err(ApiError::invalid(FieldErrors::single(
                "credits",
                format!("would take the balance below zero: {available} credits available"),
            )))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBody {
    /// Why the account is closed; kept with it and in the audit log.
    reason: String,
}

/// Closes the account: no charge of any kind from then on (automatic, bought, retried or
/// resumed), auto top-up off and any pause ended, its billing page sessions over. The
/// balance and every record stay, and usage may still spend the credits already paid
/// for. Closing a closed account answers it as it is. Support and admin keys.
#[utoipa::path(post, path = "/v1/admin/accounts/{id}/close", operation_id = "close_account", tag = "admin",
    params(AccountId), request_body = CloseBody,
    responses(
        (status = 200, description = "The closed account", body = AccountView),
        (status = 404, description = "No such account", body = ErrorBody),
    ))]
async fn close_account(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(AccountId { id }): ApiPath<AccountId>,
    ApiJson(body): ApiJson<CloseBody>,
) -> ApiResult<Json<AccountView>> {
    caller.require(STAFF)?;
    let account = close_with_reason(&state, &id, &body.reason, &caller.actor()).await?;
    Ok(Json(AccountView::new(
        account,
        state.config.low_balance_warning(),
    )))
}

/// Closes the account with `reason` (named if missing); audited as `actor`. Shared by the
/// API and the console.
pub async fn close_with_reason(
    state: &AppState,
    id: &str,
    reason: &str,
    actor: &Actor,
) -> ApiResult<Account> {
    let reason = reason.trim();
    let mut errors = FieldErrors::new();
    errors.require_text("reason", reason, MAX_REASON_LEN);
    errors.into_result(()).map_err(ApiError::invalid)?;
    state
        .accounts
        .close(id, reason, actor)
        .await?
        .ok_or(ApiError::NotFound("account"))
}

#[derive(Debug, Deserialize)]
struct AuditParams {
    account_id: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    id: i64,
    actor_key_id: String,
    /// The acting API key's label, when an API key acted.
    actor_label: Option<String>,
    actor_role: String,
    action: String,
    account_id: Option<String>,
    /// What changed, by action.
    #[schema(value_type = Object)]
    detail: Value,
    created_at: String,
}

impl TryFrom<AuditEntry> for AuditView {
    type Error = ApiError;

    fn try_from(entry: AuditEntry) -> Result<Self, ApiError> {
        let detail = serde_json::from_str(&entry.detail).map_err(|e| {
            crate::db::DbError::Corrupt(format!(
                "audit entry {} has unreadable detail: {e}",
                entry.id
            ))
        })?;
        Ok(Self {
            id: entry.id,
            actor_key_id: entry.actor_key_id,
            actor_label: entry.actor_label,
            actor_role: entry.actor_role,
            action: entry.action,
            account_id: entry.account_id,
            detail,
            created_at: rfc3339(entry.created_at),
        })
    }
}

/// Every staff action and settings change, newest first. Support and admin keys.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin",
    params(("account_id" = Option<String>, Query, description = "Only this account's entries"), PageParams),
    responses((status = 200, body = PageView<AuditView>)))]
async fn audit_log(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> ApiResult<Json<PageView<AuditView>>> {
    caller.require(STAFF)?;
    let page = params.page.page_request()?;
    let entries = state
        .db
        .audit_log(params.account_id.as_deref(), page)
        .await?;
    Ok(Json(PageView::try_from_page(entries, AuditView::try_from)?))
}

//! Staff routes: accounts and keys (admin), balance adjustments and the audit log
//! (support and admin). Every change is audited in its own transaction.

use axum::{Json, extract::State, http::StatusCode};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
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
    db::{audit::AuditEntry, keys::StoredKey, ledger::PostRefusal},
    domain::{api_key::Role, credits::Millicredits, validation::FieldErrors},
};

const MAX_LABEL_LEN: usize = 100;
const MAX_REASON_LEN: usize = 500;
/// The largest single adjustment, in credits, either way.
const MAX_ADJUSTMENT_CREDITS: i64 = 10_000_000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_account))
        .routes(routes!(adjust_balance))
        .routes(routes!(issue_key))
        .routes(routes!(revoke_key))
        .routes(routes!(audit_log))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccountBody {
    email: String,
    name: String,
}

/// Opens an account with a zero balance. Admin keys only.
#[utoipa::path(post, path = "/v1/admin/accounts", tag = "admin", request_body = NewAccountBody,
    responses((status = 201, body = AccountView)))]
async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewAccountBody>,
) -> ApiResult<(StatusCode, Json<AccountView>)> {
    caller.require(&[Role::Admin])?;
    let (email, name) = (body.email.trim(), body.name.trim());
    let mut errors = FieldErrors::new();
    super::accounts::check_details(&mut errors, Some(email), Some(name));
    errors.into_result(()).map_err(ApiError::invalid)?;
    let account = state.accounts.open(email, name, &caller.actor()).await?;
    Ok((
        StatusCode::CREATED,
        Json(AccountView::new(
            account,
            state.config.low_balance_warning(),
        )),
    ))
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
    let mut errors = FieldErrors::new();
    let amount = Millicredits::from_credits(body.credits).ok().filter(|m| {
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
    let reason = body.reason.trim();
    errors.require_text("reason", reason, MAX_REASON_LEN);
    let (Some(amount), true) = (amount, errors.is_empty()) else {
        return Err(ApiError::invalid(errors));
    };
    let posted = state
        .accounts
        .adjust(&id, amount, reason, &caller.actor())
        .await?;
    match posted {
        Ok(entry) => Ok((StatusCode::CREATED, Json(entry.into()))),
        Err(PostRefusal::AccountNotFound) => Err(ApiError::NotFound("account")),
        Err(PostRefusal::Insufficient { available }) => {
            Err(ApiError::invalid(FieldErrors::single(
                "credits",
                format!("would take the balance below zero: {available} credits available"),
            )))
        }
    }
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

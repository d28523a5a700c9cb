//! Which account a request is about, and whether its caller may see it.

use serde::Deserialize;
use utoipa::IntoParams;

use super::{
    auth::{Caller, STAFF},
    error::{ApiError, ApiResult},
    state::AppState,
};
use crate::domain::account::Account;

/// The `{id}` of an account's routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct AccountId {
    /// The account's id.
    pub id: String,
}

/// The account, if this caller may see it: its customer, or staff.
pub async fn visible_account(state: &AppState, caller: &Caller, id: &str) -> ApiResult<Account> {
    caller.require_account(id, STAFF)?;
    state
        .db
        .account(id)
        .await?
        .ok_or(ApiError::NotFound("account"))
}

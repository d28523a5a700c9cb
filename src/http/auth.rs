//! Who is calling: the API key in `Authorization: Bearer <key>`, checked on every request
//! (so a revoked key stops working at once), and what its role may reach.

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};

use super::error::ApiError;
use super::state::AppState;
use crate::{
    db::{DbError, audit::Actor, keys::StoredKey},
    domain::api_key::{self, Role},
};

/// The authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
    /// Set for customer keys: the one account they may reach.
    pub account_id: Option<String>,
}

/// Roles that may act on any account's data.
pub const STAFF: &[Role] = &[Role::Support, Role::Admin];

impl Caller {
    /// 403 unless the caller has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }

    /// A customer reaches only its own account (any other is 404, so account ids cannot be
    /// probed); other callers need one of `roles`.
    pub fn require_account(&self, account_id: &str, roles: &[Role]) -> Result<(), ApiError> {
        match (&self.role, &self.account_id) {
            (Role::Customer, Some(own)) if own == account_id => Ok(()),
            (Role::Customer, _) => Err(ApiError::NotFound("account")),
            _ => self.require(roles),
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            key_id: self.key_id.clone(),
            role: self.role.as_str().to_owned(),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let key = match token {
            Some(token) => verified_key(state, token).await?,
            None => Err(KeyRefused::MissingOrMalformed),
        }
        .map_err(unauthorized)?;
        let role = Role::parse(&key.role).ok_or_else(|| {
            crate::db::DbError::Corrupt(format!("api key {} has unknown role {}", key.id, key.role))
        })?;
        Ok(Self {
            key_id: key.id,
            role,
            account_id: key.account_id,
        })
    }
}

crate::metrics::label_values! {
    /// Why a key is refused.
    pub enum KeyRefused {
        MissingOrMalformed => "missing_or_malformed",
        UnknownKey => "unknown_key",
        WrongSecret => "wrong_secret",
        RevokedKey => "revoked_key",
    }
}

/// The live key `token` names, or why it is refused.
pub async fn verified_key(
    state: &AppState,
    token: &str,
) -> Result<Result<StoredKey, KeyRefused>, DbError> {
    let Some((key_id, secret)) = api_key::parse_token(token) else {
        return Ok(Err(KeyRefused::MissingOrMalformed));
    };
    let Some(key) = state.keys.read(&key_id).await? else {
        return Ok(Err(KeyRefused::UnknownKey));
    };
    Ok(if !api_key::secret_matches(&key.secret_hash, secret) {
        Err(KeyRefused::WrongSecret)
    } else if key.revoked_at.is_some() {
        Err(KeyRefused::RevokedKey)
    } else {
        Ok(key)
    })
}

fn unauthorized(why: KeyRefused) -> ApiError {
    tracing::warn!(reason = why.as_str(), "authentication failed");
    crate::metrics::auth_failure(why);
    ApiError::Unauthorized
}

//! API keys: stored as the hash of their secret, revocable.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError,
    audit::{Actor, AuditWrites},
    with_pool,
};
use crate::{
    clock::Millis,
    domain::api_key::{self, Role},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub id: String,
    pub secret_hash: String,
    pub role: String,
    pub account_id: Option<String>,
    pub label: String,
    pub created_at: Millis,
    pub revoked_at: Option<Millis>,
}

/// A key just created: the stored row and the token, which exists nowhere else.
#[derive(Debug)]
pub struct IssuedKey {
    pub key: StoredKey,
    pub token: String,
}

const COLUMNS: &str = "id, secret_hash, role, account_id, label, created_at, revoked_at";

impl Db {
    /// Issues a key; `None` when a customer key names an account that does not exist.
    pub async fn issue_api_key(
        &self,
        role: Role,
        account_id: Option<&str>,
        label: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<Option<IssuedKey>, DbError> {
        let generated = api_key::generate();
        let sql = format!(
            "INSERT INTO api_keys (id, secret_hash, role, account_id, label, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if let Some(account_id) = account_id {
                let exists: Option<i32> =
                    sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = $1")
                        .bind(account_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_none() {
                    return Ok(None);
                }
            }
            let key: StoredKey = sqlx::query_as(&sql)
                .bind(&generated.id)
                .bind(&generated.secret_hash)
                .bind(role.as_str())
                .bind(account_id)
                .bind(label)
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
            let detail = json!({ "key_id": key.id, "role": key.role, "label": label });
            tx.audit(actor, "api_key.create", account_id, detail, at)
                .await?;
            tx.commit().await?;
            Ok(Some(IssuedKey {
                key,
                token: generated.token,
            }))
        })
    }

    /// The keys of `ids` that exist, in one statement (see [`super::key_reads`]).
    pub async fn api_keys_named(&self, ids: &[&str]) -> Result<Vec<StoredKey>, DbError> {
        Ok(match self {
            Db::Sqlite(pool) => {
                let sql = format!(
                    "SELECT {COLUMNS} FROM api_keys WHERE id IN (SELECT value FROM json_each($1))"
                );
                let ids = json!(ids).to_string();
                sqlx::query_as(&sql).bind(ids).fetch_all(pool).await?
            }
            Db::Postgres(pool) => {
                let sql = format!("SELECT {COLUMNS} FROM api_keys WHERE id = ANY($1)");
                sqlx::query_as(&sql).bind(ids).fetch_all(pool).await?
            }
        })
    }

    /// Every key, revoked ones too, oldest first.
    pub async fn api_keys(&self) -> Result<Vec<StoredKey>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql).fetch_all(pool).await?
        }))
    }

    /// Revokes a key at once; revoking it again changes nothing. `None` if unknown.
    pub async fn revoke_api_key(
        &self,
        id: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<Option<StoredKey>, DbError> {
        let revoke = format!(
            "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
             RETURNING {COLUMNS}"
        );
        let current = format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let revoked: Option<StoredKey> = sqlx::query_as(&revoke)
                .bind(at)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(key) = revoked else {
                return Ok(sqlx::query_as(&current)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?);
            };
            let detail = json!({ "key_id": key.id, "role": key.role });
            tx.audit(
                actor,
                "api_key.revoke",
                key.account_id.as_deref(),
                detail,
                at,
            )
            .await?;
            tx.commit().await?;
            Ok(Some(key))
        })
    }
}

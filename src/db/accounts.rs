//! Customer accounts.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError,
    audit::{Actor, AuditWrites},
    new_id, with_pool,
};
use crate::clock::Millis;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub name: String,
    /// Millicredits.
    pub balance: i64,
    pub created_at: Millis,
}

const COLUMNS: &str = "id, email, name, balance, created_at";

impl Db {
    /// Creates an account with a zero balance and audits who created it.
    pub async fn create_account(
        &self,
        email: &str,
        name: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<Account, DbError> {
        let sql = format!(
            "INSERT INTO accounts (id, email, name, balance, created_at) \
             VALUES ($1, $2, $3, 0, $4) RETURNING {COLUMNS}"
        );
        let id = new_id("acct");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let account: Account = sqlx::query_as(&sql)
                .bind(&id)
                .bind(email)
                .bind(name)
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
            let detail = json!({ "email": email, "name": name });
            tx.audit(actor, "account.create", Some(&id), detail, at)
                .await?;
            tx.commit().await?;
            Ok(account)
        })
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        }))
    }
}

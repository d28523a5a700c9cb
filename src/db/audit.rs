//! The audit log: who did what to which account, written in the same transaction as the
//! action itself.

use serde_json::Value;

use super::{Db, DbError, Page, PageRequest, Paged, impl_for_connections, with_pool};
use crate::clock::Millis;

/// Who acted: an API key, the command line on the server itself, the payment provider
/// (through an event it sent), or the service's own schedule.
#[derive(Debug, Clone)]
pub struct Actor {
    pub key_id: String,
    pub role: String,
}

impl Actor {
    /// An operator at the server's command line.
    pub fn cli() -> Self {
        Self {
            key_id: "cli".to_owned(),
            role: "operator".to_owned(),
        }
    }

    /// The payment provider, as its event `event_id` reported.
    pub fn provider(event_id: &str) -> Self {
        Self {
            key_id: event_id.to_owned(),
            role: "provider".to_owned(),
        }
    }

    /// The auto top-up scan, acting on a rule with a date in it (a month's end).
    pub fn schedule() -> Self {
        Self {
            key_id: "scan".to_owned(),
            role: "schedule".to_owned(),
        }
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub actor_key_id: String,
    pub actor_role: String,
    pub action: String,
    pub account_id: Option<String>,
    /// JSON object with the facts of the action.
    pub detail: String,
    pub created_at: Millis,
    /// The label of the API key that acted, when an API key did (staff sign in to the
    /// console with theirs, so this names who).
    pub actor_label: Option<String>,
}

pub(crate) trait AuditWrites {
    async fn audit(
        &mut self,
        actor: &Actor,
        action: &str,
        account_id: Option<&str>,
        detail: Value,
        at: Millis,
    ) -> Result<(), sqlx::Error>;
}

impl Paged for AuditEntry {
    fn page_key(&self) -> i64 {
        self.id
    }
}

impl_for_connections!(AuditWrites {
    async fn audit(
        &mut self,
        actor: &Actor,
        action: &str,
        account_id: Option<&str>,
        detail: Value,
        at: Millis,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO audit_log (actor_key_id, actor_role, action, account_id, detail, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&actor.key_id)
        .bind(&actor.role)
        .bind(action)
        .bind(account_id)
        .bind(detail.to_string())
        .bind(at)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
});

impl Db {
    /// Records a staff action that has no transaction of its own to join.
    pub async fn record_audit(
        &self,
        actor: &Actor,
        action: &str,
        account_id: Option<&str>,
        detail: Value,
        at: Millis,
    ) -> Result<(), DbError> {
        with_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            conn.audit(actor, action, account_id, detail, at).await?;
        });
        Ok(())
    }

    /// Audit entries, newest first, optionally for one account.
    pub async fn audit_log(
        &self,
        account_id: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<AuditEntry>, DbError> {
        const SQL: &str = "SELECT a.id, a.actor_key_id, a.actor_role, a.action, a.account_id, \
             a.detail, a.created_at, k.label AS actor_label \
             FROM audit_log a LEFT JOIN api_keys k ON k.id = a.actor_key_id \
             WHERE ($1 IS NULL OR a.account_id = $1) AND a.id < $2 ORDER BY a.id DESC LIMIT $3";
        self.page(SQL, account_id, page).await
    }
}

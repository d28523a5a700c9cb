//! Customer accounts.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError,
    audit::{Actor, AuditWrites},
    impl_for_connections, new_id, with_pool,
};
use crate::{
    clock::Millis,
    domain::{
        auto_topup::{PauseChange, PauseReason, Standing},
        credits::Millicredits,
    },
};

/// Starting, changing and ending an account's pause, in the caller's transaction.
pub(crate) trait PauseWrites {
    async fn change_pause(
        &mut self,
        account_id: &str,
        change: &PauseChange,
        code: Option<&str>,
        at: Millis,
    ) -> Result<(), sqlx::Error>;
}

impl_for_connections!(PauseWrites {
    async fn change_pause(
        &mut self,
        account_id: &str,
        change: &PauseChange,
        code: Option<&str>,
        at: Millis,
    ) -> Result<(), sqlx::Error> {
        let query = match change {
            PauseChange::Keep => return Ok(()),
            // A pause keeps the time it began while its reason changes.
            PauseChange::Pause(reason) => sqlx::query(
                "UPDATE accounts SET auto_topup_paused_reason = $1, auto_topup_paused_code = $2, \
                 auto_topup_paused_at = COALESCE(auto_topup_paused_at, $3) WHERE id = $4",
            )
            .bind(reason.as_str())
            .bind(code)
            .bind(at)
            .bind(account_id),
            PauseChange::Resume => sqlx::query(
                "UPDATE accounts SET auto_topup_paused_reason = NULL, auto_topup_paused_code = NULL, \
                 auto_topup_paused_at = NULL WHERE id = $1",
            )
            .bind(account_id),
        };
        query.execute(&mut *self).await?;
        Ok(())
    }
});

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub name: String,
    /// Millicredits.
    pub balance: i64,
    /// The payment provider's customer, once the account has saved a card.
    pub provider_customer_id: Option<String>,
    pub created_at: Millis,
    pub auto_topup_enabled: bool,
    /// Millicredits.
    pub auto_topup_threshold: Option<i64>,
    /// Millicredits.
    pub auto_topup_target: Option<i64>,
    pub auto_topup_payment_method_id: Option<String>,
    pub auto_topup_enabled_by: Option<String>,
    pub auto_topup_enabled_at: Option<Millis>,
    pub auto_topup_paused_reason: Option<String>,
    pub auto_topup_paused_code: Option<String>,
    pub auto_topup_paused_at: Option<Millis>,
    pub auto_topup_window_ends_at: Millis,
}

impl Account {
    pub fn paused(&self) -> Option<PauseReason> {
        self.auto_topup_paused_reason
            .as_deref()
            .and_then(PauseReason::parse)
    }

    /// What the auto top-up rules look at, given whether an attempt is open.
    pub fn standing(&self, attempt_open: bool) -> Standing {
        Standing {
            enabled: self.auto_topup_enabled,
            paused: self.paused(),
            balance: Millicredits(self.balance),
            threshold: self.auto_topup_threshold.map(Millicredits),
            window_ends_at: self.auto_topup_window_ends_at,
            attempt_open,
        }
    }
}

pub(crate) const COLUMNS: &str = "id, email, name, balance, provider_customer_id, created_at, \
    auto_topup_enabled, auto_topup_threshold, auto_topup_target, auto_topup_payment_method_id, \
    auto_topup_enabled_by, auto_topup_enabled_at, auto_topup_paused_reason, auto_topup_paused_code, \
    auto_topup_paused_at, auto_topup_window_ends_at";

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

    /// Records the provider's customer for the account unless one is recorded already;
    /// returns the one that stands.
    pub async fn set_provider_customer(
        &self,
        id: &str,
        customer_id: &str,
    ) -> Result<String, DbError> {
        const SET: &str = "UPDATE accounts SET provider_customer_id = $1 \
                           WHERE id = $2 AND provider_customer_id IS NULL";
        const GET: &str = "SELECT provider_customer_id FROM accounts WHERE id = $1";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(SET)
                .bind(customer_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let stored: Option<String> =
                sqlx::query_scalar(GET).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            stored.ok_or_else(|| DbError::Corrupt(format!("account {id} has no provider customer")))
        })
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        }))
    }
}

//! What staff and customers change on an account: opening it, its API keys, balance
//! adjustments and the auto top-up settings. Each change is audited in its own
//! transaction, by the database write that makes it.

use std::sync::Arc;

use crate::{
    clock::Clock,
    config::EmailConfig,
    db::{
        Db, DbError,
        accounts::{NewAccount, Opened},
        audit::Actor,
        auto_topup::SettingsUpdate,
        keys::{IssuedKey, StoredKey},
        ledger::{LedgerEntry, PostRefusal},
    },
    domain::{account::Account, api_key::Role, credits::Millicredits},
};

#[derive(Clone)]
pub struct Accounts {
    db: Db,
    clock: Arc<dyn Clock>,
    /// Where the confirmation of a change of auto top-up is addressed from.
    email: Arc<EmailConfig>,
}

impl Accounts {
    pub fn new(db: Db, clock: Arc<dyn Clock>, email: EmailConfig) -> Self {
        Self {
            db,
            clock,
            email: Arc::new(email),
        }
    }

    /// Opens an account with a zero balance, or finds the one with its `external_id`.
    pub async fn open(&self, new: &NewAccount<'_>, actor: &Actor) -> Result<Opened, DbError> {
        self.db
            .create_account(new, actor, self.clock.now_ms())
            .await
    }

    /// A new key, its token shown once. `None` if `account_id` names no account.
    pub async fn issue_key(
        &self,
        role: Role,
        account_id: Option<&str>,
        label: &str,
        actor: &Actor,
    ) -> Result<Option<IssuedKey>, DbError> {
        self.db
            .issue_api_key(role, account_id, label, actor, self.clock.now_ms())
            .await
    }

    /// `None` if there is no such key.
    pub async fn revoke_key(&self, id: &str, actor: &Actor) -> Result<Option<StoredKey>, DbError> {
        self.db.revoke_api_key(id, actor, self.clock.now_ms()).await
    }

    /// Credits or debits the account by hand, with the reason; never below zero.
    pub async fn adjust(
        &self,
        account_id: &str,
        amount: Millicredits,
        reason: &str,
        actor: &Actor,
    ) -> Result<Result<LedgerEntry, PostRefusal>, DbError> {
        self.db
            .adjust_balance(account_id, amount, reason, actor, self.clock.now_ms())
            .await
    }

    /// Closes the account for `reason`: charged no more, its balance and history kept.
    pub async fn close(
        &self,
        account_id: &str,
        reason: &str,
        actor: &Actor,
    ) -> Result<Option<Account>, DbError> {
        self.db
            .close_account(account_id, reason, actor, self.clock.now_ms())
            .await
    }

    /// Saves the customer's (or an admin's) settings; only this turns auto top-up on,
    /// and it records who did. A change of what it charges is confirmed to the customer
    /// by email. `None` if the account does not exist.
    pub async fn set_auto_topup(
        &self,
        account_id: &str,
        update: &SettingsUpdate,
        actor: &Actor,
    ) -> Result<Option<Account>, DbError> {
        self.db
            .update_auto_topup(
                account_id,
                update,
                actor,
                (&self.email, self.clock.now_ms()),
            )
            .await
    }

    /// Turns auto top-up off and changes nothing else: all support may do to the
    /// settings, so no interleaving with the customer's writes leaves it on by support's
    /// hand. `None` if the account does not exist.
    pub async fn turn_off_auto_topup(
        &self,
        account_id: &str,
        actor: &Actor,
    ) -> Result<Option<Account>, DbError> {
        self.db
            .disable_auto_topup(account_id, actor, (&self.email, self.clock.now_ms()))
            .await
    }
}

//! The account's details at the provider: its customer carries the account's name and
//! email, and follows when they change. A change is written first (with a version), then
//! pushed; a push that fails is made again by the reconciler, so the provider catches up.

use super::Topups;
use crate::{
    db::{DbError, accounts::CustomerSync, audit::Actor},
    domain::account::Account,
    payments::client::CustomerDetails,
};

/// Customers brought up to date per reconciler round.
const SYNC_BATCH: u32 = 100;

impl Topups {
    /// Changes the account's email and name (each if given), then gives its provider
    /// customer the new details; if the provider cannot be reached now, the reconciler
    /// does it later. `None` if there is no such account.
    pub async fn update_account_details(
        &self,
        account_id: &str,
        email: Option<&str>,
        name: Option<&str>,
        actor: &Actor,
    ) -> Result<Option<Account>, DbError> {
        let updated = self
            .db
            .update_account_details(account_id, email, name, actor, self.clock.now_ms())
            .await?;
        if updated
            .as_ref()
            .is_some_and(|a| a.provider_customer_id.is_some())
        {
            self.sync_customers().await?;
        }
        Ok(updated)
    }

    /// Gives every provider customer behind on its account's details the latest ones.
    /// How many were brought up to date.
    pub async fn sync_customers(&self) -> Result<usize, DbError> {
        let mut synced = 0;
        for due in self.db.customers_to_sync(SYNC_BATCH).await? {
            if self.sync_customer(&due).await? {
                synced += 1;
            }
        }
        Ok(synced)
    }

    async fn sync_customer(&self, due: &CustomerSync) -> Result<bool, DbError> {
        let details = CustomerDetails {
            account_id: &due.account_id,
            name: &due.name,
            email: &due.email,
        };
        let key = format!(
            "{}:customer:{}:details:{}",
            self.config.payments.idempotency_prefix, due.account_id, due.version
        );
        match self
            .provider
            .update_customer(&due.customer_id, &details, &key)
            .await
        {
            Ok(_) => {
                self.db
                    .customer_synced(&due.account_id, due.version)
                    .await?;
                Ok(true)
            }
            Err(error) => {
                tracing::warn!(account_id = %due.account_id, %error, "could not update the provider's customer; will try again");
                Ok(false)
            }
        }
    }
}

//! Saving a customer's card: the account gets a provider customer on its first card, the
//! card is attached to it, and what the provider says of the card is stored.

use super::Topups;
use crate::{
    db::{
        DbError,
        audit::Actor,
        payment_methods::{Removal, SavedCard},
    },
    payments::client::{CustomerDetails, ProviderError},
};

#[derive(Debug, thiserror::Error)]
pub enum SaveCardError {
    #[error("account not found")]
    AccountNotFound,
    #[error("the payment provider has no usable card {0}")]
    UnknownCard(String),
    /// The provider refused the card (for example a card check failed).
    #[error("card refused: {code}")]
    Refused { code: String, message: String },
    /// The provider did not answer or refused our credentials; nothing was saved.
    #[error("the payment provider is unavailable: {0}")]
    ProviderUnavailable(ProviderError),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<ProviderError> for SaveCardError {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::Declined { code, message, .. } => Self::Refused { code, message },
            ProviderError::NotFound { message } | ProviderError::Rejected { message, .. } => {
                Self::UnknownCard(message)
            }
            ProviderError::Unknown { .. }
            | ProviderError::Unauthorized { .. }
            | ProviderError::IdempotencyMismatch { .. } => Self::ProviderUnavailable(error),
        }
    }
}

impl Topups {
    /// Attaches the provider's payment method `provider_id` to the account and saves it.
    /// Staff (`actor`) are audited.
    pub async fn save_card(
        &self,
        account_id: &str,
        provider_id: &str,
        make_default: bool,
        actor: Option<&Actor>,
    ) -> Result<SavedCard, SaveCardError> {
        let account = self
            .db
            .account(account_id)
            .await?
            .ok_or(SaveCardError::AccountNotFound)?;
        // A card saved by another account is not this account's to take.
        if self
            .db
            .card_owner(provider_id)
            .await?
            .is_some_and(|owner| owner != account_id)
        {
            return Err(SaveCardError::UnknownCard(format!(
                "{provider_id} is saved by another account"
            )));
        }
        let prefix = &self.config.payments.idempotency_prefix;
        let customer = match account.provider_customer_id {
            Some(customer) => customer,
            None => {
                let key = format!("{prefix}:customer:{account_id}");
                let details = CustomerDetails {
                    account_id,
                    name: &account.name,
                    email: &account.email,
                };
                let created = self.provider.create_customer(&details, &key).await?;
                self.db
                    .set_provider_customer(account_id, &created.id)
                    .await?
            }
        };
        let key = format!("{prefix}:attach:{provider_id}:{customer}");
        let method = self
            .provider
            .attach_payment_method(provider_id, &customer, &key)
            .await?;
        let card = method
            .card
            .ok_or_else(|| SaveCardError::UnknownCard(format!("{provider_id} is not a card")))?;
        let saved = SavedCard {
            id: method.id,
            account_id: account_id.to_owned(),
            brand: card.brand,
            last4: card.last4,
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            is_default: false,
            created_at: self.clock.now_ms(),
        };
        if self
            .db
            .card_owner(&saved.id)
            .await?
            .is_some_and(|owner| owner != account_id)
        {
            return Err(SaveCardError::UnknownCard(format!(
                "{} is saved by another account",
                saved.id
            )));
        }
        Ok(self.db.save_card(&saved, make_default, actor).await?)
    }

    /// Makes a saved card the default one; staff (`actor`) are audited. `None` if the
    /// account has no such card.
    pub async fn make_default_card(
        &self,
        account_id: &str,
        card_id: &str,
        actor: Option<&Actor>,
    ) -> Result<Option<SavedCard>, DbError> {
        self.db
            .set_default_card(account_id, card_id, actor, self.clock.now_ms())
            .await
    }

    /// Removes a saved card unless a top-up in progress is charging it, then detaches it
    /// at the provider; staff (`actor`) are audited.
    pub async fn remove_card(
        &self,
        account_id: &str,
        card_id: &str,
        actor: Option<&Actor>,
    ) -> Result<Removal, DbError> {
        let removal = self
            .db
            .remove_card(account_id, card_id, actor, self.clock.now_ms())
            .await?;
        if let Removal::Removed(card) = &removal {
            self.detach_card(&card.id).await;
        }
        Ok(removal)
    }

    /// Detaches the card at the provider (best effort) after forgetting it here.
    async fn detach_card(&self, card_id: &str) {
        let key = format!(
            "{}:detach:{card_id}",
            self.config.payments.idempotency_prefix
        );
        if let Err(error) = self.provider.detach_payment_method(card_id, &key).await {
            tracing::warn!(%card_id, %error, "card removed here but not detached at the provider");
        }
    }
}

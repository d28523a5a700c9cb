//! Saving a customer's card: the account gets a provider customer on its first card, the
//! card is attached to it, and what the provider says of the card is stored.

use super::{Topups, card_health::card_at_risk};
use crate::{
    db::{
        DbError,
        audit::Actor,
        payment_methods::{Removal, SavedCard},
    },
    domain::{account::Account, notice::CardRisk},
    payments::{
        client::{CustomerDetails, ProviderError, SetupSession},
        types::{CheckoutSession, PaymentMethod, SetupIntent},
    },
};

/// topupd's page where Checkout sends the customer back after saving a card.
pub const CARD_SAVED_PATH: &str = "/v1/payments/card-saved";

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
    /// A top-up in progress charges the card; it is left until that settles.
    #[error("a top-up in progress charges card {0}")]
    InUse(String),
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
        let customer = self.customer_of(&account).await?;
        let key = format!(
            "{}:attach:{provider_id}:{customer}",
            self.config.payments.idempotency_prefix
        );
        let method = self
            .provider
            .attach_payment_method(provider_id, &customer, &key)
            .await?;
        self.store_card(account_id, method, make_default, actor)
            .await
    }

    /// Opens a Checkout Session in `setup` mode: the provider's page takes the card (no
    /// card data passes through topupd) and sends the customer to topupd's page at
    /// `back_path`; the `checkout.session.completed` event saves the card.
    pub async fn card_checkout(
        &self,
        account_id: &str,
        back_path: &str,
    ) -> Result<CheckoutSession, SaveCardError> {
        let customer = self.customer_of_account(account_id).await?;
        let back = format!(
            "{}{back_path}",
            self.config.http.public_url.trim_end_matches('/')
        );
        let (success_url, cancel_url) = (
            format!("{back}?session_id={{CHECKOUT_SESSION_ID}}"),
            format!("{back}?cancelled=true"),
        );
        let session = SetupSession {
            account_id,
            customer: &customer,
            currency: &self.config.payments.currency,
            success_url: &success_url,
            cancel_url: &cancel_url,
        };
        let key = format!(
            "{}:checkout:{account_id}:{}",
            self.config.payments.idempotency_prefix,
            uuid::Uuid::new_v4().simple()
        );
        Ok(self.provider.create_setup_session(&session, &key).await?)
    }

    /// A SetupIntent for integrators with their own card form: their page confirms it with
    /// Stripe.js and its client secret; the `setup_intent.succeeded` event saves the card.
    pub async fn card_setup(&self, account_id: &str) -> Result<SetupIntent, SaveCardError> {
        let customer = self.customer_of_account(account_id).await?;
        let key = format!(
            "{}:setup:{account_id}:{}",
            self.config.payments.idempotency_prefix,
            uuid::Uuid::new_v4().simple()
        );
        Ok(self
            .provider
            .create_setup_intent(&customer, account_id, &key)
            .await?)
    }

    /// Saves the card of a completed Checkout Session in setup mode. `None` when the
    /// session saved nothing (yet).
    pub async fn save_checkout_card(
        &self,
        session_id: &str,
        only_for: Option<&str>,
    ) -> Result<Option<SavedCard>, SaveCardError> {
        let session = self.provider.checkout_session(session_id).await?;
        match (session.mode.as_str(), session.setup_intent) {
            ("setup", Some(setup)) => self.save_set_up_card(&setup, only_for).await,
            _ => Ok(None),
        }
    }

    /// Saves the card a succeeded SetupIntent attached, as the provider says it is now.
    /// `None` for a setup that has not succeeded or is not one of topupd's: its account
    /// (named in its metadata) must be the one whose customer it set up, and `only_for`
    /// when given (a browser saving a card for its own account).
    pub async fn save_set_up_card(
        &self,
        setup_id: &str,
        only_for: Option<&str>,
    ) -> Result<Option<SavedCard>, SaveCardError> {
        let setup = self.provider.setup_intent(setup_id).await?;
        let (Some(account_id), Some(card), "succeeded") = (
            setup.metadata.get("account_id"),
            setup.payment_method.as_deref(),
            setup.status.as_str(),
        ) else {
            return Ok(None);
        };
        if only_for.is_some_and(|only| only != account_id) {
            return Ok(None);
        }
        let Some(account) = self.db.account(account_id).await? else {
            return Ok(None);
        };
        if account.provider_customer_id.is_none() || account.provider_customer_id != setup.customer
        {
            tracing::warn!(%setup_id, %account_id, "a setup names an account whose customer it is not; ignored");
            return Ok(None);
        }
        let method = self.provider.payment_method(card).await?;
        if method.customer != setup.customer {
            return Ok(None);
        }
        self.store_card(account_id, method, false, None)
            .await
            .map(Some)
    }

    /// Brings a saved card up to date with what the provider says of it now (after its
    /// `payment_method.updated`, `.automatically_updated` or `.detached` event): new
    /// details are stored, and a card no longer attached to the account's customer is
    /// forgotten, so it is never charged; another card becomes the default. Audited as the
    /// provider's doing. Cards topupd does not hold are left alone.
    pub async fn refresh_saved_card(
        &self,
        card_id: &str,
        event_id: &str,
    ) -> Result<(), SaveCardError> {
        let Some(account_id) = self.db.card_owner(card_id).await? else {
            return Ok(());
        };
        let Some(account) = self.db.account(&account_id).await? else {
            return Ok(());
        };
        let method = match self.provider.payment_method(card_id).await {
            Ok(method) => Some(method),
            Err(ProviderError::NotFound { .. }) => None,
            Err(error) => return Err(error.into()),
        };
        let actor = Actor::provider(event_id);
        match method {
            Some(method)
                if method.customer.is_some() && method.customer == account.provider_customer_id =>
            {
                self.store_card(&account_id, method, false, Some(&actor))
                    .await?;
            }
            _ => {
                // The customer hears of it when it was the card auto top-up charges.
                let report = self.card_report(&account).await?;
                let notice = report
                    .card
                    .filter(|charged| charged.id == card_id)
                    .map(|card| {
                        card_at_risk(
                            &account_id,
                            &card,
                            CardRisk::Detached,
                            report.next_top_up_at,
                            self.clock.now_ms(),
                            &self.config.email,
                        )
                    });
                let removal = self
                    .db
                    .remove_card(
                        &account_id,
                        card_id,
                        (Some(&actor), notice.as_ref()),
                        self.clock.now_ms(),
                    )
                    .await?;
                if matches!(removal, Removal::InUse) {
                    return Err(SaveCardError::InUse(card_id.to_owned()));
                }
                tracing::info!(%account_id, %card_id, "card detached at the provider; forgotten here");
            }
        }
        Ok(())
    }

    /// The customer at the provider of the account `account_id`, created on first need.
    async fn customer_of_account(&self, account_id: &str) -> Result<String, SaveCardError> {
        let account = self
            .db
            .account(account_id)
            .await?
            .ok_or(SaveCardError::AccountNotFound)?;
        self.customer_of(&account).await
    }

    /// The account's customer at the provider, created on first need.
    async fn customer_of(&self, account: &Account) -> Result<String, SaveCardError> {
        if let Some(customer) = &account.provider_customer_id {
            return Ok(customer.clone());
        }
        let key = format!(
            "{}:customer:{}",
            self.config.payments.idempotency_prefix, account.id
        );
        let details = CustomerDetails {
            account_id: &account.id,
            name: &account.name,
            email: &account.email,
        };
        let created = self.provider.create_customer(&details, &key).await?;
        Ok(self
            .db
            .set_provider_customer(&account.id, &created.id)
            .await?)
    }

    /// The account's card as the provider describes it.
    fn saved_card(
        &self,
        account_id: &str,
        method: PaymentMethod,
    ) -> Result<SavedCard, SaveCardError> {
        let card = method
            .card
            .ok_or_else(|| SaveCardError::UnknownCard(format!("{} is not a card", method.id)))?;
        Ok(SavedCard {
            id: method.id,
            account_id: account_id.to_owned(),
            brand: card.brand,
            last4: card.last4,
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            is_default: false,
            created_at: self.clock.now_ms(),
        })
    }

    /// Stores a card attached to the account's customer, with what the provider says of
    /// it; the account's first card becomes its default.
    async fn store_card(
        &self,
        account_id: &str,
        method: PaymentMethod,
        make_default: bool,
        actor: Option<&Actor>,
    ) -> Result<SavedCard, SaveCardError> {
        let saved = self.saved_card(account_id, method)?;
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
            .remove_card(account_id, card_id, (actor, None), self.clock.now_ms())
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

//! The provider's webhooks: each event stored once as it arrives, then handled by
//! re-reading the payment it names; an event that could not be handled stays due for the
//! webhook processor.

use super::Topups;
use crate::{
    db::{DbError, webhooks::StoredEvent},
    domain::attempt::Attempt,
    payments::client::ProviderError,
};

impl Topups {
    /// Stores an event that passed its signature check and handles it if it is new. False
    /// for an event received before.
    pub async fn receive_event(
        &self,
        id: &str,
        kind: &str,
        object_id: Option<&str>,
        payload: &str,
    ) -> Result<bool, DbError> {
        let new = self
            .db
            .store_event(id, kind, object_id, payload, self.clock.now_ms())
            .await?;
        if new && let Some(stored) = self.db.event(id).await? {
            // Failures leave the event due; the webhook processor tries again.
            self.process_event(&stored).await?;
        }
        Ok(new)
    }

    /// Handles a stored webhook event: the payment it names is re-read from the provider
    /// and applied, never the event's copy. Events about other objects are ignored. False
    /// when the provider could not be asked: the event stays due.
    pub async fn process_event(&self, event: &StoredEvent) -> Result<bool, DbError> {
        let now = self.clock.now_ms();
        let attempt = match (&event.object_id, event.kind.starts_with("payment_intent.")) {
            (Some(payment_id), true) => self.db.attempt_for_payment(payment_id).await?,
            _ => None,
        };
        let Some(attempt) = attempt else {
            self.db.finish_event(&event.id, now, None).await?;
            return Ok(true);
        };
        let error = self
            .refresh_payment(attempt)
            .await
            .err()
            .map(|e| e.to_string());
        if let Some(error) = &error {
            tracing::warn!(event_id = %event.id, %error, "webhook event not handled yet");
        }
        self.db
            .finish_event(&event.id, self.clock.now_ms(), error.as_deref())
            .await?;
        Ok(error.is_none())
    }

    /// Re-reads the attempt's payment and applies it, reporting a provider failure.
    async fn refresh_payment(&self, attempt: Attempt) -> Result<(), EventError> {
        let payment_id = self.payment_id(&attempt)?.to_owned();
        let intent = self.provider.payment_intent(&payment_id).await?;
        self.apply(attempt, &intent).await?;
        Ok(())
    }
}

/// A webhook could not be handled: the provider could not be asked, or storage failed.
#[derive(Debug, thiserror::Error)]
enum EventError {
    #[error("reading the payment failed: {0}")]
    Provider(#[from] ProviderError),
    #[error("storage failed: {0}")]
    Db(#[from] DbError),
}

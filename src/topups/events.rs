//! The provider's webhooks: each event stored once as it arrives, then handled by
//! re-reading the payment it names; an event that could not be handled stays due for the
//! webhook processor.

use std::time::Duration;

use super::Topups;
use crate::{
    db::{
        DbError,
        audit::Actor,
        webhooks::{EventFailure, EventRequeue, StoredEvent},
    },
    domain::{
        attempt::{Attempt, AttemptState},
        backoff::retry_delay,
    },
    payments::client::ProviderError,
    topups::cards::SaveCardError,
};

/// The events topupd acts on: the ones to subscribe the webhook endpoint to, and the ones
/// the sweep lists.
pub const HANDLED_EVENTS: &[&str] = &[
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.requires_action",
    "payment_intent.processing",
    "payment_intent.canceled",
    "setup_intent.succeeded",
    "checkout.session.completed",
    "payment_method.updated",
    "payment_method.automatically_updated",
    "payment_method.detached",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
];

/// The sweep's name in `event_sweeps`.
const SWEEP: &str = "events";
/// Each sweep starts this far before the newest event the last one saw, for events the
/// provider lists a little late.
const SWEEP_OVERLAP_SECS: i64 = 3600;

impl Topups {
    /// Lists the provider's events of [`HANDLED_EVENTS`] since the last sweep and handles
    /// every one not received before, as if its webhook had come: a webhook lost for good
    /// loses nothing. How many were new.
    pub async fn sweep_events(&self) -> Result<usize, SweepError> {
        let payments = &self.config.payments;
        let now = self.clock.now_ms() / 1000;
        let since = match self.db.sweep_mark(SWEEP).await? {
            Some(mark) => mark - SWEEP_OVERLAP_SECS,
            None => now - payments.event_sweep_lookback_secs,
        };
        let (mut new, mut newest) = (0, since);
        let mut after: Option<String> = None;
        loop {
            let page = self
                .provider
                .list_events(HANDLED_EVENTS, since, after.as_deref())
                .await?;
            for event in &page.data {
                newest = newest.max(event.created);
                let object_id = event.data.object.get("id").and_then(|id| id.as_str());
                let payload = serde_json::to_string(event)
                    .map_err(|e| DbError::Corrupt(format!("event {}: {e}", event.id)))?;
                if self
                    .receive_event(&event.id, &event.kind, object_id, &payload)
                    .await?
                {
                    new += 1;
                    tracing::warn!(event_id = %event.id, kind = %event.kind, "event found by the sweep, never received as a webhook");
                }
            }
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => break,
            }
        }
        self.db.advance_sweep(SWEEP, newest).await?;
        Ok(new)
    }

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

    /// Support makes a dead event due again; audited.
    pub async fn requeue_event(&self, id: &str, actor: &Actor) -> Result<EventRequeue, DbError> {
        self.db.requeue_event(id, actor, self.clock.now_ms()).await
    }

    /// Handles a stored webhook event: the payment it names is re-read from the provider
    /// and applied, never the event's copy. Events about other objects are ignored. False
    /// when the provider could not be asked: the event is tried again later (see
    /// [`retry_delay`]), or set aside as dead after its last try.
    pub async fn process_event(&self, event: &StoredEvent) -> Result<bool, DbError> {
        let Err(error) = self.handle_event(event).await else {
            self.db.finish_event(&event.id, self.clock.now_ms()).await?;
            return Ok(true);
        };
        let payments = &self.config.payments;
        let tries = u32::try_from(event.attempts + 1).unwrap_or(u32::MAX);
        let delay = retry_delay(
            tries,
            Duration::from_secs(payments.webhook_retry_base_secs),
            Duration::from_secs(payments.webhook_retry_max_secs),
            rand::random::<f64>(),
        );
        let now = self.clock.now_ms();
        let error = error.to_string();
        let failure = EventFailure {
            error: &error,
            at: now,
            next_attempt_at: now
                .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            max_attempts: payments.webhook_max_attempts,
        };
        if self.db.fail_event(&event.id, &failure).await? {
            crate::metrics::webhook_event_dead();
            tracing::error!(event_id = %event.id, kind = %event.kind, tries, %error, "webhook event failed too often; set aside as dead for support");
        } else {
            tracing::warn!(event_id = %event.id, tries, %error, retry_in_ms = delay.as_millis() as u64, "webhook event not handled yet");
        }
        Ok(false)
    }

    /// What an event means, from the object it names as the provider has it now.
    async fn handle_event(&self, event: &StoredEvent) -> Result<(), EventError> {
        let Some(object_id) = &event.object_id else {
            return Ok(());
        };
        let saved = match event.kind.as_str() {
            kind if kind.starts_with("payment_intent.") => {
                return match self.db.attempt_for_payment(object_id).await? {
                    Some(attempt) if settled_for(&attempt, kind) => Ok(()),
                    Some(attempt) => self.refresh_payment(attempt).await,
                    None => Ok(()),
                };
            }
            "setup_intent.succeeded" => self.save_set_up_card(object_id, None).await,
            "checkout.session.completed" => self.save_checkout_card(object_id, None).await,
            "payment_method.updated"
            | "payment_method.automatically_updated"
            | "payment_method.detached" => self
                .refresh_saved_card(object_id, &event.id)
                .await
                .map(|()| None),
            "charge.refunded" => return self.refresh_refunds(object_id, &event.id).await,
            kind if kind.starts_with("charge.dispute.") => {
                return self.refresh_dispute(object_id, &event.id).await;
            }
            _ => return Ok(()),
        };
        match saved {
            Ok(_) => Ok(()),
            Err(SaveCardError::ProviderUnavailable(error)) => Err(error.into()),
            Err(SaveCardError::Db(error)) => Err(error.into()),
            // Tried again later, once the top-up charging it has settled.
            Err(error @ SaveCardError::InUse(_)) => Err(EventError::NotYet(error.to_string())),
            // Definite: the card is not one to save, however often it is asked.
            Err(error) => {
                tracing::warn!(event_id = %event.id, %error, "the card of a setup was not saved");
                Ok(())
            }
        }
    }

    /// Re-reads the attempt's payment and applies it, reporting a provider failure.
    pub(super) async fn refresh_payment(&self, attempt: Attempt) -> Result<(), EventError> {
        let payment_id = self.payment_id(&attempt)?.to_owned();
        let intent = self.provider.payment_intent(&payment_id).await?;
        self.apply(attempt, &intent).await?;
        Ok(())
    }
}

/// Whether an event about an attempt's payment can change nothing: the attempt settled,
/// and settled attempts never move. A success reported for one that ended without it is
/// the exception: the provider is asked, and support told if it took money.
fn settled_for(attempt: &Attempt, kind: &str) -> bool {
    attempt.state.is_terminal()
        && (kind != "payment_intent.succeeded" || attempt.state == AttemptState::Succeeded)
}

/// The sweep of the provider's events stopped; the next one starts from the same mark.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("listing the provider's events failed: {0}")]
    Provider(#[from] ProviderError),
    #[error("storage failed: {0}")]
    Db(#[from] DbError),
}

/// A webhook could not be handled: the provider could not be asked, or storage failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum EventError {
    #[error("reading from the provider failed: {0}")]
    Provider(#[from] ProviderError),
    #[error("storage failed: {0}")]
    Db(#[from] DbError),
    #[error("not yet: {0}")]
    NotYet(String),
}

//! Refunds and disputes made at the provider (its dashboard, its API, the payer's bank),
//! as its webhooks report them: the charge or dispute re-read, never the event's copy,
//! then applied once to the top-up it paid for.

use super::{Topups, events::EventError};
use crate::{
    db::{
        audit::Actor,
        reversals::{DisputeWrite, RefundWrite},
    },
    domain::{
        attempt::{Attempt, AttemptState},
        money::Cents,
    },
    notices,
};

impl Topups {
    /// `charge.refunded`: the charge's refunded total, as the provider has it, takes back
    /// the credits of the part not taken back before.
    pub(super) async fn refresh_refunds(
        &self,
        charge_id: &str,
        event_id: &str,
    ) -> Result<(), EventError> {
        let charge = self.provider.charge(charge_id).await?;
        let Some(attempt) = self
            .paid_attempt(&charge.id, charge.payment_intent.as_deref())
            .await?
        else {
            return Ok(());
        };
        let refunded = Cents(charge.amount_refunded);
        if refunded.0 <= attempt.refunded.0 {
            return Ok(());
        }
        let at = self.clock.now_ms();
        let write = RefundWrite {
            attempt: &attempt,
            charge_id: &charge.id,
            refunded,
            actor: &Actor::provider(event_id),
            envelope: crate::db::notices::Envelope::to_owner(
                format!("refund:{}:{}:credits_refunded", attempt.id, refunded.0),
                &attempt.account_id,
                &self.config.email,
                at,
            ),
            at,
        };
        if self.db.apply_refund(&write).await? {
            tracing::info!(account_id = %attempt.account_id, attempt_id = %attempt.id, charge_id = %charge.id, refunded_cents = refunded.0, "refund applied; auto top-up paused");
        }
        Ok(())
    }

    /// `charge.dispute.*`: the dispute as the provider has it holds the credits while it
    /// is open, and gives them back or keeps them removed once it is closed.
    pub(super) async fn refresh_dispute(
        &self,
        dispute_id: &str,
        event_id: &str,
    ) -> Result<(), EventError> {
        let dispute = self.provider.dispute(dispute_id).await?;
        let Some(attempt) = self
            .paid_attempt(&dispute.charge, dispute.payment_intent.as_deref())
            .await?
        else {
            return Ok(());
        };
        let at = self.clock.now_ms();
        let support = |kind: &str| {
            notices::support_envelope(
                format!("dispute:{}:{kind}", dispute.id),
                &attempt.account_id,
                &self.config.email,
                at,
            )
        };
        let write = DisputeWrite {
            id: &dispute.id,
            attempt: &attempt,
            charge_id: &dispute.charge,
            amount: Cents(dispute.amount),
            status: &dispute.status,
            reason: dispute.reason.as_deref(),
            standing: dispute.standing(),
            actor: &Actor::provider(event_id),
            opened: support("dispute_opened"),
            closed: support("dispute_closed"),
            at,
        };
        let outcome = self.db.record_dispute(&write).await?;
        if outcome.opened {
            tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, dispute_id = %dispute.id, "top-up disputed: credits held, auto top-up paused, support told");
        }
        if outcome.closed {
            tracing::info!(account_id = %attempt.account_id, attempt_id = %attempt.id, dispute_id = %dispute.id, status = %dispute.status, "dispute closed");
        }
        Ok(())
    }

    /// The top-up that `charge_id` (of `payment_intent`) paid for, once it is settled as
    /// paid. None when no top-up made that charge, or the top-up did not succeed (so it
    /// credited nothing to take back); not yet while it is still settling.
    async fn paid_attempt(
        &self,
        charge_id: &str,
        payment_intent: Option<&str>,
    ) -> Result<Option<Attempt>, EventError> {
        let mut attempt = match self.db.attempt_for_charge(charge_id).await? {
            Some(attempt) => Some(attempt),
            None => match payment_intent {
                Some(payment) => self.db.attempt_for_payment(payment).await?,
                None => None,
            },
        };
        if let Some(open) =
            attempt.take_if(|a| !a.state.is_terminal() && a.provider_payment_id.is_some())
        {
            // The charge's own events may not have settled it yet: ask about its payment.
            self.refresh_payment(open.clone()).await?;
            attempt = self.db.attempt(&open.id).await?;
        }
        match attempt {
            Some(attempt) if attempt.state == AttemptState::Succeeded => Ok(Some(attempt)),
            Some(attempt) if !attempt.state.is_terminal() => Err(EventError::NotYet(format!(
                "top-up {} is still {}",
                attempt.id, attempt.state
            ))),
            Some(attempt) => {
                tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, charge_id, state = %attempt.state, "money taken back from a charge of a top-up that credited nothing");
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

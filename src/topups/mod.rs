//! Charging saved cards: claiming an attempt, driving it through the provider one written
//! state at a time, and settling it from the provider's word (an answer, a webhook or a
//! poll). No database transaction is open during a provider call.

pub mod auto;
pub mod card_health;
pub mod cards;
pub mod confirm_link;
pub mod customers;
pub mod events;
pub mod provider_check;
pub mod reversals;

use std::sync::Arc;

use crate::{
    clock::{Clock, Millis},
    config::Config,
    db::{
        Db, DbError,
        attempts::{AttemptMove, Claim, NewAttempt, SettleWrite},
        group_commit::{GroupCommit, Writers},
    },
    domain::{
        attempt::{Attempt, AttemptState, AttemptTrigger, Failing, ProviderFacts},
        auto_topup::PauseChange,
        credits::Millicredits,
        money::Cents,
        notice::ResumedBy,
        settlement::settlement,
    },
    notices,
    payments::{
        client::{NewPayment, Presence, ProviderClient, ProviderError},
        types::PaymentIntent,
    },
};

/// How far back, in seconds, to look for a payment created before its id was stored.
const ADOPTION_WINDOW_SECS: i64 = 300;

/// The decline code of a charge without a card to charge.
const NO_CARD: &str = "no_payment_method";
const NO_CARD_MESSAGE: &str = "the account has no saved card to charge";

/// Charging and settling top-ups.
#[derive(Clone)]
pub struct Topups {
    db: Db,
    /// Attempts' steps, written together when several attempts move at once.
    steps: GroupCommit<AttemptMove>,
    /// Settlements, sharing a commit when several attempts settle at once.
    settlements: GroupCommit<SettleWrite>,
    provider: Arc<ProviderClient>,
    clock: Arc<dyn Clock>,
    config: Arc<Config>,
}

/// Why a purchase could not start.
#[derive(Debug, thiserror::Error)]
pub enum PurchaseError {
    #[error("{0}")]
    InvalidAmount(String),
    #[error("account not found")]
    AccountNotFound,
    #[error("the account has no default payment method; add one first")]
    NoPaymentMethod,
    /// Another top-up of the account is still open.
    #[error("another top-up of this account is in progress")]
    Busy(Box<Attempt>),
    /// The caller's Idempotency-Key was used for a different purchase.
    #[error("this Idempotency-Key was used for a different request")]
    KeyReused,
    #[error("the account is closed; it is charged no more")]
    Closed,
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Where a customer's confirmation of a waiting payment leads.
#[derive(Debug)]
pub enum OnSession {
    /// The bank wants them to authenticate at this page first.
    Authenticate(String),
    /// The payment's outcome, as the attempt now stands.
    Settled(Box<Attempt>),
}

/// The price of `credits` whole credits, if it is within the purchase limits.
pub fn purchase_price(credits: i64, config: &Config) -> Result<Cents, String> {
    let payments = &config.payments;
    let range = || {
        format!(
            "a top-up must cost between {} and {}",
            Cents(payments.min_topup_cents),
            Cents(payments.max_topup_cents)
        )
    };
    let cents = Cents::for_credits(credits, config.credit_price_cents)
        .ok_or_else(range)?
        .0;
    if credits <= 0 || cents < payments.min_topup_cents || cents > payments.max_topup_cents {
        return Err(range());
    }
    Ok(Cents(cents))
}

impl Topups {
    /// Starts the writers of attempts' steps and settlements on `writers`, so it must run
    /// inside the runtime.
    pub fn new(
        db: Db,
        provider: Arc<ProviderClient>,
        clock: Arc<dyn Clock>,
        config: Arc<Config>,
        writers: &Writers,
    ) -> Self {
        Self {
            steps: GroupCommit::start(db.clone(), writers),
            settlements: GroupCommit::start(db.clone(), writers),
            db,
            provider,
            clock,
            config,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Now, by the engine's clock.
    pub fn now_ms(&self) -> Millis {
        self.clock.now_ms()
    }

    /// A customer buys `credits` whole credits with the default card. `request_key`, the
    /// caller's Idempotency-Key, makes a retried request return the same purchase.
    pub async fn purchase(
        &self,
        account_id: &str,
        credits: i64,
        request_key: Option<&str>,
    ) -> Result<Attempt, PurchaseError> {
        let amount = purchase_price(credits, &self.config).map_err(PurchaseError::InvalidAmount)?;
        let account = self
            .db
            .account(account_id)
            .await?
            .ok_or(PurchaseError::AccountNotFound)?;
        let card = self.db.default_card(account_id).await?;
        let (Some(card), Some(customer)) = (card, account.provider_customer_id) else {
            return Err(PurchaseError::NoPaymentMethod);
        };
        let fingerprint = format!("credits={credits}");
        let claim = self
            .db
            .claim_attempt(&NewAttempt {
                account_id,
                trigger: AttemptTrigger::Manual,
                request: request_key.map(|key| (key, fingerprint.as_str())),
                credits: Millicredits::whole(credits),
                amount,
                currency: &self.config.payments.currency,
                payment_method_id: &card.id,
                customer_id: &customer,
                key_prefix: &self.config.payments.idempotency_prefix,
                at: self.clock.now_ms(),
            })
            .await?;
        match claim {
            Claim::Claimed(attempt) => Ok(self.charge_claimed(attempt).await?),
            Claim::Replay(attempt)
                if attempt.request_fingerprint.as_deref() == Some(&fingerprint) =>
            {
                Ok(self.refresh(attempt).await?)
            }
            Claim::Replay(_) => Err(PurchaseError::KeyReused),
            Claim::Busy(open) => Err(PurchaseError::Busy(Box::new(open))),
            Claim::Closed => Err(PurchaseError::Closed),
        }
    }

    /// Brings an attempt up to date: resumes the steps it still has to take, or asks the
    /// provider what became of its payment.
    pub async fn refresh(&self, attempt: Attempt) -> Result<Attempt, DbError> {
        match attempt.state {
            AttemptState::RequiresAction | AttemptState::Processing => {
                let Some(payment_id) = attempt.provider_payment_id.clone() else {
                    return Err(DbError::Corrupt(format!(
                        "attempt {} has no payment id",
                        attempt.id
                    )));
                };
                match self.provider.payment_intent(&payment_id).await {
                    Ok(intent) => self.apply(attempt, &intent).await,
                    Err(error) => {
                        tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "could not read the payment; will ask again");
                        Ok(attempt)
                    }
                }
            }
            _ => self.advance(attempt).await,
        }
    }

    /// Charges an attempt this call's caller has just claimed: the claim is the write that
    /// guards the create, so the provider is asked at once, and the payment's id is
    /// written with the step that guards the confirmation. With the settlement, a top-up
    /// costs three durable commits.
    pub async fn charge_claimed(&self, attempt: Attempt) -> Result<Attempt, DbError> {
        self.drive(attempt, true).await
    }

    /// Drives the attempt forward from its written state, resuming what an earlier call
    /// left. An unknown outcome leaves the attempt where it is, to be resumed with the
    /// same idempotency keys.
    pub async fn advance(&self, attempt: Attempt) -> Result<Attempt, DbError> {
        self.drive(attempt, false).await
    }

    /// Each state is written before the call it guards: `Claimed` the create (`Creating`
    /// too, as the release before wrote it), `Confirming` the confirmation.
    async fn drive(&self, mut attempt: Attempt, just_claimed: bool) -> Result<Attempt, DbError> {
        use AttemptState::*;
        // Set when this call wrote `Confirming`, so no earlier confirmation can exist.
        let mut confirm_now = false;
        // Set when this call's caller wrote the claim; otherwise an earlier create may have
        // reached the provider, and the provider replays its first answer (even a 500)
        // for a day.
        let mut create_now = just_claimed && attempt.state == Claimed;
        loop {
            let now = self.clock.now_ms();
            let moved = match attempt.state {
                // Claimed without a card (the default one was removed): a decline like any
                // other, said in the customer's words, and the provider is not asked.
                Claimed if attempt.payment_method_id.is_empty() => {
                    return self.fail(attempt, NO_CARD, NO_CARD_MESSAGE).await;
                }
                Claimed | Creating if !create_now => {
                    create_now = true;
                    match self.find_payment(&attempt).await {
                        Ok(Some(intent)) => {
                            confirm_now = true;
                            self.step(&attempt, attempt.state, Confirming, Some(intent.id), now)
                                .await?
                        }
                        Ok(None) => continue,
                        Err(_) => return Ok(attempt),
                    }
                }
                Claimed | Creating => match self
                    .provider
                    .create_payment_intent(&Self::create_request(&attempt))
                    .await
                {
                    Ok(intent) => {
                        confirm_now = true;
                        self.step(&attempt, attempt.state, Confirming, Some(intent.id), now)
                            .await?
                    }
                    Err(error) => return self.after_create_failed(attempt, error).await,
                },
                Created => {
                    confirm_now = true;
                    self.step(&attempt, Created, Confirming, None, now).await?
                }
                Confirming if confirm_now => {
                    let confirmed = self
                        .provider
                        .confirm_payment_intent(
                            self.payment_id(&attempt)?,
                            &attempt.payment_method_id,
                            self.presence(&attempt)?,
                            &format!("{}:confirm", attempt.idempotency_key),
                        )
                        .await;
                    return match confirmed {
                        Ok(intent) => self.apply(attempt, &intent).await,
                        Err(error) => self.after_confirm_failed(attempt, error).await,
                    };
                }
                Confirming => {
                    // Resuming: a confirmation may have been sent; the provider knows.
                    match self
                        .provider
                        .payment_intent(self.payment_id(&attempt)?)
                        .await
                    {
                        Ok(intent) if intent.status == "requires_confirmation" => {
                            confirm_now = true;
                            continue;
                        }
                        Ok(intent) => return self.apply(attempt, &intent).await,
                        Err(error) => {
                            tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "could not read the payment; will ask again");
                            return Ok(attempt);
                        }
                    }
                }
                RequiresAction | Processing | Succeeded | Failed | Canceled => return Ok(attempt),
            };
            attempt = match moved {
                Some(next) => next,
                // Someone else moved it; they carry on from here.
                None => return self.reload(&attempt).await,
            };
        }
    }

    /// The customer, at hand on topupd's page, confirms the payment their bank would not
    /// take without them: the same payment, on-session. The bank may want them to
    /// authenticate first, at the provider's page, which sends them back to
    /// `payments.return_url`; otherwise the answer settles the attempt at once. A payment
    /// charges at most once, so each press may use a key of its own.
    pub async fn confirm_on_session(&self, attempt: Attempt) -> Result<OnSession, DbError> {
        let payment_id = self.payment_id(&attempt)?.to_owned();
        let presence = Presence::OnSession {
            return_url: &self.config.payments.return_url,
        };
        let key = format!(
            "{}:confirm:{}",
            attempt.idempotency_key,
            uuid::Uuid::new_v4().simple()
        );
        let confirmed = self
            .provider
            .confirm_payment_intent(&payment_id, &attempt.payment_method_id, presence, &key)
            .await;
        let answer = match confirmed {
            // Already waiting for authentication (a second press): go on from there.
            Err(ProviderError::Rejected { .. }) => self.provider.payment_intent(&payment_id).await,
            other => other,
        };
        match answer {
            Ok(intent) if intent.status == "requires_action" => match intent.redirect_url() {
                Some(url) => Ok(OnSession::Authenticate(url.to_owned())),
                None => Ok(OnSession::Settled(Box::new(
                    self.apply(attempt, &intent).await?,
                ))),
            },
            Ok(intent) => Ok(OnSession::Settled(Box::new(
                self.apply(attempt, &intent).await?,
            ))),
            Err(error) => Ok(OnSession::Settled(Box::new(
                self.after_confirm_failed(attempt, error).await?,
            ))),
        }
    }

    /// Writes the attempt's next step (see [`Db::move_attempts`]) through the step queue.
    async fn step(
        &self,
        attempt: &Attempt,
        from: AttemptState,
        to: AttemptState,
        provider_payment_id: Option<String>,
        at: Millis,
    ) -> Result<Option<Attempt>, DbError> {
        self.steps
            .write(AttemptMove {
                id: attempt.id.clone(),
                from,
                to,
                provider_payment_id,
                at,
            })
            .await
    }

    fn payment_id<'a>(&self, attempt: &'a Attempt) -> Result<&'a str, DbError> {
        attempt
            .provider_payment_id
            .as_deref()
            .ok_or_else(|| DbError::Corrupt(format!("attempt {} has no payment id", attempt.id)))
    }

    /// The create request of an attempt, built only from its row so that a replay is
    /// identical.
    pub fn create_request(attempt: &Attempt) -> NewPayment<'_> {
        NewPayment {
            amount_cents: attempt.amount.0,
            currency: &attempt.currency,
            customer: &attempt.customer_id,
            payment_method: &attempt.payment_method_id,
            metadata: vec![
                ("topup_attempt_id", attempt.id.clone()),
                ("account_id", attempt.account_id.clone()),
                ("seq", attempt.seq.to_string()),
            ],
            idempotency_key: &attempt.idempotency_key,
            save_for_off_session: attempt.trigger == AttemptTrigger::Manual,
        }
    }

    fn presence(&self, attempt: &Attempt) -> Result<Presence<'_>, DbError> {
        Ok(match attempt.trigger {
            AttemptTrigger::Auto => Presence::OffSession,
            AttemptTrigger::Manual | AttemptTrigger::Retry => Presence::OnSession {
                return_url: &self.config.payments.return_url,
            },
        })
    }

    async fn reload(&self, attempt: &Attempt) -> Result<Attempt, DbError> {
        self.db
            .attempt(&attempt.id)
            .await?
            .ok_or_else(|| DbError::Corrupt(format!("attempt {} vanished", attempt.id)))
    }

    async fn after_create_failed(
        &self,
        attempt: Attempt,
        error: ProviderError,
    ) -> Result<Attempt, DbError> {
        match error {
            ProviderError::Unknown { .. } | ProviderError::Unauthorized { .. } => {
                tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "payment not created yet; will retry with the same key");
                Ok(attempt)
            }
            // An earlier incarnation of this attempt reached the provider: find its payment.
            ProviderError::IdempotencyMismatch { .. } => match self.find_payment(&attempt).await {
                Err(_) => Ok(attempt),
                Ok(Some(intent)) => {
                    let now = self.clock.now_ms();
                    match self
                        .step(
                            &attempt,
                            attempt.state,
                            AttemptState::Created,
                            Some(intent.id),
                            now,
                        )
                        .await?
                    {
                        Some(created) => Box::pin(self.advance(created)).await,
                        None => self.reload(&attempt).await,
                    }
                }
                Ok(None) => {
                    tracing::error!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "payment cannot be found by its metadata; left for support");
                    Ok(attempt)
                }
            },
            ProviderError::Declined { code, message, .. } => {
                self.fail(attempt, &code, &message).await
            }
            ProviderError::NotFound { message } => self.fail(attempt, NO_CARD, &message).await,
            ProviderError::Rejected { code, message, .. } => {
                self.fail(
                    attempt,
                    code.as_deref().unwrap_or("payment_rejected"),
                    &message,
                )
                .await
            }
        }
    }

    async fn after_confirm_failed(
        &self,
        attempt: Attempt,
        error: ProviderError,
    ) -> Result<Attempt, DbError> {
        match error {
            ProviderError::Declined {
                payment_intent: Some(intent),
                ..
            } => self.apply(attempt, &intent).await,
            ProviderError::Declined { code, message, .. } => {
                self.fail(attempt, &code, &message).await
            }
            ProviderError::Unknown { .. } | ProviderError::Unauthorized { .. } => {
                tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "confirmation outcome unknown; will ask the provider again");
                Ok(attempt)
            }
            // The payment is not where this attempt thought: its own state says what happened.
            ProviderError::IdempotencyMismatch { .. } | ProviderError::NotFound { .. } => {
                match self
                    .provider
                    .payment_intent(self.payment_id(&attempt)?)
                    .await
                {
                    Ok(intent) => self.apply(attempt, &intent).await,
                    Err(read_error) => {
                        tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, %read_error, "confirmation refused and payment unreadable; will ask again");
                        Ok(attempt)
                    }
                }
            }
            // A definite refusal of the request itself: asking again would be refused
            // again, so the attempt fails with the provider's words and support is told,
            // unless the payment went on all the same.
            ProviderError::Rejected { code, message, .. } => {
                match self
                    .provider
                    .payment_intent(self.payment_id(&attempt)?)
                    .await
                {
                    Ok(intent) if intent.status != "requires_confirmation" => {
                        self.apply(attempt, &intent).await
                    }
                    Ok(_) => {
                        tracing::error!(account_id = %attempt.account_id, attempt_id = %attempt.id, ?code, %message, "the provider refused the confirmation; failed and flagged for support");
                        let facts = ProviderFacts {
                            decline_code: Some(code.as_deref().unwrap_or("payment_rejected")),
                            failure_message: Some(&message),
                            flag: true,
                            ..ProviderFacts::default()
                        };
                        self.settle(attempt, AttemptState::Failed, &facts).await
                    }
                    Err(read_error) => {
                        tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, ?code, %message, %read_error, "confirmation refused and payment unreadable; will ask again");
                        Ok(attempt)
                    }
                }
            }
        }
    }

    /// Looks for the attempt's payment among the customer's recent ones, by metadata. An
    /// error is not "not found": it says nothing about the payment.
    async fn find_payment(
        &self,
        attempt: &Attempt,
    ) -> Result<Option<PaymentIntent>, ProviderError> {
        let since = attempt.created_at.div_euclid(1000) - ADOPTION_WINDOW_SECS;
        let seq = attempt.seq.to_string();
        // By account and sequence, not attempt id: after a lost claim commit the attempt
        // row is new but its sequence, and so its key, are the same.
        let ours = |pi: &PaymentIntent| {
            pi.metadata.get("account_id") == Some(&attempt.account_id)
                && pi.metadata.get("seq") == Some(&seq)
        };
        let found = self
            .provider
            .find_payment_intent(&attempt.customer_id, since, ours)
            .await;
        if let Err(error) = &found {
            tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "could not list the customer's payments; will ask again");
        }
        found
    }

    async fn fail(&self, attempt: Attempt, code: &str, message: &str) -> Result<Attempt, DbError> {
        let facts = ProviderFacts {
            decline_code: Some(code),
            failure_message: Some(message),
            ..ProviderFacts::default()
        };
        self.settle(attempt, AttemptState::Failed, &facts).await
    }

    /// Applies the provider's authoritative view of the attempt's payment.
    pub async fn apply(
        &self,
        attempt: Attempt,
        intent: &PaymentIntent,
    ) -> Result<Attempt, DbError> {
        // A payment cancelled as its attempt failed says nothing of why: the attempt
        // recorded it before the cancel, whose webhook may arrive first. The attempt is
        // read again, since a copy read before the cancel may be stale either way: without
        // that record (written before the cancel was sent), or with one a later move
        // cleared (the customer took the payment on, then cancelled it themselves).
        let attempt = if intent.status == "canceled"
            && intent.failure_code().is_none()
            && attempt.state.can_become(AttemptState::Canceled)
        {
            self.reload(&attempt).await?
        } else {
            attempt
        };
        let failing = attempt
            .failing
            .clone()
            .filter(|_| intent.status == "canceled" && intent.failure_code().is_none());
        let failure_code = intent
            .failure_code()
            .or(failing.as_ref().map(|f| f.code.as_str()));
        let Some(target) = AttemptState::of_payment(&intent.status, failure_code) else {
            tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, status = %intent.status, "unknown payment status; left as is");
            return Ok(attempt);
        };
        let succeeded = target == AttemptState::Succeeded;
        let received = match intent.amount_received {
            Some(cents) if cents > 0 => cents,
            // A success whose amount cannot be read is no number to credit: the attempt
            // stays open, is asked about again, and is flagged if it never reads well.
            _ if succeeded => {
                tracing::error!(account_id = %attempt.account_id, attempt_id = %attempt.id, amount_received = intent.amount_received, "payment succeeded without a readable amount received; left open");
                return Ok(attempt);
            }
            _ => 0,
        };
        let received_other = succeeded && received != attempt.amount.0;
        if received_other {
            tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, asked = attempt.amount.0, received, "provider received another amount; crediting what was received");
        }
        let facts = ProviderFacts {
            provider_payment_id: Some(&intent.id),
            next_action_url: intent.redirect_url(),
            decline_code: (target == AttemptState::Failed)
                .then(|| failure_code.unwrap_or("card_declined")),
            failure_message: intent
                .last_payment_error
                .as_ref()
                .and_then(|e| e.message.as_deref())
                .or(failing.as_ref().and_then(|f| f.message.as_deref())),
            amount_received: succeeded.then_some(Cents(received)),
            client_secret: intent.client_secret.as_deref(),
            charge_id: intent.latest_charge.as_deref(),
            credits_received: received_other
                .then(|| Millicredits::bought_by(Cents(received), self.config.credit_price_cents)),
            flag: failing.as_ref().is_some_and(|f| f.flag),
        };
        self.settle(attempt, target, &facts).await
    }

    /// Settles the attempt at `target` with what the provider said, with all that follows
    /// (see [`settlement`]) in the same transaction. Someone else moving the attempt first
    /// is met by deciding again from where they left it, until the move is taken or no
    /// longer allowed: states only move forward, so this ends.
    async fn settle(
        &self,
        mut attempt: Attempt,
        target: AttemptState,
        facts: &ProviderFacts<'_>,
    ) -> Result<Attempt, DbError> {
        if target == AttemptState::Failed
            && attempt.state.can_become(target)
            && let Some(went_on) = self.cancel_before_failing(&attempt, facts).await?
        {
            return Ok(went_on);
        }
        while attempt.state.can_become(target) {
            let now = self.clock.now_ms();
            let mut moved = attempt.settled(target, facts, now);
            // The bank declined without the customer and gave no page to send them to:
            // they confirm the same payment on topupd's page.
            if moved.state == AttemptState::RequiresAction && moved.next_action_url.is_none() {
                moved.next_action_url = confirm_link::link(
                    &moved,
                    &self.config.http.public_url,
                    self.config.auto_topup.authentication_expiry_hours,
                );
            }
            let write = self.settle_write(attempt.state, moved.clone(), now);
            let pause = write.pause.clone();
            let Some(outcome) = self.settlements.write(write).await? else {
                attempt = self.reload(&attempt).await?;
                continue;
            };
            tracing::info!(account_id = %moved.account_id, attempt_id = %moved.id, trigger = moved.trigger.as_str(), state = moved.state.as_str(), "top-up attempt moved");
            crate::metrics::attempt_settled(moved.trigger, moved.state);
            match pause {
                PauseChange::Pause(reason) => crate::metrics::paused(reason),
                PauseChange::Resume if outcome.resumed => {
                    crate::metrics::resumed(ResumedBy::Payment);
                }
                PauseChange::Resume | PauseChange::Keep => {}
            }
            for kind in outcome.queued {
                crate::metrics::notices_queued(kind, 1);
            }
            return Ok(moved);
        }
        // Not moved: at or past `target` already, as it stands now.
        let current = self.reload(&attempt).await?;
        if target == AttemptState::Succeeded
            && matches!(current.state, AttemptState::Failed | AttemptState::Canceled)
        {
            // Money taken for an attempt that credits nothing: never silently.
            tracing::error!(account_id = %current.account_id, attempt_id = %current.id, state = current.state.as_str(), "the provider reports a success for a top-up that had ended without one; flagged for support");
            self.db
                .flag_attempt(&current.id, self.clock.now_ms())
                .await?;
        }
        Ok(current)
    }

    /// The write that settles an attempt in `from` as `moved`: the move and all that
    /// follows from it ([`settlement`]), its notices composed.
    pub fn settle_write(&self, from: AttemptState, moved: Attempt, now: Millis) -> SettleWrite {
        let plan = settlement(&moved, now);
        let cause = format!("attempt:{}", moved.id);
        let email = &self.config.email;
        let compose = |notices: &[crate::domain::notice::Notice]| -> Vec<_> {
            notices
                .iter()
                .map(|n| notices::compose(&cause, &moved.account_id, n.clone(), email, now))
                .collect()
        };
        SettleWrite {
            notices: compose(&plan.notices),
            notices_if_resumed: compose(&plan.notices_if_resumed),
            credit: plan.credit.map(|credit| {
                let cause = format!("{cause}:topup_receipt");
                let receipt =
                    crate::db::notices::Envelope::to_owner(cause, &moved.account_id, email, now);
                (credit, receipt)
            }),
            pause: plan.pause,
            from,
            attempt: moved,
        }
    }

    /// A failed attempt credits nothing, so its payment must never take money later (a
    /// second press on the confirmation page, or Stripe.js holding the client secret): it
    /// is cancelled first. `None` when the attempt may now fail. If the provider will not
    /// cancel it, the payment went on, and what it says now is applied instead; if the
    /// provider cannot be asked, the attempt stays as it is, to be asked again.
    async fn cancel_before_failing(
        &self,
        attempt: &Attempt,
        facts: &ProviderFacts<'_>,
    ) -> Result<Option<Attempt>, DbError> {
        let Some(payment_id) = attempt
            .provider_payment_id
            .as_deref()
            .or(facts.provider_payment_id)
        else {
            return Ok(None);
        };
        let failing = Failing {
            code: facts.decline_code.unwrap_or("card_declined").to_owned(),
            message: facts.failure_message.map(str::to_owned),
            flag: facts.flag,
        };
        self.db.failing_attempt(&attempt.id, &failing).await?;
        let key = format!("{}:cancel", attempt.idempotency_key);
        let Err(error) = self.provider.cancel_payment_intent(payment_id, &key).await else {
            return Ok(None);
        };
        // Whatever the answer (a refusal, or none: the provider replays a lost answer under
        // the same key), the payment itself says where it stands.
        let unanswered = matches!(
            error,
            ProviderError::Unknown { .. } | ProviderError::Unauthorized { .. }
        );
        match self.provider.payment_intent(payment_id).await {
            Ok(intent) if intent.status == "canceled" => Ok(None),
            Ok(intent)
                if matches!(
                    intent.status.as_str(),
                    "requires_payment_method" | "requires_confirmation"
                ) =>
            {
                if unanswered {
                    tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "could not cancel the payment of a failed top-up; will ask again");
                    return Ok(Some(attempt.clone()));
                }
                tracing::error!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "the provider would not cancel the payment of a failed top-up");
                Ok(None)
            }
            Ok(intent) => {
                tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, status = %intent.status, "the payment of a failing top-up went on; applying it");
                Ok(Some(Box::pin(self.apply(attempt.clone(), &intent)).await?))
            }
            Err(error) => {
                tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "could not read the payment of a failing top-up; will ask again");
                Ok(Some(attempt.clone()))
            }
        }
    }
}

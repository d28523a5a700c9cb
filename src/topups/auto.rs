//! The auto top-up engine: the scan that claims and charges due accounts, the customer's
//! retry of a paused top-up, support's resume, and the reconciler that resumes attempts a
//! crash or an unknown answer left open.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    sync::Semaphore,
    task::{JoinError, JoinSet},
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Topups;
use crate::{
    clock::Millis,
    db::{
        DbError,
        audit::Actor,
        auto_topup::{AutoClaim, AutoClaimOutcome, ClaimTerms},
        notices::NewNotice,
    },
    domain::{
        api_key::Role,
        attempt::{Attempt, AttemptState, AttemptTrigger},
        auto_topup::{Decision, PauseReason},
        backoff::recheck_delay,
        notice::{Notice, NoticeKind, ResumedBy, Resumption},
    },
    metrics::ScanEnd,
    notices,
};

/// A scan logs its progress every this many due accounts...
const PROGRESS_EVERY_ACCOUNTS: usize = 100;
/// ...or after this long without a progress line, whichever comes first.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What one scan did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanReport {
    /// Due accounts the scan's claims read.
    pub due: usize,
    /// Attempts claimed and charged.
    pub claimed: usize,
    /// Due accounts left as they were: a top-up of theirs was open, or the balance was
    /// within the smallest purchase of the target.
    pub skipped: usize,
    /// Due accounts paused instead of charged: the charge would have gone past their
    /// monthly spend cap.
    pub capped: usize,
    /// Due accounts whose charge was announced to the customer first.
    pub announced: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub requires_action: usize,
    /// Outcome not known yet: left open for the reconciler, never paused.
    pub pending: usize,
}

impl ScanReport {
    /// Counts one charge task: the attempt's state, if the charge was not interrupted.
    fn count(&mut self, joined: Result<Option<AttemptState>, JoinError>) {
        let state = joined.unwrap_or_else(|error| {
            tracing::error!(%error, "a charge task failed");
            None
        });
        self.claimed += 1;
        match state {
            Some(AttemptState::Succeeded) => self.succeeded += 1,
            Some(AttemptState::Failed | AttemptState::Canceled) => self.failed += 1,
            Some(AttemptState::RequiresAction) => self.requires_action += 1,
            // Not settled yet, or interrupted: left open for the reconciler.
            Some(_) | None => self.pending += 1,
        }
    }

    /// Logs the counts so far, with the scan's span (and so its id).
    fn log(&self, message: &str, started: Instant, cut_short: bool) {
        tracing::info!(
            due = self.due,
            claimed = self.claimed,
            skipped = self.skipped,
            capped = self.capped,
            announced = self.announced,
            succeeded = self.succeeded,
            failed = self.failed,
            requires_action = self.requires_action,
            pending = self.pending,
            duration_ms = started.elapsed().as_millis() as u64,
            cut_short,
            "{message}"
        );
    }
}

/// When a scan next logs its progress.
struct Progress {
    started: Instant,
    last_at: Instant,
    last_due: usize,
}

impl Progress {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last_at: started,
            last_due: 0,
        }
    }

    /// Whether enough accounts or time went by since the last line.
    fn due(&self, report: &ScanReport, now: Instant) -> bool {
        report.due >= self.last_due + PROGRESS_EVERY_ACCOUNTS
            || now.duration_since(self.last_at) >= PROGRESS_EVERY
    }

    /// Logs the report if it is time to.
    fn tick(&mut self, report: &ScanReport) {
        let now = Instant::now();
        if self.due(report, now) {
            report.log("scan progress", self.started, false);
            self.last_at = now;
            self.last_due = report.due;
        }
    }
}

impl std::fmt::Display for ScanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} due, {} charged ({} succeeded, {} failed, {} awaiting authentication, {} pending), {} skipped",
            self.due,
            self.claimed,
            self.succeeded,
            self.failed,
            self.requires_action,
            self.pending,
            self.skipped
        )
    }
}

/// What one reconciler round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Open attempts looked at again.
    pub examined: usize,
    /// Of those, the ones that reached an outcome.
    pub settled: usize,
    /// Attempts newly flagged for support.
    pub flagged: u64,
}

/// What support's "try now" did after the resume.
#[derive(Debug)]
pub enum TriedNow {
    /// Not asked: the next scan charges the account if it is due.
    NotAsked,
    /// Charged (or being charged): the attempt as it stands.
    Charged(Attempt),
    /// The rules say there is nothing to charge now, and why.
    NotDue(Decision),
    /// Less is missing than the smallest purchase buys.
    NothingWorthCharging,
    /// Another top-up of the account is open.
    Busy(Attempt),
}

/// The result of the customer's retry.
#[derive(Debug)]
pub enum RetryOutcome {
    /// Charged (or being charged): the attempt as it stands.
    Charged(Attempt),
    /// Nothing worth charging (the balance is at the target, or closer to it than the
    /// smallest purchase buys): resumed without a charge.
    ResumedWithoutCharge,
    NotPaused,
    /// Paused for money taken back (a dispute or a refund): only support resumes it.
    HeldForSupport(PauseReason),
    /// Paused because this month reached the spend cap: a charge now would go past it. It
    /// lifts at `until` (the month's end) or when the customer raises the cap.
    CapReached {
        until: Option<Millis>,
    },
    Busy(Attempt),
    AccountNotFound,
}

impl Topups {
    /// The terms of a claim made now.
    fn claim_terms(&self) -> ClaimTerms<'_> {
        ClaimTerms {
            window_ms: self.config.auto_topup.window_ms(),
            credit_price_cents: self.config.credit_price_cents,
            min_amount_cents: self.config.payments.min_topup_cents,
            currency: &self.config.payments.currency,
            key_prefix: &self.config.payments.idempotency_prefix,
            email: &self.config.email,
            at: self.clock.now_ms(),
        }
    }

    fn auto_claim<'a>(
        &'a self,
        account_id: &'a str,
        trigger: AttemptTrigger,
        respect_window: bool,
    ) -> AutoClaim<'a> {
        AutoClaim {
            account_id,
            trigger,
            respect_window,
            terms: self.claim_terms(),
            staff: None,
        }
    }

    /// The scheduled tick after the one starting now (a second on, so a tick that fires
    /// a little early does not count as the next).
    pub fn next_tick(&self) -> Option<Millis> {
        let after = self.clock.now_ms().saturating_add(1_000);
        crate::domain::schedule::next_scan(&self.config.auto_topup.scan_schedule, after)
    }

    /// One scan: every account due now is claimed (once, whatever else scans at the same
    /// time) and charged, at most `charge_concurrency` charges at a time. A scheduled scan
    /// claims nothing from `until` on, the time of the next tick, which goes on from the
    /// accounts left. Its log lines, and those of the attempts it charges, carry the
    /// scan's id.
    pub async fn scan(
        &self,
        cancel: &CancellationToken,
        until: Option<Millis>,
    ) -> Result<ScanReport, DbError> {
        let span = tracing::info_span!("scan", scan_id = %uuid::Uuid::now_v7());
        self.scan_in_span(cancel, until).instrument(span).await
    }

    async fn scan_in_span(
        &self,
        cancel: &CancellationToken,
        until: Option<Millis>,
    ) -> Result<ScanReport, DbError> {
        let settings = &self.config.auto_topup;
        let started = Instant::now();
        tracing::info!(
            batch_size = settings.scan_batch_size,
            charge_concurrency = settings.charge_concurrency,
            "scan started"
        );
        // Pauses for a spend cap reached last month end before the due set is read, so
        // their accounts are charged in this scan.
        let now = self.clock.now_ms();
        let (lifted, told) = self.db.lift_ended_pauses(now, &self.config.email).await?;
        for _ in 0..lifted {
            crate::metrics::resumed(ResumedBy::NewMonth);
        }
        crate::metrics::notices_queued(NoticeKind::AutoTopupResumed.as_str(), told);
        crate::metrics::scan_started();
        let permits = Arc::new(Semaphore::new(settings.charge_concurrency as usize));
        let mut charges = JoinSet::new();
        let mut report = ScanReport::default();
        let mut progress = Progress::new(started);
        let mut cursor = None;
        // A failure or shutdown stops the search for due accounts, never the charges under
        // way: they are drained before the scan returns.
        let mut failure = None;
        let mut stopped = None;
        loop {
            if cancel.is_cancelled() {
                stopped = Some(ScanEnd::CutShort);
                break;
            }
            if until.is_some_and(|until| self.clock.now_ms() >= until) {
                stopped = Some(ScanEnd::Overran);
                break;
            }
            // A page is as large as the charges that can start now, so no more attempts
            // are claimed than are being charged: a crash leaves few claimed-but-unstarted
            // attempts behind, and the claims of a page share one commit.
            let mut free = vec![
                permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed"),
            ];
            while free.len() < settings.scan_batch_size as usize
                && let Ok(permit) = permits.clone().try_acquire_owned()
            {
                free.push(permit);
            }
            let page = match self
                .db
                .claim_due_page(&self.claim_terms(), cursor.as_ref(), free.len() as u32)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            };
            report.due += page.attempts.len() + page.skipped + page.capped + page.announced;
            report.announced += page.announced;
            crate::metrics::notices_queued(NoticeKind::TopupAnnounced.as_str(), page.announced);
            report.skipped += page.skipped;
            report.capped += page.capped;
            for _ in 0..page.capped {
                crate::metrics::paused(PauseReason::SpendCapReached);
            }
            crate::metrics::notices_queued(NoticeKind::SpendCapReached.as_str(), page.capped);
            for (attempt, permit) in page.attempts.into_iter().zip(free) {
                let engine = self.clone();
                charges.spawn(
                    async move {
                        let _permit = permit;
                        engine.charge_scanned(attempt).await
                    }
                    .in_current_span(),
                );
            }
            // A finished charge is counted now: kept until the end, each would hold its
            // task's memory for the rest of the scan.
            while let Some(joined) = charges.try_join_next() {
                report.count(joined);
            }
            progress.tick(&report);
            let Some(next) = page.next else {
                break;
            };
            cursor = Some(next);
        }
        while let Some(joined) = charges.join_next().await {
            report.count(joined);
            progress.tick(&report);
        }
        let end = match (&failure, stopped) {
            (Some(_), _) => ScanEnd::Failed,
            (None, Some(end)) => end,
            (None, None) => ScanEnd::Finished,
        };
        let seconds = started.elapsed().as_secs_f64();
        crate::metrics::scan_ended(end, report.due, report.claimed, seconds);
        match end {
            ScanEnd::Finished => report.log("scan finished", started, false),
            ScanEnd::CutShort => {
                tracing::warn!(
                    "scan cut short by shutdown; the due accounts it did not reach are left to the next scan"
                );
                report.log("scan cut short", started, true);
            }
            ScanEnd::Overran => {
                tracing::warn!(
                    "scan reached the next tick; the next scan goes on with the due accounts it did not reach"
                );
                report.log("scan overran", started, true);
            }
            ScanEnd::Failed => report.log("scan failed", started, false),
        }
        match failure {
            Some(error) => {
                tracing::error!(?error, "scan stopped early by a database error");
                Err(error)
            }
            None => Ok(report),
        }
    }

    /// Charges an attempt the scan claimed: the attempt's state, if the charge was not
    /// interrupted.
    /// A declined charge whose settlement claimed a try on a backup card is followed by
    /// that try, as part of the same top-up.
    async fn charge_scanned(&self, mut attempt: Attempt) -> Option<AttemptState> {
        loop {
            let (account_id, attempt_id) = (attempt.account_id.clone(), attempt.id.clone());
            let charged = match self.charge_claimed(attempt).await {
                Ok(charged) => charged,
                Err(error) => {
                    // The attempt is open; the reconciler resumes it.
                    tracing::error!(%account_id, %attempt_id, ?error, "charge interrupted");
                    return None;
                }
            };
            if charged.state != AttemptState::Failed {
                return Some(charged.state);
            }
            match self.db.backup_claimed_after(&charged.id).await {
                Ok(Some(backup)) => {
                    tracing::info!(%account_id, declined = %attempt_id, backup = %backup.id, card = %backup.payment_method_id, "declined; trying a backup card in the same top-up");
                    attempt = backup;
                }
                Ok(None) => return Some(charged.state),
                Err(error) => {
                    // The backup's claim is written; the reconciler charges it.
                    tracing::error!(%account_id, %attempt_id, ?error, "could not read the backup try");
                    return None;
                }
            }
        }
    }

    /// The customer completes a paused top-up now with the current default card (or the
    /// one set for auto top-up), outside the rate-limit window. Success resumes.
    pub async fn retry_paused(
        &self,
        account_id: &str,
        actor: &Actor,
    ) -> Result<RetryOutcome, DbError> {
        let Some(account) = self.db.account(account_id).await? else {
            return Ok(RetryOutcome::AccountNotFound);
        };
        let Some(pause) = account.auto_topup.pause else {
            return Ok(RetryOutcome::NotPaused);
        };
        let reason = pause.reason;
        if reason == PauseReason::SpendCapReached {
            return Ok(RetryOutcome::CapReached { until: pause.until });
        }
        if !reason.ended_by_payment() && actor.role == Role::Customer.as_str() {
            return Ok(RetryOutcome::HeldForSupport(reason));
        }
        // A charge made by staff on the customer's behalf is a staff action, audited
        // with its claim.
        let claim = AutoClaim {
            staff: (actor.role != Role::Customer.as_str()).then_some(actor),
            ..self.auto_claim(account_id, AttemptTrigger::Retry, false)
        };
        match self.db.claim_auto_attempt(&claim).await? {
            AutoClaimOutcome::Claimed(attempt) => {
                Ok(RetryOutcome::Charged(self.charge_claimed(attempt).await?))
            }
            AutoClaimOutcome::Busy(open) => Ok(RetryOutcome::Busy(open)),
            AutoClaimOutcome::NotDue(_) => Ok(RetryOutcome::NotPaused),
            AutoClaimOutcome::NothingToCharge => {
                self.resume(
                    account_id,
                    actor,
                    "retried with nothing worth charging: the balance is within the smallest purchase of the target",
                    false,
                )
                .await?;
                Ok(RetryOutcome::ResumedWithoutCharge)
            }
        }
    }

    /// Support ends a pause (audited). With `try_now`, the account is charged at once if it
    /// is below its threshold, even inside the window. The customer is told auto top-up is
    /// back on only if it is on when the resume (and its try) is done. `None` when the
    /// account is not paused.
    pub async fn resume(
        &self,
        account_id: &str,
        actor: &Actor,
        note: &str,
        try_now: bool,
    ) -> Result<Option<TriedNow>, DbError> {
        let now = self.clock.now_ms();
        let back_on = self.resumed_notice(account_id, now);
        // A try is told by its own outcome: the notice waits for it.
        let resumed = self
            .db
            .resume_auto_topup(account_id, actor, note, now, (!try_now).then_some(&back_on))
            .await?;
        let Some(queued) = resumed else {
            return Ok(None);
        };
        crate::metrics::resumed(ResumedBy::Support);
        let count_notice = |queued| {
            if queued {
                crate::metrics::notices_queued("auto_topup_resumed", 1);
            }
        };
        count_notice(queued);
        if !try_now {
            return Ok(Some(TriedNow::NotAsked));
        }
        // The charge support asked for is audited with its claim, as a staff retry is.
        let claim = AutoClaim {
            staff: Some(actor),
            ..self.auto_claim(account_id, AttemptTrigger::Auto, false)
        };
        let tried = match self.db.claim_auto_attempt(&claim).await? {
            AutoClaimOutcome::Claimed(attempt) => {
                TriedNow::Charged(self.charge_claimed(attempt).await?)
            }
            AutoClaimOutcome::NotDue(decision) => TriedNow::NotDue(decision),
            AutoClaimOutcome::NothingToCharge => TriedNow::NothingWorthCharging,
            AutoClaimOutcome::Busy(open) => TriedNow::Busy(open),
        };
        count_notice(self.db.queue_notice_if_active(&back_on).await?);
        Ok(Some(tried))
    }

    /// The customer's notice that support resumed auto top-up.
    fn resumed_notice(&self, account_id: &str, at: Millis) -> NewNotice {
        let notice = Notice::AutoTopupResumed(Resumption {
            by: ResumedBy::Support,
            at,
        });
        notices::compose(
            &format!("resume:{account_id}:{at}"),
            account_id,
            notice,
            &self.config.email,
            at,
        )
    }

    /// One reconciler round: open attempts due for a check and untouched for
    /// `reconcile_after_secs` are resumed from their written state (asking the provider
    /// again with the same keys); checks back off per attempt, so attempts waiting on a
    /// customer never crowd out the others. Payments waiting for authentication past
    /// `authentication_expiry_hours` are cancelled, and attempts open past
    /// `flag_after_hours` are flagged for support.
    pub async fn reconcile(&self, cancel: &CancellationToken) -> Result<ReconcileReport, DbError> {
        let settings = &self.config.auto_topup;
        let now = self.clock.now_ms();
        let flag_before = now - i64::from(settings.flag_after_hours) * 3_600_000;
        let flagged = self.db.flag_attempts(flag_before, now).await?;
        if flagged > 0 {
            tracing::error!(
                flagged,
                "top-up attempts unresolved for too long; flagged for support"
            );
        }
        let stale_before =
            now - i64::try_from(settings.reconcile_after_secs * 1000).unwrap_or(i64::MAX);
        let expired_before = now - i64::from(settings.authentication_expiry_hours) * 3_600_000;
        let mut report = ReconcileReport {
            flagged,
            ..ReconcileReport::default()
        };
        for attempt in self
            .db
            .attempts_to_check(now, stale_before, settings.scan_batch_size)
            .await?
        {
            if cancel.is_cancelled() {
                break;
            }
            report.examined += 1;
            let checks = attempt.check_count;
            let expired = attempt.state == AttemptState::RequiresAction
                && attempt.created_at <= expired_before;
            let attempt = if expired {
                self.cancel_payment(attempt).await?
            } else {
                self.refresh(attempt).await?
            };
            if attempt.state.is_terminal() {
                report.settled += 1;
            } else {
                let first = Duration::from_secs(settings.recheck_after_secs);
                let delay =
                    i64::try_from(recheck_delay(checks, first).as_millis()).unwrap_or(i64::MAX);
                self.db
                    .checked_attempt(&attempt.id, self.clock.now_ms().saturating_add(delay))
                    .await?;
            }
        }
        Ok(report)
    }

    /// Cancels the attempt's payment at the provider and applies what the provider says:
    /// usually canceled, but succeeded if the customer authenticated just before.
    async fn cancel_payment(&self, attempt: Attempt) -> Result<Attempt, DbError> {
        let Some(payment_id) = attempt.provider_payment_id.clone() else {
            return Ok(attempt);
        };
        let key = format!("{}:cancel", attempt.idempotency_key);
        match self.provider.cancel_payment_intent(&payment_id, &key).await {
            Ok(intent) => self.apply(attempt, &intent).await,
            Err(error) => {
                tracing::warn!(account_id = %attempt.account_id, attempt_id = %attempt.id, %error, "cancel refused; reading the payment instead");
                self.refresh(attempt).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_logs_progress_every_hundred_accounts_or_ten_seconds() {
        let started = Instant::now();
        let mut progress = Progress::new(started);
        let report = |due| ScanReport {
            due,
            ..ScanReport::default()
        };
        assert!(!progress.due(&report(99), started + Duration::from_secs(9)));
        assert!(progress.due(&report(100), started));
        assert!(progress.due(&report(1), started + PROGRESS_EVERY));
        progress.last_due = 100;
        progress.last_at = started + Duration::from_secs(5);
        assert!(!progress.due(&report(199), started + Duration::from_secs(14)));
        assert!(progress.due(&report(200), started + Duration::from_secs(6)));
        assert!(progress.due(&report(101), started + Duration::from_secs(15)));
    }
}

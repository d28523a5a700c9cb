//! What a drill must end with, checked against the stub provider's own list of charges
//! (never topupd's word alone), topupd's database, `topupd verify` and the SMTP sink.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{postgres::PgRow, sqlite::SqliteRow};
use topupd::{
    db::Db,
    domain::{
        credits::Millicredits,
        money::Cents,
        reversal::{credits_for, dispute_holds},
    },
    payments::stub::world::Charge,
};

use crate::{smtp::Received, webhook_host::Arrival};

/// Runs a read-only query on either backend.
async fn fetch<T>(db: &Db, sql: &'static str) -> Vec<T>
where
    T: Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>,
{
    match db {
        Db::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        Db::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// How far the drill has come, to know when it is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Progress {
    /// Accounts with at least one top-up attempt.
    pub attempted: i64,
    /// Attempts not yet succeeded, failed or canceled.
    pub open: i64,
    /// Notices still to be sent.
    pub unsent: i64,
    /// Webhook deliveries not yet delivered.
    pub undelivered: i64,
}

impl Progress {
    pub async fn read(db: &Db) -> Self {
        const SQL: &str = "SELECT \
            (SELECT COUNT(DISTINCT account_id) FROM topup_attempts) AS attempted, \
            (SELECT COUNT(*) FROM topup_attempts WHERE state NOT IN ('succeeded', 'failed', 'canceled')) AS open, \
            (SELECT COUNT(*) FROM notices WHERE state IN ('pending', 'sending')) AS unsent, \
            (SELECT COUNT(*) FROM webhook_deliveries WHERE state <> 'delivered') AS undelivered";
        fetch(db, SQL).await.remove(0)
    }
}

const ATTEMPTS: &str = "SELECT id, state, provider_payment_id, credits, amount_cents, refunded_cents \
                        FROM topup_attempts";

#[derive(Debug, sqlx::FromRow)]
struct Attempt {
    id: String,
    state: String,
    provider_payment_id: Option<String>,
    credits: i64,
    amount_cents: i64,
    refunded_cents: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct Message {
    seq: i64,
    id: String,
    account_id: String,
}

#[derive(Debug, sqlx::FromRow)]
struct Credit {
    reference: String,
    amount: i64,
}

/// A ledger entry that takes money back (or gives held money back).
#[derive(Debug, sqlx::FromRow)]
struct Reversal {
    kind: String,
    reference: String,
    amount: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct Dispute {
    id: String,
    outcome: Option<String>,
}

#[derive(Debug, sqlx::FromRow)]
struct Notice {
    cause: String,
    message_id: String,
    state: String,
}

/// What the checks found. A drill passes when every count of trouble is zero.
#[derive(Debug, Default)]
pub struct Verdict {
    pub attempts: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// Payments captured, by the stub's list.
    pub charges: usize,
    /// Charges beyond the first for an account (each may be charged once per window).
    pub double_charges: usize,
    pub charged_not_credited: usize,
    pub credited_not_charged: usize,
    /// Refunds at the provider whose credits were not taken back exactly (or credits
    /// taken back that no refund accounts for).
    pub refunds_not_taken_back: usize,
    /// Disputes whose credits are not held, given back or kept removed as the provider's
    /// outcome says.
    pub disputes_unsettled: usize,
    /// Attempts still open after the drill.
    pub stuck: usize,
    pub verify_clean: bool,
    pub notices: usize,
    /// Notices not marked sent, or never received by the SMTP server.
    pub notices_lost: usize,
    /// Settled attempts that queued no notice.
    pub attempts_without_notice: usize,
    /// Copies received beyond the first, all with the notice's own Message-ID.
    pub notices_resent: usize,
    /// Messages received that no notice accounts for.
    pub unknown_messages: usize,
    /// How many resends the drill allows: one per kill inside a send, none without kills.
    pub resends_allowed: usize,
    /// Webhook messages written (each for the drill's one endpoint).
    pub webhooks: usize,
    /// Messages the host never received.
    pub webhooks_lost: usize,
    /// Copies received beyond the first (at least once allows them).
    pub webhooks_redelivered: usize,
    /// Messages of an account that first arrived after a later one of the same account.
    pub webhooks_out_of_order: usize,
    pub webhooks_badly_signed: usize,
    /// Deliveries received that no message accounts for (or of another account).
    pub webhooks_unknown: usize,
    /// The first few findings, to start an investigation from.
    pub problems: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.double_charges == 0
            && self.charged_not_credited == 0
            && self.credited_not_charged == 0
            && self.refunds_not_taken_back == 0
            && self.disputes_unsettled == 0
            && self.stuck == 0
            && self.verify_clean
            && self.notices_lost == 0
            && self.attempts_without_notice == 0
            && self.unknown_messages == 0
            && self.notices_resent <= self.resends_allowed
            && self.webhooks > 0
            && self.webhooks_lost == 0
            && self.webhooks_out_of_order == 0
            && self.webhooks_badly_signed == 0
            && self.webhooks_unknown == 0
    }

    fn problem(&mut self, problem: String) {
        const KEPT: usize = 20;
        if self.problems.len() < KEPT {
            self.problems.push(problem);
        }
    }

    /// Checks the money, the ledger and the notices of a drill that has come to rest.
    pub async fn reach(
        db: &Db,
        charges: &[Charge],
        verify: (bool, String),
        received: &[Received],
        resends_allowed: usize,
        arrivals: &[Arrival],
    ) -> Self {
        let mut verdict = Verdict {
            charges: charges.len(),
            verify_clean: verify.0,
            resends_allowed,
            ..Verdict::default()
        };
        if !verify.0 {
            verdict.problem(format!("topupd verify: {}", verify.1));
        }
        let attempts: Vec<Attempt> = fetch(db, ATTEMPTS).await;
        let credits: Vec<Credit> = fetch(
            db,
            "SELECT reference, amount FROM ledger_entries WHERE kind IN ('auto_topup', 'manual_topup')",
        )
        .await;
        let notices: Vec<Notice> = fetch(db, "SELECT cause, message_id, state FROM notices").await;
        verdict.check_money(&attempts, &credits, charges);
        verdict.check_reversals(db, &attempts, charges).await;
        verdict.check_notices(&attempts, &notices, received);
        let messages: Vec<Message> =
            fetch(db, "SELECT seq, id, account_id FROM webhook_messages").await;
        verdict.check_webhooks(&messages, arrivals);
        verdict
    }

    /// Every message reached the host at least once, correctly signed, and each
    /// account's messages first arrived in the order they were written.
    fn check_webhooks(&mut self, messages: &[Message], arrivals: &[Arrival]) {
        self.webhooks = messages.len();
        let seq_of: BTreeMap<&str, (&str, i64)> = messages
            .iter()
            .map(|m| (m.id.as_str(), (m.account_id.as_str(), m.seq)))
            .collect();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let mut last_of_account: BTreeMap<&str, i64> = BTreeMap::new();
        for arrival in arrivals {
            if !arrival.signed {
                self.webhooks_badly_signed += 1;
                self.problem(format!(
                    "webhook {} arrived badly signed",
                    arrival.message_id
                ));
            }
            let Some(&(account, seq)) = seq_of.get(arrival.message_id.as_str()) else {
                self.webhooks_unknown += 1;
                self.problem(format!("webhook {} is no message's", arrival.message_id));
                continue;
            };
            if arrival.account_id != account {
                self.webhooks_unknown += 1;
                self.problem(format!(
                    "webhook {} names account {:?}, its message {account}",
                    arrival.message_id, arrival.account_id
                ));
            }
            let copies = seen.entry(arrival.message_id.as_str()).or_default();
            *copies += 1;
            if *copies > 1 {
                self.webhooks_redelivered += 1;
                continue;
            }
            let last = last_of_account.entry(account).or_insert(i64::MIN);
            if seq < *last {
                self.webhooks_out_of_order += 1;
                self.problem(format!(
                    "webhook {} of {account} arrived after a later one",
                    arrival.message_id
                ));
            }
            *last = (*last).max(seq);
        }
        for message in messages {
            if !seen.contains_key(message.id.as_str()) {
                self.webhooks_lost += 1;
                self.problem(format!("webhook {} never reached the host", message.id));
            }
        }
    }

    /// Whether every refund and dispute the provider has is applied as it should be: the
    /// drill is not at rest before.
    pub async fn reversals_applied(db: &Db, charges: &[Charge]) -> bool {
        let attempts: Vec<Attempt> = fetch(db, ATTEMPTS).await;
        let mut verdict = Verdict::default();
        verdict.check_reversals(db, &attempts, charges).await;
        verdict.refunds_not_taken_back == 0 && verdict.disputes_unsettled == 0
    }

    /// Each captured charge's refunds took back exactly the credits of the refunded part,
    /// each dispute holds the credits of its share, given back if it was won and kept
    /// removed if lost, and nothing else was taken back.
    async fn check_reversals(&mut self, db: &Db, attempts: &[Attempt], charges: &[Charge]) {
        let entries: Vec<Reversal> = fetch(
            db,
            "SELECT kind, reference, amount FROM ledger_entries \
             WHERE kind IN ('payment_refund', 'dispute_hold', 'dispute_release')",
        )
        .await;
        let disputes: Vec<Dispute> = fetch(db, "SELECT id, outcome FROM disputes").await;
        let outcomes: BTreeMap<&str, Option<&str>> = disputes
            .iter()
            .map(|d| (d.id.as_str(), d.outcome.as_deref()))
            .collect();
        let by_payment: BTreeMap<&str, &Attempt> = attempts
            .iter()
            .filter_map(|a| Some((a.provider_payment_id.as_deref()?, a)))
            .collect();
        let sum = |kind: &str, matches: &dyn Fn(&str) -> bool| -> i64 {
            entries
                .iter()
                .filter(|e| e.kind == kind && matches(&e.reference))
                .map(|e| e.amount)
                .sum()
        };
        let mut accounted = 0;
        for charge in charges {
            let Some(attempt) = by_payment.get(charge.payment_intent.as_str()) else {
                continue;
            };
            let (credits, amount) = (Millicredits(attempt.credits), Cents(attempt.amount_cents));
            let prefix = format!("{}:", attempt.id);
            let taken = -sum("payment_refund", &|r| r.starts_with(&prefix));
            let expected = credits_for(credits, amount, charge.amount_refunded).0;
            accounted += taken;
            if taken != expected || attempt.refunded_cents != charge.amount_refunded {
                self.refunds_not_taken_back += 1;
                self.problem(format!(
                    "charge {:?} refunded {} cents: attempt {} took back {taken} millicredits of {expected} (refunded {} cents)",
                    charge.charge_id, charge.amount_refunded, attempt.id, attempt.refunded_cents
                ));
            }
            for dispute in &charge.disputes {
                let held = -sum("dispute_hold", &|r| r == dispute.id);
                let released = sum("dispute_release", &|r| r == dispute.id);
                let holds = dispute_holds(
                    credits,
                    amount,
                    Cents(charge.amount_refunded),
                    Cents(dispute.amount),
                )
                .0;
                let (outcome, gives_back) = match dispute.status.as_str() {
                    "won" => (Some("released"), holds),
                    "lost" => (Some("removed"), 0),
                    _ => (None, 0),
                };
                let stored = outcomes.get(dispute.id.as_str()).copied();
                if stored != Some(outcome) || held != holds || released != gives_back {
                    self.disputes_unsettled += 1;
                    self.problem(format!(
                        "dispute {} is {} at the provider: stored {stored:?}, held {held} of {holds}, gave back {released} of {gives_back}",
                        dispute.id, dispute.status
                    ));
                }
            }
        }
        let all_taken = -sum("payment_refund", &|_| true);
        if all_taken != accounted {
            self.refunds_not_taken_back += 1;
            self.problem(format!(
                "{} millicredits taken back for refunds no captured charge has",
                all_taken - accounted
            ));
        }
    }

    fn check_money(&mut self, attempts: &[Attempt], credits: &[Credit], charges: &[Charge]) {
        self.attempts = attempts.len();
        self.succeeded = attempts.iter().filter(|a| a.state == "succeeded").count();
        self.failed = attempts
            .iter()
            .filter(|a| matches!(a.state.as_str(), "failed" | "canceled"))
            .count();
        for open in attempts
            .iter()
            .filter(|a| !matches!(a.state.as_str(), "succeeded" | "failed" | "canceled"))
        {
            self.stuck += 1;
            self.problem(format!("attempt {} still {}", open.id, open.state));
        }

        let mut per_account: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for charge in charges {
            let account = charge
                .metadata
                .get("account_id")
                .map_or("?", String::as_str);
            per_account
                .entry(account)
                .or_default()
                .push(&charge.payment_intent);
        }
        for (account, payments) in per_account.iter().filter(|(_, p)| p.len() > 1) {
            self.double_charges += payments.len() - 1;
            self.problem(format!(
                "account {account} charged {} times: {payments:?}",
                payments.len()
            ));
        }

        let by_payment: BTreeMap<&str, &Attempt> = attempts
            .iter()
            .filter_map(|a| Some((a.provider_payment_id.as_deref()?, a)))
            .collect();
        let mut credits_of: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for credit in credits {
            credits_of
                .entry(&credit.reference)
                .or_default()
                .push(credit.amount);
        }
        for charge in charges {
            let Some(attempt) = by_payment.get(charge.payment_intent.as_str()) else {
                self.charged_not_credited += 1;
                self.problem(format!("charge {} has no attempt", charge.payment_intent));
                continue;
            };
            let credited = credits_of
                .get(attempt.id.as_str())
                .map_or(&[][..], Vec::as_slice);
            let exact = credited == [attempt.credits]
                && attempt.state == "succeeded"
                && attempt.amount_cents == charge.amount_received;
            if !exact {
                self.charged_not_credited += 1;
                self.problem(format!(
                    "charge {} of {} cents: attempt {} is {} for {} cents and credited {credited:?} (expected [{}])",
                    charge.payment_intent,
                    charge.amount_received,
                    attempt.id,
                    attempt.state,
                    attempt.amount_cents,
                    attempt.credits
                ));
            }
        }

        let charged: BTreeSet<&str> = charges.iter().map(|c| c.payment_intent.as_str()).collect();
        let by_id: BTreeMap<&str, &Attempt> = attempts.iter().map(|a| (a.id.as_str(), a)).collect();
        for credit in credits {
            let payment = by_id
                .get(credit.reference.as_str())
                .and_then(|a| a.provider_payment_id.as_deref());
            if !payment.is_some_and(|p| charged.contains(p)) {
                self.credited_not_charged += 1;
                self.problem(format!(
                    "credit of {} for {} matches no charge (payment {payment:?})",
                    credit.amount, credit.reference
                ));
            }
        }
    }

    fn check_notices(&mut self, attempts: &[Attempt], notices: &[Notice], received: &[Received]) {
        self.notices = notices.len();
        let causes: BTreeSet<&str> = notices
            .iter()
            .filter_map(|n| n.cause.strip_prefix("attempt:")?.split(':').next())
            .collect();
        for attempt in attempts
            .iter()
            .filter(|a| matches!(a.state.as_str(), "succeeded" | "failed" | "canceled"))
        {
            if !causes.contains(attempt.id.as_str()) {
                self.attempts_without_notice += 1;
                self.problem(format!(
                    "attempt {} is {} but queued no notice",
                    attempt.id, attempt.state
                ));
            }
        }

        let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
        for message in received {
            *copies.entry(bare_id(&message.message_id)).or_default() += 1;
        }
        for notice in notices {
            let delivered = copies.remove(bare_id(&notice.message_id)).unwrap_or(0);
            if notice.state != "sent" || delivered == 0 {
                self.notices_lost += 1;
                self.problem(format!(
                    "notice {} is {} and reached the SMTP server {delivered} times",
                    notice.cause, notice.state
                ));
            }
            self.notices_resent += delivered.saturating_sub(1);
        }
        for (message_id, count) in copies {
            self.unknown_messages += count;
            self.problem(format!(
                "received {message_id} {count} times, no notice has it"
            ));
        }
        if self.notices_resent > self.resends_allowed {
            self.problem(format!(
                "{} copies resent, at most {} allowed",
                self.notices_resent, self.resends_allowed
            ));
        }
    }
}

/// A Message-ID without its angle brackets, as mail parsers give it.
fn bare_id(message_id: &str) -> &str {
    message_id
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
}

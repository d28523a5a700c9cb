//! Top-up attempts: claimed once, moved forward one written state at a time, settled with
//! their money and notice in one transaction.

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    accounts::PauseWrites,
    auto_topup::{DecisionRow, DecisionWrites},
    group_commit::{Batched, distinct_keys, lock_in_key_order},
    impl_for_connections, is_unique_violation,
    ledger::{LedgerWrites, Posting},
    notices::{Envelope, NewNotice, NoticeWrites, QueueWhen},
    with_pool,
};
use crate::{
    clock::Millis,
    domain::{
        attempt::{Attempt, AttemptState, AttemptTrigger, Failing, idempotency_key},
        auto_topup::PauseChange,
        credits::Millicredits,
        money::Cents,
        settlement::{Credit, backup_may_follow, next_backup},
    },
};

/// An attempt as stored; [`Attempt`] is what leaves this module.
#[derive(sqlx::FromRow)]
pub(crate) struct AttemptRow {
    id: String,
    account_id: String,
    seq: i64,
    trigger: String,
    idempotency_key: String,
    request_key: Option<String>,
    request_fingerprint: Option<String>,
    /// Millicredits bought.
    credits: i64,
    amount_cents: i64,
    currency: String,
    payment_method_id: String,
    customer_id: String,
    state: String,
    provider_payment_id: Option<String>,
    next_action_url: Option<String>,
    decline_code: Option<String>,
    failure_message: Option<String>,
    amount_received: Option<i64>,
    client_secret: Option<String>,
    provider_charge_id: Option<String>,
    refunded_cents: i64,
    created_at: Millis,
    updated_at: Millis,
    settled_at: Option<Millis>,
    flagged_at: Option<Millis>,
    next_check_at: Millis,
    check_count: i64,
    failing_code: Option<String>,
    failing_message: Option<String>,
    failing_flag: bool,
}

impl TryFrom<AttemptRow> for Attempt {
    type Error = DbError;

    fn try_from(row: AttemptRow) -> Result<Self, DbError> {
        let corrupt = |what: &str, value: &str| {
            DbError::Corrupt(format!("attempt {} has unknown {what} {value}", row.id))
        };
        let state = AttemptState::parse(&row.state).ok_or_else(|| corrupt("state", &row.state))?;
        let trigger =
            AttemptTrigger::parse(&row.trigger).ok_or_else(|| corrupt("trigger", &row.trigger))?;
        Ok(Self {
            id: row.id,
            account_id: row.account_id,
            seq: row.seq,
            trigger,
            idempotency_key: row.idempotency_key,
            request_key: row.request_key,
            request_fingerprint: row.request_fingerprint,
            credits: Millicredits(row.credits),
            amount: Cents(row.amount_cents),
            currency: row.currency,
            payment_method_id: row.payment_method_id,
            customer_id: row.customer_id,
            state,
            provider_payment_id: row.provider_payment_id,
            next_action_url: row.next_action_url,
            decline_code: row.decline_code,
            failure_message: row.failure_message,
            amount_received: row.amount_received.map(Cents),
            client_secret: row.client_secret,
            provider_charge_id: row.provider_charge_id,
            refunded: Cents(row.refunded_cents),
            created_at: row.created_at,
            updated_at: row.updated_at,
            settled_at: row.settled_at,
            flagged_at: row.flagged_at,
            next_check_at: row.next_check_at,
            check_count: row.check_count,
            failing: row.failing_code.map(|code| Failing {
                code,
                message: row.failing_message,
                flag: row.failing_flag,
            }),
        })
    }
}

impl Paged for AttemptRow {
    fn page_key(&self) -> i64 {
        self.seq
    }
}

/// Rows to attempts, failing on the first that does not read.
fn attempts(rows: Vec<AttemptRow>) -> Result<Vec<Attempt>, DbError> {
    rows.into_iter().map(Attempt::try_from).collect()
}

fn maybe_attempt(row: Option<AttemptRow>) -> Result<Option<Attempt>, DbError> {
    row.map(Attempt::try_from).transpose()
}

/// One step of an attempt, written before it is taken: `from` -> `to`, if the attempt is
/// still at `from`, with the provider's payment id once there is one.
#[derive(Debug, Clone)]
pub struct AttemptMove {
    pub id: String,
    pub from: AttemptState,
    pub to: AttemptState,
    pub provider_payment_id: Option<String>,
    pub at: Millis,
}

impl Batched for AttemptMove {
    type Outcome = Option<Attempt>;
    const QUEUE: &'static str = "steps";

    fn key(&self) -> &str {
        &self.id
    }

    /// A step is a compare-and-set: one bad step, or a batch chosen to break a cycle of
    /// lock waits, does not hold the others back.
    const EACH_ALONE_IF_THE_BATCH_FAILS: bool = true;

    async fn write_batch(db: &Db, batch: &[&Self]) -> Result<Vec<Self::Outcome>, DbError> {
        db.move_attempts(batch).await
    }
}

pub(super) const COLUMNS: &str = "id, account_id, seq, trigger, idempotency_key, request_key, request_fingerprint, \
                       credits, amount_cents, currency, payment_method_id, customer_id, state, \
                       provider_payment_id, next_action_url, decline_code, failure_message, \
                       amount_received, client_secret, provider_charge_id, refunded_cents, created_at, updated_at, settled_at, \
                       flagged_at, next_check_at, check_count, failing_code, failing_message, failing_flag";

/// An attempt to claim.
#[derive(Debug, Clone)]
pub struct NewAttempt<'a> {
    pub account_id: &'a str,
    pub trigger: AttemptTrigger,
    /// The caller's idempotency key and a fingerprint of its request, for manual top-ups.
    pub request: Option<(&'a str, &'a str)>,
    pub credits: Millicredits,
    pub amount: Cents,
    pub currency: &'a str,
    pub payment_method_id: &'a str,
    pub customer_id: &'a str,
    /// Prefix of the provider idempotency key; the rest is the account and the sequence.
    pub key_prefix: &'a str,
    pub at: Millis,
}

#[derive(Debug)]
pub enum Claim {
    Claimed(Attempt),
    /// The caller's idempotency key was used before: this is that attempt.
    Replay(Attempt),
    /// The account has another attempt open.
    Busy(Attempt),
    /// The account is closed: nothing is charged.
    Closed,
}

/// A settling move and all it writes, decided by the service
/// ([`crate::domain::settlement`]): written in one transaction, or not at all.
pub struct SettleWrite {
    /// The attempt as the move leaves it ([`Attempt::settled`]).
    pub attempt: Attempt,
    /// The state it must still be in. Every change of an attempt's fields moves its state
    /// forward, so an attempt still in `from` is exactly the one the move was made from.
    pub from: AttemptState,
    /// The credit a success posts, and the envelope of its receipt, whose facts come from
    /// the credit once posted.
    pub credit: Option<(Credit, Envelope)>,
    pub pause: PauseChange,
    pub notices: Vec<NewNotice>,
    /// Queued only if the pause change ended a pause.
    pub notices_if_resumed: Vec<NewNotice>,
}

impl Batched for SettleWrite {
    type Outcome = Option<SettleOutcome>;
    const QUEUE: &'static str = "settlements";

    /// Its account, whose balance and pause it changes.
    fn key(&self) -> &str {
        &self.attempt.account_id
    }

    /// One writer: settlements are few beside debits and steps, and their batches grow
    /// with the load while one is written.
    fn writer_count(_: &Db) -> u32 {
        1
    }

    /// A settlement is a compare-and-set: one that fails does not fail the others.
    const EACH_ALONE_IF_THE_BATCH_FAILS: bool = true;

    async fn write_batch(db: &Db, batch: &[&Self]) -> Result<Vec<Self::Outcome>, DbError> {
        db.settle_attempts(batch).await
    }
}

/// What a settling transaction did.
#[derive(Debug, Default)]
pub struct SettleOutcome {
    /// The same top-up's next try, on a backup card, claimed to be charged now.
    pub backup: Option<Attempt>,
    /// A pause was ended.
    pub resumed: bool,
    /// The kinds of the notices queued.
    pub queued: Vec<&'static str>,
}

/// A settling move, in the caller's transaction.
pub(crate) trait SettleWrites {
    /// Writes the attempt's new state and what the provider said, the credit and its
    /// receipt, the pause change and the notices. `None`, writing nothing, when the
    /// attempt is no longer in `write.from`: someone else moved it.
    async fn settle(&mut self, write: &SettleWrite) -> Result<Option<SettleOutcome>, DbError>;
}

impl_for_connections!(SettleWrites {
    async fn settle(&mut self, write: &SettleWrite) -> Result<Option<SettleOutcome>, DbError> {
        const MOVE: &str = "UPDATE topup_attempts SET state = $1, updated_at = $2, settled_at = $3, \
             provider_payment_id = $4, next_action_url = $5, decline_code = $6, \
             failure_message = $7, amount_received = $8, credits = $9, amount_cents = $10, \
             client_secret = $11, flagged_at = COALESCE(flagged_at, $12), provider_charge_id = $13, \
             failing_code = NULL, failing_message = NULL, failing_flag = FALSE \
             WHERE id = $14 AND state = $15";
        let moved = &write.attempt;
        let written = sqlx::query(MOVE)
            .bind(moved.state.as_str())
            .bind(moved.updated_at)
            .bind(moved.settled_at)
            .bind(&moved.provider_payment_id)
            .bind(&moved.next_action_url)
            .bind(&moved.decline_code)
            .bind(&moved.failure_message)
            .bind(moved.amount_received.map(|c| c.0))
            .bind(moved.credits.0)
            .bind(moved.amount.0)
            .bind(&moved.client_secret)
            .bind(moved.flagged_at)
            .bind(&moved.provider_charge_id)
            .bind(&moved.id)
            .bind(write.from.as_str())
            .execute(&mut *self)
            .await?
            .rows_affected();
        if written == 0 {
            return Ok(None);
        }
        let mut outcome = SettleOutcome::default();
        if backup_may_follow(moved) {
            outcome.backup = self.try_backup(moved).await?;
            if outcome.backup.is_some() {
                // The same top-up goes on with another card: nothing to pause or tell yet.
                return Ok(Some(outcome));
            }
        }
        if let Some((credit, receipt)) = &write.credit {
            let posting = Posting {
                account_id: &moved.account_id,
                kind: credit.kind,
                reference: &moved.id,
                amount: credit.amount,
                description: &credit.description,
                at: moved.updated_at,
            };
            let entry = self.post(&posting).await?.map_err(|refusal| {
                DbError::Corrupt(format!(
                    "credit of attempt {} refused: {refusal:?}",
                    moved.id
                ))
            })?;
            let receipt = NewNotice {
                envelope: receipt.clone(),
                notice: credit.receipt(entry.balance_after),
            };
            if self.queue_notice(&receipt, QueueWhen::Always).await? {
                outcome.queued.push(receipt.notice.kind());
            }
        }
        // What happened is queued before what it did to the pause, so the host hears a
        // decline before the pause it causes.
        for notice in &write.notices {
            if self.queue_notice(notice, QueueWhen::Always).await? {
                outcome.queued.push(notice.notice.kind());
            }
        }
        outcome.resumed = self
            .change_pause(
                &moved.account_id,
                &write.pause,
                moved.decline_code.as_deref(),
                moved.updated_at,
            )
            .await?;
        if outcome.resumed {
            for notice in &write.notices_if_resumed {
                if self.queue_notice(notice, QueueWhen::Always).await? {
                    outcome.queued.push(notice.notice.kind());
                }
            }
        }
        Ok(Some(outcome))
    }
});

/// The account's auto top-up as a declined automatic charge finds it.
#[derive(sqlx::FromRow)]
struct DeclineContext {
    backups: Option<String>,
    active: bool,
    balance: i64,
    threshold: Option<i64>,
    target: Option<i64>,
    /// The first attempt of the top-up.
    root: String,
}

/// Following a declined automatic charge with the account's next backup card, in the
/// settling transaction.
trait BackupWrites {
    /// Claims the top-up's try on the next backup card it has not tried, if auto top-up
    /// is still on and unpaused, and records the decline in the decision history either
    /// way; the new attempt, if any.
    async fn try_backup(&mut self, declined: &Attempt) -> Result<Option<Attempt>, DbError>;
}

impl_for_connections!(BackupWrites {
    async fn try_backup(&mut self, declined: &Attempt) -> Result<Option<Attempt>, DbError> {
        const CONTEXT: &str = "SELECT a.auto_topup_backup_cards AS backups, \
             (a.auto_topup_enabled AND a.auto_topup_paused_reason IS NULL AND a.closed_at IS NULL) AS active, \
             a.balance, a.auto_topup_threshold AS threshold, a.auto_topup_target AS target, \
             COALESCE(t.backup_of, t.id) AS root \
             FROM accounts a JOIN topup_attempts t ON t.account_id = a.id WHERE t.id = $1";
        const TRIED: &str = "SELECT payment_method_id FROM topup_attempts \
             WHERE id = $1 OR backup_of = $1 ORDER BY seq";
        let context: DeclineContext = sqlx::query_as(CONTEXT)
            .bind(&declined.id)
            .fetch_one(&mut *self)
            .await?;
        let backups: Vec<String> = context
            .backups
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("backup cards of {}: {e}", declined.account_id)))?
            .unwrap_or_default();
        let tried: Vec<String> = sqlx::query_scalar(TRIED)
            .bind(&context.root)
            .fetch_all(&mut *self)
            .await?;
        let next = next_backup(&backups, &tried).filter(|_| context.active);
        let code = declined.decline_code.as_deref().unwrap_or("card_declined");
        let card = &declined.payment_method_id;
        let mut backup = None;
        let reason = match next {
            Some(next) => {
                let seq: i64 = sqlx::query_scalar(NEXT_SEQ)
                    .bind(&declined.account_id)
                    .fetch_one(&mut *self)
                    .await?;
                let row: AttemptRow = sqlx::query_as(&insert_sql())
                    .bind(super::new_id("tpu"))
                    .bind(&declined.account_id)
                    .bind(seq)
                    .bind(AttemptTrigger::Auto.as_str())
                    .bind(format!("{}:backup:{next}", declined.idempotency_key))
                    .bind(None::<String>)
                    .bind(None::<String>)
                    .bind(declined.credits.0)
                    .bind(declined.amount.0)
                    .bind(&declined.currency)
                    .bind(next)
                    .bind(&declined.customer_id)
                    .bind(declined.updated_at)
                    .fetch_one(&mut *self)
                    .await?;
                sqlx::query("UPDATE topup_attempts SET backup_of = $1 WHERE id = $2")
                    .bind(&context.root)
                    .bind(&row.id)
                    .execute(&mut *self)
                    .await?;
                let attempt = Attempt::try_from(row)?;
                let reason = format!(
                    "card {card} declined ({code}); the same top-up of {} tries backup card {next}",
                    declined.amount
                );
                backup = Some(attempt);
                reason
            }
            None if tried.len() > 1 => format!(
                "card {card} declined ({code}); no backup card left to try, so auto top-up is paused"
            ),
            None => format!("card {card} declined ({code}); auto top-up is paused"),
        };
        let decision = DecisionRow {
            account_id: declined.account_id.clone(),
            decision: "declined".to_owned(),
            balance: context.balance,
            threshold: context.threshold,
            target: context.target,
            next_eligible_at: None,
            attempt_id: Some(
                backup
                    .as_ref()
                    .map_or_else(|| declined.id.clone(), |a: &Attempt| a.id.clone()),
            ),
            decided_at: declined.updated_at,
            reason,
        };
        self.record_decision(&decision).await?;
        Ok(backup)
    }
});

/// Locking what a batch of settlements writes before writing it.
pub(crate) trait SettleLocks {
    async fn lock_for_settling(&mut self, writes: &[&SettleWrite]) -> Result<(), DbError>;
}

impl SettleLocks for sqlx::SqliteConnection {
    /// The transaction holds the database's write lock already.
    async fn lock_for_settling(&mut self, _: &[&SettleWrite]) -> Result<(), DbError> {
        Ok(())
    }
}

impl SettleLocks for sqlx::PgConnection {
    async fn lock_for_settling(&mut self, writes: &[&SettleWrite]) -> Result<(), DbError> {
        if writes.len() > 1 {
            let ids = |pick: fn(&Attempt) -> &str| -> Vec<&str> {
                writes.iter().map(|w| pick(&w.attempt)).collect()
            };
            lock_in_key_order(self, "topup_attempts", &ids(|a| &a.id)).await?;
            lock_in_key_order(self, "accounts", &ids(|a| &a.account_id)).await?;
        }
        Ok(())
    }
}

pub(crate) trait AttemptReads {
    async fn open_attempt(&mut self, account_id: &str) -> Result<Option<Attempt>, DbError>;
    async fn attempt_by_request(
        &mut self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<Attempt>, DbError>;
}

impl_for_connections!(AttemptReads {
    async fn open_attempt(&mut self, account_id: &str) -> Result<Option<Attempt>, DbError> {
        maybe_attempt(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE account_id = $1 \
             AND state NOT IN ('succeeded', 'failed', 'canceled')"
        ))
        .bind(account_id)
        .fetch_optional(&mut *self)
        .await?)
    }

    async fn attempt_by_request(&mut self, account_id: &str, key: &str) -> Result<Option<Attempt>, DbError> {
        maybe_attempt(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE account_id = $1 AND request_key = $2"
        ))
        .bind(account_id)
        .bind(key)
        .fetch_optional(&mut *self)
        .await?)
    }
});

/// One step, on a connection or in a transaction.
trait StepWrites {
    async fn take_step(&mut self, step: &AttemptMove) -> Result<Option<Attempt>, DbError>;
}

impl_for_connections!(StepWrites {
    async fn take_step(&mut self, step: &AttemptMove) -> Result<Option<Attempt>, DbError> {
        maybe_attempt(sqlx::query_as(&format!(
            "UPDATE topup_attempts SET state = $1, updated_at = $2, \
             provider_payment_id = COALESCE($3, provider_payment_id) \
             WHERE id = $4 AND state = $5 RETURNING {COLUMNS}"
        ))
        .bind(step.to.as_str())
        .bind(step.at)
        .bind(step.provider_payment_id.as_deref())
        .bind(&step.id)
        .bind(step.from.as_str())
        .fetch_optional(&mut *self)
        .await?)
    }
});

/// Takes the account's next top-up sequence number, unless it is closed.
const NEXT_SEQ: &str = "UPDATE accounts SET topup_seq = topup_seq + 1 \
     WHERE id = $1 AND closed_at IS NULL RETURNING topup_seq";

/// Inserts a claimed attempt: id, account, seq, trigger, idempotency key, request key and
/// fingerprint, millicredits, cents, currency, card, customer, time.
pub(crate) fn insert_sql() -> String {
    format!(
        "INSERT INTO topup_attempts (id, account_id, seq, trigger, idempotency_key, request_key, \
         request_fingerprint, credits, amount_cents, currency, payment_method_id, customer_id, state, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'claimed', $13, $13) \
         RETURNING {COLUMNS}"
    )
}

impl Db {
    /// The try on a backup card that the decline of `declined` claimed, still unstarted.
    pub async fn backup_claimed_after(&self, declined: &str) -> Result<Option<Attempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE state = 'claimed' AND backup_of = \
             (SELECT COALESCE(backup_of, id) FROM topup_attempts WHERE id = $1) \
             ORDER BY seq DESC LIMIT 1"
        );
        maybe_attempt(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(declined)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Claims an attempt: at most one open per account, one per caller's key.
    pub async fn claim_attempt(&self, new: &NewAttempt<'_>) -> Result<Claim, DbError> {
        match self.try_claim_attempt(new).await {
            // A concurrent claim won the race for the account (PostgreSQL).
            Err(DbError::Sqlx(e)) if is_unique_violation(&e) => with_pool!(self, |pool| {
                let mut conn = pool.acquire().await?;
                if let Some((key, _)) = new.request
                    && let Some(existing) = conn.attempt_by_request(new.account_id, key).await?
                {
                    return Ok(Claim::Replay(existing));
                }
                match conn.open_attempt(new.account_id).await? {
                    Some(open) => Ok(Claim::Busy(open)),
                    None => Err(DbError::Sqlx(e)),
                }
            }),
            other => other,
        }
    }

    async fn try_claim_attempt(&self, new: &NewAttempt<'_>) -> Result<Claim, DbError> {
        let insert = insert_sql();
        let id = super::new_id("tpu");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            if let Some((key, _)) = new.request
                && let Some(existing) = tx.attempt_by_request(new.account_id, key).await?
            {
                return Ok(Claim::Replay(existing));
            }
            if let Some(open) = tx.open_attempt(new.account_id).await? {
                return Ok(Claim::Busy(open));
            }
            let seq: Option<i64> = sqlx::query_scalar(NEXT_SEQ)
                .bind(new.account_id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(seq) = seq else {
                return Ok(Claim::Closed);
            };
            let attempt: AttemptRow = sqlx::query_as(&insert)
                .bind(&id)
                .bind(new.account_id)
                .bind(seq)
                .bind(new.trigger.as_str())
                .bind(idempotency_key(new.key_prefix, new.account_id, seq))
                .bind(new.request.map(|(key, _)| key))
                .bind(new.request.map(|(_, fingerprint)| fingerprint))
                .bind(new.credits.0)
                .bind(new.amount.0)
                .bind(new.currency)
                .bind(new.payment_method_id)
                .bind(new.customer_id)
                .bind(new.at)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Claim::Claimed(attempt.try_into()?))
        })
    }

    /// Takes each step of `steps` under one durable commit: the attempt as moved, or
    /// `None` where someone else moved it first. One step is one statement; several steps
    /// of distinct attempts are one statement on PostgreSQL, where each statement is a
    /// round trip (see [`move_in_one_statement`]), and one transaction otherwise.
    pub async fn move_attempts(
        &self,
        steps: &[&AttemptMove],
    ) -> Result<Vec<Option<Attempt>>, DbError> {
        if let Db::Postgres(pool) = self
            && steps.len() > 1
            && distinct_keys(steps)
        {
            return move_in_one_statement(pool, steps).await;
        }
        with_pool!(self, |pool| {
            if let [step] = steps {
                let mut conn = pool.acquire().await?;
                return Ok(vec![conn.take_step(step).await?]);
            }
            let mut tx = pool.begin_write().await?;
            let mut moved = Vec::with_capacity(steps.len());
            for step in steps {
                moved.push(tx.take_step(step).await?);
            }
            tx.commit().await?;
            Ok(moved)
        })
    }

    /// Writes settling moves of distinct accounts under one durable commit (see
    /// [`SettleWrites::settle`]): for each, what it did, or `None` where the attempt was no
    /// longer in `from`. On PostgreSQL, where several batches are written at once, a batch
    /// first locks its attempts and then its accounts, each in key order, the order a
    /// single settlement takes them in too.
    pub async fn settle_attempts(
        &self,
        writes: &[&SettleWrite],
    ) -> Result<Vec<Option<SettleOutcome>>, DbError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            tx.lock_for_settling(writes).await?;
            let mut outcomes = Vec::with_capacity(writes.len());
            for write in writes {
                outcomes.push(tx.settle(write).await?);
            }
            tx.commit().await?;
            Ok(outcomes)
        })
    }

    pub async fn attempt(&self, id: &str) -> Result<Option<Attempt>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM topup_attempts WHERE id = $1");
        maybe_attempt(with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        }))
    }

    pub async fn attempt_by_request_key(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<Attempt>, DbError> {
        with_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            conn.attempt_by_request(account_id, key).await
        })
    }

    pub async fn attempt_for_payment(
        &self,
        provider_payment_id: &str,
    ) -> Result<Option<Attempt>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM topup_attempts WHERE provider_payment_id = $1");
        maybe_attempt(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(provider_payment_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    pub async fn open_attempt_of(&self, account_id: &str) -> Result<Option<Attempt>, DbError> {
        with_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            conn.open_attempt(account_id).await
        })
    }

    /// The account's newest automatic top-up (or retry of one).
    pub async fn latest_auto_attempt(&self, account_id: &str) -> Result<Option<Attempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE account_id = $1 AND trigger IN ('auto', 'retry') \
             ORDER BY seq DESC LIMIT 1"
        );
        maybe_attempt(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(account_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Open attempts due for a check at `now` that nobody moved since `updated_before`,
    /// the longest waiting first.
    pub async fn attempts_to_check(
        &self,
        now: Millis,
        updated_before: Millis,
        limit: u32,
    ) -> Result<Vec<Attempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE state NOT IN ('succeeded', 'failed', 'canceled') \
             AND next_check_at <= $1 AND updated_at <= $2 ORDER BY next_check_at, id LIMIT $3"
        );
        attempts(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(now)
                .bind(updated_before)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Records a check of an open attempt and when to check it again.
    pub async fn checked_attempt(&self, id: &str, next_check_at: Millis) -> Result<(), DbError> {
        const SQL: &str = "UPDATE topup_attempts SET check_count = check_count + 1, next_check_at = $1 \
                           WHERE id = $2 AND state NOT IN ('succeeded', 'failed', 'canceled')";
        with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(next_check_at)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records why an open attempt is about to fail, before its payment is cancelled: the
    /// cancellation's own webhook may settle it first, and must settle it as this failure.
    /// Only a cancelled payment reads it; the attempt's next move clears it.
    pub async fn failing_attempt(&self, id: &str, failing: &Failing) -> Result<(), DbError> {
        const SQL: &str = "UPDATE topup_attempts SET failing_code = $1, failing_message = $2, \
                           failing_flag = $3 \
                           WHERE id = $4 AND state NOT IN ('succeeded', 'failed', 'canceled')";
        with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(&failing.code)
                .bind(&failing.message)
                .bind(failing.flag)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Flags open attempts started before `started_before`; returns how many were new.
    pub async fn flag_attempts(&self, started_before: Millis, at: Millis) -> Result<u64, DbError> {
        const SQL: &str = "UPDATE topup_attempts SET flagged_at = $1 WHERE flagged_at IS NULL \
                           AND state NOT IN ('succeeded', 'failed', 'canceled') AND created_at <= $2";
        Ok(with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(at)
                .bind(started_before)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// Flags one attempt for support, whatever its state.
    pub async fn flag_attempt(&self, id: &str, at: Millis) -> Result<(), DbError> {
        const SQL: &str =
            "UPDATE topup_attempts SET flagged_at = COALESCE(flagged_at, $1) WHERE id = $2";
        with_pool!(self, |pool| {
            sqlx::query(SQL).bind(at).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// Attempts flagged for support, oldest first: open ones unresolved for too long, and
    /// ended ones support must look at (a request the provider refused, a success reported
    /// for an attempt that had ended without one).
    pub async fn flagged_attempts(&self, limit: u32) -> Result<Vec<Attempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE flagged_at IS NOT NULL \
             AND state <> 'succeeded' ORDER BY created_at, id LIMIT $1"
        );
        attempts(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// An account's top-ups, newest first.
    pub async fn topups(
        &self,
        account_id: &str,
        page: PageRequest,
    ) -> Result<Page<Attempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE account_id = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        );
        self.page::<AttemptRow>(&sql, Some(account_id), page)
            .await?
            .try_map(Attempt::try_from)
    }
}

/// [`Db::move_attempts`] on PostgreSQL, for steps of distinct attempts: their rows locked
/// in attempt order (so that batches never wait on each other in a cycle), then one
/// statement for them all, planned for the batch.
async fn move_in_one_statement(
    pool: &sqlx::PgPool,
    steps: &[&AttemptMove],
) -> Result<Vec<Option<Attempt>>, DbError> {
    let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    let state = |pick: fn(&AttemptMove) -> AttemptState| -> Vec<&str> {
        steps.iter().map(|s| pick(s).as_str()).collect()
    };
    let mut tx = pool.begin().await?;
    lock_in_key_order(&mut tx, "topup_attempts", &ids).await?;
    let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
        "UPDATE topup_attempts SET state = step_to, updated_at = step_at, \
         provider_payment_id = COALESCE(step_payment, provider_payment_id) \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
             AS step(step_id, step_from, step_to, step_payment, step_at) \
         WHERE id = step_id AND state = step_from RETURNING {COLUMNS}"
    ))
    .bind(&ids)
    .bind(state(|s| s.from))
    .bind(state(|s| s.to))
    .bind(
        steps
            .iter()
            .map(|s| s.provider_payment_id.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(steps.iter().map(|s| s.at).collect::<Vec<_>>())
    .persistent(false)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut moved = attempts(rows)?;
    Ok(steps
        .iter()
        .map(|step| {
            let at = moved.iter().position(|a| a.id == step.id)?;
            Some(moved.swap_remove(at))
        })
        .collect())
}

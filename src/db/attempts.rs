//! Top-up attempts: claimed once, moved forward one written state at a time, settled with
//! their money and notice in one transaction.

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    accounts::{Account, PauseWrites},
    group_commit::{Batched, distinct_keys, lock_in_key_order},
    impl_for_connections, is_unique_violation,
    ledger::{EntryKind, LedgerEntry, LedgerWrites, Posting},
    notices::{NewNotice, NoticeWrites},
    with_pool,
};
use crate::{
    clock::Millis,
    domain::{
        attempt::{AttemptState, AttemptTrigger, idempotency_key},
        auto_topup::PauseChange,
        credits::Millicredits,
        money::Cents,
    },
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TopupAttempt {
    pub id: String,
    pub account_id: String,
    pub seq: i64,
    pub trigger: String,
    pub idempotency_key: String,
    pub request_key: Option<String>,
    pub request_fingerprint: Option<String>,
    /// Millicredits bought.
    pub credits: i64,
    pub amount_cents: i64,
    pub currency: String,
    pub payment_method_id: String,
    pub customer_id: String,
    pub state: String,
    pub provider_payment_id: Option<String>,
    pub next_action_url: Option<String>,
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub amount_received: Option<i64>,
    /// The payment's client secret, which the provider's redirect back carries.
    pub client_secret: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub settled_at: Option<Millis>,
    /// Set when the attempt stayed unresolved too long.
    pub flagged_at: Option<Millis>,
    /// When the reconciler next asks the provider about it.
    pub next_check_at: Millis,
    /// How often the reconciler has asked.
    pub check_count: i64,
}

impl TopupAttempt {
    pub fn state(&self) -> Result<AttemptState, DbError> {
        AttemptState::parse(&self.state).ok_or_else(|| {
            DbError::Corrupt(format!(
                "attempt {} has unknown state {}",
                self.id, self.state
            ))
        })
    }

    pub fn trigger(&self) -> Result<AttemptTrigger, DbError> {
        AttemptTrigger::parse(&self.trigger).ok_or_else(|| {
            DbError::Corrupt(format!(
                "attempt {} has unknown trigger {}",
                self.id, self.trigger
            ))
        })
    }
}

impl Paged for TopupAttempt {
    fn page_key(&self) -> i64 {
        self.seq
    }
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
    type Outcome = Option<TopupAttempt>;

    fn key(&self) -> &str {
        &self.id
    }

    /// A step that fails fails its batch; since a step is a compare-and-set, the batch is
    /// then written again one step at a time, so one bad step (or a batch chosen to
    /// break a cycle of lock waits) does not hold the others back.
    async fn write_batch(db: &Db, batch: &[&Self]) -> Result<Vec<Self::Outcome>, DbError> {
        match db.move_attempts(batch).await {
            Err(error) if batch.len() > 1 => {
                tracing::warn!(%error, size = batch.len(), "step batch failed; writing its steps one by one");
                let mut moved = Vec::with_capacity(batch.len());
                for step in batch {
                    moved.extend(db.move_attempts(&[step]).await?);
                }
                Ok(moved)
            }
            written => written,
        }
    }
}

const COLUMNS: &str = "id, account_id, seq, trigger, idempotency_key, request_key, request_fingerprint, \
                       credits, amount_cents, currency, payment_method_id, customer_id, state, \
                       provider_payment_id, next_action_url, decline_code, failure_message, \
                       amount_received, client_secret, created_at, updated_at, settled_at, \
                       flagged_at, next_check_at, check_count";

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
    Claimed(TopupAttempt),
    /// The caller's idempotency key was used before: this is that attempt.
    Replay(TopupAttempt),
    /// The account has another attempt open.
    Busy(TopupAttempt),
}

/// What the provider said, to record with a settling move.
#[derive(Debug, Clone, Default)]
pub struct ProviderFacts<'a> {
    pub provider_payment_id: Option<&'a str>,
    pub next_action_url: Option<&'a str>,
    pub decline_code: Option<&'a str>,
    pub failure_message: Option<&'a str>,
    pub amount_received: Option<i64>,
    pub client_secret: Option<&'a str>,
    /// Millicredits to credit when the provider received another amount than the attempt
    /// asked for (a payment adopted from an earlier incarnation of the attempt): the credit
    /// always matches the money received.
    pub credits_received: Option<i64>,
}

/// An attempt just settled, with what its transaction wrote: the effects are decided
/// from this.
pub struct Settled<'a> {
    pub attempt: &'a TopupAttempt,
    /// The account as it was before the effects.
    pub account: &'a Account,
    pub credit: Option<&'a LedgerEntry>,
}

/// What a settlement does besides moving the attempt and crediting: the pause, and the
/// notices to queue. Written in the same transaction.
#[derive(Debug, Default)]
pub struct Effects {
    pub pause: Option<PauseChange>,
    pub notices: Vec<NewNotice>,
}

pub(crate) trait AttemptReads {
    async fn open_attempt(&mut self, account_id: &str)
    -> Result<Option<TopupAttempt>, sqlx::Error>;
    async fn attempt_by_request(
        &mut self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<TopupAttempt>, sqlx::Error>;
}

impl_for_connections!(AttemptReads {
    async fn open_attempt(&mut self, account_id: &str) -> Result<Option<TopupAttempt>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE account_id = $1 \
             AND state NOT IN ('succeeded', 'failed', 'canceled')"
        ))
        .bind(account_id)
        .fetch_optional(&mut *self)
        .await
    }

    async fn attempt_by_request(&mut self, account_id: &str, key: &str) -> Result<Option<TopupAttempt>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE account_id = $1 AND request_key = $2"
        ))
        .bind(account_id)
        .bind(key)
        .fetch_optional(&mut *self)
        .await
    }
});

/// One step, on a connection or in a transaction.
trait StepWrites {
    async fn take_step(&mut self, step: &AttemptMove) -> Result<Option<TopupAttempt>, sqlx::Error>;
}

impl_for_connections!(StepWrites {
    async fn take_step(&mut self, step: &AttemptMove) -> Result<Option<TopupAttempt>, sqlx::Error> {
        sqlx::query_as(&format!(
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
        .await
    }
});

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

/// `'a', 'b'` for an SQL `IN` list of states; the names are fixed words, never input.
fn state_list(states: &[AttemptState]) -> String {
    states
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Db {
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
        const NEXT_SEQ: &str =
            "UPDATE accounts SET topup_seq = topup_seq + 1 WHERE id = $1 RETURNING topup_seq";
        let insert = format!(
            "INSERT INTO topup_attempts (id, account_id, seq, trigger, idempotency_key, request_key, \
             request_fingerprint, credits, amount_cents, currency, payment_method_id, customer_id, state, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'claimed', $13, $13) \
             RETURNING {COLUMNS}"
        );
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
            let seq: i64 = sqlx::query_scalar(NEXT_SEQ)
                .bind(new.account_id)
                .fetch_one(&mut *tx)
                .await?;
            let attempt: TopupAttempt = sqlx::query_as(&insert)
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
            Ok(Claim::Claimed(attempt))
        })
    }

    /// Takes each step of `steps` under one durable commit: the attempt as moved, or
    /// `None` where someone else moved it first. One step is one statement; several steps
    /// of distinct attempts are one statement on PostgreSQL, where each statement is a
    /// round trip (see [`move_in_one_statement`]), and one transaction otherwise.
    pub async fn move_attempts(
        &self,
        steps: &[&AttemptMove],
    ) -> Result<Vec<Option<TopupAttempt>>, DbError> {
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

    /// Moves the attempt forward to `target` with what the provider said, and in the same
    /// transaction credits the account on success and applies the `effects` decided from
    /// the outcome (pause or resume, notices). `None` when the attempt is already at or
    /// past `target`: nothing is written twice.
    pub async fn settle_attempt(
        &self,
        id: &str,
        target: AttemptState,
        facts: &ProviderFacts<'_>,
        at: Millis,
        effects: impl FnOnce(&Settled<'_>) -> Effects,
    ) -> Result<Option<TopupAttempt>, DbError> {
        let from = AttemptState::predecessors(target);
        if from.is_empty() {
            return Ok(None);
        }
        let sql = format!(
            "UPDATE topup_attempts SET state = $1, updated_at = $2, \
             settled_at = CASE WHEN $3 THEN $2 ELSE settled_at END, \
             provider_payment_id = COALESCE(provider_payment_id, $4), \
             next_action_url = COALESCE($5, next_action_url), \
             decline_code = COALESCE($6, decline_code), \
             failure_message = COALESCE($7, failure_message), \
             amount_received = COALESCE($8, amount_received), \
             credits = COALESCE($10, credits), amount_cents = COALESCE($8, amount_cents), \
             client_secret = COALESCE($11, client_secret) \
             WHERE id = $9 AND state IN ({}) RETURNING {COLUMNS}",
            state_list(&from)
        );
        let account_sql = format!(
            "SELECT {} FROM accounts WHERE id = $1",
            super::accounts::COLUMNS
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let moved: Option<TopupAttempt> = sqlx::query_as(&sql)
                .bind(target.as_str())
                .bind(at)
                .bind(target.is_terminal())
                .bind(facts.provider_payment_id)
                .bind(facts.next_action_url)
                .bind(facts.decline_code)
                .bind(facts.failure_message)
                .bind(facts.amount_received)
                .bind(id)
                .bind(facts.credits_received)
                .bind(facts.client_secret)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(attempt) = moved else {
                return Ok(None);
            };
            let account: Account = sqlx::query_as(&account_sql)
                .bind(&attempt.account_id)
                .fetch_one(&mut *tx)
                .await?;
            let credit = if target == AttemptState::Succeeded {
                let kind = match attempt.trigger()? {
                    AttemptTrigger::Manual => EntryKind::ManualTopup,
                    AttemptTrigger::Auto | AttemptTrigger::Retry => EntryKind::AutoTopup,
                };
                let description = format!(
                    "top-up of {} credits for {}",
                    Millicredits(attempt.credits).to_display(),
                    Cents(attempt.amount_cents)
                );
                let posting = Posting {
                    account_id: &attempt.account_id,
                    kind,
                    reference: &attempt.id,
                    amount: Millicredits(attempt.credits),
                    description: &description,
                    at,
                };
                let entry = tx.post(&posting).await?.map_err(|refusal| {
                    DbError::Corrupt(format!("credit of attempt {id} refused: {refusal:?}"))
                })?;
                Some(entry)
            } else {
                None
            };
            let settled = Settled {
                attempt: &attempt,
                account: &account,
                credit: credit.as_ref(),
            };
            let effects = effects(&settled);
            if let Some(change) = &effects.pause {
                tx.change_pause(
                    &attempt.account_id,
                    change,
                    attempt.decline_code.as_deref(),
                    at,
                )
                .await?;
            }
            for notice in &effects.notices {
                tx.queue_notice(notice).await?;
            }
            tx.commit().await?;
            Ok(Some(attempt))
        })
    }

    pub async fn attempt(&self, id: &str) -> Result<Option<TopupAttempt>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM topup_attempts WHERE id = $1");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        }))
    }

    pub async fn attempt_by_request_key(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<TopupAttempt>, DbError> {
        Ok(with_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            conn.attempt_by_request(account_id, key).await?
        }))
    }

    pub async fn attempt_for_payment(
        &self,
        provider_payment_id: &str,
    ) -> Result<Option<TopupAttempt>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM topup_attempts WHERE provider_payment_id = $1");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(provider_payment_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    pub async fn open_attempt_of(&self, account_id: &str) -> Result<Option<TopupAttempt>, DbError> {
        Ok(with_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            conn.open_attempt(account_id).await?
        }))
    }

    /// The account's newest automatic top-up (or retry of one).
    pub async fn latest_auto_attempt(
        &self,
        account_id: &str,
    ) -> Result<Option<TopupAttempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE account_id = $1 AND trigger IN ('auto', 'retry') \
             ORDER BY seq DESC LIMIT 1"
        );
        Ok(with_pool!(self, |pool| {
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
    ) -> Result<Vec<TopupAttempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE state NOT IN ('succeeded', 'failed', 'canceled') \
             AND next_check_at <= $1 AND updated_at <= $2 ORDER BY next_check_at, id LIMIT $3"
        );
        Ok(with_pool!(self, |pool| {
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

    /// Open attempts flagged for support, oldest first.
    pub async fn flagged_attempts(&self, limit: u32) -> Result<Vec<TopupAttempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE flagged_at IS NOT NULL \
             AND state NOT IN ('succeeded', 'failed', 'canceled') ORDER BY created_at, id LIMIT $1"
        );
        Ok(with_pool!(self, |pool| {
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
    ) -> Result<Page<TopupAttempt>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM topup_attempts WHERE account_id = $1 AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        );
        self.page(&sql, Some(account_id), page).await
    }
}

/// [`Db::move_attempts`] on PostgreSQL, for steps of distinct attempts: their rows locked
/// in attempt order (so that batches never wait on each other in a cycle), then one
/// statement for them all, planned for the batch.
async fn move_in_one_statement(
    pool: &sqlx::PgPool,
    steps: &[&AttemptMove],
) -> Result<Vec<Option<TopupAttempt>>, DbError> {
    let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
    let state = |pick: fn(&AttemptMove) -> AttemptState| -> Vec<&str> {
        steps.iter().map(|s| pick(s).as_str()).collect()
    };
    let mut tx = pool.begin().await?;
    lock_in_key_order(&mut tx, "topup_attempts", &ids).await?;
    let mut moved: Vec<TopupAttempt> = sqlx::query_as(&format!(
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
    Ok(steps
        .iter()
        .map(|step| {
            let at = moved.iter().position(|a| a.id == step.id)?;
            Some(moved.swap_remove(at))
        })
        .collect())
}

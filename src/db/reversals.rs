//! Money the provider took back from a top-up: refunds and disputes, each applied once
//! and forward only (a top-up's refunded total only grows; a dispute is opened once and
//! closed once), with its ledger entry, pause, notice and audit in one transaction.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError,
    accounts::PauseWrites,
    audit::{Actor, AuditWrites},
    impl_for_connections,
    ledger::{EntryKind, LedgerEntry, LedgerWrites, Posting},
    notices::{Envelope, NewNotice, NoticeWrites, QueueWhen},
    with_pool,
};
use crate::{
    clock::Millis,
    domain::{
        attempt::Attempt,
        auto_topup::{PauseChange, PauseReason},
        credits::Millicredits,
        money::Cents,
        notice::{DisputeFacts, Notice, RefundFacts},
        reversal::{dispute_holds, refund_removes},
    },
    payments::types::DisputeStanding,
};

/// A refund to apply: the charge's refunded total as the provider has it now.
#[derive(Debug)]
pub struct RefundWrite<'a> {
    pub attempt: &'a Attempt,
    pub charge_id: &'a str,
    /// The charge's refunded total now; applied only if above the attempt's.
    pub refunded: Cents,
    pub actor: &'a Actor,
    /// The customer's notice.
    pub envelope: Envelope,
    pub at: Millis,
}

/// A dispute as the provider has it now.
#[derive(Debug)]
pub struct DisputeWrite<'a> {
    pub id: &'a str,
    pub attempt: &'a Attempt,
    pub charge_id: &'a str,
    pub amount: Cents,
    pub status: &'a str,
    pub reason: Option<&'a str>,
    pub standing: DisputeStanding,
    pub actor: &'a Actor,
    /// Support's notices of its opening and of its close.
    pub opened: Envelope,
    pub closed: Envelope,
    pub at: Millis,
}

/// What a dispute write did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DisputeOutcome {
    pub opened: bool,
    pub closed: bool,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DisputeRow {
    pub id: String,
    pub attempt_id: String,
    pub account_id: String,
    pub charge_id: String,
    pub amount_cents: i64,
    pub credits_held: i64,
    pub status: String,
    pub outcome: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub closed_at: Option<Millis>,
}

const DISPUTE_COLUMNS: &str = "id, attempt_id, account_id, charge_id, amount_cents, credits_held, \
                               status, outcome, created_at, updated_at, closed_at";

/// Reading what a reversal changes, inside its transaction.
trait ReversalReads {
    async fn balance(&mut self, account_id: &str) -> Result<Millicredits, sqlx::Error>;
    /// The attempt's refunded total, its row locked until the transaction ends.
    async fn refunded(&mut self, attempt_id: &str) -> Result<i64, sqlx::Error>;
}

impl_for_connections!(ReversalReads {
    async fn refunded(&mut self, attempt_id: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "UPDATE topup_attempts SET refunded_cents = refunded_cents WHERE id = $1 \
             RETURNING refunded_cents",
        )
        .bind(attempt_id)
        .fetch_one(&mut *self)
        .await
    }

    async fn balance(&mut self, account_id: &str) -> Result<Millicredits, sqlx::Error> {
        let balance: i64 = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_one(&mut *self)
            .await?;
        Ok(Millicredits(balance))
    }
});

/// A posting the ledger must take: a refused one means the account is gone.
fn posted(
    entry: Result<LedgerEntry, super::ledger::PostRefusal>,
    what: &str,
) -> Result<LedgerEntry, DbError> {
    entry.map_err(|refusal| DbError::Corrupt(format!("{what} refused: {refusal:?}")))
}

impl Db {
    /// Applies a refund: raises the attempt's refunded total, takes back its credits
    /// (the balance may go below zero), pauses auto top-up as `refunded`, tells the
    /// customer and audits it. False, writing nothing, when the total was applied before.
    pub async fn apply_refund(&self, write: &RefundWrite<'_>) -> Result<bool, DbError> {
        let attempt = write.attempt;
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // The total applied so far, as locked: refunds handled at once by two
            // processes each take back only their own part.
            let before = Cents(tx.refunded(&attempt.id).await?);
            let now_refunded = write.refunded.0 - before.0;
            let removes = refund_removes(attempt.credits, attempt.amount, before, write.refunded);
            let raised = sqlx::query(
                "UPDATE topup_attempts SET refunded_cents = $1 \
                 WHERE id = $2 AND state = 'succeeded' AND refunded_cents < $1",
            )
            .bind(write.refunded.0)
            .bind(&attempt.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if raised == 0 {
                return Ok(false);
            }
            let entry = if removes.0 > 0 {
                let reference = format!("{}:{}", attempt.id, write.refunded.0);
                let description = format!(
                    "Refund of {} of top-up {} (charge {})",
                    Cents(now_refunded),
                    attempt.id,
                    write.charge_id
                );
                let posting = Posting {
                    account_id: &attempt.account_id,
                    kind: EntryKind::PaymentRefund,
                    reference: &reference,
                    amount: Millicredits(-removes.0),
                    description: &description,
                    at: write.at,
                };
                Some(posted(tx.post(&posting).await?, "refund")?)
            } else {
                None
            };
            let balance = match &entry {
                Some(entry) => entry.balance_after,
                None => tx.balance(&attempt.account_id).await?,
            };
            tx.change_pause(
                &attempt.account_id,
                &PauseChange::Pause(PauseReason::Refunded),
                None,
                write.at,
            )
            .await?;
            let notice = NewNotice {
                envelope: write.envelope.clone(),
                notice: Notice::CreditsRefunded(RefundFacts {
                    amount: Cents(now_refunded),
                    credits: removes,
                    transaction_id: write.charge_id.to_owned(),
                    new_balance: balance,
                    at: write.at,
                }),
            };
            tx.queue_notice(&notice, QueueWhen::Always).await?;
            let detail = json!({
                "attempt_id": attempt.id,
                "charge_id": write.charge_id,
                "refunded_cents": write.refunded.0,
                "refunded_now_cents": now_refunded,
                "credits_removed": removes,
                "ledger_entry_id": entry.as_ref().map(|e| e.id),
                "balance_after": balance,
            });
            tx.audit(
                write.actor,
                "topup.refund",
                Some(&attempt.account_id),
                detail,
                write.at,
            )
            .await?;
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Records a dispute as it stands: a new one holds its credits (the balance may go
    /// below zero) and pauses auto top-up as `disputed`; a closed one gives the credits
    /// back if it was won and keeps them removed if it was lost. Support is told of each
    /// step; each is audited and happens once, however often the dispute is reported.
    pub async fn record_dispute(
        &self,
        write: &DisputeWrite<'_>,
    ) -> Result<DisputeOutcome, DbError> {
        let attempt = write.attempt;
        let account = attempt.account_id.as_str();
        let facts = |held: i64, balance: Millicredits| DisputeFacts {
            dispute_id: write.id.to_owned(),
            account_id: account.to_owned(),
            charge_id: write.charge_id.to_owned(),
            amount: write.amount,
            status: write.status.to_owned(),
            reason: write.reason.map(str::to_owned),
            credits_held: Millicredits(held),
            new_balance: balance,
            at: write.at,
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let refunded = Cents(tx.refunded(&attempt.id).await?);
            let holds = dispute_holds(attempt.credits, attempt.amount, refunded, write.amount);
            let opened = sqlx::query(
                "INSERT INTO disputes (id, attempt_id, account_id, charge_id, amount_cents, \
                 credits_held, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(write.id)
            .bind(&attempt.id)
            .bind(account)
            .bind(write.charge_id)
            .bind(write.amount.0)
            .bind(holds.0)
            .bind(write.status)
            .bind(write.at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            let mut outcome = DisputeOutcome {
                opened,
                closed: false,
            };
            let held: i64 = sqlx::query_scalar(
                "UPDATE disputes SET status = $1, updated_at = $2 WHERE id = $3 RETURNING credits_held",
            )
            .bind(write.status)
            .bind(write.at)
            .bind(write.id)
            .fetch_one(&mut *tx)
            .await?;
            if outcome.opened {
                let entry = if held > 0 {
                    let description =
                        format!("Held: top-up {} is disputed ({})", attempt.id, write.id);
                    let posting = Posting {
                        account_id: account,
                        kind: EntryKind::DisputeHold,
                        reference: write.id,
                        amount: Millicredits(-held),
                        description: &description,
                        at: write.at,
                    };
                    Some(posted(tx.post(&posting).await?, "dispute hold")?)
                } else {
                    None
                };
                let balance = tx.balance(account).await?;
                tx.change_pause(
                    account,
                    &PauseChange::Pause(PauseReason::Disputed),
                    None,
                    write.at,
                )
                .await?;
                let notice = NewNotice {
                    envelope: write.opened.clone(),
                    notice: Notice::DisputeOpened(facts(held, balance)),
                };
                tx.queue_notice(&notice, QueueWhen::Always).await?;
                let detail = json!({
                    "dispute_id": write.id,
                    "attempt_id": attempt.id,
                    "charge_id": write.charge_id,
                    "amount_cents": write.amount.0,
                    "credits_held": held,
                    "ledger_entry_id": entry.as_ref().map(|e| e.id),
                    "balance_after": balance,
                });
                tx.audit(
                    write.actor,
                    "topup.dispute_opened",
                    Some(account),
                    detail,
                    write.at,
                )
                .await?;
            }
            let result = match write.standing {
                DisputeStanding::Open => None,
                DisputeStanding::Won => Some("released"),
                DisputeStanding::Lost => Some("removed"),
            };
            if let Some(result) = result {
                outcome.closed = sqlx::query(
                    "UPDATE disputes SET outcome = $1, closed_at = $2 WHERE id = $3 AND outcome IS NULL",
                )
                .bind(result)
                .bind(write.at)
                .bind(write.id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
            }
            if outcome.closed {
                let entry = if write.standing == DisputeStanding::Won && held > 0 {
                    let description = format!(
                        "Released: the dispute of top-up {} was won ({})",
                        attempt.id, write.id
                    );
                    let posting = Posting {
                        account_id: account,
                        kind: EntryKind::DisputeRelease,
                        reference: write.id,
                        amount: Millicredits(held),
                        description: &description,
                        at: write.at,
                    };
                    Some(posted(tx.post(&posting).await?, "dispute release")?)
                } else {
                    None
                };
                let balance = tx.balance(account).await?;
                let notice = NewNotice {
                    envelope: write.closed.clone(),
                    notice: Notice::DisputeClosed(facts(held, balance)),
                };
                tx.queue_notice(&notice, QueueWhen::Always).await?;
                let detail = json!({
                    "dispute_id": write.id,
                    "status": write.status,
                    "outcome": result,
                    "credits_held": held,
                    "ledger_entry_id": entry.as_ref().map(|e| e.id),
                    "balance_after": balance,
                });
                tx.audit(
                    write.actor,
                    "topup.dispute_closed",
                    Some(account),
                    detail,
                    write.at,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(outcome)
        })
    }

    /// The disputes of an account's top-ups, newest first.
    pub async fn disputes(&self, account_id: &str) -> Result<Vec<DisputeRow>, DbError> {
        let sql = format!(
            "SELECT {DISPUTE_COLUMNS} FROM disputes WHERE account_id = $1 ORDER BY created_at DESC, id"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(account_id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The attempt whose charge is `charge_id`.
    pub async fn attempt_for_charge(&self, charge_id: &str) -> Result<Option<Attempt>, DbError> {
        let sql = format!(
            "SELECT {} FROM topup_attempts WHERE provider_charge_id = $1",
            super::attempts::COLUMNS
        );
        let row: Option<super::attempts::AttemptRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(charge_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Attempt::try_from).transpose()
    }
}

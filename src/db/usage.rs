//! Usage: a priced request debited from an account, idempotent per the caller's request
//! id, and refundable once.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    audit::{Actor, AuditWrites},
    group_commit::{Batched, distinct_keys, lock_in_key_order},
    impl_for_connections,
    ledger::{DebitBatch, EntryKind, LedgerEntry, LedgerWrites, PostRefusal, Posting, debit_batch},
    new_id,
    webhook_outbox::EventWrites,
    with_pool,
};
use crate::{
    clock::Millis,
    domain::{
        account::low_balance_line,
        credits::Millicredits,
        webhook::{self, EventType},
    },
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UsageRecord {
    pub seq: i64,
    pub id: String,
    pub account_id: String,
    pub request_id: String,
    /// Identifies the priced request, to tell a replay from a reused request id.
    pub fingerprint: String,
    pub service: String,
    /// The quote as JSON, exactly as it was charged.
    pub quote: String,
    #[sqlx(try_from = "i64")]
    pub cost: Millicredits,
    pub created_at: Millis,
    pub refunded_at: Option<Millis>,
}

impl Paged for UsageRecord {
    fn page_key(&self) -> i64 {
        self.seq
    }
}

/// Usage to debit.
#[derive(Debug, Clone)]
pub struct NewUsage {
    pub account_id: String,
    pub request_id: String,
    pub fingerprint: String,
    pub service: String,
    /// The quote as JSON.
    pub quote: String,
    pub cost: Millicredits,
    pub at: Millis,
    /// The configured low-balance line: below it (or below the auto top-up threshold, if
    /// auto top-up is on and that is higher) the host hears `balance.low`.
    pub low_line: Millicredits,
}

#[derive(Debug)]
pub enum DebitOutcome {
    /// Debited now.
    Debited(UsageRecord),
    /// The request id was seen before; nothing was debited this time.
    Existing(UsageRecord),
    /// The balance is short; nothing changed.
    Insufficient {
        available: Millicredits,
    },
    AccountNotFound,
}

#[derive(Debug)]
pub enum RefundOutcome {
    /// Refunded now, with the crediting entry.
    Refunded(UsageRecord, LedgerEntry),
    /// Refunded before; the entry is the original refund.
    AlreadyRefunded(UsageRecord, LedgerEntry),
    NotFound,
}

const COLUMNS: &str = "seq, id, account_id, request_id, fingerprint, service, quote, cost, \
                       created_at, refunded_at";

pub(crate) trait UsageReads {
    async fn usage_by_request(
        &mut self,
        account_id: &str,
        request_id: &str,
    ) -> Result<Option<UsageRecord>, sqlx::Error>;
}

impl_for_connections!(UsageReads {
    async fn usage_by_request(
        &mut self,
        account_id: &str,
        request_id: &str,
    ) -> Result<Option<UsageRecord>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM usage_events WHERE account_id = $1 AND request_id = $2"
        ))
        .bind(account_id)
        .bind(request_id)
        .fetch_optional(&mut *self)
        .await
    }
});

/// A debit inside a transaction. Only a debit writes: every other outcome leaves the
/// transaction as it found it, so several debits can share one.
pub(crate) trait UsageWrites {
    async fn debit(&mut self, usage: &NewUsage) -> Result<DebitOutcome, DbError>;
}

impl_for_connections!(UsageWrites {
    async fn debit(&mut self, usage: &NewUsage) -> Result<DebitOutcome, DbError> {
        let id = new_id("use");
        // A repeated request id or an unknown account inserts nothing, so a new request,
        // the usual case, reads nothing before it writes. The row comes first: a
        // concurrent duplicate then waits on the unique key instead of on the balance.
        let inserted: Option<UsageRecord> = sqlx::query_as(&format!(
            "INSERT INTO usage_events \
             (id, account_id, request_id, fingerprint, service, quote, cost, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE EXISTS (SELECT 1 FROM accounts WHERE id = $2) \
             ON CONFLICT (account_id, request_id) DO NOTHING RETURNING {COLUMNS}"
        ))
        .bind(&id)
        .bind(&usage.account_id)
        .bind(&usage.request_id)
        .bind(&usage.fingerprint)
        .bind(&usage.service)
        .bind(&usage.quote)
        .bind(usage.cost.0)
        .bind(usage.at)
        .fetch_optional(&mut *self)
        .await?;
        let Some(record) = inserted else {
            return Ok(
                match self
                    .usage_by_request(&usage.account_id, &usage.request_id)
                    .await?
                {
                    Some(existing) => DebitOutcome::Existing(existing),
                    None => DebitOutcome::AccountNotFound,
                },
            );
        };
        let posting = Posting {
            account_id: &usage.account_id,
            kind: EntryKind::Usage,
            reference: &id,
            amount: Millicredits(-usage.cost.0),
            description: &debit_description(&usage.service),
            at: usage.at,
        };
        let refusal = match self.post(&posting).await? {
            Ok(entry) => {
                let terms: Option<(bool, Option<i64>)> = sqlx::query_as(&format!(
                    "SELECT {LINE_TERMS} FROM accounts WHERE id = $1 AND {ANY_ENDPOINT}"
                ))
                .bind(&usage.account_id)
                .fetch_optional(&mut *self)
                .await?;
                if let Some(terms) = terms {
                    self.report_if_low(usage, entry.balance_after, terms).await?;
                }
                return Ok(DebitOutcome::Debited(record));
            }
            Err(refusal) => refusal,
        };
        sqlx::query("DELETE FROM usage_events WHERE id = $1")
            .bind(&id)
            .execute(&mut *self)
            .await?;
        Ok(match refusal {
            PostRefusal::Insufficient { available } => {
                self.report_depleted(usage, available).await?;
                DebitOutcome::Insufficient { available }
            }
            PostRefusal::AccountNotFound => DebitOutcome::AccountNotFound,
        })
    }
});

/// What the account's low-balance line depends on ([`low_balance_line`]), as SQL columns.
const LINE_TERMS: &str = "auto_topup_enabled, auto_topup_threshold";

/// Whether any endpoint might want a balance event, as SQL: without one, the checks stop
/// at this.
const ANY_ENDPOINT: &str = "EXISTS (SELECT 1 FROM webhook_endpoints WHERE enabled)";

/// Telling the host what a debit did to the balance, in the debit's transaction.
trait BalanceEvents {
    /// `balance.low` if debiting `usage` took the balance to `after`, below the line of
    /// an account with these auto top-up terms (on or off, and its threshold).
    async fn report_if_low(
        &mut self,
        usage: &NewUsage,
        after: Millicredits,
        terms: (bool, Option<i64>),
    ) -> Result<(), sqlx::Error>;

    /// `balance.depleted` for a debit refused for want of credits, unless that was
    /// reported since the balance last changed.
    async fn report_depleted(
        &mut self,
        usage: &NewUsage,
        available: Millicredits,
    ) -> Result<(), sqlx::Error>;
}

impl_for_connections!(BalanceEvents {
    async fn report_if_low(
        &mut self,
        usage: &NewUsage,
        after: Millicredits,
        (enabled, threshold): (bool, Option<i64>),
    ) -> Result<(), sqlx::Error> {
        let line = low_balance_line(enabled, threshold.map(Millicredits), usage.low_line);
        let before = Millicredits(after.0.saturating_add(usage.cost.0));
        if webhook::fell_below(before, after, line) {
            let data = json!({ "balance": after, "line": line, "at": usage.at });
            self.emit_event(EventType::BalanceLow, &usage.account_id, data, usage.at)
                .await?;
        }
        Ok(())
    }

    async fn report_depleted(
        &mut self,
        usage: &NewUsage,
        available: Millicredits,
    ) -> Result<(), sqlx::Error> {
        let untold: bool = sqlx::query_scalar(&format!(
            "SELECT {ANY_ENDPOINT} AND NOT EXISTS (SELECT 1 FROM webhook_messages m \
             WHERE m.account_id = $1 AND m.event_type = $2 AND m.created_at >= COALESCE( \
             (SELECT created_at FROM ledger_entries WHERE account_id = $1 ORDER BY id DESC LIMIT 1), 0))"
        ))
        .bind(&usage.account_id)
        .bind(EventType::BalanceDepleted.as_str())
        .fetch_one(&mut *self)
        .await?;
        if untold {
            let data = json!({ "balance": available, "required": usage.cost, "at": usage.at });
            self.emit_event(EventType::BalanceDepleted, &usage.account_id, data, usage.at)
                .await?;
        }
        Ok(())
    }
});

impl Batched for NewUsage {
    type Outcome = DebitOutcome;
    const QUEUE: &'static str = "debits";

    fn key(&self) -> &str {
        &self.account_id
    }

    async fn write_batch(db: &Db, batch: &[&Self]) -> Result<Vec<DebitOutcome>, DbError> {
        db.debit_usages(batch).await
    }
}

/// The ledger description of a usage's debit.
fn debit_description(service: &str) -> String {
    format!("{service} usage")
}

impl Db {
    /// Debits each usage once per `(account_id, request_id)`, all under one durable
    /// commit: a usage row and its ledger entry are written together or not at all, each
    /// usage gets the outcome it would get alone, and an error undoes them all. On
    /// PostgreSQL, usages of distinct accounts (what the debit queue passes) are one
    /// statement; a call with two usages of one account takes them one at a time, and
    /// should not run beside other debits of those accounts, since it inserts the usage
    /// before it locks the account (the other way round from the batch statement).
    pub async fn debit_usages(&self, usages: &[&NewUsage]) -> Result<Vec<DebitOutcome>, DbError> {
        if let Db::Postgres(pool) = self
            && distinct_keys(usages)
        {
            return debit_in_one_statement(pool, usages).await;
        }
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let mut outcomes = Vec::with_capacity(usages.len());
            for usage in usages {
                outcomes.push(tx.debit(usage).await?);
            }
            tx.commit().await?;
            Ok(outcomes)
        })
    }

    /// Restores the credits of a usage once; a second call returns the first refund.
    /// Staff refunds name their `actor` and are audited in the same transaction.
    pub async fn refund_usage(
        &self,
        id: &str,
        at: Millis,
        actor: Option<&Actor>,
    ) -> Result<RefundOutcome, DbError> {
        let mark = format!(
            "UPDATE usage_events SET refunded_at = $1 WHERE id = $2 AND refunded_at IS NULL \
             RETURNING {COLUMNS}"
        );
        let current = format!("SELECT {COLUMNS} FROM usage_events WHERE id = $1");
        let refund_entry = "SELECT id, account_id, kind, reference, amount, balance_after, \
                            description, created_at FROM ledger_entries \
                            WHERE kind = 'refund' AND reference = $1";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let marked: Option<UsageRecord> = sqlx::query_as(&mark)
                .bind(at)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(record) = marked else {
                let Some(record) = sqlx::query_as::<_, UsageRecord>(&current)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    return Ok(RefundOutcome::NotFound);
                };
                let entry: LedgerEntry = sqlx::query_as(refund_entry)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| {
                        DbError::Corrupt(format!("usage {id} is refunded but has no refund entry"))
                    })?;
                return Ok(RefundOutcome::AlreadyRefunded(record, entry));
            };
            let description = format!("refund of {} usage", record.service);
            let posting = Posting {
                account_id: &record.account_id,
                kind: EntryKind::Refund,
                reference: &record.id,
                amount: record.cost,
                description: &description,
                at,
            };
            let entry = tx.post(&posting).await?.map_err(|refusal| {
                DbError::Corrupt(format!("refund of usage {id} refused: {refusal:?}"))
            })?;
            if let Some(actor) = actor {
                let detail = json!({
                    "usage_id": record.id,
                    "credits": record.cost,
                    "ledger_entry_id": entry.id,
                });
                tx.audit(actor, "usage.refund", Some(&record.account_id), detail, at)
                    .await?;
            }
            tx.commit().await?;
            Ok(RefundOutcome::Refunded(record, entry))
        })
    }

    /// Usage of one account, newest first.
    pub async fn usage_history(
        &self,
        account_id: &str,
        page: PageRequest,
    ) -> Result<Page<UsageRecord>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM usage_events \
             WHERE account_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        );
        self.page(&sql, Some(account_id), page).await
    }
}

/// [`Db::debit_usages`] on PostgreSQL in one statement, then the reason each usage it did
/// not debit was not debited: a repeat, a short balance or an unknown account. The
/// accounts are locked first, in account order: every batch then waits for accounts in
/// one order and holds its accounts before it inserts their usages, so no other debit can
/// hold one of its request ids meanwhile, and batches never wait on each other in a cycle.
async fn debit_in_one_statement(
    pool: &sqlx::PgPool,
    usages: &[&NewUsage],
) -> Result<Vec<DebitOutcome>, DbError> {
    let ids: Vec<String> = usages.iter().map(|_| new_id("use")).collect();
    let accounts: Vec<&str> = usages.iter().map(|u| u.account_id.as_str()).collect();
    let mut tx = pool.begin().await?;
    lock_in_key_order(&mut tx, "accounts", &accounts).await?;
    let column =
        |field: fn(&NewUsage) -> &str| -> Vec<&str> { usages.iter().map(|u| field(u)).collect() };
    let batch = DebitBatch {
        ids: &ids,
        accounts: accounts.clone(),
        request_ids: column(|u| &u.request_id),
        fingerprints: column(|u| &u.fingerprint),
        services: column(|u| &u.service),
        quotes: column(|u| &u.quote),
        costs: usages.iter().map(|u| u.cost.0).collect(),
        at: usages.iter().map(|u| u.at).collect(),
        descriptions: usages
            .iter()
            .map(|u| debit_description(&u.service))
            .collect(),
    };
    let mut debited: Vec<UsageRecord> = debit_batch(&mut tx, batch, COLUMNS).await?;
    // One look for the whole batch (one usage per account): the balances its debits
    // left and the auto top-up terms, if any endpoint might want to hear of them.
    let balances: Vec<(String, i64, bool, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT id, balance, {LINE_TERMS} FROM accounts WHERE id = ANY($1) AND {ANY_ENDPOINT}"
    ))
    .bind(&accounts)
    .fetch_all(&mut *tx)
    .await?;
    let mut outcomes = Vec::with_capacity(usages.len());
    for (usage, id) in usages.iter().zip(&ids) {
        let outcome = match debited.iter().position(|record| &record.id == id) {
            Some(at) => {
                if let Some((_, after, enabled, threshold)) =
                    balances.iter().find(|b| b.0 == usage.account_id)
                {
                    tx.report_if_low(usage, Millicredits(*after), (*enabled, *threshold))
                        .await?;
                }
                DebitOutcome::Debited(debited.swap_remove(at))
            }
            None => not_debited(&mut tx, usage).await?,
        };
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Why a usage the batch statement left alone was not debited.
async fn not_debited(
    tx: &mut sqlx::PgTransaction<'_>,
    usage: &NewUsage,
) -> Result<DebitOutcome, DbError> {
    if let Some(existing) = tx
        .usage_by_request(&usage.account_id, &usage.request_id)
        .await?
    {
        return Ok(DebitOutcome::Existing(existing));
    }
    let balance: Option<i64> = sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
        .bind(&usage.account_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match balance {
        Some(available) => {
            let available = Millicredits(available);
            tx.report_depleted(usage, available).await?;
            DebitOutcome::Insufficient { available }
        }
        None => DebitOutcome::AccountNotFound,
    })
}

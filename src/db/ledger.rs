//! The ledger: the only code that changes a balance. Each change updates the account's
//! balance and appends an entry with the balance after it, in the caller's transaction.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    audit::{Actor, AuditWrites},
    impl_for_connections, new_id, with_pool,
};
pub use crate::domain::ledger::EntryKind;
use crate::{clock::Millis, domain::credits::Millicredits};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LedgerEntry {
    pub id: i64,
    pub account_id: String,
    pub kind: String,
    /// What caused the entry: a usage id, an attempt id, an adjustment id.
    pub reference: String,
    #[sqlx(try_from = "i64")]
    pub amount: Millicredits,
    #[sqlx(try_from = "i64")]
    pub balance_after: Millicredits,
    pub description: String,
    pub created_at: Millis,
}

impl Paged for LedgerEntry {
    fn page_key(&self) -> i64 {
        self.id
    }
}

/// A balance change to post.
#[derive(Debug, Clone, Copy)]
pub struct Posting<'a> {
    pub account_id: &'a str,
    pub kind: EntryKind,
    pub reference: &'a str,
    /// Positive credits the account, negative debits it.
    pub amount: Millicredits,
    pub description: &'a str,
    pub at: Millis,
}

/// A posting the ledger refused; nothing was written.
#[derive(Debug)]
pub enum PostRefusal {
    AccountNotFound,
    /// A debit would take more credits than the balance has.
    Insufficient {
        available: Millicredits,
    },
}

pub(crate) trait LedgerWrites {
    async fn post(
        &mut self,
        posting: &Posting<'_>,
    ) -> Result<Result<LedgerEntry, PostRefusal>, sqlx::Error>;
}

const ENTRY_COLUMNS: &str =
    "id, account_id, kind, reference, amount, balance_after, description, created_at";

impl_for_connections!(LedgerWrites {
    async fn post(
        &mut self,
        posting: &Posting<'_>,
    ) -> Result<Result<LedgerEntry, PostRefusal>, sqlx::Error> {
        // The condition makes the balance check and the change one atomic step. Credits
        // always post (a balance below zero comes back up), debits only with the credits
        // unless their kind may overdraw.
        let balance: Option<i64> = sqlx::query_scalar(
            "UPDATE accounts SET balance = balance + $1 \
             WHERE id = $2 AND ($1 >= 0 OR balance + $1 >= 0 OR $3) RETURNING balance",
        )
        .bind(posting.amount.0)
        .bind(posting.account_id)
        .bind(posting.kind.may_overdraw())
        .fetch_optional(&mut *self)
        .await?;
        let Some(balance_after) = balance else {
            let available: Option<i64> =
                sqlx::query_scalar("SELECT balance FROM accounts WHERE id = $1")
                    .bind(posting.account_id)
                    .fetch_optional(&mut *self)
                    .await?;
            return Ok(Err(match available {
                None => PostRefusal::AccountNotFound,
                Some(b) => PostRefusal::Insufficient { available: Millicredits(b) },
            }));
        };
        let entry = sqlx::query_as(&format!(
            "INSERT INTO ledger_entries \
             (account_id, kind, reference, amount, balance_after, description, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ENTRY_COLUMNS}"
        ))
        .bind(posting.account_id)
        .bind(posting.kind.as_str())
        .bind(posting.reference)
        .bind(posting.amount.0)
        .bind(balance_after)
        .bind(posting.description)
        .bind(posting.at)
        .fetch_one(&mut *self)
        .await?;
        Ok(Ok(entry))
    }
});

/// An account whose balance disagrees with its ledger.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Mismatch {
    pub account_id: String,
    pub balance: i64,
    pub ledger_sum: i64,
    /// `balance_after` of the newest entry, if the account has any.
    pub last_balance_after: Option<i64>,
}

/// What `verify` found.
#[derive(Debug, Clone)]
pub struct Verification {
    pub accounts_checked: i64,
    pub mismatches: Vec<Mismatch>,
}

impl Db {
    /// Ledger entries of one account, newest first.
    pub async fn ledger(
        &self,
        account_id: &str,
        page: PageRequest,
    ) -> Result<Page<LedgerEntry>, DbError> {
        let sql = format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger_entries \
             WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        self.page(&sql, Some(account_id), page).await
    }

    /// A support adjustment: posts `amount` with the reason and audits it, in one
    /// transaction.
    pub async fn adjust_balance(
        &self,
        account_id: &str,
        amount: Millicredits,
        reason: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<Result<LedgerEntry, PostRefusal>, DbError> {
        let reference = new_id("adj");
        let posting = Posting {
            account_id,
            kind: EntryKind::Adjustment,
            reference: &reference,
            amount,
            description: reason,
            at,
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let entry = match tx.post(&posting).await? {
                Ok(entry) => entry,
                Err(refusal) => return Ok(Err(refusal)),
            };
            let detail = json!({
                "adjustment_id": reference,
                "credits": amount,
                "reason": reason,
                "ledger_entry_id": entry.id,
                "balance_after": entry.balance_after,
            });
            tx.audit(actor, "balance.adjust", Some(account_id), detail, at)
                .await?;
            tx.commit().await?;
            Ok(Ok(entry))
        })
    }

    /// Every account whose balance is not the sum of its ledger, or not the balance after
    /// its newest entry.
    pub async fn verify_ledger(&self) -> Result<Verification, DbError> {
        const COUNT: &str = "SELECT COUNT(*) FROM accounts";
        const SQL: &str = "SELECT account_id, balance, ledger_sum, last_balance_after FROM ( \
               SELECT a.id AS account_id, a.balance, \
                      CAST(COALESCE(SUM(l.amount), 0) AS BIGINT) AS ledger_sum, \
                      (SELECT n.balance_after FROM ledger_entries n WHERE n.account_id = a.id \
                       ORDER BY n.id DESC LIMIT 1) AS last_balance_after \
               FROM accounts a LEFT JOIN ledger_entries l ON l.account_id = a.id \
               GROUP BY a.id, a.balance) totals \
             WHERE balance <> ledger_sum \
                OR (last_balance_after IS NOT NULL AND last_balance_after <> balance) \
             ORDER BY account_id";
        with_pool!(self, |pool| {
            let accounts_checked = sqlx::query_scalar(COUNT).fetch_one(pool).await?;
            let mismatches = sqlx::query_as(SQL).fetch_all(pool).await?;
            Ok(Verification {
                accounts_checked,
                mismatches,
            })
        })
    }
}

/// The whole batch as one statement, for PostgreSQL, where each statement is a round
/// trip; planned for each batch (see [`lock_in_key_order`]), and only for usages of
/// distinct accounts (an account matched twice would be updated once). Every account with
/// the credits and without the request id is debited, and its usage row and ledger entry
/// written. The usages it debited come back; the others wrote nothing. Run with the
/// accounts locked (see `usage::debit_in_one_statement`): since every debit the queue writes
/// locks its account before it inserts its usage, a request id of a locked account cannot
/// be in flight elsewhere, and `NOT EXISTS` sees every committed one.
const DEBIT_BATCH_SQL: &str = "\
    WITH input AS ( \
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                             $6::text[], $7::int8[], $8::int8[], $9::text[]) \
            AS t(usage_id, usage_account, usage_request, usage_fingerprint, usage_service, \
                 usage_quote, usage_cost, usage_at, usage_description) \
    ), debited AS ( \
        UPDATE accounts SET balance = balance - input.usage_cost \
        FROM input \
        WHERE accounts.id = input.usage_account AND balance - input.usage_cost >= 0 \
          AND NOT EXISTS (SELECT 1 FROM usage_events u \
                          WHERE u.account_id = input.usage_account \
                            AND u.request_id = input.usage_request) \
        RETURNING input.usage_id, balance \
    ), entries AS ( \
        INSERT INTO ledger_entries \
            (account_id, kind, reference, amount, balance_after, description, created_at) \
        SELECT usage_account, $10, usage_id, -usage_cost, balance, usage_description, usage_at \
        FROM debited JOIN input USING (usage_id) ORDER BY usage_account \
    ) \
    INSERT INTO usage_events \
        (id, account_id, request_id, fingerprint, service, quote, cost, created_at) \
    SELECT usage_id, usage_account, usage_request, usage_fingerprint, usage_service, \
           usage_quote, usage_cost, usage_at \
    FROM debited JOIN input USING (usage_id) ORDER BY usage_account \
    RETURNING ";

/// A batch of usages to debit with [`debit_batch`], column by column: one row per usage,
/// of distinct accounts.
pub(super) struct DebitBatch<'a> {
    pub ids: &'a [String],
    pub accounts: Vec<&'a str>,
    pub request_ids: Vec<&'a str>,
    pub fingerprints: Vec<&'a str>,
    pub services: Vec<&'a str>,
    pub quotes: Vec<&'a str>,
    pub costs: Vec<i64>,
    pub at: Vec<Millis>,
    pub descriptions: Vec<String>,
}

/// Debits every usage of `batch` (its accounts locked) whose account has the credits and
/// not its request id, with its usage row and ledger entry: [`DEBIT_BATCH_SQL`]. The
/// usage rows it wrote come back, as the columns `returning` names.
pub(super) async fn debit_batch<R>(
    tx: &mut sqlx::PgConnection,
    batch: DebitBatch<'_>,
    returning: &str,
) -> Result<Vec<R>, sqlx::Error>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(&format!("{DEBIT_BATCH_SQL}{returning}"))
        .bind(batch.ids)
        .bind(batch.accounts)
        .bind(batch.request_ids)
        .bind(batch.fingerprints)
        .bind(batch.services)
        .bind(batch.quotes)
        .bind(batch.costs)
        .bind(batch.at)
        .bind(batch.descriptions)
        .bind(EntryKind::Usage.as_str())
        .persistent(false)
        .fetch_all(tx)
        .await
}

//! The top-ups and their ledger credits, as the check of the provider against the ledger
//! reads them.

use super::{BeginWrite, Db, DbError, with_pool};
use crate::{
    clock::Millis,
    domain::{credits::Millicredits, money::Cents, reconciliation::RecordedTopup},
};

#[derive(sqlx::FromRow)]
struct RecordedRow {
    id: String,
    account_id: String,
    provider_payment_id: Option<String>,
    amount_cents: i64,
    credits: i64,
    credited: Option<i64>,
}

impl From<RecordedRow> for RecordedTopup {
    fn from(row: RecordedRow) -> Self {
        Self {
            topup_id: row.id,
            account_id: row.account_id,
            payment_id: row.provider_payment_id,
            amount: Cents(row.amount_cents),
            credits: Millicredits(row.credits),
            credited: row.credited.map(Millicredits),
        }
    }
}

/// A top-up the last check found at odds with the provider, as support lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MismatchedTopup {
    pub topup_id: String,
    pub account_id: String,
    /// What disagrees, with the figures.
    pub detail: String,
    pub flagged_at: Millis,
}

/// A top-up with the ledger's credit for it: one at most, as (kind, reference) is unique.
const RECORDED: &str = "SELECT a.id, a.account_id, a.provider_payment_id, a.amount_cents, \
     a.credits, l.amount AS credited FROM topup_attempts a \
     LEFT JOIN ledger_entries l ON l.reference = a.id AND l.kind IN ('auto_topup', 'manual_topup')";

impl Db {
    /// The top-ups started from `since` on, with the ledger's credit of each.
    pub async fn recorded_topups_since(
        &self,
        since: Millis,
    ) -> Result<Vec<RecordedTopup>, DbError> {
        let sql = format!("{RECORDED} WHERE a.created_at >= $1 ORDER BY a.created_at, a.id");
        let rows: Vec<RecordedRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(since).fetch_all(pool).await?
        });
        Ok(rows.into_iter().map(RecordedTopup::from).collect())
    }

    /// One top-up with the ledger's credit of it.
    pub async fn recorded_topup(&self, id: &str) -> Result<Option<RecordedTopup>, DbError> {
        let sql = format!("{RECORDED} WHERE a.id = $1");
        let row: Option<RecordedRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        Ok(row.map(RecordedTopup::from))
    }

    /// Replaces what earlier checks found about the top-ups started from `since` on with
    /// `found` (a top-up and what disagrees), flagging each for support, in one
    /// transaction: a top-up that agrees now is no longer listed.
    pub async fn record_provider_mismatches(
        &self,
        since: Millis,
        found: &[(&str, String)],
        at: Millis,
    ) -> Result<(), DbError> {
        const CLEAR: &str = "UPDATE topup_attempts SET provider_mismatch = NULL \
             WHERE provider_mismatch IS NOT NULL AND created_at >= $1";
        const MARK: &str = "UPDATE topup_attempts SET provider_mismatch = $1, \
             flagged_at = COALESCE(flagged_at, $2) WHERE id = $3";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(CLEAR).bind(since).execute(&mut *tx).await?;
            for (topup_id, detail) in found {
                sqlx::query(MARK)
                    .bind(detail)
                    .bind(at)
                    .bind(topup_id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The top-ups the checks found at odds with the provider, longest flagged first.
    pub async fn mismatched_topups(&self, limit: u32) -> Result<Vec<MismatchedTopup>, DbError> {
        const SQL: &str = "SELECT id AS topup_id, account_id, provider_mismatch AS detail, \
             flagged_at FROM topup_attempts WHERE provider_mismatch IS NOT NULL \
             ORDER BY flagged_at, id LIMIT $1";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }
}

//! What the card check reads: the accounts whose charged card expires soon, and the last
//! automatic top-up an account's pace is measured from.

use super::{Db, DbError, with_pool};
use crate::{
    clock::Millis,
    domain::{card_health::LastTopUp, credits::Millicredits},
};

impl Db {
    /// Accounts with auto top-up on whose card (the one set for auto top-up, or else the
    /// default) expires by the end of month `through` (counted as `year * 12 + month`),
    /// after `after`, in id order, up to `limit`.
    pub async fn accounts_with_cards_expiring(
        &self,
        through: i64,
        after: &str,
        limit: u32,
    ) -> Result<Vec<String>, DbError> {
        const SQL: &str = "SELECT a.id FROM payment_methods p JOIN accounts a ON a.id = p.account_id \
             WHERE (p.exp_year * 12 + p.exp_month) <= $1 AND a.id > $2 \
             AND a.auto_topup_enabled AND a.closed_at IS NULL \
             AND (p.id = a.auto_topup_payment_method_id \
                  OR (a.auto_topup_payment_method_id IS NULL AND p.is_default)) \
             ORDER BY a.id LIMIT $3";
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(through)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// The account's last paid automatic top-up (or retry of one): the balance its credit
    /// left, and when it was credited.
    pub async fn last_auto_top_up(&self, account_id: &str) -> Result<Option<LastTopUp>, DbError> {
        const SQL: &str = "SELECT balance_after, created_at FROM ledger_entries \
             WHERE kind = 'auto_topup' AND reference = (SELECT id FROM topup_attempts \
             WHERE account_id = $1 AND trigger <> 'manual' AND state = 'succeeded' \
             ORDER BY seq DESC LIMIT 1)";
        let row: Option<(i64, Millis)> = with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(account_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(balance_after, at)| LastTopUp {
            balance_after: Millicredits(balance_after),
            at,
        }))
    }
}

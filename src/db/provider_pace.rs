//! The shared pace of requests to the payment provider (see [`crate::payments::budget`]).

use super::{BeginWrite, Db, with_pool};
use crate::payments::budget::{PaceStore, Reservation, StoreFuture};

/// Takes the budget's next free moment, no earlier than `$2`, and moves it on by `$3`.
const RESERVE: &str = "INSERT INTO provider_pace (budget, next_free_us) VALUES ($1, $2 + $3) \
     ON CONFLICT (budget) DO UPDATE SET next_free_us = CASE \
     WHEN provider_pace.next_free_us > $2 THEN provider_pace.next_free_us ELSE $2 END + $3 \
     RETURNING next_free_us - $3";
/// Holds the budget back until at least `$2`: its next free moment too.
const HOLD: &str = "INSERT INTO provider_pace (budget, next_free_us, held_until_us) \
     VALUES ($1, $2, $2) ON CONFLICT (budget) DO UPDATE SET next_free_us = CASE \
     WHEN provider_pace.next_free_us > $2 THEN provider_pace.next_free_us ELSE $2 END, \
     held_until_us = CASE \
     WHEN provider_pace.held_until_us > $2 THEN provider_pace.held_until_us ELSE $2 END";
const HELD_UNTIL: &str = "SELECT held_until_us FROM provider_pace WHERE budget = $1";

impl PaceStore for Db {
    fn reserve<'a>(
        &'a self,
        budgets: &'a [Reservation<'a>],
        not_before_us: i64,
    ) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            with_pool!(self, |pool| {
                let mut tx = pool.begin_write().await?;
                if matches!(self, Db::Postgres(_)) {
                    // A pace lost in a crash costs one request sent early, never money:
                    // no need to wait for the flush to disk.
                    sqlx::query("SET LOCAL synchronous_commit = off")
                        .execute(&mut *tx)
                        .await?;
                }
                let mut at = not_before_us;
                for reservation in budgets {
                    at = sqlx::query_scalar(RESERVE)
                        .bind(reservation.budget)
                        .bind(at)
                        .bind(reservation.spacing_us)
                        .fetch_one(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(at)
            })
        })
    }

    fn hold<'a>(&'a self, budget: &'a str, until_us: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            with_pool!(self, |pool| {
                sqlx::query(HOLD)
                    .bind(budget)
                    .bind(until_us)
                    .execute(pool)
                    .await?;
            });
            Ok(())
        })
    }

    fn held_until<'a>(&'a self, budget: &'a str) -> StoreFuture<'a, i64> {
        Box::pin(async move {
            let held: Option<i64> = with_pool!(self, |pool| {
                sqlx::query_scalar(HELD_UNTIL)
                    .bind(budget)
                    .fetch_optional(pool)
                    .await?
            });
            Ok(held.unwrap_or(0))
        })
    }
}

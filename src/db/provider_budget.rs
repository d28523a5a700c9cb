//! The leases and the hold of the provider's shared budget (see
//! [`crate::payments::budget`]).

use super::{BeginWrite, Db, with_pool};
use crate::payments::budget::{LeaseStore, Standing, StoreFuture};

const RENEW: &str = "INSERT INTO provider_budget_leases (replica, renewed_at) VALUES ($1, $2) \
     ON CONFLICT (replica) DO UPDATE SET renewed_at = excluded.renewed_at";
const RELEASE: &str = "DELETE FROM provider_budget_leases WHERE replica = $1";
const FORGET_EXPIRED: &str = "DELETE FROM provider_budget_leases WHERE renewed_at < $1";
const LIVE: &str = "SELECT COUNT(*) FROM provider_budget_leases";
const HELD_UNTIL: &str = "SELECT held_until FROM provider_budget_hold WHERE id = 1";
const HOLD: &str = "INSERT INTO provider_budget_hold (id, held_until) VALUES (1, $1) \
     ON CONFLICT (id) DO UPDATE SET held_until = CASE \
     WHEN provider_budget_hold.held_until > excluded.held_until \
     THEN provider_budget_hold.held_until ELSE excluded.held_until END";

impl LeaseStore for Db {
    fn renew<'a>(
        &'a self,
        replica: &'a str,
        now_ms: i64,
        live_since_ms: i64,
    ) -> StoreFuture<'a, Standing> {
        Box::pin(async move {
            with_pool!(self, |pool| {
                let mut tx = pool.begin_write().await?;
                if matches!(self, Db::Postgres(_)) {
                    // A lease lost in a crash only counts a replica for a few seconds
                    // less: no need to wait for the flush to disk.
                    sqlx::query("SET LOCAL synchronous_commit = off")
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(RENEW)
                    .bind(replica)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(FORGET_EXPIRED)
                    .bind(live_since_ms)
                    .execute(&mut *tx)
                    .await?;
                let replicas: i64 = sqlx::query_scalar(LIVE).fetch_one(&mut *tx).await?;
                let held_until: Option<i64> = sqlx::query_scalar(HELD_UNTIL)
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(Standing {
                    replicas: u32::try_from(replicas).unwrap_or(u32::MAX),
                    held_until_ms: held_until.unwrap_or(0),
                })
            })
        })
    }

    fn hold(&self, until_ms: i64) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            with_pool!(self, |pool| {
                sqlx::query(HOLD).bind(until_ms).execute(pool).await?;
            });
            Ok(())
        })
    }

    fn release<'a>(&'a self, replica: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            with_pool!(self, |pool| {
                sqlx::query(RELEASE).bind(replica).execute(pool).await?;
            });
            Ok(())
        })
    }
}

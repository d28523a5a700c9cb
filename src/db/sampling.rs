//! The state `/metrics` shows as gauges, sampled from the database: open attempts by
//! age, paused accounts by reason, notices and provider events by state.

use super::{Db, DbError, notices::NoticeState, webhooks::EventState, with_pool};
use crate::{clock::Millis, domain::auto_topup::PauseReason, metrics::OPEN_ATTEMPT_AGES};

const HOUR_MS: Millis = 3_600_000;

/// Stored label values and their counts.
type Counts = Vec<(String, i64)>;

/// One sample. Every known label value is present, with 0 when nothing has it.
#[derive(Debug, Clone, PartialEq)]
pub struct StateSample {
    /// Open attempts, in the buckets of [`OPEN_ATTEMPT_AGES`].
    pub open_attempts_by_age: [i64; 4],
    pub flagged_attempts: i64,
    pub paused_accounts: Vec<(PauseReason, i64)>,
    pub notices: Vec<(NoticeState, i64)>,
    /// Age of the oldest notice waiting (pending or sending); 0 when none waits.
    pub oldest_notice_age_secs: f64,
    pub webhook_events: Vec<(EventState, i64)>,
}

/// Counts by label value, each known value present: `rows` are the stored value and its
/// count.
fn every<T: Copy>(known: &[T], name: impl Fn(T) -> &'static str, rows: &Counts) -> Vec<(T, i64)> {
    known
        .iter()
        .map(|&value| {
            let count = rows
                .iter()
                .find(|(stored, _)| stored == name(value))
                .map_or(0, |(_, count)| *count);
            (value, count)
        })
        .collect()
}

impl Db {
    /// Samples the database's state, as of `now`, into gauges, with the pool's.
    pub async fn sample_metrics(&self, now: Millis) -> Result<(), DbError> {
        crate::metrics::sampled(&self.sample(now).await?);
        with_pool!(self, |pool| crate::metrics::pool(
            pool.size(),
            pool.num_idle()
        ));
        Ok(())
    }

    /// The database's state as of `now`.
    pub async fn sample(&self, now: Millis) -> Result<StateSample, DbError> {
        // Open attempts by the bucket their claim time falls in: $1 to $3 are the bounds
        // between the buckets, newest first.
        const ATTEMPTS: &str = "SELECT \
            COALESCE(SUM(CASE WHEN created_at > $1 THEN 1 ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN created_at <= $1 AND created_at > $2 THEN 1 ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN created_at <= $2 AND created_at > $3 THEN 1 ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN created_at <= $3 THEN 1 ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN flagged_at IS NOT NULL THEN 1 ELSE 0 END), 0) \
            FROM topup_attempts WHERE state NOT IN ('succeeded', 'failed', 'canceled')";
        const PAUSED: &str = "SELECT auto_topup_paused_reason, COUNT(*) FROM accounts \
            WHERE auto_topup_paused_reason IS NOT NULL GROUP BY auto_topup_paused_reason";
        const NOTICES: &str = "SELECT state, COUNT(*) FROM notices GROUP BY state";
        const OLDEST_NOTICE: &str =
            "SELECT MIN(created_at) FROM notices WHERE state IN ('pending', 'sending')";
        let events = EventState::ALL
            .iter()
            .map(|state| {
                format!(
                    "SELECT '{}', COUNT(*) FROM webhook_events WHERE {}",
                    state.as_str(),
                    state.condition()
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        let [lt_1h, lt_6h, lt_24h] = [1, 2, 3].map(|i| now - OPEN_ATTEMPT_AGES[i].1 * HOUR_MS);
        let ((young, hours, day, old, flagged), oldest): (
            (i64, i64, i64, i64, i64),
            Option<Millis>,
        ) = with_pool!(self, |pool| (
            sqlx::query_as(ATTEMPTS)
                .bind(lt_1h)
                .bind(lt_6h)
                .bind(lt_24h)
                .fetch_one(pool)
                .await?,
            sqlx::query_scalar(OLDEST_NOTICE).fetch_one(pool).await?,
        ));
        let (paused, notices, events): (Counts, Counts, Counts) = with_pool!(self, |pool| (
            sqlx::query_as(PAUSED).fetch_all(pool).await?,
            sqlx::query_as(NOTICES).fetch_all(pool).await?,
            sqlx::query_as(&events).fetch_all(pool).await?,
        ));
        Ok(StateSample {
            open_attempts_by_age: [young, hours, day, old],
            flagged_attempts: flagged,
            paused_accounts: every(&PauseReason::ALL, PauseReason::as_str, &paused),
            notices: every(&NoticeState::ALL, NoticeState::as_str, &notices),
            oldest_notice_age_secs: oldest.map_or(0.0, |at| (now - at).max(0) as f64 / 1000.0),
            webhook_events: every(&EventState::ALL, EventState::as_str, &events),
        })
    }
}

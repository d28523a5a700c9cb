//! The provider's webhook events: stored once per id, then processed. An event whose
//! handling fails is tried again later, each time later than the last, and set aside as
//! dead after a number of tries, for support to look at and requeue.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError,
    audit::{Actor, AuditWrites},
    with_pool,
};
use crate::clock::Millis;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub object_id: Option<String>,
    pub payload: String,
    pub received_at: Millis,
    pub processed_at: Option<Millis>,
    pub last_error: Option<String>,
    /// Tries that failed.
    pub attempts: i64,
    pub next_attempt_at: Millis,
    /// Set when it failed too often to be tried again by itself.
    pub dead_at: Option<Millis>,
}

/// Where a stored event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventState {
    /// Waiting to be handled (again).
    Pending,
    Processed,
    /// Failed too often; support may requeue it.
    Dead,
}

impl EventState {
    pub const ALL: [Self; 3] = [Self::Pending, Self::Processed, Self::Dead];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processed => "processed",
            Self::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// The SQL condition of the state; fixed words, never input.
    pub(super) fn condition(self) -> &'static str {
        match self {
            Self::Pending => "processed_at IS NULL AND dead_at IS NULL",
            Self::Processed => "processed_at IS NOT NULL",
            Self::Dead => "dead_at IS NOT NULL",
        }
    }
}

impl StoredEvent {
    pub fn state(&self) -> EventState {
        match (self.processed_at, self.dead_at) {
            (Some(_), _) => EventState::Processed,
            (None, Some(_)) => EventState::Dead,
            (None, None) => EventState::Pending,
        }
    }
}

/// A failed try of an event, and what follows it.
#[derive(Debug, Clone)]
pub struct EventFailure<'a> {
    pub error: &'a str,
    pub at: Millis,
    /// When to try again, if it is tried again.
    pub next_attempt_at: Millis,
    /// The tries after which an event is dead.
    pub max_attempts: u32,
}

/// Requeuing a dead event.
#[derive(Debug)]
pub enum EventRequeue {
    Requeued(StoredEvent),
    /// Only dead events can be requeued; this one is in another state.
    NotDead(StoredEvent),
    NotFound,
}

const COLUMNS: &str = "id, type, object_id, payload, received_at, processed_at, last_error, \
                       attempts, next_attempt_at, dead_at";

impl Db {
    /// Stores an authentic event unless its id was seen before; true if new.
    pub async fn store_event(
        &self,
        id: &str,
        kind: &str,
        object_id: Option<&str>,
        payload: &str,
        at: Millis,
    ) -> Result<bool, DbError> {
        const SQL: &str = "INSERT INTO webhook_events (id, type, object_id, payload, received_at, \
                           next_attempt_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (id) DO NOTHING";
        let inserted = with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(id)
                .bind(kind)
                .bind(object_id)
                .bind(payload)
                .bind(at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// How far the sweep `name` of the provider's events has come (Unix seconds).
    pub async fn sweep_mark(&self, name: &str) -> Result<Option<i64>, DbError> {
        const SQL: &str = "SELECT through FROM event_sweeps WHERE name = $1";
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(name)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Moves the sweep's mark forward to `through` (never back: replicas sweep too).
    pub async fn advance_sweep(&self, name: &str, through: i64) -> Result<(), DbError> {
        const SQL: &str = "INSERT INTO event_sweeps (name, through) VALUES ($1, $2) \
                           ON CONFLICT (name) DO UPDATE SET through = excluded.through \
                           WHERE event_sweeps.through < excluded.through";
        with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(name)
                .bind(through)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Records that the event was handled.
    pub async fn finish_event(&self, id: &str, at: Millis) -> Result<(), DbError> {
        const SQL: &str = "UPDATE webhook_events SET processed_at = $1, last_error = NULL \
                           WHERE id = $2 AND processed_at IS NULL";
        with_pool!(self, |pool| {
            sqlx::query(SQL).bind(at).bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// Records a failed try: the event is tried again at `next_attempt_at`, or is dead if
    /// this was its last try. True if it is now dead.
    pub async fn fail_event(&self, id: &str, failure: &EventFailure<'_>) -> Result<bool, DbError> {
        const SQL: &str = "UPDATE webhook_events SET attempts = attempts + 1, last_error = $1, \
                           next_attempt_at = $2, \
                           dead_at = CASE WHEN attempts + 1 >= $3 THEN $4 ELSE NULL END \
                           WHERE id = $5 AND processed_at IS NULL AND dead_at IS NULL \
                           RETURNING dead_at";
        let dead: Option<Option<Millis>> = with_pool!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(failure.error)
                .bind(failure.next_attempt_at)
                .bind(i64::from(failure.max_attempts))
                .bind(failure.at)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(dead.flatten().is_some())
    }

    /// Events due to be tried at `now`, the longest due first: an event that keeps
    /// failing waits longer each time, so it never holds newer ones back.
    pub async fn due_events(&self, now: Millis, limit: u32) -> Result<Vec<StoredEvent>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_events WHERE processed_at IS NULL AND dead_at IS NULL \
             AND next_attempt_at <= $1 ORDER BY next_attempt_at, received_at, id LIMIT $2"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    pub async fn event(&self, id: &str) -> Result<Option<StoredEvent>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_events WHERE id = $1");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        }))
    }

    /// Events in `state`, the newest first.
    pub async fn events_in(
        &self,
        state: EventState,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_events WHERE {} \
             ORDER BY received_at DESC, id DESC LIMIT $1",
            state.condition()
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Makes a dead event due again from a fresh count of tries; audited.
    pub async fn requeue_event(
        &self,
        id: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<EventRequeue, DbError> {
        let requeue = format!(
            "UPDATE webhook_events SET dead_at = NULL, attempts = 0, next_attempt_at = $1 \
             WHERE id = $2 AND dead_at IS NOT NULL RETURNING {COLUMNS}"
        );
        let current = format!("SELECT {COLUMNS} FROM webhook_events WHERE id = $1");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let requeued: Option<StoredEvent> = sqlx::query_as(&requeue)
                .bind(at)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(event) = requeued else {
                let current: Option<StoredEvent> = sqlx::query_as(&current)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Ok(current.map_or(EventRequeue::NotFound, EventRequeue::NotDead));
            };
            let detail =
                json!({ "event_id": event.id, "type": event.kind, "last_error": event.last_error });
            tx.audit(actor, "webhook_event.requeue", None, detail, at)
                .await?;
            tx.commit().await?;
            Ok(EventRequeue::Requeued(event))
        })
    }
}

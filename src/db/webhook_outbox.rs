//! The webhook outbox: each event the host hears is a message, written by the transaction
//! of the change it reports, with one delivery per enabled endpoint that wants it.
//! Senders claim deliveries under a lease, one at a time per endpoint and account and in
//! the order they were written, and record every try.

use serde_json::{Value, json};

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    audit::{Actor, AuditWrites},
    impl_for_connections, new_id,
    notices::{NoticeWrites, QueueWhen},
    with_pool,
};
use crate::{
    clock::Millis,
    config::EmailConfig,
    domain::{
        notice::{EndpointFailure, Notice},
        webhook::{self, EventType, Subscription},
    },
};

/// Writing events inside the transaction of the change they report.
#[allow(async_fn_in_trait)]
pub trait EventWrites {
    /// Writes `event` of `account_id` for every enabled endpoint that wants it (nothing
    /// when none does); how many deliveries it queued.
    async fn emit_event(
        &mut self,
        event: EventType,
        account_id: &str,
        data: Value,
        at: Millis,
    ) -> Result<usize, sqlx::Error>;
}

impl_for_connections!(EventWrites {
    async fn emit_event(
        &mut self,
        event: EventType,
        account_id: &str,
        data: Value,
        at: Millis,
    ) -> Result<usize, sqlx::Error> {
        let endpoints: Vec<(String, String)> =
            sqlx::query_as("SELECT id, events FROM webhook_endpoints WHERE enabled ORDER BY seq")
                .fetch_all(&mut *self)
                .await?;
        let wanted: Vec<String> = endpoints
            .into_iter()
            .filter(|(_, events)| Subscription::from_json(events).is_some_and(|s| s.wants(event)))
            .map(|(id, _)| id)
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        let message_id = new_id("msg");
        sqlx::query(
            "INSERT INTO webhook_messages (id, event_type, account_id, body, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&message_id)
        .bind(event.as_str())
        .bind(account_id)
        .bind(webhook::body(event, account_id, data, at))
        .bind(at)
        .execute(&mut *self)
        .await?;
        for endpoint_id in &wanted {
            sqlx::query(
                "INSERT INTO webhook_deliveries \
                 (id, endpoint_id, message_id, account_id, state, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
            )
            .bind(new_id("whd"))
            .bind(endpoint_id)
            .bind(&message_id)
            .bind(account_id)
            .bind(at)
            .execute(&mut *self)
            .await?;
        }
        Ok(wanted.len())
    }
});

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next try (or for the one before it, of the same account).
    Pending,
    /// Claimed by a sender under a lease.
    Sending,
    Delivered,
    /// Out of tries; its endpoint was disabled. It can be replayed.
    Failed,
}

impl DeliveryState {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Sending, Self::Delivered, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Outgoing {
    pub id: String,
    pub attempts: i64,
    pub account_id: String,
    pub message_id: String,
    pub event_type: String,
    pub body: String,
    pub endpoint_id: String,
    pub url: String,
    pub secret: String,
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<Millis>,
}

impl Outgoing {
    /// The secrets that sign it at `now`: the current one, and a rotated one still valid.
    pub fn secrets(&self, now: Millis) -> Vec<&str> {
        let previous = self
            .previous_secret
            .as_deref()
            .filter(|_| self.previous_secret_until.is_some_and(|until| until > now));
        std::iter::once(self.secret.as_str())
            .chain(previous)
            .collect()
    }
}

/// One try of a delivery: the status the endpoint answered, or why there was none.
#[derive(Debug, Clone)]
pub struct Try {
    pub at: Millis,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// What a try leaves a delivery as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryOutcome {
    Delivered,
    /// Tried again at this time.
    Retry(Millis),
    /// Out of tries: the delivery failed and its endpoint is disabled.
    Exhausted,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub seq: i64,
    pub id: String,
    pub endpoint_id: String,
    pub message_id: String,
    pub event_type: String,
    pub account_id: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub delivered_at: Option<Millis>,
    pub failed_at: Option<Millis>,
    pub body: String,
}

impl Paged for DeliveryRow {
    fn page_key(&self) -> i64 {
        self.seq
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempted_at: Millis,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
}

/// Sending a delivery again.
#[derive(Debug)]
pub enum ReplayOutcome {
    /// A new delivery of the same message to the same endpoint, queued after the others.
    Replayed(DeliveryRow),
    /// Still waiting or being sent; it will be tried anyway.
    InFlight(DeliveryRow),
    NotFound,
}

const DELIVERY_COLUMNS: &str = "d.seq, d.id, d.endpoint_id, d.message_id, m.event_type, \
     d.account_id, d.state, d.attempts, d.next_attempt_at, d.last_status, d.last_error, \
     d.created_at, d.delivered_at, d.failed_at, m.body";

const DELIVERY_FROM: &str = "webhook_deliveries d JOIN webhook_messages m ON m.id = d.message_id";

/// Due: pending and past its next attempt, or claimed under a lease that has expired (its
/// sender died), on an enabled endpoint, with nothing written before it for the same
/// endpoint and account still waiting. Repeated in the UPDATE so PostgreSQL re-checks it
/// after a lock wait.
const DUE: &str = "((d.state = 'pending' AND d.next_attempt_at <= $3) \
     OR (d.state = 'sending' AND d.lease_expires_at <= $3)) \
     AND EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.id = d.endpoint_id AND e.enabled) \
     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries b WHERE b.endpoint_id = d.endpoint_id \
     AND b.account_id = d.account_id AND b.seq < d.seq AND b.state IN ('pending', 'sending'))";

impl Db {
    /// Claims up to `limit` due deliveries for `owner` until `lease_until`, oldest first.
    pub async fn claim_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<Outgoing>, DbError> {
        let lock = match self {
            Self::Sqlite(_) => "",
            Self::Postgres(_) => "FOR UPDATE OF d SKIP LOCKED",
        };
        let claim = format!(
            "UPDATE webhook_deliveries AS d SET state = 'sending', lease_owner = $1, \
             lease_expires_at = $2, attempts = attempts + 1 WHERE d.id IN \
             (SELECT d.id FROM webhook_deliveries d WHERE {DUE} ORDER BY d.seq LIMIT $4 {lock}) \
             AND {DUE} RETURNING id"
        );
        const READ: &str = "SELECT d.id, d.attempts, d.account_id, m.id AS message_id, \
             m.event_type, m.body, e.id AS endpoint_id, e.url, e.secret, e.previous_secret, \
             e.previous_secret_until FROM webhook_deliveries d \
             JOIN webhook_messages m ON m.id = d.message_id \
             JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.id = $1";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let ids: Vec<String> = sqlx::query_scalar(&claim)
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            let mut claimed = Vec::with_capacity(ids.len());
            for id in &ids {
                claimed.push(
                    sqlx::query_as::<_, Outgoing>(READ)
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?,
                );
            }
            tx.commit().await?;
            claimed.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(claimed)
        })
    }

    /// Extends this sender's lease on a delivery it is about to send; false if it was lost.
    pub async fn renew_delivery_lease(
        &self,
        id: &str,
        owner: &str,
        until: Millis,
    ) -> Result<bool, DbError> {
        const SQL: &str = "UPDATE webhook_deliveries SET lease_expires_at = $1 \
                           WHERE id = $2 AND lease_owner = $3 AND state = 'sending'";
        let renewed = with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(until)
                .bind(id)
                .bind(owner)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(renewed == 1)
    }

    /// Gives back a claimed delivery that was never tried.
    pub async fn release_delivery(&self, id: &str, owner: &str) -> Result<bool, DbError> {
        const SQL: &str = "UPDATE webhook_deliveries SET state = 'pending', \
             attempts = attempts - 1, lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $1 AND lease_owner = $2 AND state = 'sending'";
        let released = with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(id)
                .bind(owner)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(released == 1)
    }

    /// Records a try of a claimed delivery and what it leaves it as, fenced by the lease,
    /// in one transaction; a delivery out of tries disables its endpoint and tells support.
    /// False if the lease was lost.
    pub async fn record_try(
        &self,
        delivery: &Outgoing,
        owner: &str,
        tried: &Try,
        outcome: TryOutcome,
        email: &EmailConfig,
    ) -> Result<bool, DbError> {
        let (set, when) = match outcome {
            TryOutcome::Delivered => ("state = 'delivered', delivered_at = $1", tried.at),
            TryOutcome::Retry(next) => ("state = 'pending', next_attempt_at = $1", next),
            TryOutcome::Exhausted => ("state = 'failed', failed_at = $1", tried.at),
        };
        let settle = format!(
            "UPDATE webhook_deliveries SET {set}, last_status = $4, last_error = $5, \
             lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $2 AND lease_owner = $3 AND state = 'sending'"
        );
        let status = tried.status.map(i64::from);
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let settled = sqlx::query(&settle)
                .bind(when)
                .bind(&delivery.id)
                .bind(owner)
                .bind(status)
                .bind(&tried.error)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if !settled {
                return Ok(false);
            }
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, attempted_at, status, error, duration_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&delivery.id)
            .bind(tried.at)
            .bind(status)
            .bind(&tried.error)
            .bind(tried.duration_ms)
            .execute(&mut *tx)
            .await?;
            if outcome == TryOutcome::Exhausted {
                let reason = format!(
                    "delivery {} of {} failed {} times",
                    delivery.id, delivery.message_id, delivery.attempts
                );
                let disabled = sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = FALSE, disabled_reason = $1, \
                     updated_at = $2 WHERE id = $3 AND enabled",
                )
                .bind(&reason)
                .bind(tried.at)
                .bind(&delivery.endpoint_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
                if disabled {
                    let failure = EndpointFailure {
                        endpoint_id: delivery.endpoint_id.clone(),
                        url: delivery.url.clone(),
                        event_type: delivery.event_type.clone(),
                        message_id: delivery.message_id.clone(),
                        attempts: delivery.attempts,
                        last_error: tried
                            .error
                            .clone()
                            .or_else(|| tried.status.map(|s| format!("HTTP {s}")))
                            .unwrap_or_default(),
                        at: tried.at,
                    };
                    let notice = crate::notices::compose(
                        &format!("webhook_delivery:{}", delivery.id),
                        &delivery.account_id,
                        Notice::WebhookEndpointDisabled(failure),
                        email,
                        tried.at,
                    );
                    tx.queue_notice(&notice, QueueWhen::Always).await?;
                    tx.audit(
                        &Actor::schedule(),
                        "webhook_endpoint.disable",
                        None,
                        json!({ "endpoint_id": delivery.endpoint_id, "reason": reason }),
                        tried.at,
                    )
                    .await?;
                }
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn delivery(&self, id: &str) -> Result<Option<DeliveryRow>, DbError> {
        let sql = format!("SELECT {DELIVERY_COLUMNS} FROM {DELIVERY_FROM} WHERE d.id = $1");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        }))
    }

    /// The tries of a delivery, in order.
    pub async fn delivery_attempts(&self, id: &str) -> Result<Vec<AttemptRow>, DbError> {
        const SQL: &str = "SELECT attempted_at, status, error, duration_ms FROM webhook_attempts \
             WHERE delivery_id = $1 ORDER BY seq";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL).bind(id).fetch_all(pool).await?
        }))
    }

    /// An endpoint's deliveries, newest first, optionally in one state.
    pub async fn deliveries(
        &self,
        endpoint_id: &str,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> Result<Page<DeliveryRow>, DbError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM {DELIVERY_FROM} WHERE ($1 IS NULL OR d.state = $1) \
             AND d.seq < $2 AND d.endpoint_id = $4 ORDER BY d.seq DESC LIMIT $3"
        );
        let rows: Vec<DeliveryRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(state.map(DeliveryState::as_str))
                .bind(page.before.unwrap_or(i64::MAX))
                .bind(i64::from(page.limit) + 1)
                .bind(endpoint_id)
                .fetch_all(pool)
                .await?
        });
        Ok(page.finish(rows))
    }

    /// Sends a delivered or failed delivery's message to its endpoint again, as a new
    /// delivery after the endpoint's others for the account; audited.
    pub async fn replay_delivery(
        &self,
        id: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<ReplayOutcome, DbError> {
        let Some(original) = self.delivery(id).await? else {
            return Ok(ReplayOutcome::NotFound);
        };
        if matches!(original.state.as_str(), "pending" | "sending") {
            return Ok(ReplayOutcome::InFlight(original));
        }
        let replay = new_id("whd");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO webhook_deliveries \
                 (id, endpoint_id, message_id, account_id, state, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
            )
            .bind(&replay)
            .bind(&original.endpoint_id)
            .bind(&original.message_id)
            .bind(&original.account_id)
            .bind(at)
            .execute(&mut *tx)
            .await?;
            tx.audit(
                actor,
                "webhook_delivery.replay",
                Some(&original.account_id),
                json!({ "delivery_id": original.id, "replay_id": replay, "message_id": original.message_id }),
                at,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, DbError>(())
        })?;
        let replayed = self
            .delivery(&replay)
            .await?
            .ok_or_else(|| DbError::Corrupt(format!("replayed delivery {replay} vanished")))?;
        Ok(ReplayOutcome::Replayed(replayed))
    }
}

//! The notice outbox. Rows are inserted by the transaction that causes them and claimed by
//! senders under a lease, so several replicas never send the same notice at once.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    audit::{Actor, AuditWrites},
    impl_for_connections,
    webhook_outbox::EventWrites,
    with_pool,
};
use crate::{
    clock::Millis,
    config::EmailConfig,
    domain::{notice::Notice, webhook},
};

/// Where a notice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum NoticeState {
    /// Waiting for its next attempt.
    Pending,
    /// Claimed by a sender under a lease.
    Sending,
    Sent,
    /// Rejected permanently or out of attempts; support may requeue it.
    Failed,
}

impl NoticeState {
    pub const ALL: [Self; 4] = [Self::Pending, Self::Sending, Self::Sent, Self::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// Where a notice comes from and goes: its id, its cause (a second notice with the same
/// cause is never queued), its account (whose address it is sent to, unless `staff`
/// names another) and its message id.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub cause: String,
    pub account_id: String,
    /// The address and name of staff to tell about the account, instead of its owner.
    pub staff: Option<(String, String)>,
    pub message_id: String,
    pub at: Millis,
}

impl Envelope {
    /// The envelope of a notice to `account_id`'s owner. `cause` names what caused it (for
    /// example `attempt:<id>:payment_failed`); a second notice with the same cause is not
    /// queued.
    pub fn to_owner(cause: String, account_id: &str, email: &EmailConfig, at: Millis) -> Self {
        let id = super::new_id("ntc");
        Self {
            message_id: format!("<{id}@{}>", email.message_id_domain()),
            id,
            cause,
            account_id: account_id.to_owned(),
            staff: None,
            at,
        }
    }
}

/// A notice to queue: its envelope and its facts, rendered when it is sent.
#[derive(Debug, Clone)]
pub struct NewNotice {
    pub envelope: Envelope,
    pub notice: Notice,
}

/// When a notice is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueWhen {
    Always,
    /// Only if the account's auto top-up is on and not paused, as the transaction sees it.
    AutoTopupActive,
}

/// What a notice says: facts to render with the recipient's name, or, for notices queued
/// before facts were stored, the rendering they were queued with.
#[derive(Debug, Clone, PartialEq)]
pub enum NoticeContent {
    Facts {
        recipient_name: String,
        notice: Notice,
    },
    Rendered {
        subject: String,
        text: String,
        html: String,
    },
}

#[derive(Debug, Clone)]
pub struct NoticeRow {
    pub seq: i64,
    pub id: String,
    pub cause: String,
    pub kind: String,
    pub account_id: String,
    pub recipient: String,
    pub content: NoticeContent,
    pub message_id: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
    pub failed_at: Option<Millis>,
}

/// A notice as stored; [`NoticeRow`] is what leaves this module.
#[derive(sqlx::FromRow)]
struct StoredNotice {
    seq: i64,
    id: String,
    cause: String,
    kind: String,
    account_id: String,
    recipient: String,
    recipient_name: Option<String>,
    facts: Option<String>,
    subject: Option<String>,
    text_body: Option<String>,
    html_body: Option<String>,
    message_id: String,
    state: String,
    attempts: i64,
    next_attempt_at: Millis,
    last_error: Option<String>,
    created_at: Millis,
    sent_at: Option<Millis>,
    failed_at: Option<Millis>,
}

impl TryFrom<StoredNotice> for NoticeRow {
    type Error = DbError;

    fn try_from(row: StoredNotice) -> Result<Self, DbError> {
        let corrupt = |why: String| DbError::Corrupt(format!("notice {}: {why}", row.id));
        let content = match (row.facts, row.recipient_name) {
            (Some(facts), Some(recipient_name)) => NoticeContent::Facts {
                recipient_name,
                notice: serde_json::from_str(&facts)
                    .map_err(|e| corrupt(format!("unreadable facts: {e}")))?,
            },
            _ => match (row.subject, row.text_body, row.html_body) {
                (Some(subject), Some(text), Some(html)) => NoticeContent::Rendered {
                    subject,
                    text,
                    html,
                },
                _ => return Err(corrupt("neither facts nor a rendering".into())),
            },
        };
        Ok(Self {
            seq: row.seq,
            id: row.id,
            cause: row.cause,
            kind: row.kind,
            account_id: row.account_id,
            recipient: row.recipient,
            content,
            message_id: row.message_id,
            state: row.state,
            attempts: row.attempts,
            next_attempt_at: row.next_attempt_at,
            last_error: row.last_error,
            created_at: row.created_at,
            sent_at: row.sent_at,
            failed_at: row.failed_at,
        })
    }
}

fn notice_rows(rows: Vec<StoredNotice>) -> Result<Vec<NoticeRow>, DbError> {
    rows.into_iter().map(NoticeRow::try_from).collect()
}

impl Paged for StoredNotice {
    fn page_key(&self) -> i64 {
        self.seq
    }
}

const COLUMNS: &str = "seq, id, cause, kind, account_id, recipient, recipient_name, facts, \
                       subject, text_body, html_body, message_id, state, attempts, \
                       next_attempt_at, last_error, created_at, sent_at, failed_at";

/// Queuing a notice inside the transaction of the change that causes it.
#[allow(async_fn_in_trait)]
pub trait NoticeWrites {
    /// Queues the notice to the account's address, unless one with the same cause exists
    /// or `when` does not hold; true if queued.
    async fn queue_notice(&mut self, notice: &NewNotice, when: QueueWhen) -> Result<bool, DbError>;
}

impl_for_connections!(NoticeWrites {
    async fn queue_notice(&mut self, notice: &NewNotice, when: QueueWhen) -> Result<bool, DbError> {
        let condition = match when {
            QueueWhen::Always => "",
            QueueWhen::AutoTopupActive => {
                "AND auto_topup_enabled AND auto_topup_paused_reason IS NULL"
            }
        };
        let facts = serde_json::to_string(&notice.notice)
            .map_err(|e| DbError::Corrupt(format!("notice facts cannot be written: {e}")))?;
        let envelope = &notice.envelope;
        let inserted = sqlx::query(&format!(
            "INSERT INTO notices (id, cause, kind, account_id, recipient, recipient_name, facts, \
             message_id, state, next_attempt_at, created_at) \
             SELECT $1, $2, $3, id, COALESCE($8, email), COALESCE($9, name), $4, $5, 'pending', $6, $6 \
             FROM accounts WHERE id = $7 {condition} ON CONFLICT (cause) DO NOTHING"
        ))
        .bind(&envelope.id)
        .bind(&envelope.cause)
        .bind(notice.notice.kind())
        .bind(facts)
        .bind(&envelope.message_id)
        .bind(envelope.at)
        .bind(&envelope.account_id)
        .bind(envelope.staff.as_ref().map(|(address, _)| address))
        .bind(envelope.staff.as_ref().map(|(_, name)| name))
        .execute(&mut *self)
        .await?;
        let queued = inserted.rows_affected() == 1;
        if queued {
            // What the customer is told, the host hears, from the same transaction.
            for (event, data) in webhook::events_of(&notice.notice) {
                self.emit_event(event, &envelope.account_id, data, envelope.at)
                    .await?;
            }
        }
        Ok(queued)
    }
});

/// Requeuing a failed notice.
#[derive(Debug)]
pub enum RequeueOutcome {
    Requeued(NoticeRow),
    /// Only failed notices can be requeued; this one is in another state.
    NotFailed(NoticeRow),
    NotFound,
}

/// Due: pending and past its next attempt, or claimed under a lease that has expired
/// (its sender died). Repeated in the UPDATE so PostgreSQL re-checks it after a lock wait.
const DUE: &str = "((state = 'pending' AND next_attempt_at <= $3) \
                   OR (state = 'sending' AND lease_expires_at <= $3))";

impl Db {
    /// Claims up to `limit` due notices for `owner` until `lease_until`.
    pub async fn claim_notices(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> Result<Vec<NoticeRow>, DbError> {
        // SKIP LOCKED lets replicas take different rows instead of queueing on the same
        // ones; correctness comes from the re-checked condition.
        let lock = match self {
            Self::Sqlite(_) => "",
            Self::Postgres(_) => "FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE notices SET state = 'sending', lease_owner = $1, lease_expires_at = $2, \
             attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM notices WHERE {DUE} ORDER BY next_attempt_at LIMIT $4 {lock}) \
             AND {DUE} RETURNING {COLUMNS}"
        );
        let rows: Vec<StoredNotice> = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let rows = sqlx::query_as(&sql)
                .bind(owner)
                .bind(lease_until)
                .bind(now)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            tx.commit().await?;
            rows
        });
        let mut rows = notice_rows(rows)?;
        rows.sort_by_key(|n| (n.next_attempt_at, n.seq));
        Ok(rows)
    }

    /// Extends this sender's lease on a notice it is about to send; false if the lease was
    /// lost (it expired and another sender took the notice), in which case it must not send.
    pub async fn renew_notice_lease(
        &self,
        id: &str,
        owner: &str,
        until: Millis,
    ) -> Result<bool, DbError> {
        const SQL: &str = "UPDATE notices SET lease_expires_at = $1 \
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

    /// Records delivery; false if the lease was lost to another sender meanwhile.
    pub async fn mark_notice_sent(
        &self,
        id: &str,
        owner: &str,
        at: Millis,
    ) -> Result<bool, DbError> {
        self.settle_notice("state = 'sent', sent_at = $1", id, owner, at, None)
            .await
    }

    /// Puts the notice back to wait for another attempt at `next_attempt_at`.
    pub async fn retry_notice(
        &self,
        id: &str,
        owner: &str,
        next_attempt_at: Millis,
        error: &str,
    ) -> Result<bool, DbError> {
        self.settle_notice(
            "state = 'pending', next_attempt_at = $1",
            id,
            owner,
            next_attempt_at,
            Some(error),
        )
        .await
    }

    /// Gives up on the notice: it shows in support's failed list.
    pub async fn fail_notice(
        &self,
        id: &str,
        owner: &str,
        at: Millis,
        error: &str,
    ) -> Result<bool, DbError> {
        self.settle_notice(
            "state = 'failed', failed_at = $1",
            id,
            owner,
            at,
            Some(error),
        )
        .await
    }

    /// Returns a claimed notice that was never attempted, as if it had not been claimed.
    pub async fn release_notice(&self, id: &str, owner: &str, at: Millis) -> Result<bool, DbError> {
        self.settle_notice(
            "state = 'pending', attempts = attempts - 1, next_attempt_at = $1",
            id,
            owner,
            at,
            None,
        )
        .await
    }

    /// Ends a claim, fenced by the lease: `set` uses `$1`, a time; `error`, if any, becomes
    /// the last error (an earlier one is kept as history otherwise).
    async fn settle_notice(
        &self,
        set: &str,
        id: &str,
        owner: &str,
        at: Millis,
        error: Option<&str>,
    ) -> Result<bool, DbError> {
        let sql = format!(
            "UPDATE notices SET {set}, last_error = COALESCE($4, last_error), \
             lease_owner = NULL, lease_expires_at = NULL \
             WHERE id = $2 AND lease_owner = $3 AND state = 'sending'"
        );
        let done = with_pool!(self, |pool| {
            sqlx::query(&sql)
                .bind(at)
                .bind(id)
                .bind(owner)
                .bind(error)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    pub async fn notice(&self, id: &str) -> Result<Option<NoticeRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM notices WHERE id = $1");
        let row: Option<StoredNotice> = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        row.map(NoticeRow::try_from).transpose()
    }

    /// Notices, newest first, optionally in one state.
    pub async fn notices(
        &self,
        state: Option<NoticeState>,
        page: PageRequest,
    ) -> Result<Page<NoticeRow>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notices WHERE ($1 IS NULL OR state = $1) AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        );
        self.page::<StoredNotice>(&sql, state.map(NoticeState::as_str), page)
            .await?
            .try_map(NoticeRow::try_from)
    }

    /// The account's latest `limit` notices, newest first.
    pub async fn notices_of(
        &self,
        account_id: &str,
        limit: u32,
    ) -> Result<Vec<NoticeRow>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notices WHERE account_id = $1 ORDER BY seq DESC LIMIT $2"
        );
        let rows: Vec<StoredNotice> = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(account_id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(NoticeRow::try_from).collect()
    }

    /// Sends a failed notice again from a fresh attempt count; audited.
    pub async fn requeue_notice(
        &self,
        id: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<RequeueOutcome, DbError> {
        let requeue = format!(
            "UPDATE notices SET state = 'pending', attempts = 0, next_attempt_at = $1, failed_at = NULL \
             WHERE id = $2 AND state = 'failed' RETURNING {COLUMNS}"
        );
        let current = format!("SELECT {COLUMNS} FROM notices WHERE id = $1");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let requeued: Option<StoredNotice> = sqlx::query_as(&requeue)
                .bind(at)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(notice) = requeued else {
                let current: Option<StoredNotice> = sqlx::query_as(&current)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Ok(match current {
                    Some(row) => RequeueOutcome::NotFailed(row.try_into()?),
                    None => RequeueOutcome::NotFound,
                });
            };
            let notice = NoticeRow::try_from(notice)?;
            let detail = json!({ "notice_id": notice.id, "kind": notice.kind, "last_error": notice.last_error });
            tx.audit(
                actor,
                "notice.requeue",
                Some(&notice.account_id),
                detail,
                at,
            )
            .await?;
            tx.commit().await?;
            Ok(RequeueOutcome::Requeued(notice))
        })
    }
}

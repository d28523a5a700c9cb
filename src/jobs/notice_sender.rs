//! Delivers queued notices: claims due ones under a lease, sends each, and records the
//! outcome. Transient failures retry with backoff; permanent ones are marked failed.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    config::EmailConfig,
    db::{Db, DbError, notices::NoticeRow},
    domain::backoff::retry_delay,
    notices::{
        mailer::{Mailer, SendError},
        templates::Letterhead,
    },
};

pub struct NoticeSender {
    db: Db,
    mailer: Arc<Mailer>,
    clock: Arc<dyn Clock>,
    config: Arc<EmailConfig>,
    head: Letterhead,
    /// Names this sender's leases; unique per process.
    owner: String,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendReport {
    pub claimed: usize,
    pub sent: usize,
    pub retried: usize,
    pub failed: usize,
    /// Claimed but given back untried because the sender is stopping.
    pub released: usize,
}

impl NoticeSender {
    pub fn new(
        db: Db,
        mailer: Arc<Mailer>,
        clock: Arc<dyn Clock>,
        config: Arc<EmailConfig>,
        head: Letterhead,
    ) -> Self {
        Self {
            db,
            mailer,
            clock,
            config,
            head,
            owner: format!(
                "notice-sender:{}:{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ),
        }
    }

    /// One round: claim what is due and deliver it. Stops between notices once
    /// `cancel` fires, giving the untried ones back.
    pub async fn run_once(&self, cancel: &CancellationToken) -> Result<SendReport, DbError> {
        let now = self.clock.now_ms();
        let batch = self
            .db
            .claim_notices(
                &self.owner,
                now,
                now.saturating_add(self.lease_ms()),
                self.config.batch_size,
            )
            .await?;
        let mut report = SendReport {
            claimed: batch.len(),
            ..SendReport::default()
        };
        for notice in &batch {
            if cancel.is_cancelled() {
                if self.db.release_notice(&notice.id, &self.owner, now).await? {
                    report.released += 1;
                }
                continue;
            }
            self.deliver(notice, &mut report).await?;
        }
        Ok(report)
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.config.lease_secs * 1000).unwrap_or(i64::MAX)
    }

    async fn deliver(&self, notice: &NoticeRow, report: &mut SendReport) -> Result<(), DbError> {
        // A whole batch is claimed at once but sent one by one: each send starts with a
        // fresh lease, so a slow server never lets another sender take a notice mid-send.
        let until = self.clock.now_ms().saturating_add(self.lease_ms());
        if !self
            .db
            .renew_notice_lease(&notice.id, &self.owner, until)
            .await?
        {
            tracing::warn!(notice_id = %notice.id, "lease lost before sending; another sender has it");
            return Ok(());
        }
        let outcome = self.mailer.send(notice, &self.head).await;
        let now = self.clock.now_ms();
        let attempts = u32::try_from(notice.attempts).unwrap_or(u32::MAX);
        match outcome {
            Ok(()) => {
                self.db
                    .mark_notice_sent(&notice.id, &self.owner, now)
                    .await?;
                report.sent += 1;
                crate::metrics::notice_delivery(crate::metrics::Delivery::Sent);
                tracing::info!(notice_id = %notice.id, kind = %notice.kind, attempts, "notice sent");
            }
            Err(SendError::Permanent(error)) => {
                self.db
                    .fail_notice(&notice.id, &self.owner, now, &error)
                    .await?;
                report.failed += 1;
                crate::metrics::notice_delivery(crate::metrics::Delivery::Failed);
                tracing::error!(notice_id = %notice.id, kind = %notice.kind, %error, "notice rejected permanently");
            }
            Err(SendError::Transient(error)) if attempts >= self.config.max_attempts => {
                let error = format!("gave up after {attempts} attempts: {error}");
                self.db
                    .fail_notice(&notice.id, &self.owner, now, &error)
                    .await?;
                report.failed += 1;
                crate::metrics::notice_delivery(crate::metrics::Delivery::Failed);
                tracing::error!(notice_id = %notice.id, kind = %notice.kind, %error, "notice failed");
            }
            Err(SendError::Transient(error)) => {
                let delay = retry_delay(
                    attempts,
                    Duration::from_secs(self.config.retry_base_secs),
                    Duration::from_secs(self.config.retry_max_secs),
                    rand::random::<f64>(),
                );
                let delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
                self.db
                    .retry_notice(
                        &notice.id,
                        &self.owner,
                        now.saturating_add(delay_ms),
                        &error,
                    )
                    .await?;
                report.retried += 1;
                crate::metrics::notice_delivery(crate::metrics::Delivery::Retried);
                tracing::warn!(notice_id = %notice.id, kind = %notice.kind, attempts, retry_in_ms = delay.as_millis() as u64, %error, "notice not sent; will retry");
            }
        }
        Ok(())
    }

    /// Runs rounds until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let full = self.config.batch_size as usize;
        super::repeat("notice sender", poll, cancel.clone(), || async {
            Ok(self.run_once(&cancel).await?.claimed == full)
        })
        .await;
    }
}

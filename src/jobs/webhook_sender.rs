//! Delivers webhooks to the host: claims due deliveries under a lease, posts each signed
//! as Standard Webhooks, and records the try. A 2xx answer delivers it; anything else is
//! tried again later (see [`webhook::retry_delay`]), until the last try fails it and
//! disables its endpoint. Deliveries of different endpoints or accounts go out side by
//! side; those of one endpoint and account one after another, in order.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    config::{EmailConfig, WebhooksConfig},
    db::{
        Db, DbError,
        webhook_outbox::{Outgoing, Try, TryOutcome},
    },
    domain::webhook,
    metrics::Delivery,
};

#[derive(Clone)]
pub struct WebhookSender {
    db: Db,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    config: WebhooksConfig,
    email: Arc<EmailConfig>,
    /// Names this sender's leases; unique per process.
    owner: Arc<str>,
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeliveryReport {
    pub claimed: usize,
    pub delivered: usize,
    pub retried: usize,
    pub failed: usize,
    /// Claimed but given back untried because the sender is stopping.
    pub released: usize,
}

impl WebhookSender {
    pub fn new(
        db: Db,
        clock: Arc<dyn Clock>,
        config: WebhooksConfig,
        email: Arc<EmailConfig>,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs))
            // A redirect is not an acceptance: the endpoint's URL is what was configured.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("topupd/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        Self {
            db,
            http,
            clock,
            config,
            email,
            owner: format!(
                "webhook-sender:{}:{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            )
            .into(),
        }
    }

    /// A claim outlives the slowest answer an endpoint may give.
    fn lease_ms(&self) -> i64 {
        i64::try_from((self.config.timeout_secs + 15) * 1000).unwrap_or(i64::MAX)
    }

    /// One round: claim what is due and deliver it. Once `cancel` fires, claimed
    /// deliveries not yet started are given back.
    pub async fn run_once(&self, cancel: &CancellationToken) -> Result<DeliveryReport, DbError> {
        let now = self.clock.now_ms();
        let batch = self
            .db
            .claim_deliveries(
                &self.owner,
                now,
                now.saturating_add(self.lease_ms()),
                self.config.batch_size,
            )
            .await?;
        let mut report = DeliveryReport {
            claimed: batch.len(),
            ..DeliveryReport::default()
        };
        let mut sends = JoinSet::new();
        for delivery in batch {
            if cancel.is_cancelled() {
                if self.db.release_delivery(&delivery.id, &self.owner).await? {
                    report.released += 1;
                }
                continue;
            }
            let sender = self.clone();
            sends.spawn(async move { sender.deliver(&delivery).await });
        }
        while let Some(sent) = sends.join_next().await {
            match sent.map_err(|e| DbError::Corrupt(format!("a delivery task failed: {e}")))?? {
                Some(TryOutcome::Delivered) => report.delivered += 1,
                Some(TryOutcome::Retry(_)) => report.retried += 1,
                Some(TryOutcome::Exhausted) => report.failed += 1,
                None => {}
            }
        }
        Ok(report)
    }

    /// Sends one delivery and records the try; `None` if its lease was lost first.
    async fn deliver(&self, delivery: &Outgoing) -> Result<Option<TryOutcome>, DbError> {
        let until = self.clock.now_ms().saturating_add(self.lease_ms());
        if !self
            .db
            .renew_delivery_lease(&delivery.id, &self.owner, until)
            .await?
        {
            tracing::warn!(delivery_id = %delivery.id, "lease lost before sending; another sender has it");
            return Ok(None);
        }
        let started = Instant::now();
        let answer = self.post(delivery).await;
        let at = self.clock.now_ms();
        let (status, error) = match answer {
            Ok(status) if status.is_success() => (Some(status.as_u16()), None),
            Ok(status) => (Some(status.as_u16()), Some(format!("answered {status}"))),
            Err(e) => (None, Some(describe(&e))),
        };
        let attempts = u32::try_from(delivery.attempts).unwrap_or(u32::MAX);
        let outcome = match (&error, webhook::retry_delay(attempts)) {
            (None, _) => TryOutcome::Delivered,
            (Some(_), Some(delay)) => TryOutcome::Retry(
                at.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
            ),
            (Some(_), None) => TryOutcome::Exhausted,
        };
        let tried = Try {
            at,
            status,
            error: error.clone(),
            duration_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        };
        if !self
            .db
            .record_try(delivery, &self.owner, &tried, outcome, &self.email)
            .await?
        {
            tracing::warn!(delivery_id = %delivery.id, "lease lost while sending; the try is not recorded");
            return Ok(None);
        }
        let (kind, message) = match outcome {
            TryOutcome::Delivered => (Delivery::Sent, "webhook delivered"),
            TryOutcome::Retry(_) => (Delivery::Retried, "webhook not accepted; will retry"),
            TryOutcome::Exhausted => (
                Delivery::Failed,
                "webhook failed every try; endpoint disabled",
            ),
        };
        crate::metrics::webhook_delivery(kind);
        let error = error.unwrap_or_default();
        match kind {
            Delivery::Sent => {
                tracing::info!(delivery_id = %delivery.id, message_id = %delivery.message_id, event = %delivery.event_type, attempts, "{message}");
            }
            Delivery::Retried => {
                tracing::warn!(delivery_id = %delivery.id, message_id = %delivery.message_id, endpoint_id = %delivery.endpoint_id, attempts, %error, "{message}");
            }
            Delivery::Failed => {
                tracing::error!(delivery_id = %delivery.id, message_id = %delivery.message_id, endpoint_id = %delivery.endpoint_id, attempts, %error, "{message}");
            }
        }
        Ok(Some(outcome))
    }

    async fn post(&self, delivery: &Outgoing) -> Result<reqwest::StatusCode, reqwest::Error> {
        // The receiver checks the timestamp against its own clock, so it is the wall
        // clock's, whatever clock the service runs on.
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let secrets = delivery.secrets(self.clock.now_ms());
        let signature =
            webhook::signature(&secrets, &delivery.message_id, timestamp, &delivery.body);
        let response = self
            .http
            .post(&delivery.url)
            .header("content-type", "application/json")
            .header("webhook-id", &delivery.message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.body.clone())
            .send()
            .await?;
        Ok(response.status())
    }

    /// Runs rounds until `cancel` fires. A round that delivered something goes on at
    /// once: the next delivery of that endpoint and account may be waiting behind it.
    pub async fn run(self, cancel: CancellationToken) {
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        let full = self.config.batch_size as usize;
        super::repeat("webhook sender", poll, cancel.clone(), || async {
            let report = self.run_once(&cancel).await?;
            Ok(report.claimed == full || report.delivered > 0)
        })
        .await;
    }
}

/// Why there was no answer, without the URL (which may hold a token of the host's).
fn describe(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(error);
    let mut cause = String::new();
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {cause}")
    }
}

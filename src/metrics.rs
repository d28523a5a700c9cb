//! Prometheus metrics: one process-wide recorder, the families topupd publishes (each
//! described, so every family has its HELP and TYPE lines), and the HTTP middleware.
//! Rendered at `/metrics` on the ops listener.
//!
//! Counters whose label values are known in advance are registered at 0 when the recorder
//! is installed, so `increase()` and `rate()` see a series before its first event.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    response::Response,
};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{
    db::{StateSample, group_commit::MAX_BATCH},
    domain::{
        attempt::{AttemptState, AttemptTrigger},
        auto_topup::PauseReason,
        notice::{NoticeKind, ResumedBy},
        reconciliation::Mismatch,
    },
    http::auth::KeyRefused,
    payments::client::{CallOutcome, Endpoint},
};

/// Declares an enum of the values a metric label takes: `as_str` gives the value and
/// `ALL` every value, to register their series at 0.
macro_rules! label_values {
    ($(#[$meta:meta])* $vis:vis enum $name:ident {
        $($(#[$vmeta:meta])* $variant:ident => $value:literal),+ $(,)?
    }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        $vis enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $value),+
                }
            }
        }
    };
}
pub(crate) use label_values;

label_values! {
    /// How a usage debit ended.
    pub enum UsageOutcome {
        Debited => "debited",
        Replayed => "replayed",
        /// The request id was used before for other usage.
        Conflict => "conflict",
        /// Answered 402.
        Insufficient => "insufficient",
        AccountNotFound => "account_not_found",
    }
}

label_values! {
    /// How one delivery attempt of a notice or a webhook ended.
    pub enum Delivery {
        Sent => "sent",
        Retried => "retried",
        Failed => "failed",
    }
}

label_values! {
    /// How a scan ended.
    pub enum ScanEnd {
        /// It went through every due account.
        Finished => "finished",
        /// Shutdown stopped it before the last due account.
        CutShort => "cut_short",
        /// It reached the time of the next tick: the next scan takes the accounts left.
        Overran => "overran",
        /// The database failed it.
        Failed => "failed",
    }
}

/// The settled states an attempt is counted at, for `topupd_topup_attempts_total`.
const COUNTED_STATES: [AttemptState; 5] = [
    AttemptState::RequiresAction,
    AttemptState::Processing,
    AttemptState::Succeeded,
    AttemptState::Failed,
    AttemptState::Canceled,
];

/// Age buckets of open attempts: the label and the lower bound, in hours.
pub const OPEN_ATTEMPT_AGES: [(&str, i64); 4] =
    [("lt_1h", 0), ("1h_6h", 1), ("6h_24h", 6), ("ge_24h", 24)];

/// Latency buckets, in seconds, for every `*_seconds` histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

const COUNTERS: &[(&str, &str)] = &[
    ("topupd_scans_started_total", "Auto top-up scans started."),
    (
        "topupd_scans_finished_total",
        "Auto top-up scans that went through every due account.",
    ),
    (
        "topupd_scans_cut_short_total",
        "Auto top-up scans stopped by shutdown before the last due account.",
    ),
    (
        "topupd_scans_overran_total",
        "Auto top-up scans that reached the next tick before the last due account.",
    ),
    (
        "topupd_scans_failed_total",
        "Auto top-up scans stopped by a database error.",
    ),
    (
        "topupd_scan_claims_total",
        "Attempts claimed and charged by scans.",
    ),
    (
        "topupd_topup_attempts_total",
        "Top-up attempts reaching a state, by trigger and outcome (the state).",
    ),
    (
        "topupd_auto_topup_pauses_total",
        "Auto top-up pauses, by reason.",
    ),
    (
        "topupd_auto_topup_resumes_total",
        "Auto top-up pauses ended, by who ended them.",
    ),
    ("topupd_notices_queued_total", "Notices queued, by kind."),
    (
        "topupd_notice_deliveries_total",
        "Notice delivery attempts, by outcome (sent, retried, failed).",
    ),
    (
        "topupd_webhook_deliveries_total",
        "Tries of webhook deliveries to the host, by outcome (sent, retried, failed: out of tries, endpoint disabled).",
    ),
    (
        "topupd_webhook_events_dead_total",
        "Provider events set aside as dead after failing every try.",
    ),
    (
        "topupd_usage_requests_total",
        "Usage debits, by outcome (402s are insufficient).",
    ),
    (
        "topupd_auth_failures_total",
        "Requests refused for their API key, by reason.",
    ),
    (
        "topupd_http_requests_total",
        "HTTP requests, by route template, method and status.",
    ),
    (
        "topupd_http_requests_shed_total",
        "HTTP requests refused with 503 because http.max_requests_in_flight were being answered.",
    ),
    (
        "topupd_provider_requests_total",
        "Requests to the payment provider (each try), by endpoint and outcome.",
    ),
    (
        "topupd_provider_rate_limited_total",
        "Requests the payment provider answered with 429, by endpoint.",
    ),
];

const GAUGES: &[(&str, &str)] = &[
    (
        "topupd_build_info",
        "Always 1; the version of the running build is a label.",
    ),
    ("topupd_scan_due_accounts", "Accounts due in the last scan."),
    (
        "topupd_open_attempts",
        "Top-up attempts not settled yet, by age since they were claimed.",
    ),
    (
        "topupd_flagged_attempts",
        "Open top-up attempts flagged for support.",
    ),
    (
        "topupd_paused_accounts",
        "Accounts whose auto top-up is paused, by reason.",
    ),
    ("topupd_notices", "Notices in the outbox, by state."),
    (
        "topupd_outbox_oldest_age_seconds",
        "Age of the oldest notice waiting to be sent.",
    ),
    (
        "topupd_webhook_events",
        "Stored provider events, by state (pending, processed, dead).",
    ),
    (
        "topupd_db_pool_connections",
        "Database pool connections, by state (open, idle).",
    ),
    (
        "topupd_provider_mismatches",
        "What the last check of the provider against the ledger found, by kind.",
    ),
];

const HISTOGRAMS: &[(&str, &str)] = &[
    (
        "topupd_scan_duration_seconds",
        "How long auto top-up scans took, however they ended.",
    ),
    (
        "topupd_http_request_duration_seconds",
        "HTTP request latency, by route template and method.",
    ),
    (
        "topupd_provider_request_duration_seconds",
        "Latency of requests to the payment provider (each try), by endpoint and outcome.",
    ),
    (
        BATCH_WRITES,
        "Writes that shared one commit, per batch written, by queue (debits, steps, settlements).",
    ),
];

const BATCH_WRITES: &str = "topupd_group_commit_batch_writes";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder, installed on first use with every family described and the known
/// series registered.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            // Batch sizes by powers of two, up to the group commit's largest.
            let batch_buckets: Vec<f64> = (0..=MAX_BATCH.ilog2())
                .map(|power| f64::from(1u32 << power))
                .collect();
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(Matcher::Full(BATCH_WRITES.to_owned()), &batch_buckets)
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("topupd installs the only metrics recorder");
            describe();
            register_known_series();
            handle
        })
        .clone()
}

fn describe() {
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
    }
    for &(name, help) in GAUGES {
        describe_gauge!(name, help);
    }
    for &(name, help) in HISTOGRAMS {
        describe_histogram!(name, help);
    }
}

fn register_known_series() {
    gauge!("topupd_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for trigger in AttemptTrigger::ALL {
        for state in COUNTED_STATES {
            counter!("topupd_topup_attempts_total", "trigger" => trigger.as_str(), "outcome" => state.as_str())
                .increment(0);
        }
    }
    for reason in PauseReason::ALL {
        counter!("topupd_auto_topup_pauses_total", "reason" => reason.as_str()).increment(0);
    }
    for by in ResumedBy::ALL {
        counter!("topupd_auto_topup_resumes_total", "by" => by.as_str()).increment(0);
    }
    for outcome in Delivery::ALL {
        counter!("topupd_notice_deliveries_total", "outcome" => outcome.as_str()).increment(0);
        counter!("topupd_webhook_deliveries_total", "outcome" => outcome.as_str()).increment(0);
    }
    for outcome in UsageOutcome::ALL {
        counter!("topupd_usage_requests_total", "outcome" => outcome.as_str()).increment(0);
    }
    for reason in KeyRefused::ALL {
        counter!("topupd_auth_failures_total", "reason" => reason.as_str()).increment(0);
    }
    counter!("topupd_webhook_events_dead_total").increment(0);
    counter!("topupd_http_requests_shed_total").increment(0);
    provider_mismatches(&[]);
    for kind in NoticeKind::ALL {
        counter!("topupd_notices_queued_total", "kind" => kind.as_str()).increment(0);
    }
    for endpoint in Endpoint::ALL {
        for outcome in CallOutcome::ALL {
            counter!("topupd_provider_requests_total", "endpoint" => endpoint.as_str(), "outcome" => outcome.as_str())
                .increment(0);
        }
        counter!("topupd_provider_rate_limited_total", "endpoint" => endpoint.as_str())
            .increment(0);
    }
}

/// A request being answered, to be counted and timed by route template and status once
/// its answer is known.
pub struct HttpRequest {
    route: String,
    method: String,
    started: Instant,
}

impl HttpRequest {
    pub fn start(request: &Request) -> Self {
        Self {
            route: request
                .extensions()
                .get::<MatchedPath>()
                .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned()),
            method: request.method().to_string(),
            started: Instant::now(),
        }
    }

    pub fn answered(self, response: &Response) {
        let Self {
            route,
            method,
            started,
        } = self;
        let status = response.status().as_u16().to_string();
        histogram!("topupd_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
            .record(started.elapsed().as_secs_f64());
        counter!("topupd_http_requests_total", "route" => route, "method" => method, "status" => status).increment(1);
    }
}

/// The scan schedule runs in this process: its scans are counted from 0, so a replica
/// that never scans shows it.
pub fn scans_scheduled() {
    counter!("topupd_scans_started_total").increment(0);
    for end in ScanEnd::ALL {
        counter!(scan_end_counter(*end)).increment(0);
    }
    counter!("topupd_scan_claims_total").increment(0);
}

pub fn scan_started() {
    counter!("topupd_scans_started_total").increment(1);
}

/// The last check of the provider against the ledger: how many of each kind it found.
pub fn provider_mismatches(found: &[Mismatch]) {
    for kind in Mismatch::KINDS {
        let count = found.iter().filter(|m| m.kind() == kind).count();
        gauge!("topupd_provider_mismatches", "kind" => kind).set(count as f64);
    }
}

pub fn scan_ended(end: ScanEnd, due: usize, claimed: usize, seconds: f64) {
    counter!(scan_end_counter(end)).increment(1);
    histogram!("topupd_scan_duration_seconds").record(seconds);
    gauge!("topupd_scan_due_accounts").set(due as f64);
    counter!("topupd_scan_claims_total").increment(claimed as u64);
}

fn scan_end_counter(end: ScanEnd) -> &'static str {
    match end {
        ScanEnd::Finished => "topupd_scans_finished_total",
        ScanEnd::CutShort => "topupd_scans_cut_short_total",
        ScanEnd::Overran => "topupd_scans_overran_total",
        ScanEnd::Failed => "topupd_scans_failed_total",
    }
}

/// An attempt reached a state (`succeeded`, `failed`, `requires_action`, ...).
pub fn attempt_settled(trigger: AttemptTrigger, state: AttemptState) {
    counter!("topupd_topup_attempts_total", "trigger" => trigger.as_str(), "outcome" => state.as_str()).increment(1);
}

pub fn paused(reason: PauseReason) {
    counter!("topupd_auto_topup_pauses_total", "reason" => reason.as_str()).increment(1);
}

pub fn resumed(by: ResumedBy) {
    counter!("topupd_auto_topup_resumes_total", "by" => by.as_str()).increment(1);
}

pub fn notices_queued(kind: &'static str, count: usize) {
    counter!("topupd_notices_queued_total", "kind" => kind).increment(count as u64);
}

/// A webhook event failed its last try and was set aside as dead.
pub fn webhook_event_dead() {
    counter!("topupd_webhook_events_dead_total").increment(1);
}

pub fn notice_delivery(outcome: Delivery) {
    counter!("topupd_notice_deliveries_total", "outcome" => outcome.as_str()).increment(1);
}

pub fn webhook_delivery(outcome: Delivery) {
    counter!("topupd_webhook_deliveries_total", "outcome" => outcome.as_str()).increment(1);
}

/// A request was refused for the requests already in flight.
pub fn request_shed() {
    counter!("topupd_http_requests_shed_total").increment(1);
}

/// A group commit's writer took `size` writes of `queue` into one commit.
pub fn batch_written(queue: &'static str, size: usize) {
    histogram!(BATCH_WRITES, "queue" => queue).record(size as f64);
}

pub fn usage(outcome: UsageOutcome) {
    counter!("topupd_usage_requests_total", "outcome" => outcome.as_str()).increment(1);
}

pub fn auth_failure(reason: KeyRefused) {
    counter!("topupd_auth_failures_total", "reason" => reason.as_str()).increment(1);
}

/// One request to the payment provider, as it ended, and how long it took.
pub fn provider_call(endpoint: Endpoint, outcome: CallOutcome, seconds: f64) {
    let (endpoint, outcome_label) = (endpoint.as_str(), outcome.as_str());
    counter!("topupd_provider_requests_total", "endpoint" => endpoint, "outcome" => outcome_label)
        .increment(1);
    histogram!("topupd_provider_request_duration_seconds", "endpoint" => endpoint, "outcome" => outcome_label)
        .record(seconds);
    if outcome == CallOutcome::RateLimited {
        counter!("topupd_provider_rate_limited_total", "endpoint" => endpoint).increment(1);
    }
}

/// State sampled from the database: what is open, flagged, paused and waiting. Every
/// known label value is set, at 0 when nothing has it.
pub fn sampled(sample: &StateSample) {
    for ((age, _), count) in OPEN_ATTEMPT_AGES.iter().zip(sample.open_attempts_by_age) {
        gauge!("topupd_open_attempts", "age" => *age).set(count as f64);
    }
    gauge!("topupd_flagged_attempts").set(sample.flagged_attempts as f64);
    for (reason, count) in &sample.paused_accounts {
        gauge!("topupd_paused_accounts", "reason" => reason.as_str()).set(*count as f64);
    }
    for (state, count) in &sample.notices {
        gauge!("topupd_notices", "state" => state.as_str()).set(*count as f64);
    }
    gauge!("topupd_outbox_oldest_age_seconds").set(sample.oldest_notice_age_secs);
    for (state, count) in &sample.webhook_events {
        gauge!("topupd_webhook_events", "state" => state.as_str()).set(*count as f64);
    }
}

pub fn pool(size: u32, idle: usize) {
    gauge!("topupd_db_pool_connections", "state" => "open").set(f64::from(size));
    gauge!("topupd_db_pool_connections", "state" => "idle").set(idle as f64);
}

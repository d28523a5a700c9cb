//! Prometheus metrics: one process-wide recorder, the names topupd publishes, and the
//! HTTP middleware. Rendered at `/metrics` on the ops listener.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets, in seconds, for every `*_seconds` histogram.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder, installed on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), BUCKETS)
                .expect("the bucket list is not empty")
                .install_recorder()
                .expect("topupd installs the only metrics recorder")
        })
        .clone()
}

/// Counts and times every request by route template and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!("topupd_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("topupd_http_requests_total", "route" => route, "method" => method, "status" => status).increment(1);
    response
}

pub fn scan_finished(due: usize, claimed: usize, seconds: f64) {
    counter!("topupd_scans_total").increment(1);
    histogram!("topupd_scan_duration_seconds").record(seconds);
    gauge!("topupd_scan_due_accounts").set(due as f64);
    counter!("topupd_scan_claims_total").increment(claimed as u64);
}

/// An attempt reached a state (`succeeded`, `failed`, `requires_action`, ...).
pub fn attempt_settled(trigger: &str, state: &str) {
    counter!("topupd_topup_attempts_total", "trigger" => trigger.to_owned(), "outcome" => state.to_owned()).increment(1);
}

pub fn paused(reason: &str) {
    counter!("topupd_auto_topup_pauses_total", "reason" => reason.to_owned()).increment(1);
}

pub fn resumed(by: &str) {
    counter!("topupd_auto_topup_resumes_total", "by" => by.to_owned()).increment(1);
}

pub fn notices_queued(kind: &str, count: usize) {
    counter!("topupd_notices_queued_total", "kind" => kind.to_owned()).increment(count as u64);
}

/// A delivery attempt ended: `sent`, `retried` or `failed`.
/// A webhook event failed its last try and was set aside as dead.
pub fn webhook_event_dead() {
    counter!("topupd_webhook_events_dead_total").increment(1);
}

pub fn notice_delivery(outcome: &'static str) {
    counter!("topupd_notice_deliveries_total", "outcome" => outcome).increment(1);
}

/// A usage debit ended: `debited`, `replayed`, `insufficient` (a 402) or `conflict`.
pub fn usage(outcome: &'static str) {
    counter!("topupd_usage_requests_total", "outcome" => outcome).increment(1);
}

pub fn auth_failure(reason: &'static str) {
    counter!("topupd_auth_failures_total", "reason" => reason).increment(1);
}

/// State sampled from the database: what is open, flagged and waiting.
pub fn sampled(
    open_attempts: i64,
    flagged_attempts: i64,
    pending_notices: i64,
    oldest_notice_age_secs: f64,
    dead_webhook_events: i64,
) {
    gauge!("topupd_webhook_events_dead").set(dead_webhook_events as f64);
    gauge!("topupd_open_attempts").set(open_attempts as f64);
    gauge!("topupd_flagged_attempts").set(flagged_attempts as f64);
    gauge!("topupd_notices_pending").set(pending_notices as f64);
    gauge!("topupd_outbox_oldest_age_seconds").set(oldest_notice_age_secs);
}

pub fn pool(size: u32, idle: usize) {
    gauge!("topupd_db_pool_connections", "state" => "open").set(f64::from(size));
    gauge!("topupd_db_pool_connections", "state" => "idle").set(idle as f64);
}

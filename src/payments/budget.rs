//! The provider's rate as a budget every replica shares: each request reserves the next
//! free moment of the budget of all requests and of its endpoint's, kept where every
//! replica sees it (the database), and is sent at that moment. A 429 moves the budget of
//! all requests past the provider's Retry-After, so every replica waits it out.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::header::HeaderMap;

use super::client::Endpoint;
use crate::config::PaymentsConfig;

/// The budget of every request, whatever its endpoint.
pub const ALL: &str = "all";

/// How long a 429 without a readable Retry-After holds requests back.
const DEFAULT_HOLD: Duration = Duration::from_secs(1);
/// The longest hold a Retry-After is taken for, so one odd answer cannot stop the
/// deployment for long.
const MAX_HOLD: Duration = Duration::from_secs(60);

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// Where the replicas keep their shared pace.
pub trait PaceStore: Send + Sync {
    /// Reserves the next free moment of each budget in turn, each at least `spacing_us`
    /// after the one before and none before `not_before_us` nor the moment reserved in
    /// the budget before it; returns the last budget's moment (the time to send).
    fn reserve<'a>(
        &'a self,
        budgets: &'a [Reservation<'a>],
        not_before_us: i64,
    ) -> StoreFuture<'a, i64>;

    /// Nothing is sent through `budget` before `until_us`.
    fn hold<'a>(&'a self, budget: &'a str, until_us: i64) -> StoreFuture<'a, ()>;

    /// The moment a 429 holds `budget` back until (0 if none ever did).
    fn held_until<'a>(&'a self, budget: &'a str) -> StoreFuture<'a, i64>;
}

/// One budget a request draws on, and the time its requests must keep apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation<'a> {
    pub budget: &'a str,
    pub spacing_us: i64,
}

/// The budgets of one deployment.
#[derive(Clone)]
pub struct Budget {
    store: Arc<dyn PaceStore>,
    all_spacing_us: i64,
    endpoint_spacing_us: i64,
}

impl Budget {
    pub fn new(store: Arc<dyn PaceStore>, config: &PaymentsConfig) -> Self {
        Self {
            store,
            all_spacing_us: spacing_us(config.max_requests_per_sec),
            endpoint_spacing_us: spacing_us(config.max_requests_per_sec_per_endpoint),
        }
    }

    /// Waits for this request's turn. The endpoint's budget is reserved first and the
    /// budget of all requests after it, so requests leave exactly at the pace of the
    /// budget of all. A turn that falls inside a hold a 429 set after it was reserved is
    /// given up for one after the hold.
    pub async fn wait_turn(&self, endpoint: Endpoint) -> anyhow::Result<()> {
        let budgets = [
            Reservation {
                budget: endpoint.as_str(),
                spacing_us: self.endpoint_spacing_us,
            },
            Reservation {
                budget: ALL,
                spacing_us: self.all_spacing_us,
            },
        ];
        loop {
            let send_at = self.store.reserve(&budgets, now_us()).await?;
            let wait = send_at.saturating_sub(now_us());
            if wait > 0 {
                tokio::time::sleep(Duration::from_micros(wait as u64)).await;
            }
            if self.store.held_until(ALL).await? <= now_us() {
                return Ok(());
            }
        }
    }

    /// The provider answered 429: holds every request back for what it asked.
    pub async fn slow_down(&self, headers: &HeaderMap) -> anyhow::Result<Duration> {
        let hold = retry_after(headers);
        let until = now_us().saturating_add(hold.as_micros() as i64);
        self.store.hold(ALL, until).await?;
        Ok(hold)
    }
}

/// The time between two requests of a budget of `per_sec` a second.
fn spacing_us(per_sec: u32) -> i64 {
    1_000_000 / i64::from(per_sec.max(1))
}

/// How long the provider asked to be left alone: Retry-After in seconds, within bounds.
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(DEFAULT_HOLD, |secs| {
            Duration::from_secs(secs).clamp(DEFAULT_HOLD, MAX_HOLD)
        })
}

/// Wall-clock time, which every replica shares, unlike a process's monotonic clock.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn a_budget_per_second_spaces_its_requests() {
        assert_eq!(spacing_us(20), 50_000);
        assert_eq!(spacing_us(1), 1_000_000);
        assert_eq!(spacing_us(10_000), 100);
    }

    #[test]
    fn retry_after_is_read_in_seconds_within_bounds() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("header"));
            retry_after(&headers)
        };
        assert_eq!(retry_after(&HeaderMap::new()), DEFAULT_HOLD);
        assert_eq!(with("3"), Duration::from_secs(3));
        assert_eq!(with("0"), DEFAULT_HOLD);
        assert_eq!(with("3600"), MAX_HOLD);
        assert_eq!(with("Wed, 21 Oct 2026 07:28:00 GMT"), DEFAULT_HOLD);
    }
}

//! The provider's rate as a budget every replica of a deployment shares. Each replica
//! holds a lease in the database, renewed every second, and so knows how many replicas are
//! live; it sends at its share of the budget (of all requests, and of each endpoint's),
//! paced in memory, so no request waits on the database. A 429 holds this replica back at
//! once for the provider's Retry-After and is recorded, so every other replica holds back
//! from its next renewal on.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicI64, AtomicU32, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use reqwest::header::HeaderMap;
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::client::Endpoint;
use crate::config::PaymentsConfig;

/// How often a replica renews its lease and reads the others' and the hold.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// A replica not heard from for this long no longer counts.
const LEASE: Duration = Duration::from_secs(5);
/// How long a 429 without a readable Retry-After holds requests back (Stripe's rate
/// limiter sends none).
const DEFAULT_HOLD: Duration = Duration::from_secs(1);
/// The longest hold a Retry-After is taken for, so one odd answer cannot stop the
/// deployment for long.
const MAX_HOLD: Duration = Duration::from_secs(60);
/// The pace key of the budget of all requests.
const ALL: &str = "all";

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = anyhow::Result<T>> + Send + 'a>>;

/// What a renewal reads: the live replicas (this one included) and the moment a 429
/// holds every replica back until, in milliseconds since the epoch (0 if none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub replicas: u32,
    pub held_until_ms: i64,
}

/// Where the replicas keep their leases and the hold.
pub trait LeaseStore: Send + Sync {
    /// Renews `replica`'s lease at `now_ms`, counts the leases renewed since
    /// `live_since_ms`, and reads the hold.
    fn renew<'a>(
        &'a self,
        replica: &'a str,
        now_ms: i64,
        live_since_ms: i64,
    ) -> StoreFuture<'a, Standing>;

    /// Nothing is sent before `until_ms`, by any replica.
    fn hold(&self, until_ms: i64) -> StoreFuture<'_, ()>;

    /// `replica` leaves: the others count without it from their next renewal on.
    fn release<'a>(&'a self, replica: &'a str) -> StoreFuture<'a, ()>;
}

/// One replica's share of the deployment's budget.
#[derive(Clone)]
pub struct Budget {
    shared: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn LeaseStore>,
    replica: String,
    all_per_sec: u32,
    endpoint_per_sec: u32,
    /// The live replicas, as the last renewal counted them (at least 1).
    replicas: AtomicU32,
    /// The hold, in wall-clock milliseconds: replicas share it, their monotonic clocks not.
    held_until_ms: AtomicI64,
    /// Each pace key's next free moment on this replica.
    next_free: Mutex<HashMap<&'static str, Instant>>,
    /// Stops the renewals, whose task then gives the lease up.
    leaving: CancellationToken,
    renewing: Mutex<Option<JoinHandle<()>>>,
}

impl Budget {
    /// Takes this replica's lease (so the first request already knows its share) and
    /// keeps it renewed for as long as the budget is in use.
    pub async fn start(store: Arc<dyn LeaseStore>, config: &PaymentsConfig) -> Self {
        let shared = Arc::new(Shared {
            store,
            replica: uuid::Uuid::now_v7().to_string(),
            all_per_sec: config.max_requests_per_sec,
            endpoint_per_sec: config.max_requests_per_sec_per_endpoint,
            replicas: AtomicU32::new(1),
            held_until_ms: AtomicI64::new(0),
            next_free: Mutex::new(HashMap::new()),
            leaving: CancellationToken::new(),
            renewing: Mutex::new(None),
        });
        shared.renew().await;
        let renewing = tokio::spawn(keep_renewing(Arc::downgrade(&shared)));
        *shared.renewing.lock().expect("renewal lock") = Some(renewing);
        Self { shared }
    }

    /// Stops renewing and gives the lease up, so the other replicas take this one's share
    /// from their next renewal on rather than once its lease runs out.
    pub async fn release(&self) {
        self.shared.leaving.cancel();
        let renewing = self.shared.renewing.lock().expect("renewal lock").take();
        if let Some(renewing) = renewing {
            // The task ends by releasing the lease; a panic in it is the runtime's to log.
            let _ = renewing.await;
        }
    }

    /// Waits for this request's turn: its endpoint's pace, then the pace of all requests,
    /// and no sooner than a hold ends.
    /// A turn that falls inside a hold is given up for a new one after it, so the
    /// requests held back leave at the pace again rather than all at once.
    pub async fn wait_turn(&self, endpoint: Endpoint) {
        loop {
            tokio::time::sleep_until(self.shared.reserve(endpoint)).await;
            let held = self.shared.held_until_ms.load(Ordering::Relaxed) - now_ms();
            if held <= 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(held as u64)).await;
        }
    }

    /// The provider answered 429: this replica holds back at once for what it asked, and
    /// records the hold for the others. Returns the hold.
    pub async fn slow_down(&self, headers: &HeaderMap) -> anyhow::Result<Duration> {
        let hold = retry_after(headers);
        let until = now_ms().saturating_add(hold.as_millis() as i64);
        self.shared
            .held_until_ms
            .fetch_max(until, Ordering::Relaxed);
        self.shared.store.hold(until).await?;
        Ok(hold)
    }

    /// The live replicas this one shares the budget with, itself included.
    pub fn replicas(&self) -> u32 {
        self.shared.replicas.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn reserve(&self, endpoint: Endpoint) -> Instant {
        let replicas = self.replicas.load(Ordering::Relaxed);
        let paces = [
            (endpoint.as_str(), spacing(self.endpoint_per_sec, replicas)),
            (ALL, spacing(self.all_per_sec, replicas)),
        ];
        let mut next_free = self.next_free.lock().expect("pace lock");
        take(&mut next_free, &paces, Instant::now())
    }

    async fn renew(&self) {
        let now = now_ms();
        let live_since = now - LEASE.as_millis() as i64;
        match self.store.renew(&self.replica, now, live_since).await {
            Ok(standing) => {
                self.replicas
                    .store(standing.replicas.max(1), Ordering::Relaxed);
                self.held_until_ms
                    .fetch_max(standing.held_until_ms, Ordering::Relaxed);
            }
            // The share last read stands: the other replicas' leases run out no sooner.
            Err(error) => {
                tracing::warn!(error = %format!("{error:#}"), "could not renew the provider budget's lease; keeping the last share");
            }
        }
    }
}

async fn keep_renewing(shared: Weak<Shared>) {
    let mut every = tokio::time::interval(RENEW_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.tick().await;
    loop {
        let Some(leaving) = shared.upgrade().map(|s| s.leaving.clone()) else {
            return;
        };
        tokio::select! {
            () = leaving.cancelled() => break,
            _ = every.tick() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.renew().await;
    }
    // After the last renewal, so none writes the lease again.
    if let Some(shared) = shared.upgrade()
        && let Err(error) = shared.store.release(&shared.replica).await
    {
        tracing::warn!(error = %format!("{error:#}"), "could not give up the provider budget's lease; it runs out in {}s", LEASE.as_secs());
    }
}

/// Reserves the first moment no earlier than `not_before` that is free in each of
/// `paces`, and moves each pace's next free moment on from it by the pace's spacing: the
/// request leaves at that moment, so every pace it counts against is spaced from there.
fn take(
    next_free: &mut HashMap<&'static str, Instant>,
    paces: &[(&'static str, Duration)],
    not_before: Instant,
) -> Instant {
    let at = paces
        .iter()
        .filter_map(|(key, _)| next_free.get(key).copied())
        .fold(not_before, Instant::max);
    for &(key, spacing) in paces {
        next_free.insert(key, at + spacing);
    }
    at
}

/// The time between two requests of one replica's share of `per_sec` a second.
fn spacing(per_sec: u32, replicas: u32) -> Duration {
    Duration::from_secs(u64::from(replicas.max(1))) / per_sec.max(1)
}

/// How long the provider asked to be left alone: Retry-After in seconds, within bounds.
fn retry_after(headers: &HeaderMap) -> Duration {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(DEFAULT_HOLD, |secs| Duration::from_secs(secs).min(MAX_HOLD))
}

/// Wall-clock time, which every replica shares.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    use super::*;

    #[test]
    fn a_share_of_the_budget_spaces_its_requests() {
        assert_eq!(spacing(20, 1), Duration::from_millis(50));
        assert_eq!(spacing(20, 4), Duration::from_millis(200));
        assert_eq!(spacing(1, 1), Duration::from_secs(1));
        assert_eq!(spacing(10_000, 1), Duration::from_micros(100));
        assert_eq!(spacing(20, 0), Duration::from_millis(50));
    }

    #[test]
    fn a_pace_key_hands_out_moments_apart_and_never_in_the_past() {
        let mut next_free = HashMap::new();
        let start = Instant::now();
        let gap = Duration::from_millis(50);
        assert_eq!(take(&mut next_free, &[(ALL, gap)], start), start);
        assert_eq!(take(&mut next_free, &[(ALL, gap)], start), start + gap);
        let later = start + Duration::from_secs(1);
        assert_eq!(take(&mut next_free, &[(ALL, gap)], later), later);
        assert_eq!(take(&mut next_free, &[("other", gap)], start), start);
    }

    #[test]
    fn an_endpoint_keeps_its_pace_when_the_pace_of_all_requests_holds_it_back() {
        let mut next_free = HashMap::new();
        let start = Instant::now();
        let (endpoint_gap, all_gap) = (Duration::from_millis(500), Duration::from_millis(100));
        let paces = |endpoint| [(endpoint, endpoint_gap), (ALL, all_gap)];
        // Five other endpoints take the next half second of the budget of all requests.
        for other in ["b", "c", "d", "e", "f"] {
            take(&mut next_free, &paces(other), start);
        }
        let first = take(&mut next_free, &paces("a"), start);
        assert_eq!(first, start + 5 * all_gap);
        let second = take(&mut next_free, &paces("a"), start);
        assert_eq!(
            second - first,
            endpoint_gap,
            "one endpoint's requests stay apart"
        );
        let other = take(&mut next_free, &paces("g"), start);
        assert_eq!(
            other - second,
            all_gap,
            "requests leave in the order they asked"
        );
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
        assert_eq!(with("0"), Duration::ZERO);
        assert_eq!(with("3600"), MAX_HOLD);
        assert_eq!(with("Wed, 21 Oct 2026 07:28:00 GMT"), DEFAULT_HOLD);
    }
}

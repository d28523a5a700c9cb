//! The one source of "now". Everything that stamps or compares time takes it from a
//! [`Clock`], so tests can move time instead of sleeping.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

/// Milliseconds since the Unix epoch, UTC: the unit of every timestamp column.
pub type Millis = i64;

pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> Millis;
}

/// Wall-clock time.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

/// Wall-clock time corrected to the database's clock, so that every replica sharing a
/// database measures the rate-limit window and leases on the same clock, whatever its own
/// says. The offset is measured at start and kept up to date by `serve`.
#[derive(Debug, Default)]
pub struct DatabaseClock {
    offset_ms: AtomicI64,
}

impl DatabaseClock {
    /// Adopts the offset between the database's clock and this host's.
    pub fn set_offset(&self, offset_ms: i64) {
        self.offset_ms.store(offset_ms, Ordering::SeqCst);
    }
}

impl Clock for DatabaseClock {
    fn now_ms(&self) -> Millis {
        SystemClock.now_ms() + self.offset_ms.load(Ordering::SeqCst)
    }
}

/// A clock that only moves when told to; shared by cloning.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn starting_at(ms: Millis) -> Self {
        Self(Arc::new(AtomicI64::new(ms)))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// RFC 3339 rendering of a stored timestamp, for API bodies.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

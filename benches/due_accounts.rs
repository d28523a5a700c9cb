//! Finding due accounts: the scan's own due query (`Db::due_accounts`, paged by
//! `auto_topup.scan_batch_size`) over 100,000 and 1,000,000 accounts with auto top-up on,
//! 10,000 of them due, and over 1,000,000 with 100,000 due (ten times the pages: paging
//! must cost what it reads, not what came before), and over 10,000,000 with 10,000 due
//! (the table ten times larger again); and the peak memory of a real
//! `topupd scan --once` that charges those 10,000 at 1,000,000 accounts, against the same
//! command finding nothing due.
//!
//! `cargo bench --bench due_accounts`

mod common;

use std::time::Instant;

use common::{
    Backend, BenchDb, backends, external_provider, now_ms,
    process::{StubProcess, run_measuring_memory},
    report::{Line, Samples, Table, round},
    seed::{Population, THRESHOLD, seed},
};
use topupd::db::Db;

const DUE: i64 = 10_000;
const MANY_DUE: i64 = 100_000;
const SMALL: i64 = 100_000;
const LARGE: i64 = 1_000_000;
const HUGE: i64 = 10_000_000;
/// Measured runs of the due query per size, after one warm-up run.
const RUNS: usize = 11;
const GOAL_MS: f64 = 50.0;
const GOAL_GROWTH: f64 = 1.5;
/// Ten times the due accounts in at most twelve times the time.
const GOAL_PAGING: f64 = 12.0;
const GOAL_PEAK_BYTES: f64 = 100e6;

#[tokio::main]
async fn main() {
    for backend in backends() {
        let small = DueSet::seed(backend, SMALL, DUE).await;
        let large = DueSet::seed(backend, LARGE, DUE).await;
        let many = DueSet::seed(backend, LARGE, MANY_DUE).await;
        let huge = DueSet::seed(backend, HUGE, DUE).await;
        let [small_times, large_times, many_times, huge_times] =
            times_in_turns([&small, &large, &many, &huge]).await;
        let memory = scan_memory(&large).await;
        for set in [small, large, many, huge] {
            set.drop().await;
        }
        let huge_ms = huge_times.median();
        let many_ms = many_times.median();
        let (small_ms, large_ms) = (small_times.median(), large_times.median());
        let paging = many_ms / large_ms;
        let growth = large_ms / small_ms;
        let mut table = Table::new(format!(
            "Finding due accounts, {} ({DUE} due)",
            backend.name()
        ));
        table.line(Line {
            figure: format!("due set at {LARGE} accounts"),
            measured: large_times.describe("ms"),
            baseline: format!("{} ms at {SMALL} accounts", round(small_ms)),
            ratio: format!("{}×", round(growth)),
            goal: format!("≤ {GOAL_MS} ms"),
            pass: Some(large_ms <= GOAL_MS),
        });
        table.line(Line {
            figure: format!("due set at {SMALL} accounts"),
            measured: small_times.describe("ms"),
            baseline: "-".into(),
            ratio: "-".into(),
            goal: "-".into(),
            pass: None,
        });
        table.line(Line {
            figure: format!("time at {LARGE} / time at {SMALL}"),
            measured: format!("{}×", round(growth)),
            baseline: format!("{} ms", round(small_ms)),
            ratio: format!("{}×", round(growth)),
            goal: format!("≤ {GOAL_GROWTH}×"),
            pass: Some(growth <= GOAL_GROWTH),
        });
        table.line(Line {
            figure: format!("due set of {MANY_DUE} at {LARGE} accounts"),
            measured: many_times.describe("ms"),
            baseline: format!("{} ms for {DUE} due", round(large_ms)),
            ratio: format!("{}×", round(paging)),
            goal: format!("≤ {GOAL_PAGING}× for 10× the due accounts"),
            pass: Some(paging <= GOAL_PAGING),
        });
        table.line(Line {
            figure: format!("due set at {HUGE} accounts"),
            measured: huge_times.describe("ms"),
            baseline: format!("{} ms at {LARGE} accounts", round(large_ms)),
            ratio: format!("{}×", round(huge_ms / large_ms)),
            goal: format!("≤ {GOAL_GROWTH}×"),
            pass: Some(huge_ms / large_ms <= GOAL_GROWTH),
        });
        table.line(Line {
            figure: format!("peak RSS, `scan --once` charging {DUE} of {LARGE}"),
            measured: format!("{} MB", round(memory.full as f64 / 1e6)),
            baseline: format!("{} MB with 0 due", round(memory.idle as f64 / 1e6)),
            ratio: format!("{}×", round(memory.full as f64 / memory.idle as f64)),
            goal: format!("≤ {} MB", GOAL_PEAK_BYTES / 1e6),
            pass: Some(memory.full as f64 <= GOAL_PEAK_BYTES),
        });
        table.print();
    }
}

/// Peak resident memory of `topupd scan --once`, in bytes.
struct PeakMemory {
    /// Charging every due account.
    full: u64,
    /// The same command again on the same database, when nothing is due any more.
    idle: u64,
}

/// A database seeded with `accounts`, `due` of them due.
struct DueSet {
    bench: BenchDb,
    db: Db,
    due: i64,
    batch: u32,
}

impl DueSet {
    async fn seed(backend: Backend, accounts: i64, due: i64) -> Self {
        let bench = BenchDb::create(backend, &format!("due_{accounts}_{due}")).await;
        let db = bench.connect().await;
        let started = Instant::now();
        let population = Population {
            accounts,
            due,
            balance: THRESHOLD * 5,
        };
        seed(&db, population).await;
        println!(
            "{}: seeded {accounts} accounts ({due} due) in {:.1} s",
            backend.name(),
            started.elapsed().as_secs_f64()
        );
        let batch = bench.config(&[]).auto_topup.scan_batch_size;
        Self {
            bench,
            db,
            due,
            batch,
        }
    }

    /// Milliseconds to page through the whole due set.
    async fn time(&self) -> f64 {
        let started = Instant::now();
        let found = find_due_set(&self.db, now_ms(), self.batch).await;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        assert_eq!(found, self.due as usize);
        ms
    }

    async fn drop(self) {
        self.db.close().await;
        self.bench.drop().await;
    }
}

/// Times the due sets `RUNS` times each, taking turns, after a round that reads each
/// index into the cache (a scan every 30 minutes finds it there). The machine's speed
/// drifts over minutes: in turns, each ratio compares runs made side by side, not a
/// minute apart.
async fn times_in_turns<const N: usize>(sets: [&DueSet; N]) -> [Samples; N] {
    for set in sets {
        set.time().await;
    }
    let mut times = [(); N].map(|()| Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        for (set, times) in sets.iter().zip(&mut times) {
            times.push(set.time().await);
        }
    }
    times.map(Samples::new)
}

/// Pages through the due set as the scan does; how many accounts it holds.
async fn find_due_set(db: &Db, now: i64, batch: u32) -> usize {
    let mut cursor = None;
    let mut found = 0;
    loop {
        let page = db
            .due_accounts(now, cursor.as_ref(), batch)
            .await
            .expect("the due query");
        let Some(last) = page.last().cloned() else {
            return found;
        };
        found += page.len();
        cursor = Some(last);
    }
}

/// Runs the real command twice: the first scan charges every due account (through a stub
/// provider in its own process, so the stub's memory is not counted), the second finds
/// them all topped up.
async fn scan_memory(set: &DueSet) -> PeakMemory {
    let bench = &set.bench;
    let stub = StubProcess::start(0).await;
    let config = bench.config_file(&external_provider(&stub.base_url));
    let started = Instant::now();
    let (report, full) = run_measuring_memory(&config, &["scan", "--once"]).await;
    println!(
        "{}: {} in {:.1} s",
        bench.backend.name(),
        report.trim(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        report.contains(&format!("{DUE} succeeded")),
        "every due account is charged"
    );
    assert_eq!(
        stub.charge_count().await,
        DUE as usize,
        "one charge per due account"
    );
    let (report, idle) = run_measuring_memory(&config, &["scan", "--once"]).await;
    println!("{}: {}", bench.backend.name(), report.trim());
    PeakMemory { full, idle }
}

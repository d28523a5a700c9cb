//! Top-up throughput: 10,000 due accounts charged by the real scan (`Topups::scan`)
//! through the stub provider running as its own process, with 20 ms of latency on every
//! call. Baseline, in the same run: the database's rate of durable single-row
//! transactions with the service's pool and durability settings, divided by the durable
//! commits one top-up makes. The scan runs at the default `charge_concurrency` and at a
//! higher one, since 20 ms per call bounds what a few charges in flight can do. Once
//! more as a deployment runs it: `serve` with every role, the stub's webhooks delivered to
//! it and every receipt written by the notice sender, on a database not vacuumed after
//! seeding.
//!
//! `cargo bench --bench topup_throughput`

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    Backend, BenchDb, backends,
    durable::{create_commit_table, insert_one, sustained_rate},
    external_provider,
    process::{StubProcess, free_address},
    report::{Line, Samples, Table, round},
    seed::{Population, THRESHOLD, seed, seed_as_inserted},
};
use sqlx::Connection;
use tokio_util::sync::CancellationToken;
use topupd::{
    app::{App, Roles},
    clock::SystemClock,
    config::Config,
    db::Db,
};

const ACCOUNTS: i64 = 10_000;
const LATENCY_MS: u64 = 20;
/// Durable commits of one automatic top-up that succeeds: the claim (which guards the
/// create), `confirming` with the payment's id (which guards the confirmation), and the
/// settlement that credits the account.
const COMMITS_PER_TOPUP: f64 = 3.0;
/// The scan's concurrencies besides the default: enough charges in flight that 2 calls of
/// 20 ms each no longer bound the rate below what the database can commit.
const TUNED_CONCURRENCY: [u32; 2] = [64, 128];
/// Scans at each tuned concurrency; the default one, bound by the provider's latency,
/// runs once.
const TUNED_RUNS: usize = 3;
const BASELINE_RUNS: usize = 3;
const BASELINE_TIME: Duration = Duration::from_secs(5);
const GOAL_SHARE: f64 = 0.5;

#[tokio::main]
async fn main() {
    for backend in backends() {
        let baseline = durable_rate(backend).await;
        let per_topup = baseline.median() / COMMITS_PER_TOPUP;
        let mut table = Table::new(format!(
            "Top-up throughput, {} ({ACCOUNTS} due, {LATENCY_MS} ms per provider call)",
            backend.name()
        ));
        table.line(Line {
            figure: "durable single-row transactions".into(),
            measured: baseline.describe("tx/s"),
            baseline: "-".into(),
            ratio: "-".into(),
            goal: "-".into(),
            pass: None,
        });
        let default = Config::defaults().auto_topup.charge_concurrency;
        let plan = std::iter::once((default, 1)).chain(TUNED_CONCURRENCY.map(|c| (c, TUNED_RUNS)));
        for (concurrency, runs) in plan {
            let mut rates = Vec::with_capacity(runs);
            let mut commits = Vec::with_capacity(runs);
            for _ in 0..runs {
                let run = scan(backend, concurrency).await;
                rates.push(ACCOUNTS as f64 / run.seconds);
                commits.extend(run.commits.map(|c| c as f64 / ACCOUNTS as f64));
            }
            let rates = Samples::new(rates);
            let rate = rates.median();
            table.line(Line {
                figure: format!("top-ups/s, charge_concurrency = {concurrency}"),
                measured: rates.describe("/s"),
                baseline: format!(
                    "{} tx/s ÷ {COMMITS_PER_TOPUP} = {} /s",
                    round(baseline.median()),
                    round(per_topup)
                ),
                ratio: round(rate / per_topup),
                goal: format!("≥ {GOAL_SHARE}"),
                pass: Some(rate / per_topup >= GOAL_SHARE),
            });
            if !commits.is_empty() {
                table.line(Line {
                    figure: format!("transactions per top-up, charge_concurrency = {concurrency}"),
                    measured: Samples::new(commits).describe("per top-up"),
                    baseline: format!(
                        "{COMMITS_PER_TOPUP} needed, steps and settlements sharing theirs"
                    ),
                    ratio: "-".into(),
                    goal: "-".into(),
                    pass: None,
                });
            }
        }
        let deployed = scan_deployed(backend, TUNED_CONCURRENCY[0]).await;
        let rate = ACCOUNTS as f64 / deployed.scan_seconds;
        table.line(Line {
            figure: format!(
                "top-ups/s as deployed (webhooks, receipts, no VACUUM), charge_concurrency = {}",
                TUNED_CONCURRENCY[0]
            ),
            measured: format!("{} /s", round(rate)),
            baseline: format!("{} /s", round(per_topup)),
            ratio: round(rate / per_topup),
            goal: format!("≥ {GOAL_SHARE}"),
            pass: Some(rate / per_topup >= GOAL_SHARE),
        });
        table.line(Line {
            figure: "as deployed: until every webhook is handled and every receipt written".into(),
            measured: format!("{:.1} s", deployed.drained_seconds),
            baseline: format!("{:.1} s the scan", deployed.scan_seconds),
            ratio: round(deployed.drained_seconds / deployed.scan_seconds),
            goal: "reported".into(),
            pass: None,
        });
        table.print();
    }
}

/// Durable single-row transactions per second, from as many tasks as the service's pool
/// has connections.
async fn durable_rate(backend: Backend) -> Samples {
    let bench = BenchDb::create(backend, "topup_baseline").await;
    let db = bench.connect().await;
    create_commit_table(&db).await;
    let writers = bench.config(&[]).database.max_connections as usize;
    let mut rates = Vec::with_capacity(BASELINE_RUNS);
    for _ in 0..BASELINE_RUNS {
        let db = db.clone();
        let rate = sustained_rate(writers, BASELINE_TIME, move |task, n| {
            let db = db.clone();
            async move { insert_one(&db, task, n).await }
        })
        .await;
        rates.push(rate);
    }
    db.close().await;
    bench.drop().await;
    Samples::new(rates)
}

struct ScanRun {
    seconds: f64,
    /// Transactions PostgreSQL counted in the database during the scan.
    commits: Option<i64>,
}

/// One scan of freshly seeded accounts, through a stub of its own: the accounts of every
/// scan have the same ids and so their charges the same idempotency keys.
async fn scan(backend: Backend, concurrency: u32) -> ScanRun {
    let stub = StubProcess::start(LATENCY_MS).await;
    let bench = BenchDb::create(backend, "topup_scan").await;
    let db = bench.connect().await;
    let population = Population {
        accounts: ACCOUNTS,
        due: ACCOUNTS,
        balance: THRESHOLD,
    };
    seed(&db, population).await;
    db.close().await;
    let mut settings = external_provider(&stub.base_url);
    settings.push(format!("auto_topup.charge_concurrency = {concurrency}"));
    let config = bench.config(&settings);
    let before = committed_transactions(&bench).await;
    let app = App::build(config, Arc::new(SystemClock), free_address())
        .await
        .expect("build the app");
    let started = Instant::now();
    let report = app
        .state
        .topups
        .scan(&CancellationToken::new(), None)
        .await
        .expect("the scan");
    let seconds = started.elapsed().as_secs_f64();
    app.close().await;
    println!("{}: {report} in {seconds:.1} s", backend.name());
    assert_eq!(report.succeeded, ACCOUNTS as usize, "every top-up succeeds");
    assert_eq!(
        stub.charge_count().await,
        ACCOUNTS as usize,
        "every top-up is one charge at the provider"
    );
    let after = committed_transactions(&bench).await;
    bench.drop().await;
    ScanRun {
        seconds,
        commits: before.zip(after).map(|(b, a)| a - b),
    }
}

/// PostgreSQL's count of committed transactions in the bench database (read-only ones
/// included), once the backends that ran them have reported.
async fn committed_transactions(bench: &BenchDb) -> Option<i64> {
    if bench.backend != Backend::Postgres {
        return None;
    }
    // Backends report their counts when they exit or go idle, at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = sqlx::PgConnection::connect(&bench.url)
        .await
        .expect("connect to read statistics");
    let count: i64 = sqlx::query_scalar(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .expect("read pg_stat_database");
    conn.close().await.expect("close the statistics connection");
    Some(count)
}

struct DeployedRun {
    scan_seconds: f64,
    /// From the scan's start until the last webhook is handled and the last receipt written.
    drained_seconds: f64,
}

/// One scan as a deployment runs it: `serve` with every role (the API taking the stub's
/// webhooks, the webhook processor, the notice sender writing receipts to files), on a
/// database left as the seeding inserts left it.
async fn scan_deployed(backend: Backend, concurrency: u32) -> DeployedRun {
    let address = free_address();
    let stub = StubProcess::start_delivering(
        &serde_json::json!({ "latency_ms": LATENCY_MS }),
        &format!("http://{address}/v1/webhooks/payments"),
    )
    .await;
    let bench = BenchDb::create(backend, "topup_deployed").await;
    let db = bench.connect().await;
    let population = Population {
        accounts: ACCOUNTS,
        due: ACCOUNTS,
        balance: THRESHOLD,
    };
    seed_as_inserted(&db, population).await;
    let mut settings = external_provider(&stub.base_url);
    settings.extend([
        format!("auto_topup.charge_concurrency = {concurrency}"),
        "email.transport = \"file\"".to_owned(),
        format!(
            "email.folder = \"{}\"",
            bench.dir.path().join("notices").display()
        ),
    ]);
    let app = App::build(bench.config(&settings), Arc::new(SystemClock), address)
        .await
        .expect("build the app");
    let topups = app.state.topups.clone();
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .expect("listen for webhooks");
    let stop = CancellationToken::new();
    let serving = tokio::spawn(app.serve(
        Some(listener),
        None,
        Roles::ALL,
        stop.clone().cancelled_owned(),
    ));
    let started = Instant::now();
    let report = topups
        .scan(&CancellationToken::new(), None)
        .await
        .expect("the scan");
    let scan_seconds = started.elapsed().as_secs_f64();
    assert_eq!(report.succeeded, ACCOUNTS as usize, "every top-up succeeds");
    while !drained(&db).await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drained_seconds = started.elapsed().as_secs_f64();
    println!(
        "{} as deployed: {report} in {scan_seconds:.1} s, drained in {drained_seconds:.1} s",
        backend.name()
    );
    stop.cancel();
    serving.await.expect("serve ends").expect("serve");
    db.close().await;
    bench.drop().await;
    DeployedRun {
        scan_seconds,
        drained_seconds,
    }
}

/// Whether each top-up's success event was received and every event handled, and each
/// top-up's receipt written.
async fn drained(db: &Db) -> bool {
    const SQL: &str = "SELECT \
        (SELECT COUNT(*) FROM webhook_events WHERE type = 'payment_intent.succeeded'), \
        (SELECT COUNT(*) FROM webhook_events WHERE processed_at IS NULL), \
        (SELECT COUNT(*) FROM notices WHERE state = 'sent')";
    let (succeeded, unhandled, sent): (i64, i64, i64) = match db {
        Db::Sqlite(pool) => sqlx::query_as(SQL).fetch_one(pool).await,
        Db::Postgres(pool) => sqlx::query_as(SQL).fetch_one(pool).await,
    }
    .expect("read what is left to do");
    succeeded == ACCOUNTS && unhandled == 0 && sent == ACCOUNTS
}

//! Top-ups against real limits: the real `topupd scan --once`, as 1 and as 3 replicas
//! scanning at once on PostgreSQL, through the stub provider as its own process with 200
//! ms of latency on every call and Stripe's sandbox rate limits (25 requests a second,
//! and 25 to each endpoint), answering 429 over them. topupd's budget is its default, 20
//! requests a second (and 20 to each endpoint), shared by the replicas through their
//! leases. Baseline: the budget divided by the provider calls of one top-up (2: create and
//! confirm). Goal: at least 90% of it, and no 429 after the first second.
//!
//! `cargo bench --bench topup_limits`

mod common;

use std::time::Instant;

use common::{
    Backend, BenchDb, backends, external_provider,
    process::{StubProcess, TOPUPD},
    report::{Line, Table, round},
    seed::{Population, THRESHOLD, seed},
};

const DUE: i64 = 600;
const LATENCY_MS: u64 = 200;
/// Stripe's sandbox limits, which the stub enforces.
const PROVIDER_LIMIT: u32 = 25;
/// topupd's budget: its defaults.
const BUDGET: u32 = 20;
const CALLS_PER_TOPUP: f64 = 2.0;
const GOAL_SHARE: f64 = 0.9;
/// 429s are allowed while the replicas' leases first count each other.
const SETTLING_MS: u64 = 1_000;

#[tokio::main]
async fn main() {
    if !backends().contains(&Backend::Postgres) {
        println!("topup_limits runs on PostgreSQL only (replicas share one database)");
        return;
    }
    let ceiling = f64::from(BUDGET) / CALLS_PER_TOPUP;
    let mut table = Table::new(format!(
        "Top-ups against the provider's limits, PostgreSQL ({DUE} due, {LATENCY_MS} ms per \
         call, provider limit {PROVIDER_LIMIT}/s, budget {BUDGET}/s)"
    ));
    for replicas in [1, 3] {
        let run = scan(replicas).await;
        let rate = DUE as f64 / run.seconds;
        table.line(Line {
            figure: format!("top-ups/s, {replicas} replica(s) scanning at once"),
            measured: format!("{} /s ({} s)", round(rate), round(run.seconds)),
            baseline: format!("{BUDGET}/s ÷ {CALLS_PER_TOPUP} = {} /s", round(ceiling)),
            ratio: round(rate / ceiling),
            goal: format!("≥ {GOAL_SHARE}"),
            pass: Some(rate / ceiling >= GOAL_SHARE),
        });
        let late = run
            .limited_ms
            .iter()
            .filter(|ms| **ms > SETTLING_MS)
            .count();
        table.line(Line {
            figure: format!("429s after the first second, {replicas} replica(s)"),
            measured: format!("{late} (of {} in all)", run.limited_ms.len()),
            baseline: "-".into(),
            ratio: "-".into(),
            goal: "0".into(),
            pass: Some(late == 0),
        });
    }
    table.print();
}

struct ScanRun {
    seconds: f64,
    limited_ms: Vec<u64>,
}

/// `replicas` processes of `topupd scan --once` started together on freshly seeded due
/// accounts, through a stub of their own; timed from their start to the last one's end.
async fn scan(replicas: usize) -> ScanRun {
    let stub = StubProcess::start_with(&serde_json::json!({
        "latency_ms": LATENCY_MS,
        "rate_limit_per_sec": PROVIDER_LIMIT,
        "endpoint_rate_limit_per_sec": PROVIDER_LIMIT,
    }))
    .await;
    let bench = BenchDb::create(Backend::Postgres, "topup_limits").await;
    let db = bench.connect().await;
    let population = Population {
        accounts: DUE,
        due: DUE,
        balance: THRESHOLD,
    };
    seed(&db, population).await;
    db.close().await;
    let config = bench.config_file(&external_provider(&stub.base_url));
    let started = Instant::now();
    let mut processes = Vec::new();
    for _ in 0..replicas {
        processes.push(
            tokio::process::Command::new(TOPUPD)
                .arg("--config")
                .arg(&config)
                .args(["scan", "--once"])
                // The configuration file lifts the budget for the other benches.
                .env("TOPUPD_PAYMENTS__MAX_REQUESTS_PER_SEC", BUDGET.to_string())
                .env(
                    "TOPUPD_PAYMENTS__MAX_REQUESTS_PER_SEC_PER_ENDPOINT",
                    BUDGET.to_string(),
                )
                .kill_on_drop(true)
                .output(),
        );
    }
    let mut summaries = Vec::new();
    for process in processes {
        let output = process.await.expect("run topupd scan --once");
        assert!(
            output.status.success(),
            "scan failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        summaries.push(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("{replicas} replica(s) in {seconds:.1} s: {summaries:?}");
    assert_eq!(
        stub.charge_count().await,
        DUE as usize,
        "every due account charged once"
    );
    let limited_ms = stub.rate_limited_ms().await;
    bench.drop().await;
    ScanRun {
        seconds,
        limited_ms,
    }
}

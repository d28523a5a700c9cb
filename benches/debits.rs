//! Metering debits: `POST /v1/usage` against a real `topupd serve` process, loaded over
//! loopback by a separate load generator process (this executable in its `loadgen`
//! mode); the same debit in-process without HTTP; and the baseline, in the same run:
//! the database's own ceiling, the service's batched debit statement at the debit queue's
//! batch size from as many writers as the queue has, and conditional
//! single-row balance updates, each in its own durable transaction. The highest rate is
//! the best of several numbers of requests in flight; the p99 latency is measured at
//! fixed rates of 50% and 90% of it. The highest rate and the ceiling are measured in
//! turns, so that the machine's drift falls on both. The debit queue's `/metrics` say how
//! large the batches of the highest rate were, and the ceiling is measured again at that
//! size.
//!
//! `cargo bench --bench debits`

mod common;
#[path = "debits/loadgen.rs"]
mod loadgen;

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use common::{
    BenchDb, backends,
    durable::{debit_one, sustained_rate},
    process::{free_address, run, serve_api},
    report::{Line, Samples, Table, round},
    seed::{Population, account_id, seed},
};
use loadgen::{Outcome, Pace, Spec};
use topupd::{
    app::{App, AppState},
    clock::SystemClock,
    db::{
        Db,
        group_commit::{MAX_BATCH, writer_count},
        usage::{DebitOutcome, NewUsage},
    },
    domain::pricing::PriceRequest,
    http::auth::verified_key,
};

/// Funded accounts the debits are spread over.
const ACCOUNTS: u64 = 1_000;
/// A billion credits each: the bench never runs an account dry.
const FUNDED: i64 = 1_000_000_000_000;
/// What a minute of dubbing costs, in millicredits, for the baseline's update.
const DEBIT: i64 = 10_000;
/// Tasks (in-process and baseline).
const CONCURRENCY: usize = 64;
/// Requests in flight the HTTP load tries, one run each, before measuring the best again.
const IN_FLIGHT: [usize; 4] = [64, 128, 256, 512];
const RUNS: usize = 3;
const RUN_TIME: Duration = Duration::from_secs(5);
const HTTP_RUN_TIME: Duration = Duration::from_secs(10);
const GOAL_SHARE: f64 = 0.6;
/// Debits that must update `accounts` in place (PostgreSQL's heap-only tuples).
const HOT_SHARE: f64 = 0.9;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(loadgen::MODE) {
        loadgen::main(&args[2..]);
        return;
    }
    tokio::runtime::Runtime::new()
        .expect("a runtime for the bench")
        .block_on(bench());
}

async fn bench() {
    for backend in backends() {
        let bench = BenchDb::create(backend, "debits").await;
        let db = bench.connect().await;
        let population = Population {
            accounts: ACCOUNTS as i64,
            due: 0,
            balance: FUNDED,
        };
        seed(&db, population).await;

        let baseline = repeat(|| {
            let db = db.clone();
            sustained_rate(CONCURRENCY, RUN_TIME, move |task, n| {
                let db = db.clone();
                let account = account_id(spread(task, n));
                async move { debit_one(&db, &account, DEBIT).await }
            })
        })
        .await;
        db.close().await;

        let key = run(
            &bench.config_file(&[]),
            &["keys", "create", "--role", "service", "--label", "bench"],
        )
        .await
        .trim()
        .to_owned();
        let updates_before = account_updates(&bench).await;
        let in_process = in_process_rate(&bench, None).await;
        let hot = account_updates(&bench)
            .await
            .zip(updates_before)
            .map(|(after, before)| after.since(before));
        let in_process_keyed = in_process_rate(&bench, Some(&key)).await;
        // Before the server's configuration is written: reading the catalogue and
        // connecting write the bench's configuration file with the defaults.
        let row = served_row(&bench);
        let db = bench.connect().await;
        let ops = free_address();
        let config = bench.config_file(&[format!("ops.listen = \"{ops}\"")]);
        let http = http_figures(&config, ops, &key, &db, &row).await;
        let ceiling = &http.ceiling;
        let served_size = http.batch_size.round().max(1.0) as usize;
        let served_ceiling = batched_ceiling(&db, served_size, &row).await;
        db.close().await;
        bench.drop().await;

        let base = baseline.median();
        let max = http.max.median();
        let mut table = Table::new(format!(
            "Metering debits, {} ({CONCURRENCY} concurrent, {ACCOUNTS} accounts)",
            backend.name()
        ));
        table.line(Line::alone(
            "conditional single-row updates",
            baseline.describe("/s"),
        ));
        table.line(Line::alone(
            format!("the service's batched debit statement, {MAX_BATCH} a batch"),
            ceiling.describe("/s"),
        ));
        // The highest HTTP rate against another rate, `what` it is.
        let http_against = |figure: String, rate: f64, what: &str| Line {
            figure,
            measured: http.max.describe("/s"),
            baseline: format!("{} /s {what}", round(rate)),
            ratio: round(max / rate),
            goal: "-".into(),
            pass: None,
        };
        let ceiling_rate = ceiling.median();
        table.line(Line {
            goal: format!("≥ {GOAL_SHARE}"),
            pass: Some(max / ceiling_rate >= GOAL_SHARE),
            ..http_against(
                format!(
                    "HTTP debits (`POST /v1/usage`, max rate: {} in flight)",
                    http.in_flight
                ),
                ceiling_rate,
                "batched",
            )
        });
        table.line(Line::alone(
            "HTTP debits by requests in flight (1 run each)",
            http.by_in_flight
                .iter()
                .map(|(n, rate)| format!("{n}: {}", round(*rate)))
                .collect::<Vec<_>>()
                .join(", "),
        ));
        table.line(http_against(
            format!(
                "HTTP debits against the batched statement at their own batch size ({} a batch, {} on average)",
                served_size,
                round(http.batch_size)
            ),
            served_ceiling.median(),
            "batched",
        ));
        table.line(http_against(
            "HTTP debits against single-row updates".into(),
            base,
            "single-row",
        ));
        for (figure, samples) in [
            ("in-process debits (same path, no HTTP)", &in_process),
            (
                "in-process debits with the handler's API key check",
                &in_process_keyed,
            ),
        ] {
            table.line(Line {
                figure: figure.into(),
                measured: samples.describe("/s"),
                baseline: format!("{} /s", round(base)),
                ratio: round(samples.median() / base),
                goal: "-".into(),
                pass: None,
            });
        }
        if let Some(hot) = hot {
            table.line(Line {
                figure: "in-process debits that stay HOT (`n_tup_hot_upd` / `n_tup_upd`)".into(),
                measured: format!("{} of {} updates", hot.hot, hot.all),
                baseline: "-".into(),
                ratio: round(hot.share()),
                goal: format!("≥ {HOT_SHARE}"),
                pass: Some(hot.share() >= HOT_SHARE),
            });
        }
        for (share, at) in [(50, &http.at_half), (90, &http.at_ninety)] {
            table.line(Line {
                figure: format!(
                    "HTTP latency at {share}% of max ({} /s scheduled)",
                    round(max * f64::from(share) / 100.0)
                ),
                measured: format!(
                    "p99 {} ms, p50 {} ms, {} of {} failed",
                    round(at.p99_ms),
                    round(at.p50_ms),
                    at.failed,
                    at.failed + at.ok
                ),
                baseline: "-".into(),
                ratio: "-".into(),
                goal: "reported".into(),
                pass: None,
            });
        }
        table.print();
    }
}

/// The usage the load generator debits, as the service stores it: its quote, fingerprint
/// and cost from the bench's catalogue, so that the ceiling writes the rows HTTP debits
/// write.
fn served_row(bench: &BenchDb) -> NewUsage {
    let request = dubbing_minute();
    let config = bench.config(&[]);
    let quote = config
        .pricing
        .load()
        .expect("the bench's catalogue")
        .quote(&request)
        .expect("dubbing is priced");
    NewUsage {
        account_id: String::new(),
        request_id: String::new(),
        fingerprint: request.fingerprint(),
        service: quote.service.clone(),
        quote: serde_json::to_string(&quote).expect("a quote serializes"),
        cost: quote.total,
        at: 0,
        low_line: config.low_balance_warning(),
    }
}

/// What the load generator and the in-process debits send.
fn dubbing_minute() -> PriceRequest {
    serde_json::from_value(serde_json::json!({ "service": "dubbing", "duration_seconds": 60 }))
        .expect("a valid price request")
}

/// The database's own ceiling for debits: the statement the service's debit queue runs
/// (`Db::debit_usages`), in batches of `size` rows like `row`, from as many writers as the
/// queue has. Debits per second.
async fn batched_ceiling(db: &Db, size: usize, row: &NewUsage) -> Samples {
    repeat(|| ceiling_run(db, size, row)).await
}

/// One run of [`batched_ceiling`].
fn ceiling_run(db: &Db, size: usize, row: &NewUsage) -> impl Future<Output = f64> + use<> {
    let writers = writer_count(db) as usize;
    let (db, row) = (db.clone(), row.clone());
    // Request ids unique across runs, so every debit is a new one.
    let run = uuid::Uuid::now_v7().simple().to_string();
    async move {
        let batches = sustained_rate(writers, RUN_TIME, move |task, n| {
            let db = db.clone();
            let usages: Vec<NewUsage> = (0..size)
                .map(|i| NewUsage {
                    // Distinct accounts within a batch, as the queue makes them.
                    account_id: account_id(
                        ((task * size + i) as u64 + n) as i64 % ACCOUNTS as i64 + 1,
                    ),
                    request_id: format!("{run}-{task}-{n}-{i}"),
                    ..row.clone()
                })
                .collect();
            async move {
                let batch: Vec<&NewUsage> = usages.iter().collect();
                let outcomes = db.debit_usages(&batch).await.expect("the batch");
                assert!(
                    outcomes
                        .iter()
                        .all(|o| matches!(o, DebitOutcome::Debited(_))),
                    "every debit of the batch is made"
                );
            }
        })
        .await;
        batches * size as f64
    }
}

/// PostgreSQL's count of `accounts` updates, and of those that were heap-only (no new
/// index entries); `None` on SQLite.
#[derive(Debug, Clone, Copy)]
struct Updates {
    all: i64,
    hot: i64,
}

impl Updates {
    fn since(self, before: Self) -> Self {
        Self {
            all: self.all - before.all,
            hot: self.hot - before.hot,
        }
    }

    fn share(self) -> f64 {
        self.hot as f64 / self.all.max(1) as f64
    }
}

/// Reads the statistics on a connection of its own, after the app that wrote them closed
/// its own (a backend reports its counts as it ends).
async fn account_updates(bench: &BenchDb) -> Option<Updates> {
    let Db::Postgres(pool) = bench.connect().await else {
        return None;
    };
    let (all, hot): (i64, i64) = sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'accounts'",
    )
    .fetch_one(&pool)
    .await
    .expect("the statistics of accounts");
    pool.close().await;
    Some(Updates { all, hot })
}

/// Which account the `n`-th operation of `task` debits: spread so that concurrent tasks
/// rarely share one.
fn spread(task: usize, n: u64) -> i64 {
    ((task as u64 * 7919 + n) % ACCOUNTS + 1) as i64
}

async fn repeat<F, Fut>(mut measure: F) -> Samples
where
    F: FnMut() -> Fut,
    Fut: Future<Output = f64>,
{
    let mut values = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        values.push(measure().await);
    }
    Samples::new(values)
}

/// The handler's own steps without HTTP: price the request, then debit it; with `key`,
/// first check the caller's API key as the handler's authentication does.
async fn in_process_rate(bench: &BenchDb, key: Option<&str>) -> Samples {
    let key = key.map(|token| Arc::new(token.to_owned()));
    let app = App::build(bench.config(&[]), Arc::new(SystemClock), free_address())
        .await
        .expect("build the app");
    let state = app.state.clone();
    let rates = repeat(|| {
        // Request ids unique across runs, so every debit is a new one.
        let run = uuid::Uuid::now_v7().simple().to_string();
        let (state, key) = (state.clone(), key.clone());
        sustained_rate(CONCURRENCY, RUN_TIME, move |task, n| {
            let (state, key) = (state.clone(), key.clone());
            let request_id = format!("{run}-{task}-{n}");
            let account = account_id(spread(task, n));
            async move {
                if let Some(token) = key {
                    check_key(&state, &token).await;
                }
                debit_in_process(&state, &account, &request_id).await
            }
        })
    })
    .await;
    app.close().await;
    rates
}

/// What the handler's authentication does before the debit.
async fn check_key(state: &AppState, token: &str) {
    let key = verified_key(state, token).await.expect("read the key");
    assert!(key.is_ok(), "the bench's key is refused: {key:?}");
}

async fn debit_in_process(state: &AppState, account_id: &str, request_id: &str) {
    let request = dubbing_minute();
    let quote = state.catalogue.quote(&request).expect("dubbing is priced");
    let outcome = state
        .metering
        .debit(account_id, request_id, &request, &quote)
        .await
        .expect("the debit");
    assert!(matches!(outcome, DebitOutcome::Debited(_)), "{outcome:?}");
}

struct HttpFigures {
    /// The database's ceiling at the debit queue's batch size, measured in turns with
    /// `max`, so that the machine's drift from minute to minute falls on both alike.
    ceiling: Samples,
    /// The highest rate of each number of requests in flight tried.
    by_in_flight: Vec<(usize, f64)>,
    /// The number of requests in flight of the best, and its runs.
    in_flight: usize,
    max: Samples,
    /// Debits per commit in the runs of `max`, on average.
    batch_size: f64,
    at_half: Outcome,
    at_ninety: Outcome,
}

/// Starts the server, finds its highest rate with `key` and the number of requests in
/// flight that reaches it, measures that again in turns with the database's ceiling on
/// `db` (batches of rows like `row`), with the size of the batches it made (read from
/// `/metrics` on `ops`), then latency at fixed rates below it.
async fn http_figures(
    config: &Path,
    ops: SocketAddr,
    key: &str,
    db: &Db,
    row: &NewUsage,
) -> HttpFigures {
    let address = free_address();
    let _server = serve_api(config, address).await;
    let spec = |pace| Spec {
        url: format!("http://{address}"),
        key: key.to_owned(),
        accounts: ACCOUNTS,
        pace,
        duration: HTTP_RUN_TIME,
    };
    let mut by_in_flight = Vec::with_capacity(IN_FLIGHT.len());
    for n in IN_FLIGHT {
        by_in_flight.push((n, highest_rate(spec(Pace::InFlight(n))).await));
    }
    let (in_flight, _) = by_in_flight
        .iter()
        .copied()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("some numbers in flight");
    let before = debit_batches(ops).await;
    let (mut ceiling, mut max) = (Vec::with_capacity(RUNS), Vec::with_capacity(RUNS));
    for _ in 0..RUNS {
        ceiling.push(ceiling_run(db, MAX_BATCH, row).await);
        max.push(highest_rate(spec(Pace::InFlight(in_flight))).await);
    }
    let (ceiling, max) = (Samples::new(ceiling), Samples::new(max));
    let after = debit_batches(ops).await;
    let at_half = load(&spec(Pace::Rate(max.median() * 0.5))).await;
    let at_ninety = load(&spec(Pace::Rate(max.median() * 0.9))).await;
    HttpFigures {
        ceiling,
        by_in_flight,
        in_flight,
        max,
        batch_size: (after.0 - before.0) / (after.1 - before.1),
        at_half,
        at_ninety,
    }
}

/// The debits and the batches the debit queue has written so far, from `/metrics`.
async fn debit_batches(ops: SocketAddr) -> (f64, f64) {
    let text = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .and_then(reqwest::Response::error_for_status)
        .expect("the metrics")
        .text()
        .await
        .expect("the metrics' text");
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in the metrics"))
    };
    (
        value(r#"topupd_group_commit_batch_writes_sum{queue="debits"}"#),
        value(r#"topupd_group_commit_batch_writes_count{queue="debits"}"#),
    )
}

/// Runs the load generator as its own process.
async fn load(spec: &Spec) -> Outcome {
    let output = tokio::process::Command::new(
        std::env::current_exe().expect("the bench knows its own executable"),
    )
    .arg(loadgen::MODE)
    .args(spec.to_args())
    .output()
    .await
    .expect("run the load generator");
    assert!(
        output.status.success(),
        "the load generator failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let outcome: Outcome =
        serde_json::from_slice(&output.stdout).expect("the load generator prints its outcome");
    println!("load {:?}: {outcome:?}", spec.pace);
    outcome
}

/// [`load`] with requests in flight, where every debit must succeed.
async fn highest_rate(spec: Spec) -> f64 {
    let outcome = load(&spec).await;
    assert_eq!(outcome.failed, 0, "every debit succeeds");
    outcome.rate
}

//! Runs one scenario: sets up the processes and the customers, does the damage while the
//! accounts top up, waits for the system to come to rest, and checks it.

use std::{
    fmt,
    path::PathBuf,
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde_json::json;

use crate::{
    checks::{Progress, Verdict},
    cluster::{Database, Replica, ReplicaSettings, Stub, admin_key, verify},
    customers::{Api, Authenticator, open_accounts},
    helpers::wait_until,
    reversals::Reverser,
    scenario::Scenario,
    smtp::SmtpSink,
    webhook_host::WebhookHost,
};

/// How long a drill may take to come to rest after the damage, beyond a per-top-up share.
const REST_LIMIT: Duration = Duration::from_secs(120);
/// Provider latency in kill drills: slow enough that kills land inside charges.
const KILL_DRILL_LATENCY_MS: u64 = 100;
/// Provider latency otherwise.
const LATENCY_MS: u64 = 10;
/// How long a hung provider request waits before answering: past the client's 1 s limit.
const HANG_MS: u64 = 1_500;

/// What a drill did and what the checks found.
pub struct Report {
    scenario: String,
    seed: u64,
    topups: usize,
    kills: usize,
    /// Kills that found a top-up attempt open in the database.
    kills_mid_topup: usize,
    /// Replicas that failed to drain and exit 0 on SIGTERM at the end.
    unclean_stops: usize,
    payments: usize,
    authenticated: (usize, usize),
    /// Charges refunded, disputes won and lost at the provider.
    reversed: (usize, usize, usize),
    verdict: Verdict,
    duration: Duration,
    /// The logs of the processes, kept when the drill failed.
    logs: Option<PathBuf>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.verdict.passed() && self.unclean_stops == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.verdict;
        writeln!(
            f,
            "scenario {} (seed {}): {} in {:.1} s",
            self.scenario,
            self.seed,
            if self.passed() { "PASS" } else { "FAIL" },
            self.duration.as_secs_f64()
        )?;
        writeln!(
            f,
            "  top-ups: {} accounts, {} attempts ({} succeeded, {} failed or canceled), {} payments created, {} charges captured; 3-D Secure answered: {} completed, {} failed",
            self.topups,
            v.attempts,
            v.succeeded,
            v.failed,
            self.payments,
            v.charges,
            self.authenticated.0,
            self.authenticated.1
        )?;
        writeln!(
            f,
            "  kills: {} ({} with a top-up open), unclean stops at the end: {}",
            self.kills, self.kills_mid_topup, self.unclean_stops
        )?;
        writeln!(
            f,
            "  money: {} double charges, {} charged-not-credited, {} credited-not-charged, {} attempts stuck open; topupd verify {}",
            v.double_charges,
            v.charged_not_credited,
            v.credited_not_charged,
            v.stuck,
            if v.verify_clean { "clean" } else { "FAILED" }
        )?;
        writeln!(
            f,
            "  taken back at the provider: {} charges refunded, disputes {} won and {} lost; {} refunds not taken back exactly, {} disputes unsettled",
            self.reversed.0,
            self.reversed.1,
            self.reversed.2,
            v.refunds_not_taken_back,
            v.disputes_unsettled
        )?;
        writeln!(
            f,
            "  webhooks: {} messages, {} lost, {} delivered again, {} out of order, {} badly signed, {} unknown",
            v.webhooks,
            v.webhooks_lost,
            v.webhooks_redelivered,
            v.webhooks_out_of_order,
            v.webhooks_badly_signed,
            v.webhooks_unknown
        )?;
        write!(
            f,
            "  notices: {} queued, {} lost, {} settled attempts without one, {} resent with the same Message-ID (allowed {}), {} unknown messages",
            v.notices,
            v.notices_lost,
            v.attempts_without_notice,
            v.notices_resent,
            v.resends_allowed,
            v.unknown_messages
        )?;
        for problem in &v.problems {
            write!(f, "\n  ! {problem}")?;
        }
        if let Some(logs) = &self.logs {
            write!(f, "\n  logs kept in {}", logs.display())?;
        }
        Ok(())
    }
}

/// A random stream of the drill: the run's seed mixed with the scenario's name, so
/// scenarios differ and `--seed N --scenario NAME` replays one alone, and with the
/// stream's purpose, so that draws which depend on timing (how many payments wait for
/// authentication when the customers look) never shift the kill schedule.
fn rng_for(seed: u64, name: &str) -> StdRng {
    // FNV-1a: stable across Rust versions, unlike the standard hasher.
    let mixed = name
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64 ^ seed, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    StdRng::seed_from_u64(mixed)
}

/// The stub's faults for a failure rate split over its three kinds: 35% 5xx before
/// recording, 35% 5xx after, 30% no answer in time. Later faults are drawn only for
/// requests the earlier ones spared, so their rates are conditional.
fn provider_faults(scenario: &Scenario, seed: u64) -> serde_json::Value {
    let total = scenario.provider_failure_rate;
    let before = total * 0.35;
    let after = total * 0.35 / (1.0 - before);
    let hang = total * 0.30 / ((1.0 - before) * (1.0 - after));
    json!({
        "seed": seed,
        "latency_ms": LATENCY_MS,
        "hang_ms": HANG_MS,
        "fail_before_rate": before,
        "fail_after_rate": after,
        "hang_after_rate": hang,
        "drop_webhook_rate": scenario.webhook_drop_rate,
    })
}

pub async fn run(scenario: &Scenario, seed: u64) -> Report {
    println!(
        "scenario {} (seed {seed}): {} top-ups, {} kills, {} replica(s) on {}, provider failures {:.0}%, webhooks dropped {:.0}%, SMTP outage {}",
        scenario.name,
        scenario.topups,
        scenario.kills,
        scenario.replicas,
        scenario.backend.name(),
        scenario.provider_failure_rate * 100.0,
        scenario.webhook_drop_rate * 100.0,
        if scenario.smtp_outage { "yes" } else { "no" },
    );
    let started = Instant::now();
    let mut setup_rng = rng_for(seed, &format!("{}/setup", scenario.name));
    let mut kill_rng = rng_for(seed, &format!("{}/kills", scenario.name));
    let mut answer_rng = rng_for(seed, &format!("{}/answers", scenario.name));
    let mut reverse_rng = rng_for(seed, &format!("{}/reversals", scenario.name));
    let dir = tempfile::Builder::new()
        .prefix(&format!("topupd-faults-{}-", scenario.name))
        .tempdir()
        .expect("temporary directory")
        .keep();
    let database = Database::create(scenario.backend, &dir).await;
    let admin = admin_key(&database).await;
    let mut smtp = SmtpSink::reserve();
    if !scenario.smtp_outage {
        smtp.start().await;
    }
    let mut replicas: Vec<Replica> = (0..scenario.replicas)
        .map(|i| Replica::new(&dir, i))
        .collect();
    // Webhooks go to the first replica; while it is down the stub retries them, and the
    // reconciler of every replica polls what they would have told.
    let webhooks = format!("{}/v1/webhooks/payments", replicas[0].url());
    let kill_drill = scenario.kills > 0;
    let stub = Stub::start(
        &dir,
        &webhooks,
        if kill_drill {
            KILL_DRILL_LATENCY_MS
        } else {
            LATENCY_MS
        },
    )
    .await;
    let settings = ReplicaSettings {
        database_url: &database.url,
        stub_url: &stub.url,
        smtp_port: smtp.port,
        charge_concurrency: if kill_drill { 2 } else { 8 },
    };
    for replica in &mut replicas {
        replica.start(&settings).await;
    }

    let api = Api::new(admin);
    let host = WebhookHost::start().await;
    host.trust(
        &api.add_webhook_endpoint(&replicas[0].url(), &host.url)
            .await,
    );
    let customers = open_accounts(&api, &replicas[0].url(), scenario.topups, &mut setup_rng).await;
    if scenario.provider_failure_rate > 0.0 || scenario.webhook_drop_rate > 0.0 {
        stub.set_faults(&provider_faults(scenario, setup_rng.random()))
            .await;
    }
    let db = database.connect().await;
    let mut authenticator = Authenticator::new();
    let mut reverser = Reverser::default();
    let mut kills_mid_topup = 0;
    let rounds = scenario.kills.max(1);
    let per_round = scenario.topups.div_ceil(rounds);
    for (round, batch) in customers.chunks(per_round.max(1)).enumerate() {
        for customer in batch {
            let entry = &replicas[kill_rng.random_range(0..replicas.len())];
            api.enable_auto_topup(&entry.url(), customer).await;
        }
        authenticator
            .answer_waiting(&api, &replicas[0].url(), &stub, &mut answer_rng)
            .await;
        reverser.act(&stub, &mut reverse_rng).await;
        if round >= scenario.kills {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(kill_rng.random_range(300..2_000))).await;
        let victim = &mut replicas[kill_rng.random_range(0..scenario.replicas)];
        if Progress::read(&db).await.open > 0 {
            kills_mid_topup += 1;
        }
        victim.kill().await;
        tokio::time::sleep(Duration::from_millis(kill_rng.random_range(0..300))).await;
        victim.start(&settings).await;
    }

    // Come to rest: every account attempted, every attempt settled (customers answering
    // their 3-D Secure pages), every notice sent and every webhook delivered. An SMTP outage ends only once the money
    // is at rest, so every notice of the drill waited for it.
    let limit = REST_LIMIT + Duration::from_millis(50 * scenario.topups as u64);
    let topups = i64::try_from(scenario.topups).expect("a small count");
    // Money is at rest once every attempt is settled and everything taken back at the
    // provider is applied.
    let mut settled = async || {
        authenticator
            .answer_waiting(&api, &replicas[0].url(), &stub, &mut answer_rng)
            .await;
        reverser.act(&stub, &mut reverse_rng).await;
        let progress = Progress::read(&db).await;
        progress.attempted == topups
            && progress.open == 0
            && Verdict::reversals_applied(&db, &stub.charges().await).await
    };
    wait_until(limit, Duration::from_millis(250), async || settled().await).await;
    if scenario.smtp_outage {
        smtp.start().await;
    }
    wait_until(limit, Duration::from_millis(250), async || {
        let progress = Progress::read(&db).await;
        settled().await && progress.unsent == 0 && progress.undelivered == 0
    })
    .await;
    // A send under way when the outbox looked empty lands in the next moment.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut unclean_stops = 0;
    for replica in &mut replicas {
        if !replica.stop().await {
            unclean_stops += 1;
            println!(
                "  ! replica logging to {} did not stop cleanly",
                replica.log().display()
            );
        }
    }
    let charges = stub.charges().await;
    let payments = stub.payment_intents().await.len();
    let resends_allowed = if scenario.smtp_outage {
        0
    } else {
        scenario.kills
    };
    let verdict = Verdict::reach(
        &db,
        &charges,
        verify(&database).await,
        &smtp.received(),
        resends_allowed,
        &host.arrivals(),
    )
    .await;
    db.close().await;
    stub.stop().await;
    database.remove().await;
    let passed = verdict.passed() && unclean_stops == 0;
    let logs = if passed {
        std::fs::remove_dir_all(&dir).expect("remove the drill's folder");
        None
    } else {
        Some(dir)
    };
    Report {
        scenario: scenario.name.clone(),
        seed,
        topups: scenario.topups,
        kills: scenario.kills,
        kills_mid_topup,
        unclean_stops,
        payments,
        authenticated: (authenticator.completed, authenticator.failed),
        reversed: (
            reverser.refunded,
            reverser.disputes_won,
            reverser.disputes_lost,
        ),
        verdict,
        duration: started.elapsed(),
        logs,
    }
}

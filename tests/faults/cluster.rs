//! The processes of a drill and what they share: the database, the stub provider (its own
//! process, so killing topupd never touches the provider's memory) and the `topupd serve`
//! replicas, each on a fixed port so a restarted one is found where the last one was.

use std::{
    fs::File,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;
use tokio::process::{Child, Command};
use topupd::{config::Config, db::Db, payments::stub::world::Charge};

use crate::{
    helpers::{unused_port, wait_until},
    postgres_url::with_database,
};

const TOPUPD: &str = env!("CARGO_BIN_EXE_topupd");
/// Signs the stub's webhooks; shared with the replicas.
const WEBHOOK_SECRET: &str = "whsec_fault_harness";
/// How long a process may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    pub fn postgres_available() -> bool {
        std::env::var("TOPUPD_TEST_POSTGRES_URL").is_ok()
    }
}

/// A fresh database for one drill; a PostgreSQL one is dropped by [`Database::remove`].
pub struct Database {
    pub url: String,
    postgres_name: Option<String>,
}

impl Database {
    pub async fn create(backend: Backend, dir: &Path) -> Self {
        match backend {
            Backend::Sqlite => Database {
                url: format!("sqlite://{}", dir.join("topupd.db").display()),
                postgres_name: None,
            },
            Backend::Postgres => {
                let name = format!("topupd_faults_{}", uuid::Uuid::now_v7().simple());
                admin_execute(&format!("CREATE DATABASE \"{name}\"")).await;
                Database {
                    url: with_database(&postgres_admin_url(), &name),
                    postgres_name: Some(name),
                }
            }
        }
    }

    /// A pool of topupd's own kind, to read what the replicas wrote.
    pub async fn connect(&self) -> Db {
        let mut config = Config::defaults();
        config.database.url = self.url.clone().into();
        Db::connect(&config.database)
            .await
            .expect("connect to the drill's database")
    }

    pub async fn remove(self) {
        if let Some(name) = &self.postgres_name {
            admin_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        }
    }
}

fn postgres_admin_url() -> String {
    std::env::var("TOPUPD_TEST_POSTGRES_URL").expect("TOPUPD_TEST_POSTGRES_URL is set")
}

async fn admin_execute(sql: &str) {
    let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
        .await
        .expect("connect to TOPUPD_TEST_POSTGRES_URL");
    sqlx::raw_sql(sql)
        .execute(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The admin key of a fresh database, made as an operator would: migrate, then create.
pub async fn admin_key(database: &Database) -> String {
    let migrated = Command::new(TOPUPD)
        .arg("migrate")
        .env("TOPUPD_DATABASE__URL", &database.url)
        .output()
        .await
        .expect("run topupd migrate");
    assert!(
        migrated.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let output = Command::new(TOPUPD)
        .args([
            "keys",
            "create",
            "--role",
            "admin",
            "--label",
            "fault harness",
        ])
        .env("TOPUPD_DATABASE__URL", &database.url)
        .output()
        .await
        .expect("run topupd keys create");
    assert!(
        output.status.success(),
        "keys create: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .expect("the key is text")
        .trim()
        .to_owned()
}

/// `topupd verify` against the database: whether it exits 0, and what it printed.
pub async fn verify(database: &Database) -> (bool, String) {
    let output = Command::new(TOPUPD)
        .arg("verify")
        .env("TOPUPD_DATABASE__URL", &database.url)
        .output()
        .await
        .expect("run topupd verify");
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success(), printed)
}

/// Starts `command` with its output appended to `log`, killed if dropped.
fn spawn(mut command: Command, log: &Path) -> Child {
    let file = File::options()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the process log");
    command
        .stdout(file.try_clone().expect("duplicate the log handle"))
        .stderr(file)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start topupd")
}

/// The last lines of a process log, to show why it stopped.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Waits until `url` answers 2xx, failing if `child` exits first.
async fn wait_ready(child: &mut Child, url: &str, log: &Path) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("HTTP client");
    let ready = wait_until(START_TIMEOUT, Duration::from_millis(25), async || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{url} exited with {status} before answering:\n{}",
                tail(log)
            );
        }
        matches!(client.get(url).send().await, Ok(r) if r.status().is_success())
    })
    .await;
    assert!(ready, "{url} did not answer in time:\n{}", tail(log));
}

/// The stub provider, in its own process.
pub struct Stub {
    pub url: String,
    process: Child,
    client: reqwest::Client,
}

impl Stub {
    /// Starts the stub with webhooks to `webhook_url`, injecting no faults yet.
    pub async fn start(dir: &Path, webhook_url: &str, latency_ms: u64) -> Self {
        let port = unused_port();
        let url = format!("http://127.0.0.1:{port}");
        let log = dir.join("stub.log");
        let mut command = Command::new(TOPUPD);
        command
            .args(["stub-provider", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--webhook-url",
                webhook_url,
                "--webhook-secret",
                WEBHOOK_SECRET,
            ])
            .args(["--faults", &format!("{{\"latency_ms\":{latency_ms}}}")]);
        let mut process = spawn(command, &log);
        wait_ready(&mut process, &format!("{url}/_stub/faults"), &log).await;
        Stub {
            url,
            process,
            client: reqwest::Client::new(),
        }
    }

    pub async fn set_faults(&self, faults: &Value) {
        let response = self
            .client
            .post(format!("{}/_stub/faults", self.url))
            .json(faults)
            .send()
            .await
            .expect("the stub answers");
        assert!(response.status().is_success(), "faults {faults} refused");
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .expect("the stub answers")
            .json()
            .await
            .expect("the stub answers JSON")
    }

    /// A request to the stub's Stripe API, as the merchant's dashboard makes it, under
    /// `idempotency_key`: its status, or none when no answer came.
    pub async fn stripe(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: &str,
    ) -> Option<StatusCode> {
        self.client
            .post(format!("{}{path}", self.url))
            .bearer_auth("sk_test_fault_harness")
            .header("Idempotency-Key", idempotency_key)
            .form(form)
            .send()
            .await
            .ok()
            .map(|r| r.status())
    }

    /// Every payment the stub captured: its own ledger, the oracle of the checks.
    pub async fn charges(&self) -> Vec<Charge> {
        self.get("/_stub/charges").await
    }

    /// Every payment the stub created, whatever became of it.
    pub async fn payment_intents(&self) -> Vec<Value> {
        let list: Value = self.get("/_stub/payment_intents").await;
        list["data"].as_array().cloned().unwrap_or_default()
    }

    /// The customer's answer on the 3-D Secure page.
    pub async fn authenticate(&self, payment_intent: &str, complete: bool) {
        let choice = if complete { "complete" } else { "fail" };
        self.client
            .post(format!(
                "{}/_stub/authenticate/{payment_intent}/{choice}",
                self.url
            ))
            .send()
            .await
            .expect("the stub answers");
    }

    pub async fn stop(mut self) {
        self.process.start_kill().expect("stop the stub");
        self.process.wait().await.expect("the stub exits");
    }
}

/// How the replicas are configured: fast schedules so a drill takes minutes, not days.
pub struct ReplicaSettings<'a> {
    pub database_url: &'a str,
    pub stub_url: &'a str,
    pub smtp_port: u16,
    pub charge_concurrency: u32,
}

impl ReplicaSettings<'_> {
    fn environment(&self) -> Vec<(&'static str, String)> {
        let fixed = [
            ("TOPUPD_OPS__LISTEN", ""),
            ("TOPUPD_PAYMENTS__PROVIDER", "stripe"),
            ("TOPUPD_PAYMENTS__SECRET_KEY", "sk_test_fault_harness"),
            // Under the stub's 1.5 s hangs: a hang is a timeout, an unknown outcome.
            ("TOPUPD_PAYMENTS__REQUEST_TIMEOUT_SECS", "1"),
            ("TOPUPD_PAYMENTS__RETRY_BASE_MS", "100"),
            ("TOPUPD_PAYMENTS__RETRY_MAX_MS", "500"),
            // The drills measure money, not pace: the budget is tested apart.
            ("TOPUPD_PAYMENTS__MAX_REQUESTS_PER_SEC", "10000"),
            (
                "TOPUPD_PAYMENTS__MAX_REQUESTS_PER_SEC_PER_ENDPOINT",
                "10000",
            ),
            // Without the budget, the stub's webhooks come all at once, not tens a second.
            ("TOPUPD_HTTP__MAX_REQUESTS_IN_FLIGHT", "8192"),
            ("TOPUPD_AUTO_TOPUP__SCAN_SCHEDULE", "*/1 * * * * *"),
            ("TOPUPD_AUTO_TOPUP__RECONCILE_INTERVAL_SECS", "1"),
            ("TOPUPD_PAYMENTS__EVENT_SWEEP_INTERVAL_SECS", "2"),
            ("TOPUPD_AUTO_TOPUP__RECONCILE_AFTER_SECS", "1"),
            ("TOPUPD_AUTO_TOPUP__RECHECK_AFTER_SECS", "1"),
            ("TOPUPD_EMAIL__TRANSPORT", "smtp"),
            ("TOPUPD_EMAIL__POLL_INTERVAL_MS", "200"),
            // Short, so a notice claimed by a killed sender is soon sent by another; it
            // must exceed four SMTP timeouts.
            ("TOPUPD_EMAIL__LEASE_SECS", "15"),
            ("TOPUPD_EMAIL__RETRY_BASE_SECS", "1"),
            ("TOPUPD_EMAIL__RETRY_MAX_SECS", "2"),
            ("TOPUPD_EMAIL__MAX_ATTEMPTS", "100000"),
            ("TOPUPD_EMAIL__SMTP__TIMEOUT_SECS", "3"),
            // A delivery claimed by a killed sender is taken up again 17 s later.
            ("TOPUPD_WEBHOOKS__TIMEOUT_SECS", "2"),
            ("TOPUPD_WEBHOOKS__POLL_INTERVAL_MS", "200"),
            ("TOPUPD_LOG__FORMAT", "human"),
        ];
        let mut env: Vec<(&'static str, String)> =
            fixed.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        env.extend([
            ("TOPUPD_DATABASE__URL", self.database_url.to_owned()),
            ("TOPUPD_PAYMENTS__BASE_URL", self.stub_url.to_owned()),
            (
                "TOPUPD_PAYMENTS__WEBHOOK_SECRETS",
                format!("[\"{WEBHOOK_SECRET}\"]"),
            ),
            ("TOPUPD_EMAIL__SMTP__PORT", self.smtp_port.to_string()),
            (
                "TOPUPD_AUTO_TOPUP__CHARGE_CONCURRENCY",
                self.charge_concurrency.to_string(),
            ),
        ]);
        env
    }
}

/// One `topupd serve` replica, on a port it keeps across restarts.
pub struct Replica {
    pub port: u16,
    log: PathBuf,
    process: Option<Child>,
}

impl Replica {
    /// A replica not started yet, with its port reserved.
    pub fn new(dir: &Path, index: usize) -> Self {
        Replica {
            port: unused_port(),
            log: dir.join(format!("replica-{index}.log")),
            process: None,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn start(&mut self, settings: &ReplicaSettings<'_>) {
        assert!(self.process.is_none(), "the replica is running");
        let mut command = Command::new(TOPUPD);
        command
            .arg("serve")
            .envs(settings.environment())
            .env("TOPUPD_HTTP__LISTEN", format!("127.0.0.1:{}", self.port));
        let mut process = spawn(command, &self.log);
        wait_ready(&mut process, &format!("{}/readyz", self.url()), &self.log).await;
        self.process = Some(process);
    }

    /// `kill -9`: no shutdown of any kind.
    pub async fn kill(&mut self) {
        let mut process = self.process.take().expect("the replica is running");
        process.start_kill().expect("SIGKILL the replica");
        process.wait().await.expect("the killed replica is reaped");
    }

    /// SIGTERM, as an operator stops it; it must drain and exit 0.
    pub async fn stop(&mut self) -> bool {
        let Some(mut process) = self.process.take() else {
            return true;
        };
        let pid = process.id().expect("a running process has an id");
        let signalled = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(signalled.success(), "signal the replica");
        match tokio::time::timeout(Duration::from_secs(30), process.wait()).await {
            Ok(status) => status.expect("the replica is reaped").success(),
            Err(_) => false,
        }
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

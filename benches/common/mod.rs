//! What the benchmarks share: the database under test (a SQLite file, or a fresh
//! PostgreSQL database), a configuration file for it, bulk seeding with the real schema,
//! the `topupd` processes they start, and repeated measurements reported as a table.
// Each bench target compiles this module and uses the part it needs.
#![allow(dead_code)]

pub mod durable;
#[path = "../../tests/api/postgres_url.rs"]
mod postgres_url;
pub mod process;
pub mod report;
pub mod seed;

use std::path::{Path, PathBuf};

use sqlx::Connection;
use tempfile::TempDir;
use topupd::{config::Config, db::Db};

use postgres_url::with_database;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The PostgreSQL server to create bench databases on, if one is given.
fn postgres_admin_url() -> Option<String> {
    std::env::var("TOPUPD_BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("TOPUPD_TEST_POSTGRES_URL"))
        .ok()
}

/// SQLite always; PostgreSQL as well when a server is given. `TOPUPD_BENCH_ONLY=sqlite`
/// or `=postgres` runs one of them.
pub fn backends() -> Vec<Backend> {
    let only = std::env::var("TOPUPD_BENCH_ONLY").ok();
    let wanted = |backend: Backend| only.as_deref().is_none_or(|name| name == backend.short());
    let mut backends = Vec::new();
    if wanted(Backend::Sqlite) {
        backends.push(Backend::Sqlite);
    }
    if postgres_admin_url().is_none() {
        println!(
            "PostgreSQL skipped: set TOPUPD_BENCH_POSTGRES_URL (or TOPUPD_TEST_POSTGRES_URL)\n"
        );
    } else if wanted(Backend::Postgres) {
        backends.push(Backend::Postgres);
    }
    backends
}

/// One database for one scenario, with its configuration file, removed when done.
pub struct BenchDb {
    pub backend: Backend,
    pub url: String,
    pub dir: TempDir,
    postgres_name: Option<String>,
}

impl BenchDb {
    /// A fresh, empty database; `name` tells bench databases apart on a shared server.
    pub async fn create(backend: Backend, name: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the bench");
        match backend {
            Backend::Sqlite => Self {
                backend,
                url: format!("sqlite://{}", dir.path().join("topupd.db").display()),
                dir,
                postgres_name: None,
            },
            Backend::Postgres => {
                let name = format!("bench_{name}");
                let mut admin = postgres_admin().await;
                // A bench interrupted earlier may have left its database behind.
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .expect("drop a leftover bench database");
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut admin)
                    .await
                    .expect("create the bench database");
                let admin_url = postgres_admin_url().expect("checked by backends()");
                Self {
                    backend,
                    url: with_database(&admin_url, &name),
                    dir,
                    postgres_name: Some(name),
                }
            }
        }
    }

    /// Connects with the service's own pool settings and applies its migrations.
    pub async fn connect(&self) -> Db {
        let config = self.config(&[]);
        let db = Db::connect(&config.database)
            .await
            .expect("connect to the bench database");
        db.migrate().await.expect("apply migrations");
        db
    }

    /// Writes the configuration file every process of the scenario reads: the database,
    /// no scheduled jobs, quiet logs and a provider budget above what the stub answers
    /// (so topupd's own ceiling is measured), plus `settings` as dotted TOML keys, each in
    /// place of a default of the same key.
    pub fn config_file(&self, settings: &[String]) -> PathBuf {
        let database = format!("database.url = \"{}\"", self.url);
        let defaults = [
            database.as_str(),
            "ops.listen = \"\"",
            "auto_topup.scan_schedule = \"\"",
            "email.transport = \"log\"",
            "log.filter = \"warn\"",
            "payments.max_requests_per_sec = 10000",
            "payments.max_requests_per_sec_per_endpoint = 10000",
        ];
        let key = |line: &str| line.split('=').next().unwrap_or_default().trim().to_owned();
        let overridden: Vec<String> = settings.iter().map(|line| key(line)).collect();
        let mut text = String::new();
        for line in defaults
            .into_iter()
            .filter(|line| !overridden.contains(&key(line)))
            .chain(settings.iter().map(String::as_str))
        {
            text.push_str(line);
            text.push('\n');
        }
        let path = self.dir.path().join("topupd.toml");
        std::fs::write(&path, text).expect("write the bench configuration");
        path
    }

    /// The configuration `topupd --config` would load from [`Self::config_file`].
    pub fn config(&self, settings: &[String]) -> Config {
        load_config(&self.config_file(settings))
    }

    pub async fn drop(self) {
        if let Some(name) = &self.postgres_name {
            let mut admin = postgres_admin().await;
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .expect("drop the bench database");
        }
    }
}

pub fn load_config(path: &Path) -> Config {
    Config::load(Some(path)).expect("the bench configuration is valid")
}

/// The secret the stub process signs its webhooks with, and the service checks them by.
pub const WEBHOOK_SECRET: &str = "whsec_bench";

/// Settings that send charges to a stub provider running as its own process.
pub fn external_provider(base_url: &str) -> Vec<String> {
    vec![
        "payments.provider = \"stripe\"".to_owned(),
        format!("payments.base_url = \"{base_url}\""),
        "payments.secret_key = \"sk_test_bench\"".to_owned(),
        format!("payments.webhook_secrets = [\"{WEBHOOK_SECRET}\"]"),
    ]
}

async fn postgres_admin() -> sqlx::PgConnection {
    let url = postgres_admin_url().expect("checked by backends()");
    sqlx::PgConnection::connect(&url)
        .await
        .expect("connect to the PostgreSQL server for benches")
}

/// Now, in the service's clock unit (Unix milliseconds).
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

//! Starting the app against a fresh database, and talking to it over HTTP.

use std::{str::FromStr, sync::Arc};

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sqlx::Connection;
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use topupd::{
    app::{App, Roles},
    clock::{Clock, ManualClock},
    config::{Config, EmailTransport},
    db::{Db, audit::Actor},
    domain::api_key::Role,
    jobs::notice_sender::{NoticeSender, SendReport},
    notices::{mailer::Mailer, templates::Letterhead},
    payments::stub::Stub,
    topups::Topups,
};

use crate::postgres_url::with_database;

/// 2026-01-01T00:00:00Z: tests start from a fixed instant and move time explicitly.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite always; PostgreSQL as well when the suite is given a server.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    if std::env::var("TOPUPD_TEST_POSTGRES_URL").is_ok() {
        backends.push(Backend::Postgres);
    }
    backends
}

/// Runs `test` against a fresh app on every backend in turn.
pub async fn each_backend(test: impl AsyncFn(&TestApp)) {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        test(&app).await;
        app.stop().await;
    }
}

/// The configuration every test app starts from: the defaults, with email going to an
/// SMTP server on `smtp_port` and a sender that only runs when a test asks it to.
pub fn test_config(smtp_port: u16) -> Config {
    let mut config = Config::defaults();
    config.email.transport = EmailTransport::Smtp;
    config.email.smtp.host = "127.0.0.1".into();
    config.email.smtp.port = smtp_port;
    // Generous: a loaded CI machine must not turn an accepted message into a retry.
    config.email.smtp.timeout_secs = 30;
    config.email.lease_secs = 600;
    config.email.poll_interval_ms = 3_600_000;
    // Scans and reconciles run when a test asks, not on the wall clock.
    config.auto_topup.scan_schedule = String::new();
    config.auto_topup.reconcile_interval_secs = 3_600;
    // Tests charge thousands of accounts through the stub; the budget is tested apart.
    config.payments.max_requests_per_sec = 10_000;
    config.payments.max_requests_per_sec_per_endpoint = 10_000;
    // With that budget and a stub that answers at once, a scan of a thousand accounts
    // has its thousand webhooks arrive together; within a real budget they come tens a
    // second. The limit itself is tested apart.
    config.http.max_requests_in_flight = 8_192;
    config
}

/// A fresh, empty database of the given backend, and its URL.
pub struct TestDatabase {
    pub url: String,
    _dir: TempDir,
    postgres_name: Option<String>,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("topupd.db").display()),
                _dir: dir,
                postgres_name: None,
            },
            Backend::Postgres => {
                let name = format!("topupd_test_{}", uuid_suffix());
                let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
                    .await
                    .expect("connect to TOPUPD_TEST_POSTGRES_URL");
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut admin)
                    .await
                    .expect("create test database");
                Self {
                    url: with_database(&postgres_admin_url(), &name),
                    _dir: dir,
                    postgres_name: Some(name),
                }
            }
        }
    }

    pub async fn drop_database(&self) {
        if let Some(name) = &self.postgres_name {
            let mut admin = sqlx::PgConnection::connect(&postgres_admin_url())
                .await
                .expect("connect to TOPUPD_TEST_POSTGRES_URL");
            sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .expect("drop test database");
        }
    }
}

fn postgres_admin_url() -> String {
    std::env::var("TOPUPD_TEST_POSTGRES_URL").expect("TOPUPD_TEST_POSTGRES_URL is set")
}

fn uuid_suffix() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// The running app.
pub struct TestApp {
    pub backend: Backend,
    pub roles: Roles,
    pub base_url: String,
    /// The operations listener: metrics and probes.
    pub ops_url: String,
    pub client: reqwest::Client,
    pub db: Db,
    /// The in-process stub provider the app charges through.
    pub stub: Stub,
    /// The app's charging engine, to run scans and reconciles on demand.
    pub topups: Topups,
    /// The secret the stub signs webhooks with.
    pub webhook_secret: String,
    pub clock: ManualClock,
    pub config: Config,
    /// Who notices come from, with the key of their links to the billing page.
    pub letterhead: Letterhead,
    /// A key with the admin role.
    pub admin: String,
    pub database: TestDatabase,
    shutdown: CancellationToken,
    server: JoinHandle<anyhow::Result<()>>,
}

/// An HTTP answer: status, headers and JSON body (`Value::Null` when empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, test_config(unused_port())).await
    }

    /// An app whose notices are sent only when a test asks ([`Self::send_notices`]).
    pub async fn spawn_with(backend: Backend, config: Config) -> Self {
        let by_hand = Roles {
            notices: false,
            ..Roles::ALL
        };
        Self::spawn_with_roles(backend, config, by_hand).await
    }

    pub async fn spawn_with_roles(backend: Backend, config: Config, roles: Roles) -> Self {
        let database = TestDatabase::create(backend).await;
        let clock = ManualClock::starting_at(EPOCH_MS);
        Self::start(backend, database, config, clock, None, roles).await
    }

    /// An app on a database made beforehand (for example at an earlier schema).
    pub async fn spawn_on(backend: Backend, database: TestDatabase, config: Config) -> Self {
        let by_hand = Roles {
            notices: false,
            ..Roles::ALL
        };
        let clock = ManualClock::starting_at(EPOCH_MS);
        Self::start(backend, database, config, clock, None, by_hand).await
    }

    /// Stops this app and starts a new one on the same database, clock and key.
    pub async fn restart(mut self) -> Self {
        self.halt().await;
        Self::start(
            self.backend,
            self.database,
            self.config,
            self.clock,
            Some(self.admin),
            self.roles,
        )
        .await
    }

    async fn start(
        backend: Backend,
        database: TestDatabase,
        mut config: Config,
        clock: ManualClock,
        admin: Option<String>,
        roles: Roles,
    ) -> Self {
        config.database.url = database.url.clone().into();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a random port");
        let address = listener.local_addr().expect("bound address");
        // The links in emails and the provider's way back lead to this server.
        config.http.public_url = format!("http://{address}");
        // An empty return URL (Stripe.js finishes payments on a page of the integrator's)
        // stays empty.
        if !config.payments.return_url.is_empty() {
            config.payments.return_url = format!("http://{address}/v1/payments/return");
        }
        let app = App::build(config.clone(), Arc::new(clock.clone()), address)
            .await
            .expect("app builds");
        let admin = match admin {
            Some(admin) => admin,
            None => {
                app.state
                    .db
                    .issue_api_key(
                        Role::Admin,
                        None,
                        "test admin",
                        &Actor::cli(),
                        clock.now_ms(),
                    )
                    .await
                    .expect("issue admin key")
                    .expect("admin keys need no account")
                    .token
            }
        };
        let base_url = format!("http://{address}");
        let db = app.state.db.clone();
        let stub = app
            .stub
            .clone()
            .expect("tests run against the in-process stub provider");
        let topups = app.state.topups.clone();
        let webhook_secret = app.state.webhook_secrets[0].clone();
        let letterhead = app.state.letterhead.as_ref().clone();
        let shutdown = CancellationToken::new();
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a random port");
        let ops_url = format!("http://{}", ops.local_addr().expect("bound address"));
        let server = tokio::spawn(app.serve(
            Some(listener),
            Some(ops),
            roles,
            shutdown.clone().cancelled_owned(),
        ));
        Self {
            backend,
            roles,
            base_url,
            ops_url,
            client: reqwest::Client::new(),
            db,
            stub,
            topups,
            webhook_secret,
            clock,
            config,
            letterhead,
            admin,
            database,
            shutdown,
            server,
        }
    }

    /// Stops the server, checks it exits cleanly, and drops the database.
    pub async fn stop(mut self) {
        self.halt().await;
        self.database.drop_database().await;
    }

    async fn halt(&mut self) {
        self.shutdown.cancel();
        (&mut self.server)
            .await
            .expect("server task joins")
            .expect("server stops cleanly");
        self.db.close().await;
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        answer(request.send().await.expect("request is answered")).await
    }

    /// Sends `body` as it is, with the given content type.
    pub async fn post_raw(
        &self,
        path: &str,
        key: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Answer {
        let request = self
            .client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(key)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        answer(request.send().await.expect("request is answered")).await
    }

    pub async fn get(&self, path: &str, key: &str) -> Answer {
        self.request(Method::GET, path, Some(key), None).await
    }

    pub async fn post(&self, path: &str, key: &str, body: Value) -> Answer {
        self.request(Method::POST, path, Some(key), Some(body))
            .await
    }

    /// A GET from the stub provider's API (or its `/_stub` pages), as JSON.
    pub async fn stub_get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{path}", self.stub.base_url()))
            .send()
            .await
            .expect("answered")
            .json()
            .await
            .expect("JSON")
    }

    /// A raw POST to the stub provider's API, as any Stripe client (or Stripe.js) makes
    /// it, with an idempotency key if given.
    pub async fn stripe(
        &self,
        path: &str,
        form: &[(&str, &str)],
        key: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .post(format!("{}{path}", self.stub.base_url()))
            .bearer_auth("sk_test_stub")
            .form(form);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.expect("answered");
        (response.status(), response.json().await.expect("JSON"))
    }

    /// The customer turns auto top-up on: threshold 1,000, target 5,000.
    pub async fn enable_auto_topup(&self, account: &str, key: &str) {
        let enabled = self
            .request(
                Method::PUT,
                &format!("/v1/accounts/{account}/auto-topup"),
                Some(key),
                Some(json!({ "enabled": true, "threshold": 1000, "target": 5000 })),
            )
            .await;
        assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
    }

    pub async fn funded_account(&self, credits: &str) -> String {
        self.account_with_email("ada@example.com", credits).await
    }

    pub async fn account_with_email(&self, email: &str, credits: &str) -> String {
        let created = self
            .post(
                "/v1/admin/accounts",
                &self.admin,
                json!({ "email": email, "name": "Ada" }),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let id = created.body["id"].as_str().expect("account id").to_owned();
        if dec(credits) != Decimal::ZERO {
            let funded = self
                .post(
                    &format!("/v1/admin/accounts/{id}/adjustments"),
                    &self.admin,
                    json!({ "credits": number(credits), "reason": "test funding" }),
                )
                .await;
            assert_eq!(funded.status, StatusCode::CREATED, "{}", funded.body);
        }
        id
    }

    pub async fn key(&self, role: &str, account_id: Option<&str>) -> String {
        let issued = self
            .post(
                "/v1/admin/api-keys",
                &self.admin,
                json!({ "role": role, "account_id": account_id }),
            )
            .await;
        assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
        issued.body["token"].as_str().expect("token").to_owned()
    }

    pub async fn balance(&self, account_id: &str) -> Decimal {
        let account = self
            .get(&format!("/v1/accounts/{account_id}"), &self.admin)
            .await;
        assert_eq!(account.status, StatusCode::OK, "{}", account.body);
        credits(&account.body["balance"])
    }

    /// Debits `seconds` of dubbing (10 credits per started minute) under `request_id`.
    pub async fn debit(
        &self,
        service_key: &str,
        account_id: &str,
        request_id: &str,
        seconds: u32,
    ) -> Answer {
        self.post(
            "/v1/usage",
            service_key,
            usage_body(account_id, request_id, seconds),
        )
        .await
    }

    /// Everything an invalid request must leave untouched: the account, its ledger and
    /// usage, and the audit log.
    pub async fn snapshot(&self, account_id: &str) -> Value {
        let mut parts = Vec::new();
        for path in [
            format!("/v1/accounts/{account_id}"),
            format!("/v1/accounts/{account_id}/ledger?limit=200"),
            format!("/v1/accounts/{account_id}/usage?limit=200"),
            "/v1/admin/audit?limit=200".to_owned(),
        ] {
            parts.push(self.get(&path, &self.admin).await.body);
        }
        Value::Array(parts)
    }

    /// A notice sender as the app runs one.
    pub fn sender(&self) -> NoticeSender {
        let mailer = Mailer::from_config(&self.config.email).expect("mailer");
        NoticeSender::new(
            self.db.clone(),
            Arc::new(mailer),
            Arc::new(self.clock.clone()),
            Arc::new(self.config.email.clone()),
            self.letterhead.clone(),
        )
    }

    /// One round of the notice sender.
    pub async fn send_notices(&self) -> SendReport {
        self.sender()
            .run_once(&CancellationToken::new())
            .await
            .expect("sender round")
    }

    /// Runs the `topupd` binary against this app's database.
    pub async fn cli(&self, args: &[&str]) -> std::process::Output {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_topupd"))
            .args(args)
            .env("TOPUPD_DATABASE__URL", &self.database.url)
            .output()
            .await
            .expect("run topupd")
    }
}

/// The Python with `tests/sdk/requirements.txt` installed (the official Stripe SDK, the
/// reference Standard Webhooks library), named by `TOPUPD_TEST_STRIPE_PYTHON`. CI sets it;
/// without it, outside CI, the tests that need it say so and do nothing.
pub fn sdk_python() -> Option<std::ffi::OsString> {
    let python = std::env::var_os("TOPUPD_TEST_STRIPE_PYTHON");
    if python.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must set TOPUPD_TEST_STRIPE_PYTHON to a Python with tests/sdk/requirements.txt"
        );
        eprintln!("not run: TOPUPD_TEST_STRIPE_PYTHON is not set");
    }
    python
}

/// A loopback port nothing listens on (yet).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub fn usage_body(account_id: &str, request_id: &str, seconds: u32) -> Value {
    json!({
        "account_id": account_id,
        "request_id": request_id,
        "usage": { "service": "dubbing", "duration_seconds": seconds },
    })
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("response body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{status}: body is not JSON: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Answer {
        status,
        headers,
        body,
    }
}

pub fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal literal")
}

/// A JSON number with exactly these digits.
pub fn number(s: &str) -> Value {
    Value::Number(serde_json::Number::from_str(s).expect("number literal"))
}

/// A credit amount from a JSON number, exactly.
pub fn credits(value: &Value) -> Decimal {
    assert!(value.is_number(), "{value} is not a JSON number");
    dec(&value.to_string())
}

/// Runs SQL on the app's database behind the app's back, with `id` as `$1`.
pub async fn tamper(app: &TestApp, sql: &str, id: &str) {
    use topupd::db::Db;
    match &app.db {
        Db::Sqlite(pool) => sqlx::query(sql).bind(id).execute(pool).await.map(drop),
        Db::Postgres(pool) => sqlx::query(sql).bind(id).execute(pool).await.map(drop),
    }
    .expect("tamper");
}

impl TestApp {
    /// The text of this process's `/metrics` (other tests share them, so counters only
    /// grow).
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.ops_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// A counter of this process's `/metrics`, which must be there.
    pub async fn counter(&self, name: &str) -> f64 {
        let metrics = self.metrics().await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    }
}

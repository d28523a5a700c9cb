//! What operators see: metrics, roles and readiness, of a real `topupd serve` process
//! (its own process, so its metrics count only what the test did).

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStderr, Command},
};

use crate::helpers::{Backend, TestDatabase, backends};

/// A `topupd serve` process with its own database.
pub struct Server {
    process: Child,
    log: Lines<BufReader<ChildStderr>>,
    /// The log lines read so far.
    lines: Vec<String>,
    api: Option<String>,
    ops: String,
    admin: String,
    database: TestDatabase,
    client: reqwest::Client,
}

impl Server {
    pub async fn start(backend: Backend, roles: &str, schedule: &str) -> Self {
        Self::start_with(backend, roles, schedule, &[]).await
    }

    /// A server with more settings in its environment.
    pub async fn start_with(
        backend: Backend,
        roles: &str,
        schedule: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let database = TestDatabase::create(backend).await;
        let migrated = Command::new(env!("CARGO_BIN_EXE_topupd"))
            .arg("migrate")
            .env("TOPUPD_DATABASE__URL", &database.url)
            .status()
            .await
            .expect("migrate");
        assert!(migrated.success());
        let key = Command::new(env!("CARGO_BIN_EXE_topupd"))
            .args(["keys", "create", "--role", "admin"])
            .env("TOPUPD_DATABASE__URL", &database.url)
            .output()
            .await
            .expect("create a key");
        let admin = String::from_utf8(key.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        let mut process = Command::new(env!("CARGO_BIN_EXE_topupd"))
            .args(["serve", "--roles", roles])
            .env("TOPUPD_DATABASE__URL", &database.url)
            .env("TOPUPD_HTTP__LISTEN", "127.0.0.1:0")
            .env("TOPUPD_OPS__LISTEN", "127.0.0.1:0")
            .env("TOPUPD_AUTO_TOPUP__SCAN_SCHEDULE", schedule)
            .env("TOPUPD_EMAIL__TRANSPORT", "log")
            .env("TOPUPD_LOG__FORMAT", "json")
            .env("RUST_LOG", "topupd=info")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start topupd serve");
        let mut log = BufReader::new(process.stderr.take().expect("stderr")).lines();
        let (mut api, mut ops) = (None, None);
        let mut lines = Vec::new();
        while ops.is_none() || (api.is_none() && roles.contains("api")) {
            let line = log
                .next_line()
                .await
                .expect("log")
                .expect("server logs before exiting");
            let event: Value = serde_json::from_str(&line).expect("JSON log line");
            lines.push(line.clone());
            let address = event["fields"]["address"]
                .as_str()
                .map(|a| format!("http://{a}"));
            match event["fields"]["message"].as_str() {
                Some("serving") => api = address,
                Some("operations listener") => ops = address,
                _ => {}
            }
        }
        Self {
            process,
            log,
            lines,
            api,
            ops: ops.expect("ops address"),
            admin,
            database,
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.client.request(
            method,
            format!("{}{path}", self.api.as_deref().expect("api role")),
        );
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("answered");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The text `/metrics` serves.
    pub async fn scrape(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.ops))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text")
    }

    /// Metric samples as `name{labels}` -> value.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let text = self.scrape().await;
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(name, value)| Some((name.to_owned(), value.parse().ok()?)))
            .collect()
    }

    /// The first line read so far that `wanted` picks, or else the next one.
    async fn wait_for_any_log(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        match events(&self.lines).into_iter().find(|e| wanted(e)) {
            Some(event) => event,
            None => self.wait_for_log(wanted).await,
        }
    }

    /// Reads the log until a line `wanted` picks (within 30 seconds), and returns it.
    async fn wait_for_log(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        let read = async {
            loop {
                let line = self
                    .log
                    .next_line()
                    .await
                    .expect("log")
                    .expect("server logs before exiting");
                self.lines.push(line.clone());
                let event: Value = serde_json::from_str(&line).expect("JSON log line");
                if wanted(&event) {
                    return event;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .unwrap_or_else(|_| panic!("no such log line in {:#?}", self.lines))
    }

    /// Stops the process and returns everything it logged.
    pub async fn stop(mut self) -> Vec<String> {
        let pid = self.process.id().expect("running").to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        while let Some(line) = self.log.next_line().await.expect("log") {
            self.lines.push(line);
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.process.wait())
            .await
            .expect("stops")
            .expect("status");
        assert!(status.success());
        drop(self.database);
        self.lines
    }
}

/// An account with `card` and auto top-up on, below its threshold.
async fn due_account(server: &Server, card: &str) -> String {
    use reqwest::Method;
    let (_, account) = server
        .call(
            Method::POST,
            "/v1/admin/accounts",
            Some(&server.admin),
            Some(json!({ "email": "ada@example.com", "name": "Ada" })),
        )
        .await;
    let id = account["id"].as_str().expect("id").to_owned();
    let (_, key) = server
        .call(
            Method::POST,
            "/v1/admin/api-keys",
            Some(&server.admin),
            Some(json!({ "role": "customer", "account_id": id })),
        )
        .await;
    let key = key["token"].as_str().expect("token").to_owned();
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/v1/accounts/{id}/payment-methods"),
            Some(&key),
            Some(json!({ "payment_method_id": card })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/v1/accounts/{id}/auto-topup"),
            Some(&key),
            Some(json!({ "enabled": true, "threshold": 1000, "target": 5000 })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    id
}

#[tokio::test]
async fn metrics_count_what_a_scripted_scan_did() {
    let backend = *backends().last().expect("a backend");
    let server = Server::start(backend, "api,scheduler,notices", "* * * * * *").await;
    let service = {
        let (_, key) = server
            .call(
                reqwest::Method::POST,
                "/v1/admin/api-keys",
                Some(&server.admin),
                Some(json!({ "role": "service" })),
            )
            .await;
        key["token"].as_str().expect("token").to_owned()
    };
    let success = due_account(&server, "pm_card_visa").await;
    due_account(&server, "pm_card_chargeCustomerFail").await;
    due_account(&server, "pm_card_authenticationRequired").await;
    let empty = {
        let (_, account) = server
            .call(
                reqwest::Method::POST,
                "/v1/admin/accounts",
                Some(&server.admin),
                Some(json!({ "email": "b@example.com", "name": "B" })),
            )
            .await;
        account["id"].as_str().expect("id").to_owned()
    };
    for request_id in ["a", "b"] {
        let body = json!({ "account_id": empty, "request_id": request_id, "usage": { "service": "voice_clone" } });
        let (status, _) = server
            .call(
                reqwest::Method::POST,
                "/v1/usage",
                Some(&service),
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    }
    let body =
        json!({ "account_id": success, "request_id": "c", "usage": { "service": "voice_clone" } });
    let (_, _) = server
        .call(
            reqwest::Method::POST,
            "/v1/usage",
            Some("not-a-key"),
            Some(body),
        )
        .await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = server.metrics().await;
        let settled: f64 = metrics
            .iter()
            .filter(|(k, _)| k.starts_with("topupd_topup_attempts_total{"))
            .map(|(_, v)| v)
            .sum();
        // The gauges are sampled every few seconds; the last pause is written with its
        // notice.
        let sampled = |name: &str| metrics.get(name) == Some(&1.0);
        if settled >= 3.0
            && sampled(r#"topupd_open_attempts{age="lt_1h"}"#)
            && sampled(r#"topupd_paused_accounts{reason="payment_failed"}"#)
            && sampled(r#"topupd_paused_accounts{reason="authentication_required"}"#)
        {
            break metrics;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the scheduled scan never settled three attempts: {metrics:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let get = |name: &str| {
        metrics
            .get(name)
            .copied()
            .unwrap_or_else(|| panic!("{name} missing from {metrics:#?}"))
    };
    assert_eq!(
        get(r#"topupd_topup_attempts_total{trigger="auto",outcome="succeeded"}"#),
        1.0
    );
    assert_eq!(
        get(r#"topupd_topup_attempts_total{trigger="auto",outcome="failed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"topupd_topup_attempts_total{trigger="auto",outcome="requires_action"}"#),
        1.0
    );
    assert_eq!(
        get(r#"topupd_auto_topup_pauses_total{reason="payment_failed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"topupd_auto_topup_pauses_total{reason="authentication_required"}"#),
        1.0
    );
    assert_eq!(
        get(r#"topupd_notices_queued_total{kind="topup_receipt"}"#),
        1.0
    );
    assert_eq!(
        get(r#"topupd_notices_queued_total{kind="payment_failed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"topupd_usage_requests_total{outcome="insufficient"}"#),
        2.0
    );
    assert_eq!(
        get(r#"topupd_auth_failures_total{reason="missing_or_malformed"}"#),
        1.0
    );
    // The two debits were sent one after the other, so each had a commit to itself.
    assert_eq!(
        get(r#"topupd_group_commit_batch_writes_count{queue="debits"}"#),
        2.0
    );
    assert_eq!(
        get(r#"topupd_group_commit_batch_writes_sum{queue="debits"}"#),
        2.0
    );
    assert_eq!(
        get(r#"topupd_group_commit_batch_writes_bucket{queue="debits",le="1"}"#),
        2.0
    );
    for queue in ["steps", "settlements"] {
        assert!(
            get(&format!(
                r#"topupd_group_commit_batch_writes_count{{queue="{queue}"}}"#
            )) >= 1.0,
            "the scan's charges went through the {queue} queue"
        );
    }
    assert!(get("topupd_scans_started_total") >= 1.0);
    assert!(get("topupd_scans_finished_total") >= 1.0);
    assert!(get("topupd_scan_duration_seconds_count") >= 1.0);
    assert_eq!(
        get(r#"topupd_http_requests_total{route="/v1/usage",method="POST",status="402"}"#),
        2.0
    );
    assert!(
        get(r#"topupd_http_request_duration_seconds_count{route="/v1/usage",method="POST"}"#)
            >= 3.0
    );
    assert_eq!(
        get(r#"topupd_open_attempts{age="lt_1h"}"#),
        1.0,
        "the 3-D Secure one waits"
    );
    assert_eq!(get(r#"topupd_open_attempts{age="ge_24h"}"#), 0.0);
    assert_eq!(
        get(r#"topupd_paused_accounts{reason="payment_failed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"topupd_paused_accounts{reason="authentication_required"}"#),
        1.0
    );
    assert_eq!(get(r#"topupd_paused_accounts{reason="disputed"}"#), 0.0);
    let notices: f64 = ["pending", "sending", "sent", "failed"]
        .iter()
        .map(|state| get(&format!(r#"topupd_notices{{state="{state}"}}"#)))
        .sum();
    assert_eq!(
        notices, 6.0,
        "a receipt and two notices of a pause, and each account's confirmation of turning auto top-up on"
    );
    assert_eq!(get(r#"topupd_webhook_events{state="dead"}"#), 0.0);
    assert!(
        get(r#"topupd_provider_requests_total{endpoint="payment_intents.create",outcome="ok"}"#)
            >= 3.0
    );
    assert!(
        get(
            r#"topupd_provider_requests_total{endpoint="payment_intents.confirm",outcome="declined"}"#
        ) >= 1.0
    );
    assert!(
        get(
            r#"topupd_provider_request_duration_seconds_count{endpoint="payment_intents.confirm",outcome="ok"}"#
        ) >= 1.0
    );
    assert_eq!(
        get(r#"topupd_provider_rate_limited_total{endpoint="payment_intents.create"}"#),
        0.0
    );
    assert_eq!(
        get(&format!(
            r#"topupd_build_info{{version="{}"}}"#,
            env!("CARGO_PKG_VERSION")
        )),
        1.0
    );
    assert!(
        metrics
            .keys()
            .any(|k| k.starts_with("topupd_db_pool_connections"))
    );

    // Nothing secret or personal reaches the logs: keys, card numbers, email addresses
    // and bodies, the database URL.
    let admin = server.admin.clone();
    let database_url = server.database.url.clone();
    let log = server.stop().await.join("\n");
    assert!(
        log.contains("authentication failed"),
        "failed authentication is logged"
    );
    assert!(
        log.contains("notice delivered to the log"),
        "notices were sent"
    );
    let admin_secret = &admin[admin.len() - 64..];
    for secret in [
        admin.as_str(),
        admin_secret,
        service.as_str(),
        "ada@example.com",
        "Hello Ada",
        "4242",
        database_url.as_str(),
    ] {
        assert!(!contains_token(&log, secret), "the log contains {secret:?}");
    }
}

/// Whether `needle` stands in `text` as a token of its own: "4242" inside a random hex id
/// or a port number is not the card's last four digits.
fn contains_token(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + needle.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[tokio::test]
async fn each_role_runs_only_its_parts() {
    for backend in backends() {
        let jobs_only = Server::start(backend, "scheduler", "").await;
        assert!(jobs_only.api.is_none(), "no API listener");
        let ready: Value = reqwest::get(format!("{}/readyz", jobs_only.ops))
            .await
            .expect("readyz")
            .json()
            .await
            .expect("JSON");
        assert_eq!(ready, json!({ "status": "ready", "roles": ["scheduler"] }));
        jobs_only.stop().await;

        let api_only = Server::start(backend, "api", "").await;
        let ready: Value =
            reqwest::get(format!("{}/readyz", api_only.api.as_deref().expect("api")))
                .await
                .expect("readyz")
                .json()
                .await
                .expect("JSON");
        assert_eq!(ready["roles"], json!(["api"]));
        let metrics = api_only.metrics().await;
        assert!(
            !metrics.keys().any(|k| k.starts_with("topupd_scans_")),
            "no scans without the scheduler role"
        );
        api_only.stop().await;
    }
}

/// The log's lines as JSON.
fn events(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| serde_json::from_str(line).expect("JSON log line"))
        .collect()
}

fn message(event: &Value) -> &str {
    event["fields"]["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn start_up_scans_attempts_and_responses_log_what_they_are_with_numbers_as_numbers() {
    for backend in backends() {
        let mut server = Server::start(backend, "api,scheduler,notices", "* * * * * *").await;
        let url = server.database.url.clone();
        let start = events(&server.lines)
            .into_iter()
            .find(|e| message(e) == "starting")
            .expect("a start-up line");
        let fields = &start["fields"];
        let (kind, location) = match backend {
            Backend::Sqlite => ("sqlite", url.trim_start_matches("sqlite://").to_owned()),
            Backend::Postgres => {
                let database = url.rsplit('/').next().expect("a database name");
                ("postgres", format!("127.0.0.1:55433/{database}"))
            }
        };
        assert_eq!(fields["database"], kind, "{start}");
        if backend == Backend::Sqlite {
            assert_eq!(fields["database_location"], location.as_str(), "{start}");
        } else {
            let named = fields["database_location"].as_str().expect("location");
            assert!(
                named.ends_with(&location[location.find('/').expect("/")..]),
                "{start}"
            );
            assert!(!start.to_string().contains("postgres@"), "{start}");
        }
        assert!(!start.to_string().contains(&url), "{start}");
        assert_eq!(fields["provider"], "stub", "{start}");
        assert!(
            fields["provider_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://"))
        );
        assert_eq!(fields["scan_schedule"], "* * * * * *", "{start}");
        assert_eq!(fields["roles"], "api,scheduler,notices", "{start}");
        assert_eq!(fields["version"], env!("CARGO_PKG_VERSION"), "{start}");

        let account = due_account(&server, "pm_card_visa").await;
        let moved = server
            .wait_for_log(|e| {
                message(e) == "top-up attempt moved"
                    && e["fields"]["account_id"] == account.as_str()
                    && e["fields"]["state"] == "succeeded"
            })
            .await;
        assert!(moved["fields"]["attempt_id"].as_str().is_some(), "{moved}");
        assert_eq!(moved["fields"]["trigger"], "auto", "{moved}");
        // The scan that charged and the stub's webhook race to settle the attempt; the
        // line names whichever did, by its scan or by its request.
        let by_scan = moved["span"]["scan_id"].as_str().map(str::to_owned);
        if by_scan.is_none() {
            assert_eq!(moved["span"]["route"], "/v1/webhooks/payments", "{moved}");
        }
        let end = server
            .wait_for_any_log(|e| {
                message(e) == "scan finished"
                    && match &by_scan {
                        Some(id) => e["span"]["scan_id"] == id.as_str(),
                        None => e["fields"]["claimed"] == 1,
                    }
            })
            .await;
        let scan_id = end["span"]["scan_id"]
            .as_str()
            .unwrap_or_else(|| panic!("the scan's end names its scan: {end}"))
            .to_owned();
        let of_scan = |e: &Value| e["span"]["scan_id"] == scan_id.as_str();
        let counts = &end["fields"];
        for (field, value) in [
            ("due", 1),
            ("claimed", 1),
            ("succeeded", 1),
            ("failed", 0),
            ("pending", 0),
        ] {
            assert_eq!(counts[field].as_u64(), Some(value), "{field}: {end}");
        }
        assert!(counts["duration_ms"].is_u64(), "{end}");
        assert_eq!(counts["cut_short"], false, "{end}");

        let log = events(&server.stop().await);
        assert!(
            log.iter()
                .any(|e| message(e) == "scan started" && of_scan(e)),
            "the scan's start is logged with its id"
        );
        let scan_lines = log.iter().filter(|e| of_scan(e)).count();
        let attempt_line = usize::from(by_scan.is_some());
        assert!(scan_lines >= 2 + attempt_line, "start, attempt, end");
        let answered: Vec<&Value> = log
            .iter()
            .filter(|e| message(e) == "request answered")
            .collect();
        assert!(answered.len() >= 4, "the account's set-up was answered");
        for line in answered {
            assert!(line["fields"]["latency_ms"].is_f64(), "{line}");
            assert!(line["fields"]["status"].is_u64(), "{line}");
            assert!(line["span"]["route"].is_string(), "{line}");
        }
    }
}

#[tokio::test]
async fn a_scan_cut_short_by_shutdown_says_so() {
    let backend = backends()[0];
    // One scan, once the accounts are due.
    let at = chrono::Utc::now() + chrono::Duration::seconds(12);
    let schedule = at.format("%S %M %H * * *").to_string();
    let mut server = Server::start_with(
        backend,
        "api,scheduler,notices",
        &schedule,
        &[("TOPUPD_AUTO_TOPUP__CHARGE_CONCURRENCY", "1")],
    )
    .await;
    let stub = events(&server.lines)
        .into_iter()
        .find(|e| message(e) == "stub payment provider started")
        .and_then(|e| e["fields"]["address"].as_str().map(str::to_owned))
        .expect("the stub's address");
    for _ in 0..4 {
        due_account(&server, "pm_card_visa").await;
    }
    // Each charge takes a while, so shutdown finds the scan at its first accounts.
    let slow = server
        .client
        .post(format!("{stub}/_stub/faults"))
        .json(&json!({ "latency_ms": 400 }))
        .send()
        .await
        .expect("faults set");
    assert!(slow.status().is_success());
    assert!(
        chrono::Utc::now() < at,
        "the accounts were not ready before the scan"
    );
    // Stopped while the scan charges its first accounts, one at a time.
    server
        .wait_for_log(|e| message(e) == "top-up attempt moved")
        .await;

    let log = events(&server.stop().await);
    let end = log
        .iter()
        .find(|e| message(e) == "scan cut short")
        .unwrap_or_else(|| panic!("no end line: {log:#?}"));
    assert_eq!(end["fields"]["cut_short"], true, "{end}");
    let due = end["fields"]["due"].as_u64().expect("due is a number");
    assert!((1..4).contains(&due), "{end}");
    assert_eq!(end["fields"]["claimed"].as_u64(), Some(due), "{end}");
    assert!(
        log.iter().any(|e| e["level"] == "WARN"
            && message(e).starts_with("scan cut short by shutdown")
            && e["span"]["scan_id"] == end["span"]["scan_id"]),
        "a warning says the scan was cut short"
    );
    assert!(
        !log.iter().any(|e| message(e) == "scan finished"),
        "the scan did not finish"
    );
}

#[tokio::test]
async fn requests_past_the_limit_in_flight_are_refused_at_once_and_counted() {
    let backend = *backends().last().expect("a backend");
    let server = Server::start_with(
        backend,
        "api",
        "",
        &[("TOPUPD_HTTP__MAX_REQUESTS_IN_FLIGHT", "1")],
    )
    .await;
    let api = server.api.clone().expect("api role");
    // A webhook whose body never finishes (read whole before anything is checked) holds
    // the one place until its connection goes. Another request answered first would have
    // the place while it arrives, and it would be the one refused: then try again.
    // Few tries: the server's log, unread until it stops, must not fill its pipe.
    let mut tries = 0;
    let (held, refused) = loop {
        tries += 1;
        let mut held = tokio::net::TcpStream::connect(api.trim_start_matches("http://"))
            .await
            .expect("connect");
        tokio::io::AsyncWriteExt::write_all(
            &mut held,
            b"POST /v1/webhooks/payments HTTP/1.1\r\nHost: topupd\r\n\
              Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{",
        )
        .await
        .expect("send the start of a request");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let response = server
            .client
            .get(format!("{api}/v1/pricing"))
            .send()
            .await
            .expect("answered");
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            break (held, response);
        }
        assert_eq!(response.status(), StatusCode::OK);
        assert!(tries < 20, "the held request never took the place");
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.expect("a JSON error");
    assert_eq!(body["error"], "overloaded");

    drop(held);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = server
            .call(reqwest::Method::GET, "/v1/pricing", None, None)
            .await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place was never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = server.metrics().await;
    assert!(metrics["topupd_http_requests_shed_total"] >= 1.0);
    let webhooks = |status: &str| {
        metrics.get(&format!(
            r#"topupd_http_requests_total{{route="/v1/webhooks/payments",method="POST",status="{status}"}}"#
        ))
    };
    assert!(
        webhooks("400").is_some_and(|n| *n >= 1.0) && webhooks("413").is_none(),
        "a body cut short by its client is a bad request, not one too large: {metrics:?}"
    );
    assert!(
        !metrics.contains_key(
            r#"topupd_http_requests_total{route="/v1/pricing",method="GET",status="503"}"#
        ),
        "a refusal is counted before any other layer runs: {metrics:?}"
    );
    let log = server.stop().await;
    assert!(
        !log.iter().any(|line| line.contains("overloaded")),
        "refusals are counted, not logged"
    );
}

//! The `topupd` binary: verify, migrate, keys, configuration errors and shutdown.

use std::{process::Stdio, time::Duration};

use reqwest::StatusCode;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};
use topupd::db::Db;

use crate::helpers::{Backend, TestDatabase, backends, each_backend};

#[tokio::test]
async fn verify_names_each_account_whose_balance_disagrees_with_its_ledger() {
    each_backend(async |app| {
        let good = app.funded_account("50").await;
        let bad = app.funded_account("50").await;
        let clean = app.cli(&["verify"]).await;
        assert!(clean.status.success());
        assert!(
            String::from_utf8_lossy(&clean.stdout).contains("2 accounts checked, 0 mismatched")
        );

        // Corrupt one balance behind the ledger's back.
        const TAMPER: &str = "UPDATE accounts SET balance = balance + 1 WHERE id = $1";
        match &app.db {
            Db::Sqlite(pool) => sqlx::query(TAMPER).bind(&bad).execute(pool).await.map(drop),
            Db::Postgres(pool) => sqlx::query(TAMPER).bind(&bad).execute(pool).await.map(drop),
        }
        .expect("tamper with the balance");

        let dirty = app.cli(&["verify"]).await;
        let stdout = String::from_utf8_lossy(&dirty.stdout);
        assert_eq!(dirty.status.code(), Some(1), "{stdout}");
        assert!(stdout.contains(&bad), "{stdout}");
        assert!(!stdout.contains(&good), "{stdout}");
        assert!(stdout.contains("1 mismatched"), "{stdout}");
    })
    .await;
}

#[tokio::test]
async fn keys_create_prints_a_key_that_works_at_once() {
    each_backend(async |app| {
        let output = app
            .cli(&[
                "keys",
                "create",
                "--role",
                "admin",
                "--label",
                "first admin",
            ])
            .await;
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let key = String::from_utf8(output.stdout)
            .expect("utf-8")
            .trim()
            .to_owned();
        let audit = app.get("/v1/admin/audit", &key).await;
        assert_eq!(audit.status, StatusCode::OK);
        assert_eq!(audit.body["data"][0]["action"], "api_key.create");
        assert_eq!(audit.body["data"][0]["actor_key_id"], "cli");

        let refused = app.cli(&["keys", "create", "--role", "customer"]).await;
        assert!(!refused.status.success());
    })
    .await;
}

/// Runs the `topupd` binary in `dir` with `env`, as an operator's shell would.
async fn topupd_in(
    dir: &std::path::Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (Option<i32>, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_topupd"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run topupd");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every command that is neither `serve` nor `migrate`, as an operator would type it.
const READERS: &[&[&str]] = &[
    &["verify"],
    &["keys", "list"],
    &["keys", "create", "--role", "admin"],
    &["accounts", "find", "ada@example.com"],
    &["scan", "--once"],
    &["auto-topup", "resume", "acct_x", "--note", "card replaced"],
];

#[tokio::test]
async fn only_serve_and_migrate_make_a_database_and_migrate_says_what_it_applied() {
    let known = std::fs::read_dir("migrations/sqlite")
        .expect("migrations")
        .count();
    // The default database is topupd.db in the working directory: run from elsewhere,
    // every other command says where it looked and makes nothing.
    let elsewhere = tempfile::tempdir().expect("dir");
    let looked_at = elsewhere.path().join("topupd.db");
    for args in READERS {
        let (code, stdout, stderr) = topupd_in(elsewhere.path(), &[], args).await;
        assert_eq!(code, Some(2), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!(
                "no topupd database at sqlite {}",
                looked_at.display()
            )),
            "{args:?}: {stderr}"
        );
        assert!(!looked_at.exists(), "{args:?} made a database");
    }

    for backend in backends() {
        let database = TestDatabase::create(backend).await;
        let env = [("TOPUPD_DATABASE__URL", database.url.as_str())];
        let here = elsewhere.path();
        for args in READERS {
            let (code, _, stderr) = topupd_in(here, &env, args).await;
            assert_eq!(code, Some(2), "{backend:?} {args:?}: {stderr}");
            assert!(stderr.contains("no topupd database at"), "{stderr}");
            assert!(!stderr.contains("postgres@"), "credentials: {stderr}");
        }
        let (code, first, stderr) = topupd_in(here, &env, &["migrate"]).await;
        assert_eq!(code, Some(0), "{stderr}");
        assert!(
            first.starts_with(&format!("applied {known} migrations to the database at ")),
            "{first}"
        );
        assert!(
            first.contains("\n  1 ") && first.contains(&format!("\n  {known} ")),
            "{first}"
        );
        let (code, again, _) = topupd_in(here, &env, &["migrate"]).await;
        assert_eq!(code, Some(0));
        assert!(again.starts_with("no migrations to apply"), "{again}");
        let (code, verified, stderr) = topupd_in(here, &env, &["verify"]).await;
        assert_eq!(code, Some(0), "{stderr}");
        assert_eq!(verified.trim(), "0 accounts checked, 0 mismatched");

        // A newer release migrated it: this one refuses to migrate, serve or read it.
        let db = Db::connect_existing(&topupd::config::DatabaseConfig {
            url: database.url.clone().into(),
            ..topupd::config::Config::defaults().database
        })
        .await
        .expect("the migrated database");
        // A migration missing below the newest is a schema to migrate, not a current one.
        const FIRST_GONE: &str = "DELETE FROM _sqlx_migrations WHERE version = 1";
        match &db {
            Db::Sqlite(pool) => sqlx::query(FIRST_GONE).execute(pool).await.map(drop),
            Db::Postgres(pool) => sqlx::query(FIRST_GONE).execute(pool).await.map(drop),
        }
        .expect("forget the first migration");
        let (code, _, stderr) = topupd_in(here, &env, &["verify"]).await;
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("run `topupd migrate` first"), "{stderr}");
        const NEWER: &str = "INSERT INTO _sqlx_migrations \
            (version, description, success, checksum, execution_time) \
            VALUES (9999, 'from a newer release', TRUE, $1, 1)";
        match &db {
            Db::Sqlite(pool) => sqlx::query(NEWER)
                .bind(vec![0u8])
                .execute(pool)
                .await
                .map(drop),
            Db::Postgres(pool) => sqlx::query(NEWER)
                .bind(vec![0u8])
                .execute(pool)
                .await
                .map(drop),
        }
        .expect("a migration from the future");
        db.close().await;
        // On ports of its own: a refused serve must not be told apart by a busy port.
        let env = [
            env[0],
            ("TOPUPD_HTTP__LISTEN", "127.0.0.1:0"),
            ("TOPUPD_OPS__LISTEN", ""),
        ];
        for args in [&["migrate"][..], &["serve"], &["verify"]] {
            let (code, _, stderr) = topupd_in(here, &env, args).await;
            assert_eq!(code, Some(2), "{backend:?} {args:?}: {stderr}");
            assert!(
                stderr.contains("is at migration 9999, newer than this topupd knows"),
                "{stderr}"
            );
        }
        database.drop_database().await;
        if backend == Backend::Postgres {
            let gone = [("TOPUPD_DATABASE__URL", database.url.as_str())];
            let (code, _, stderr) = topupd_in(here, &gone, &["verify"]).await;
            assert_eq!(code, Some(2), "{stderr}");
            assert!(
                stderr.contains("no topupd database at postgres "),
                "{stderr}"
            );
        }
    }
}

#[tokio::test]
async fn check_config_finds_what_serve_would_refuse_without_touching_the_database() {
    let dir = tempfile::tempdir().expect("dir");
    let (code, stdout, stderr) = topupd_in(dir.path(), &[], &["check-config"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.starts_with("configuration is valid"), "{stdout}");
    for (key, value) in [
        ("AUTO_TOPUP__SCAN_SCHEDULE", "0 */30 * * * blursday"),
        ("PRICING__CATALOGUE", "missing.toml"),
        ("EMAIL__BILLING_URL", "example.com/billing"),
        ("PAYMENTS__RETURN_URL", "not a url"),
        ("DATABASE__URL", "mysql://nowhere"),
    ] {
        let var = format!("TOPUPD_{key}");
        let named = key.to_lowercase().replace("__", ".");
        for command in ["check-config", "serve"] {
            let (code, _, stderr) = topupd_in(dir.path(), &[(&var, value)], &[command]).await;
            assert_eq!(code, Some(2), "{command} with {var}={value}: {stderr}");
            assert!(stderr.contains(&named), "{stderr}");
        }
    }
    let (code, _, stderr) = topupd_in(
        dir.path(),
        &[
            ("TOPUPD_PAYMENTS__PROVIDER", "stripe"),
            ("TOPUPD_PAYMENTS__SECRET_KEY", "sk_test_x"),
            ("TOPUPD_PAYMENTS__WEBHOOK_SECRETS", "whsec_not_a_list"),
        ],
        &["check-config"],
    )
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("payments.webhook_secrets"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("whsec_not_a_list"),
        "a secret printed: {stderr}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("dir").count(),
        0,
        "check-config and a refused serve leave nothing behind"
    );
}

#[tokio::test]
async fn sigterm_finishes_the_request_in_flight_and_exits_zero() {
    let database = TestDatabase::create(Backend::Sqlite).await;
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_topupd"));
    serve
        .arg("serve")
        .env("TOPUPD_DATABASE__URL", &database.url)
        .env("TOPUPD_HTTP__LISTEN", "127.0.0.1:0")
        .env("TOPUPD_OPS__LISTEN", "127.0.0.1:0")
        .env("TOPUPD_LOG__FORMAT", "json");
    let (mut server, address) = serving(&mut serve).await;

    // Half a request: the server has accepted it and waits for the rest of the body.
    let body = r#"{"service":"voice_clone"}"#;
    let mut stream = TcpStream::connect(&address).await.expect("connect");
    let head = format!(
        "POST /v1/estimate HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream
        .write_all(&body.as_bytes()[..5])
        .await
        .expect("send part of the body");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = server.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(200)).await;

    stream
        .write_all(&body.as_bytes()[5..])
        .await
        .expect("send the rest");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    let status = tokio::time::timeout(Duration::from_secs(10), server.wait())
        .await
        .expect("exits within the grace period")
        .expect("exit status");
    assert!(status.success(), "{status}");
    assert!(
        TcpStream::connect(&address).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn the_database_its_journals_and_written_emails_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut serve = tokio::process::Command::new("sh");
    serve
        .args([
            "-c",
            "umask 000 && exec \"$0\" serve",
            env!("CARGO_BIN_EXE_topupd"),
        ])
        .current_dir(dir.path())
        .env("TOPUPD_HTTP__LISTEN", "127.0.0.1:0")
        .env("TOPUPD_LOG__FORMAT", "json")
        .env("TOPUPD_EMAIL__POLL_INTERVAL_MS", "50");
    let (mut server, address) = serving(&mut serve).await;
    let api = format!("http://{address}");
    let admin = tokio::process::Command::new(env!("CARGO_BIN_EXE_topupd"))
        .args(["keys", "create", "--role", "admin"])
        .current_dir(dir.path())
        .output()
        .await
        .expect("keys create");
    let admin = String::from_utf8(admin.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let client = reqwest::Client::new();
    let post = async |path: &str, key: &str, body: serde_json::Value| {
        let answer = client
            .post(format!("{api}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("answered");
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
        answer.json::<serde_json::Value>().await.expect("JSON")
    };
    let account = post(
        "/v1/admin/accounts",
        &admin,
        serde_json::json!({ "email": "ada@example.com", "name": "Ada" }),
    )
    .await["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let customer = post(
        "/v1/admin/api-keys",
        &admin,
        serde_json::json!({ "role": "customer", "account_id": account }),
    )
    .await["token"]
        .as_str()
        .expect("token")
        .to_owned();
    post(
        &format!("/v1/accounts/{account}/payment-methods"),
        &customer,
        serde_json::json!({ "payment_method_id": "pm_card_visa" }),
    )
    .await;
    post(
        &format!("/v1/accounts/{account}/topups"),
        &customer,
        serde_json::json!({ "credits": 500 }),
    )
    .await;

    let notices = dir.path().join("notices");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let email = loop {
        let written = std::fs::read_dir(&notices).ok().and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.extension().is_some_and(|x| x == "eml"))
        });
        if let Some(email) = written {
            break email;
        }
        assert!(tokio::time::Instant::now() < deadline, "no receipt written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    for file in ["topupd.db", "topupd.db-wal", "topupd.db-shm"] {
        assert_eq!(mode(&dir.path().join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&notices), 0o700, "the notices folder");
    assert_eq!(mode(&email), 0o600, "{}", email.display());
    server.kill().await.expect("stop");
}

/// Starts `serve`, a `topupd serve` logging JSON, and waits until it says where it serves.
async fn serving(serve: &mut tokio::process::Command) -> (tokio::process::Child, String) {
    let mut server = serve
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start topupd serve");
    let mut log = BufReader::new(server.stderr.take().expect("stderr")).lines();
    loop {
        let line = log
            .next_line()
            .await
            .expect("read log")
            .expect("server logs before exiting");
        let event: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        if event["fields"]["message"] == "serving" {
            let address = event["fields"]["address"].as_str().expect("address");
            // The rest of the log is read, so the server never writes to a closed pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
            return (server, address.to_owned());
        }
    }
}

#[tokio::test]
async fn ops_list_and_revoke_keys_find_accounts_and_resume_from_the_terminal() {
    each_backend(async |app| {
        let stdout = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).into_owned();
        let support = app.key("support", None).await;
        let listed = app.cli(&["keys", "list"]).await;
        assert!(listed.status.success());
        let table = stdout(&listed);
        assert!(table.starts_with("ID"), "{table}");
        assert!(
            table.contains("support") && table.contains("admin"),
            "{table}"
        );
        assert!(!table.contains("tpk_"), "no secret is printed: {table}");
        let keys: serde_json::Value =
            serde_json::from_str(&stdout(&app.cli(&["keys", "list", "--json"]).await))
                .expect("JSON");
        let support_id = keys
            .as_array()
            .expect("keys")
            .iter()
            .find(|k| k["role"] == "support")
            .expect("the support key")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let revoked = app.cli(&["keys", "revoke", &support_id]).await;
        assert!(revoked.status.success(), "{}", stdout(&revoked));
        assert_eq!(
            app.get("/v1/admin/accounts", &support).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            app.cli(&["keys", "revoke", "key_nope"]).await.status.code(),
            Some(1)
        );

        let (paused, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 1);
        let found = app.cli(&["accounts", "find", "ADA@example.com"]).await;
        let table = stdout(&found);
        assert!(table.contains(&paused), "{table}");
        assert!(table.contains("paused (payment_failed)"), "{table}");
        let none = app.cli(&["accounts", "find", "user-1", "--json"]).await;
        assert_eq!(stdout(&none).trim(), "[]");

        let resumed = app
            .cli(&[
                "auto-topup",
                "resume",
                &paused,
                "--note",
                "customer called",
                "--json",
            ])
            .await;
        assert!(
            resumed.status.success(),
            "{}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let answer: serde_json::Value = serde_json::from_str(&stdout(&resumed)).expect("JSON");
        assert_eq!(answer["resumed"], true);
        assert_eq!(answer["tried"], "not_asked");
        assert_eq!(app.auto_topup(&paused).await["state"], "active");
        let audited = app.audited(&paused, "auto_topup.resume").await;
        assert_eq!(audited["actor_role"], "operator");
        let again = app
            .cli(&["auto-topup", "resume", &paused, "--note", "again"])
            .await;
        assert_eq!(again.status.code(), Some(1));
        assert!(
            stdout(&again).contains("is not paused"),
            "{}",
            stdout(&again)
        );
    })
    .await;
}

//! Bad input on every write route: a 4xx JSON error that names the problem, and no change.

use reqwest::StatusCode;
use serde_json::json;

use topupd::db::Db;

use crate::helpers::{TestApp, backends, each_backend, test_config, unused_port, usage_body};

/// Sends `body` raw to `path` and checks the answer is `status` naming `field` (or no field
/// for malformed JSON), with nothing changed.
async fn rejects(
    app: &TestApp,
    account: &str,
    key: &str,
    path: &str,
    body: &str,
    status: StatusCode,
    field: Option<&str>,
) {
    let before = app.snapshot(account).await;
    let answer = app
        .post_raw(path, key, "application/json", body.to_owned())
        .await;
    assert_eq!(answer.status, status, "{path} {body}: {}", answer.body);
    assert_eq!(answer.body["error"], "invalid_request", "{path} {body}");
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    match field {
        Some(field) => assert!(
            answer.body["fields"][field].is_string(),
            "{path} {body}: expected field {field} in {}",
            answer.body
        ),
        None => assert_eq!(answer.body["fields"], json!({}), "{path} {body}"),
    }
    assert_eq!(
        app.snapshot(account).await,
        before,
        "{path} {body} changed something"
    );
}

const BAD: StatusCode = StatusCode::BAD_REQUEST;
const INVALID: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;

#[tokio::test]
async fn usage_and_estimate_reject_bad_input() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let service = app.key("service", None).await;
        let usage = |inner: &str| format!(r#"{{"account_id":"{account}","request_id":"r1","usage":{inner}}}"#);
        let cases = [
            (usage(r#"{"duration_seconds":30}"#), INVALID, Some("usage.service")),
            (usage(r#"{"service":"nope","duration_seconds":30}"#), INVALID, Some("usage.service")),
            (usage(r#"{"service":"dubbing"}"#), INVALID, Some("usage.duration_seconds")),
            (usage(r#"{"service":"dubbing","duration_seconds":-30}"#), INVALID, Some("usage.duration_seconds")),
            (usage(r#"{"service":"dubbing","duration_seconds":0}"#), INVALID, Some("usage.duration_seconds")),
            (usage(r#"{"service":"dubbing","duration_seconds":1e12}"#), INVALID, Some("usage.duration_seconds")),
            (usage(r#"{"service":"dubbing","duration_seconds":"thirty"}"#), BAD, Some("usage.duration_seconds")),
            (usage(r#"{"service":"dubbing","duration_seconds":"30"}"#), BAD, Some("usage.duration_seconds")),
            (usage(r#"{"service":"text_to_speech","characters":-5}"#), INVALID, Some("usage.characters")),
            (usage(r#"{"service":"text_to_speech","characters":99999999999999999999999}"#), INVALID, Some("usage.characters")),
            (usage(r#"{"service":"text_to_speech","characters":12.5}"#), INVALID, Some("usage.characters")),
            (usage(r#"{"service":"text_to_speech","characters":"12"}"#), BAD, Some("usage.characters")),
            (usage(r#"{"service":"voice_clone","calls":0}"#), INVALID, Some("usage.calls")),
            (usage(r#"{"service":"stem_separation","duration_seconds":30,"variant":"gold"}"#), INVALID, Some("usage.variant")),
            (usage(r#"{"service":"dubbing","duration_seconds":30,"addons":["lip_sync"]}"#), INVALID, Some("usage.addons")),
            (usage(r#"{"service":"dubbing","duration_seconds":30,"quality":"max"}"#), BAD, Some("usage.quality")),
            (format!(r#"{{"account_id":"{account}","usage":{{"service":"voice_clone"}}}}"#), INVALID, Some("request_id")),
            (format!(r#"{{"account_id":"{account}","request_id":"","usage":{{"service":"voice_clone"}}}}"#), INVALID, Some("request_id")),
            (format!(r#"{{"account_id":"{account}","request_id":"{}","usage":{{"service":"voice_clone"}}}}"#, "x".repeat(201)), INVALID, Some("request_id")),
            (r#"{"request_id":"r1","usage":{"service":"voice_clone"}}"#.to_owned(), INVALID, Some("account_id")),
            (r#"{"account_id":"#.to_owned(), BAD, None),
            ("not json".to_owned(), BAD, None),
            ("[]".to_owned(), BAD, None),
        ];
        for (body, status, field) in &cases {
            rejects(app, &account, &service, "/v1/usage", body, *status, *field).await;
        }
        rejects(app, &account, &service, "/v1/estimate", r#"{"service":"dubbing","duration_seconds":-1}"#, INVALID, Some("duration_seconds")).await;
        rejects(app, &account, &service, "/v1/estimate", r#"{"service":"nope"}"#, INVALID, Some("service")).await;
    })
    .await;
}

#[tokio::test]
async fn staff_routes_reject_bad_input() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let admin = app.admin.clone();
        let adjust = format!("/v1/admin/accounts/{account}/adjustments");
        let resume = format!("/v1/admin/accounts/{account}/auto-topup/resume");
        let cases: Vec<(&str, &str, StatusCode, Option<&str>)> = vec![
            (
                "/v1/admin/accounts",
                r#"{"name":"Ada"}"#,
                INVALID,
                Some("email"),
            ),
            (
                "/v1/admin/accounts",
                r#"{"email":"not-an-email","name":"Ada"}"#,
                INVALID,
                Some("email"),
            ),
            (
                "/v1/admin/accounts",
                r#"{"email":"ada@example.com","name":"   "}"#,
                INVALID,
                Some("name"),
            ),
            (
                "/v1/admin/accounts",
                r#"{"email":"ada@example.com","name":"Ada","balance":100}"#,
                BAD,
                Some("balance"),
            ),
            (
                "/v1/admin/api-keys",
                r#"{"role":"superuser"}"#,
                BAD,
                Some("role"),
            ),
            (
                "/v1/admin/api-keys",
                r#"{"role":"customer"}"#,
                INVALID,
                Some("account_id"),
            ),
            (
                "/v1/admin/api-keys",
                r#"{"role":"service","account_id":"acct_x"}"#,
                INVALID,
                Some("account_id"),
            ),
            (
                &adjust,
                r#"{"credits":0,"reason":"x"}"#,
                INVALID,
                Some("credits"),
            ),
            (
                &adjust,
                r#"{"credits":1.0001,"reason":"x"}"#,
                INVALID,
                Some("credits"),
            ),
            (
                &adjust,
                r#"{"credits":1e30,"reason":"x"}"#,
                INVALID,
                Some("credits"),
            ),
            (
                &adjust,
                r#"{"credits":20000000,"reason":"x"}"#,
                INVALID,
                Some("credits"),
            ),
            (
                &adjust,
                r#"{"credits":10,"reason":""}"#,
                INVALID,
                Some("reason"),
            ),
            (&adjust, r#"{"credits":10}"#, INVALID, Some("reason")),
            // Left out or left empty, the same answer.
            (&resume, "{}", INVALID, Some("note")),
            (&resume, r#"{"note":""}"#, INVALID, Some("note")),
            (
                &resume,
                r#"{"note":"   ","try_now":true}"#,
                INVALID,
                Some("note"),
            ),
            (
                &adjust,
                r#"{"credits":"ten","reason":"x"}"#,
                BAD,
                Some("credits"),
            ),
            (
                &adjust,
                r#"{"credits":"5","reason":"x"}"#,
                BAD,
                Some("credits"),
            ),
            (&adjust, "{", BAD, None),
        ];
        for (path, body, status, field) in cases {
            rejects(app, &account, &admin, path, body, status, field).await;
        }

        let missing_account = app
            .post(
                "/v1/admin/api-keys",
                &admin,
                json!({ "role": "customer", "account_id": "acct_nope" }),
            )
            .await;
        assert_eq!(missing_account.status, StatusCode::NOT_FOUND);

        let before = app.snapshot(&account).await;
        let not_json = app
            .post_raw(
                &adjust,
                &admin,
                "text/plain",
                r#"{"credits":1,"reason":"x"}"#,
            )
            .await;
        assert_eq!(not_json.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(not_json.body["error"], "invalid_request");
        let huge = format!(r#"{{"credits":1,"reason":"{}"}}"#, "x".repeat(100_000));
        let too_large = app
            .post_raw(&adjust, &admin, "application/json", huge)
            .await;
        assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(too_large.body["error"], "invalid_request");
        assert_eq!(app.snapshot(&account).await, before);
    })
    .await;
}

#[tokio::test]
async fn inexact_numbers_dressed_up_emails_and_invisible_characters_are_refused() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let admin = app.admin.clone();
        let service = app.key("service", None).await;
        let adjust = format!("/v1/admin/accounts/{account}/adjustments");
        let long_one = format!(r#"{{"credits":1.{}1,"reason":"x"}}"#, "0".repeat(398));
        let tiny = format!(r#"{{"credits":0.{}1,"reason":"x"}}"#, "0".repeat(30));
        let usage = |request_id: &str| {
            format!(
                r#"{{"account_id":"{account}","request_id":"{request_id}","usage":{{"service":"voice_clone"}}}}"#
            )
        };
        let cases: Vec<(&str, String, &str, Option<&str>)> = vec![
            (&adjust, long_one, &admin, Some("credits")),
            (&adjust, tiny, &admin, Some("credits")),
            (&adjust, r#"{"credits":1,"reason":"refund\u202Egnp.exe"}"#.into(), &admin, Some("reason")),
            (&adjust, r#"{"credits":1,"reason":"\uFEFFrefund"}"#.into(), &admin, Some("reason")),
            ("/v1/admin/accounts", r#"{"email":"Eve<eve@evil.example>","name":"Eve"}"#.into(), &admin, Some("email")),
            ("/v1/admin/accounts", r#"{"email":"a@b.c>","name":"Eve"}"#.into(), &admin, Some("email")),
            ("/v1/admin/accounts", r#"{"email":"eve@example.com","name":"E\u200Bve"}"#.into(), &admin, Some("name")),
            ("/v1/admin/api-keys", r#"{"role":"service","label":"api\u2066servers"}"#.into(), &admin, Some("label")),
            ("/v1/usage", usage("job\\u200B1"), &service, Some("request_id")),
            ("/v1/usage", usage("job 1"), &service, Some("request_id")),
        ];
        for (path, body, key, field) in &cases {
            rejects(app, &account, key, path, body, INVALID, *field).await;
        }
        let created = app
            .post("/v1/admin/accounts", &admin, json!({ "email": "eve@example.com", "name": "Eve" }))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "a plain address is fine");
    })
    .await;
}

#[tokio::test]
async fn idempotency_keys_are_visible_ascii_of_at_most_255() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        for bad in ["order 1".to_owned(), "k".repeat(256), "\t".to_owned()] {
            let answer = app.buy(&key, &account, 500, Some(&bad)).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{bad:?}: {}",
                answer.body
            );
            assert!(
                answer.body["fields"]["Idempotency-Key"].is_string(),
                "{}",
                answer.body
            );
        }
        assert!(app.stub.charges().await.is_empty(), "nothing charged");
        let fine = app.buy(&key, &account, 500, Some(&"k".repeat(255))).await;
        assert_eq!(fine.status, StatusCode::CREATED, "{}", fine.body);
    })
    .await;
}

#[tokio::test]
async fn a_body_announced_past_the_limit_is_refused_at_once_without_a_key() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    each_backend(async |app| {
        let address = app.base_url.trim_start_matches("http://").to_owned();
        for path in ["/v1/usage", "/v1/admin/accounts", "/v1/webhooks/payments"] {
            let mut stream = tokio::net::TcpStream::connect(&address).await.expect("connect");
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n{{"
            );
            stream.write_all(head.as_bytes()).await.expect("send head");
            // Well before the request deadline (30 s), which is what answered before.
            let mut answer = vec![0; 1024];
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                stream.read(&mut answer),
            )
            .await
            .expect("answered before the request deadline")
            .expect("read");
            let answer = String::from_utf8_lossy(&answer[..read]);
            assert!(answer.starts_with("HTTP/1.1 413"), "{path}: {answer}");
            assert!(answer.contains("invalid_request"), "{path}: {answer}");
        }
    })
    .await;
}

/// How many answers of `status` to `POST route` the app's metrics count (0 before the
/// first: the series appears with it). Every app of this process counts into them, so
/// each test of it takes a route and status no other test makes.
async fn answers(app: &TestApp, route: &str, status: u16) -> f64 {
    let series = format!(
        r#"topupd_http_requests_total{{route="{route}",method="POST",status="{status}"}} "#
    );
    app.metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(&series)?.parse().ok())
        .unwrap_or(0.0)
}

/// Holds a lock on `account`'s row (on SQLite, on every write) until it is dropped (and
/// its transaction rolled back), so that a debit of the account waits.
async fn lock_account(app: &TestApp, account: &str) -> Locked {
    match &app.db {
        Db::Sqlite(pool) => {
            // SQLite locks the whole database for writing.
            Locked::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await.expect("lock"))
        }
        Db::Postgres(pool) => {
            let mut tx = pool.begin().await.expect("lock");
            sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
                .bind(account)
                .execute(&mut *tx)
                .await
                .expect("lock the account");
            Locked::Postgres(tx)
        }
    }
}

#[allow(dead_code, reason = "held for its lock, never read")]
enum Locked {
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

#[tokio::test]
async fn answers_refusing_a_body_or_given_at_the_deadline_are_counted_like_any_other() {
    for backend in backends() {
        let mut config = test_config(unused_port());
        config.http.request_timeout_secs = 1;
        let app = TestApp::spawn_with(backend, config).await;
        let account = app.funded_account("100").await;
        let service = app.key("service", None).await;

        let (too_large_before, timed_out_before) = (
            answers(&app, "/v1/estimate", 413).await,
            answers(&app, "/v1/usage", 408).await,
        );
        let huge = format!(
            r#"{{"service":"dubbing","duration_seconds":60,"addons":["{}"]}}"#,
            "x".repeat(100_000)
        );
        let too_large = app
            .post_raw("/v1/estimate", &service, "application/json", huge)
            .await;
        assert_eq!(too_large.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            answers(&app, "/v1/estimate", 413).await,
            too_large_before + 1.0
        );

        // The debit waits for the account's row past the deadline: the request is
        // answered 408 at the deadline, and counted so.
        let locked = lock_account(&app, &account).await;
        let timed_out = app
            .post("/v1/usage", &service, usage_body(&account, "late", 60))
            .await;
        assert_eq!(
            timed_out.status,
            StatusCode::REQUEST_TIMEOUT,
            "{}",
            timed_out.body
        );
        assert_eq!(timed_out.body["error"], "request_timeout");
        assert_eq!(
            answers(&app, "/v1/usage", 408).await,
            timed_out_before + 1.0
        );
        drop(locked);
        app.stop().await;
    }
}

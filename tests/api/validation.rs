//! Bad input on every write route: a 4xx JSON error that names the problem, and no change.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, each_backend};

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
            (usage(r#"{"duration_seconds":30}"#), BAD, Some("usage.service")),
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
            (format!(r#"{{"account_id":"{account}","usage":{{"service":"voice_clone"}}}}"#), BAD, Some("request_id")),
            (format!(r#"{{"account_id":"{account}","request_id":"","usage":{{"service":"voice_clone"}}}}"#), INVALID, Some("request_id")),
            (format!(r#"{{"account_id":"{account}","request_id":"{}","usage":{{"service":"voice_clone"}}}}"#, "x".repeat(201)), INVALID, Some("request_id")),
            (r#"{"request_id":"r1","usage":{"service":"voice_clone"}}"#.to_owned(), BAD, Some("account_id")),
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
        let cases: Vec<(&str, &str, StatusCode, Option<&str>)> = vec![
            (
                "/v1/admin/accounts",
                r#"{"name":"Ada"}"#,
                BAD,
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
            (&adjust, r#"{"credits":10}"#, BAD, Some("reason")),
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

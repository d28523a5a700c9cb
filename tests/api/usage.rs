//! Debits, their idempotency, 402s and refunds.

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use topupd::{
    db::usage::{DebitOutcome, NewUsage},
    domain::credits::Millicredits,
};

use crate::helpers::{TestApp, credits, dec, each_backend, usage_body};

async fn concurrently(
    app: &TestApp,
    key: &str,
    bodies: Vec<serde_json::Value>,
) -> Vec<(StatusCode, serde_json::Value)> {
    let mut tasks = JoinSet::new();
    for body in bodies {
        let (client, url, key) = (
            app.client.clone(),
            format!("{}/v1/usage", app.base_url),
            key.to_owned(),
        );
        tasks.spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .expect("answered");
            let status = response.status();
            (
                status,
                response
                    .json::<serde_json::Value>()
                    .await
                    .expect("JSON body"),
            )
        });
    }
    tasks.join_all().await
}

/// Sends `n` refunds of the usage at once.
async fn refund_concurrently(
    app: &TestApp,
    key: &str,
    usage_id: &str,
    n: usize,
) -> Vec<(StatusCode, serde_json::Value)> {
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let request = app
            .client
            .post(format!("{}/v1/usage/{usage_id}/refund", app.base_url))
            .bearer_auth(key);
        tasks.spawn(async move {
            let response = request.send().await.expect("answered");
            let status = response.status();
            (
                status,
                response.json::<serde_json::Value>().await.expect("JSON"),
            )
        });
    }
    tasks.join_all().await
}

#[tokio::test]
async fn concurrent_debits_succeed_exactly_as_far_as_the_balance_goes() {
    each_backend(async |app| {
        // 325 credits affords 32 debits of 10.
        let account = app.funded_account("325").await;
        let service = app.key("service", None).await;
        let bodies = (0..64)
            .map(|i| usage_body(&account, &format!("req-{i}"), 30))
            .collect();
        let answers = concurrently(app, &service, bodies).await;

        let created = answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count();
        let refused: Vec<_> = answers
            .iter()
            .filter(|(s, _)| *s == StatusCode::PAYMENT_REQUIRED)
            .collect();
        assert_eq!(created, 32, "{:?}: {answers:?}", app.backend);
        assert_eq!(refused.len(), 32);
        for (_, body) in refused {
            assert_eq!(body["error"], "insufficient_credits");
            assert_eq!(credits(&body["required"]), dec("10"));
            assert!(credits(&body["available"]) < dec("10"), "{body}");
        }
        assert_eq!(app.balance(&account).await, dec("5"));

        let ledger = app
            .get(
                &format!("/v1/accounts/{account}/ledger?limit=200"),
                &app.admin,
            )
            .await;
        let entries = ledger.body["data"].as_array().expect("entries");
        assert_eq!(entries.len(), 33, "one funding entry and 32 debits");
        assert!(
            entries
                .iter()
                .all(|e| credits(&e["balance_after"]) >= dec("0"))
        );

        let verify = app.cli(&["verify"]).await;
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
    })
    .await;
}

#[tokio::test]
async fn a_repeated_request_id_debits_once_even_when_sent_concurrently() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let service = app.key("service", None).await;

        let first = app.debit(&service, &account, "req-1", 30).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        assert!(first.headers.get("idempotent-replayed").is_none());
        let again = app.debit(&service, &account, "req-1", 30).await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.body);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(again.body, first.body, "a replay returns the first result");
        assert_eq!(app.balance(&account).await, dec("90"));

        let bodies = (0..16).map(|_| usage_body(&account, "req-2", 30)).collect();
        let answers = concurrently(app, &service, bodies).await;
        let created: Vec<_> = answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).collect();
        assert_eq!(created.len(), 1, "{:?}: {answers:?}", app.backend);
        let id = &created[0].1["id"];
        assert!(answers.iter().all(|(s, b)| (*s == StatusCode::CREATED || *s == StatusCode::OK) && &b["id"] == id));
        assert_eq!(app.balance(&account).await, dec("80"));
    })
    .await;
}

#[tokio::test]
async fn a_request_id_reused_for_other_usage_is_a_conflict_and_changes_nothing() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let service = app.key("service", None).await;
        assert_eq!(
            app.debit(&service, &account, "req-1", 30).await.status,
            StatusCode::CREATED
        );
        let before = app.snapshot(&account).await;
        let reused = app.debit(&service, &account, "req-1", 90).await;
        assert_eq!(reused.status, StatusCode::CONFLICT, "{}", reused.body);
        assert_eq!(reused.body["error"], "conflict");
        assert_eq!(app.snapshot(&account).await, before);
    })
    .await;
}

#[tokio::test]
async fn a_short_balance_answers_402_with_required_and_available_and_changes_nothing() {
    each_backend(async |app| {
        let account = app.funded_account("15.5").await;
        let service = app.key("service", None).await;
        let before = app.snapshot(&account).await;
        let short = app.debit(&service, &account, "req-1", 90).await;
        assert_eq!(short.status, StatusCode::PAYMENT_REQUIRED);
        assert_eq!(short.body["error"], "insufficient_credits");
        assert_eq!(credits(&short.body["required"]), dec("20"));
        assert_eq!(credits(&short.body["available"]), dec("15.5"));
        assert!(
            short.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("20"))
        );
        assert_eq!(app.snapshot(&account).await, before);
        // Nothing was recorded, so the same request id may be tried again once funded.
        assert_eq!(
            app.debit(&service, &account, "req-1", 30).await.status,
            StatusCode::CREATED
        );
    })
    .await;
}

#[tokio::test]
async fn a_refund_restores_the_credits_once() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let service = app.key("service", None).await;
        let usage = app.debit(&service, &account, "req-1", 30).await;
        let id = usage.body["id"].as_str().expect("usage id");
        assert_eq!(app.balance(&account).await, dec("90"));

        let refund = app
            .post(&format!("/v1/usage/{id}/refund"), &service, json!(null))
            .await;
        assert_eq!(refund.status, StatusCode::OK, "{}", refund.body);
        assert_eq!(credits(&refund.body["refund"]["amount"]), dec("10"));
        assert!(refund.body["usage"]["refunded_at"].is_string());
        assert_eq!(app.balance(&account).await, dec("100"));

        let again = refund_concurrently(app, &service, id, 8).await;
        for (status, body) in again {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(
                body["refund"]["id"], refund.body["refund"]["id"],
                "the first refund is returned"
            );
        }
        assert_eq!(app.balance(&account).await, dec("100"));

        // Eight refunds racing from the unrefunded state: one credit, one refund for all.
        let second = app.debit(&service, &account, "req-2", 30).await;
        let second_id = second.body["id"].as_str().expect("usage id").to_owned();
        assert_eq!(app.balance(&account).await, dec("90"));
        let answers = refund_concurrently(app, &service, &second_id, 8).await;
        assert!(
            answers.iter().all(|(s, _)| *s == StatusCode::OK),
            "{answers:?}"
        );
        let refund_ids: std::collections::HashSet<String> = answers
            .iter()
            .map(|(_, b)| b["refund"]["id"].to_string())
            .collect();
        assert_eq!(refund_ids.len(), 1, "one refund entry: {answers:?}");
        assert_eq!(app.balance(&account).await, dec("100"));

        let missing = app
            .post("/v1/usage/use_nope/refund", &service, json!(null))
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
        let verify = app.cli(&["verify"]).await;
        assert!(verify.status.success());
    })
    .await;
}

#[tokio::test]
async fn a_support_refund_is_audited() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let service = app.key("service", None).await;
        let support = app.key("support", None).await;
        let usage = app.debit(&service, &account, "req-1", 30).await;
        let id = usage.body["id"].as_str().expect("usage id");
        let refund = app
            .post(&format!("/v1/usage/{id}/refund"), &support, json!(null))
            .await;
        assert_eq!(refund.status, StatusCode::OK);
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &support)
            .await;
        let newest = &audit.body["data"][0];
        assert_eq!(newest["action"], "usage.refund");
        assert_eq!(newest["actor_role"], "support");
        assert_eq!(newest["detail"]["usage_id"], id);
    })
    .await;
}

#[tokio::test]
async fn usage_for_an_unknown_account_is_404() {
    each_backend(async |app| {
        let service = app.key("service", None).await;
        let answer = app.debit(&service, "acct_nope", "req-1", 30).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert_eq!(answer.body["error"], "not_found");
    })
    .await;
}

/// Debits that share a commit get exactly the outcomes they would get alone.
#[tokio::test]
async fn debits_committed_together_keep_their_own_outcomes() {
    each_backend(async |app: &TestApp| {
        let funded = app.funded_account("10").await;
        let empty = app.funded_account("0").await;
        let usage = |account: &str, request: &str| NewUsage {
            account_id: account.to_owned(),
            request_id: request.to_owned(),
            fingerprint: "f".into(),
            service: "voice_clone".into(),
            quote: "{}".into(),
            cost: Millicredits(5_000),
            at: 0,
            low_line: Millicredits(0),
        };
        let batch = [
            usage(&funded, "r1"),
            usage(&funded, "r1"),
            usage(&empty, "r1"),
            usage("acct_missing", "r1"),
            usage(&funded, "r2"),
            usage(&funded, "r3"),
        ];
        let outcomes = app
            .db
            .debit_usages(&batch.iter().collect::<Vec<_>>())
            .await
            .expect("the batch commits");
        let names: Vec<&str> = outcomes
            .iter()
            .map(|outcome| match outcome {
                DebitOutcome::Debited(_) => "debited",
                DebitOutcome::Existing(_) => "existing",
                DebitOutcome::Insufficient { .. } => "insufficient",
                DebitOutcome::AccountNotFound => "not found",
            })
            .collect();
        assert_eq!(
            names,
            [
                "debited",
                "existing",
                "insufficient",
                "not found",
                "debited",
                "insufficient"
            ]
        );
        let (DebitOutcome::Debited(first), DebitOutcome::Existing(replayed)) =
            (&outcomes[0], &outcomes[1])
        else {
            panic!("{outcomes:?}");
        };
        assert_eq!(replayed.id, first.id, "the replay is the first debit");
        let DebitOutcome::Insufficient { available } = &outcomes[5] else {
            panic!("{outcomes:?}");
        };
        assert_eq!(*available, Millicredits(0));
        assert_eq!(app.balance(&funded).await, dec("0"));
        assert_eq!(app.balance(&empty).await, dec("0"));
        let empty_usage = app
            .get(&format!("/v1/accounts/{empty}/usage"), &app.admin)
            .await;
        assert_eq!(
            empty_usage.body["data"],
            serde_json::json!([]),
            "no row left behind"
        );
        let ledger = app
            .get(&format!("/v1/accounts/{funded}/ledger"), &app.admin)
            .await;
        let kinds: Vec<&str> = ledger.body["data"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|entry| entry["kind"].as_str().expect("a kind"))
            .collect();
        assert_eq!(kinds, ["usage", "usage", "adjustment"]);
        let usage = app
            .get(&format!("/v1/accounts/{funded}/usage"), &app.admin)
            .await;
        assert_eq!(usage.body["data"].as_array().map(Vec::len), Some(2));
        let verify = app.cli(&["verify"]).await;
        assert!(verify.status.success(), "{verify:?}");
    })
    .await;
}

/// Debits of several accounts, their duplicates, replays of earlier debits and refunds of
/// those, all at once: the mix that makes transactions wait on each other. Every answer is
/// an answer (no 5xx, no deadlock), each request id debits once, each refund happens once.
#[tokio::test]
async fn debits_replays_and_refunds_at_once_never_fail_and_never_drift() {
    each_backend(async |app| {
        let service = app.key("service", None).await;
        let mut accounts = Vec::new();
        for _ in 0..4 {
            accounts.push(app.funded_account("1000").await);
        }
        let earlier: Vec<_> = accounts
            .iter()
            .flat_map(|a| {
                [
                    usage_body(a, "earlier-1", 30),
                    usage_body(a, "earlier-2", 30),
                ]
            })
            .collect();
        let earlier_ids: Vec<String> = concurrently(app, &service, earlier.clone())
            .await
            .into_iter()
            .map(|(status, body)| {
                assert_eq!(status, StatusCode::CREATED, "{body}");
                body["id"].as_str().expect("an id").to_owned()
            })
            .collect();

        // 15 new request ids per account, each sent twice, and the earlier ones again.
        let mut bodies = earlier;
        for account in &accounts {
            for i in 0..15 {
                bodies.push(usage_body(account, &format!("new-{i}"), 30));
                bodies.push(usage_body(account, &format!("new-{i}"), 30));
            }
        }
        let refunds = async {
            let mut answers = Vec::new();
            for id in &earlier_ids {
                answers.extend(refund_concurrently(app, &service, id, 2).await);
            }
            answers
        };
        let (debits, refunds) = tokio::join!(concurrently(app, &service, bodies), refunds);

        let created = debits
            .iter()
            .filter(|(s, _)| *s == StatusCode::CREATED)
            .count();
        assert!(
            debits
                .iter()
                .all(|(s, _)| *s == StatusCode::CREATED || *s == StatusCode::OK),
            "{debits:?}"
        );
        assert_eq!(created, 4 * 15, "each new request id debits once");
        assert_eq!(refunds.len(), 16);
        for (status, body) in &refunds {
            assert_eq!(*status, StatusCode::OK, "{body}");
        }
        // 1000 - 17 debits of 10 + 2 refunds of 10.
        for account in &accounts {
            assert_eq!(app.balance(account).await, dec("850"));
        }
        let verify = app.cli(&["verify"]).await;
        assert!(verify.status.success(), "{verify:?}");
    })
    .await;
}

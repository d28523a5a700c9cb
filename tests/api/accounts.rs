//! Balances, history pages, adjustments, the audit log and the public catalogue.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{credits, dec, each_backend};

#[tokio::test]
async fn histories_are_newest_first_in_cursor_pages() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let service = app.key("service", None).await;
        for i in 0..5 {
            assert_eq!(
                app.debit(&service, &account, &format!("req-{i}"), 30)
                    .await
                    .status,
                StatusCode::CREATED
            );
        }
        for (listing, total) in [("usage", 5), ("ledger", 6)] {
            let mut seen = Vec::new();
            let mut path = format!("/v1/accounts/{account}/{listing}?limit=2");
            loop {
                let page = app.get(&path, &app.admin).await;
                assert_eq!(page.status, StatusCode::OK, "{}", page.body);
                let data = page.body["data"].as_array().expect("data");
                assert!(data.len() <= 2);
                seen.extend(
                    data.iter()
                        .map(|e| e["created_at"].clone().to_string() + &e["id"].to_string()),
                );
                match page.body["next_cursor"].as_str() {
                    Some(cursor) => {
                        path = format!("/v1/accounts/{account}/{listing}?limit=2&cursor={cursor}")
                    }
                    None => break,
                }
            }
            assert_eq!(seen.len(), total, "{listing}");
            let unique: std::collections::HashSet<_> = seen.iter().collect();
            assert_eq!(unique.len(), total, "{listing}: no row twice");
        }
        let usage = app
            .get(&format!("/v1/accounts/{account}/usage"), &app.admin)
            .await;
        let request_ids: Vec<&str> = usage.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|u| u["request_id"].as_str().expect("id"))
            .collect();
        assert_eq!(request_ids, ["req-4", "req-3", "req-2", "req-1", "req-0"]);
        let ledger = app
            .get(&format!("/v1/accounts/{account}/ledger"), &app.admin)
            .await;
        let balances: Vec<_> = ledger.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|e| credits(&e["balance_after"]))
            .collect();
        assert_eq!(balances, ["50", "60", "70", "80", "90", "100"].map(dec));

        for bad in ["limit=0", "limit=201", "limit=x", "cursor=abc", "cursor=-1"] {
            let answer = app
                .get(&format!("/v1/accounts/{account}/ledger?{bad}"), &app.admin)
                .await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
            let field = bad.split('=').next().expect("field");
            assert!(
                answer.body["fields"][field].is_string(),
                "{bad}: {}",
                answer.body
            );
        }
    })
    .await;
}

#[tokio::test]
async fn adjustments_are_audited_and_cannot_overdraw() {
    each_backend(async |app| {
        let account = app.funded_account("0").await;
        let support = app.key("support", None).await;
        let path = format!("/v1/admin/accounts/{account}/adjustments");
        let granted = app
            .post(
                &path,
                &support,
                json!({ "credits": 12.345, "reason": "goodwill for outage" }),
            )
            .await;
        assert_eq!(granted.status, StatusCode::CREATED, "{}", granted.body);
        assert_eq!(credits(&granted.body["balance_after"]), dec("12.345"));
        assert_eq!(granted.body["kind"], "adjustment");

        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &support)
            .await;
        let newest = &audit.body["data"][0];
        assert_eq!(newest["action"], "balance.adjust");
        assert_eq!(newest["actor_role"], "support");
        assert_eq!(newest["detail"]["reason"], "goodwill for outage");
        assert_eq!(credits(&newest["detail"]["credits"]), dec("12.345"));

        let before = app.snapshot(&account).await;
        let overdraw = app
            .post(
                &path,
                &support,
                json!({ "credits": -20, "reason": "clawback" }),
            )
            .await;
        assert_eq!(
            overdraw.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            overdraw.body
        );
        assert!(
            overdraw.body["fields"]["credits"]
                .as_str()
                .is_some_and(|m| m.contains("12.345"))
        );
        assert_eq!(app.snapshot(&account).await, before);

        let taken = app
            .post(
                &path,
                &support,
                json!({ "credits": -2.345, "reason": "clawback" }),
            )
            .await;
        assert_eq!(taken.status, StatusCode::CREATED);
        assert_eq!(app.balance(&account).await, dec("10"));
        let missing = app
            .post(
                "/v1/admin/accounts/acct_nope/adjustments",
                &support,
                json!({ "credits": 1, "reason": "x" }),
            )
            .await;
        assert_eq!(missing.status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn low_balance_warning_follows_the_configured_line() {
    each_backend(async |app| {
        let account = app.funded_account("100").await;
        let customer = app.key("customer", Some(&account)).await;
        let view = app.get(&format!("/v1/accounts/{account}"), &customer).await;
        assert_eq!(view.body["low_balance_warning"], false);
        assert_eq!(view.body["email"], "ada@example.com");
        let service = app.key("service", None).await;
        app.debit(&service, &account, "req-1", 30).await;
        let view = app.get(&format!("/v1/accounts/{account}"), &customer).await;
        assert_eq!(credits(&view.body["balance"]), dec("90"));
        assert_eq!(view.body["low_balance_warning"], true);
    })
    .await;
}

#[tokio::test]
async fn pricing_and_estimates_are_public_and_itemised() {
    each_backend(async |app| {
        let pricing = app.request(Method::GET, "/v1/pricing", None, None).await;
        assert_eq!(pricing.status, StatusCode::OK);
        assert_eq!(pricing.body["credit_price_cents"], 1);
        let services = pricing.body["services"].as_object().expect("services");
        for name in ["dubbing", "voice_training", "media_translation", "text_to_speech", "voice_clone", "text_translation", "stem_separation", "transcription", "speech_prediction"] {
            assert!(services.contains_key(name), "{name}");
        }
        assert_eq!(credits(&services["speech_prediction"]["rate"]), dec("0.33"));

        let estimate = app
            .request(Method::POST, "/v1/estimate", None, Some(json!({ "service": "media_translation", "duration_seconds": 61, "addons": ["lip_sync"] })))
            .await;
        assert_eq!(estimate.status, StatusCode::OK, "{}", estimate.body);
        assert_eq!(credits(&estimate.body["total"]), dec("240"));
        let lines = estimate.body["lines"].as_array().expect("lines");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["item"], "add-on lip_sync");
        assert_eq!(credits(&lines[1]["credits"]), dec("120"));
    })
    .await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    each_backend(async |app| {
        let health = app.request(Method::GET, "/healthz", None, None).await;
        assert_eq!(
            (health.status, &health.body["status"]),
            (StatusCode::OK, &json!("ok"))
        );
        let ready = app.request(Method::GET, "/readyz", None, None).await;
        assert_eq!(
            (ready.status, &ready.body["status"]),
            (StatusCode::OK, &json!("ready"))
        );
        let wrong_method = app.request(Method::GET, "/v1/usage", None, None).await;
        assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(wrong_method.body["error"], "method_not_allowed");
        let bad_path = app.get("/v1/accounts/%FF/topups", &app.admin).await;
        assert_eq!(bad_path.status, StatusCode::BAD_REQUEST);
        assert_eq!(bad_path.body["error"], "invalid_request");
        let metrics = app
            .client
            .get(format!("{}/metrics", app.ops_url))
            .send()
            .await
            .expect("metrics");
        assert_eq!(metrics.status(), StatusCode::OK);
        assert!(
            metrics
                .text()
                .await
                .expect("text")
                .contains("topupd_http_requests_total")
        );
        let ops_ready: serde_json::Value = app
            .client
            .get(format!("{}/readyz", app.ops_url))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("JSON");
        assert_eq!(ops_ready["status"], "ready");
        let unknown = app
            .request(Method::GET, "/v1/nothing-here", None, None)
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        assert_eq!(unknown.body["error"], "not_found");
    })
    .await;
}

#[tokio::test]
async fn a_new_email_or_name_reaches_the_provider_customer_even_if_the_provider_is_down_then() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let customer = app.provider_customer(&account).await;
        let at_provider = async || app.stub_get(&format!("/v1/customers/{customer}")).await;
        let path = format!("/v1/accounts/{account}");
        let changed = app
            .request(
                Method::PATCH,
                &path,
                Some(&key),
                Some(json!({ "email": " grace@example.com " })),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
        assert_eq!(
            (
                changed.body["email"].as_str(),
                changed.body["name"].as_str()
            ),
            (Some("grace@example.com"), Some("Ada"))
        );
        let seen = at_provider().await;
        assert_eq!(
            (seen["email"].as_str(), seen["name"].as_str()),
            (Some("grace@example.com"), Some("Ada"))
        );

        // The provider is down while the name changes: the change stands, and the
        // reconciler brings the customer up to date once the provider is back.
        app.stub
            .set_faults(topupd::payments::stub::world::Faults {
                fail_before: 100,
                ..Default::default()
            })
            .await;
        let renamed = app
            .request(
                Method::PATCH,
                &path,
                Some(&app.admin),
                Some(json!({ "name": "Grace Hopper" })),
            )
            .await;
        assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
        assert_eq!(at_provider().await["name"], "Ada");
        app.stub.set_faults(Default::default()).await;
        assert_eq!(app.topups.sync_customers().await.expect("a sync"), 1);
        assert_eq!(at_provider().await["name"], "Grace Hopper");
        assert_eq!(
            app.topups.sync_customers().await.expect("a sync"),
            0,
            "up to date"
        );

        // Bad input names the field and changes nothing; another customer's key finds
        // no account.
        let stranger = app
            .key("customer", Some(&app.funded_account("0").await))
            .await;
        let before = app.snapshot(&account).await;
        for (body, field) in [
            (json!({ "email": "Grace <grace@example.com>" }), "email"),
            (json!({}), "email"),
            (json!({ "name": " " }), "name"),
        ] {
            let refused = app
                .request(Method::PATCH, &path, Some(&key), Some(body.clone()))
                .await;
            assert_eq!(
                refused.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{body}: {}",
                refused.body
            );
            assert!(
                refused.body["fields"][field].is_string(),
                "{body}: {}",
                refused.body
            );
        }
        let hidden = app
            .request(
                Method::PATCH,
                &path,
                Some(&stranger),
                Some(json!({ "name": "Mallory" })),
            )
            .await;
        assert_eq!(hidden.status, StatusCode::NOT_FOUND);
        assert_eq!(app.snapshot(&account).await, before);
        let audit = app.get("/v1/admin/audit?limit=200", &app.admin).await;
        let updates = audit.body["data"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["action"] == "account.update")
            .count();
        assert_eq!(updates, 2);
    })
    .await;
}

#[tokio::test]
async fn a_closed_account_is_charged_no_more_by_any_path_and_keeps_its_balance() {
    each_backend(async |app| {
        // Auto top-up on (below 1,000 up to 5,000) and 300 credits: the next scan would charge.
        let (account, customer) = app.auto_account("pm_card_visa", "300").await;
        let support = app.key("support", None).await;
        let close = |key: &str, body: serde_json::Value| {
            let (app, key, path) = (
                &app,
                key.to_owned(),
                format!("/v1/admin/accounts/{account}/close"),
            );
            async move { app.post(&path, &key, body).await }
        };
        assert_eq!(
            close(&customer, json!({ "reason": "x" })).await.status,
            StatusCode::FORBIDDEN
        );
        let no_reason = close(&support, json!({ "reason": " " })).await;
        assert_eq!(no_reason.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            no_reason.body["fields"]["reason"].is_string(),
            "{}",
            no_reason.body
        );

        let closed = close(&support, json!({ "reason": "customer asked to leave" })).await;
        assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
        assert_eq!(closed.body["closed_reason"], "customer asked to leave");
        let closed_at = closed.body["closed_at"].clone();
        assert!(closed_at.is_string(), "{}", closed.body);
        app.clock.advance_ms(60_000);
        let again = close(&support, json!({ "reason": "again" })).await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(
            (&again.body["closed_at"], &again.body["closed_reason"]),
            (&closed_at, &json!("customer asked to leave"))
        );

        // No charge by any path.
        app.clock.advance_ms(7 * 3_600_000);
        assert_eq!(app.scan().await.claimed, 0);
        let bought = app
            .post(
                &format!("/v1/accounts/{account}/topups"),
                &customer,
                json!({ "credits": 1000 }),
            )
            .await;
        assert_eq!(bought.status, StatusCode::CONFLICT, "{}", bought.body);
        assert!(
            bought.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("closed"))
        );
        let enabled = app
            .request(
                Method::PUT,
                &format!("/v1/accounts/{account}/auto-topup"),
                Some(&customer),
                Some(json!({ "enabled": true, "threshold": 1000, "target": 5000 })),
            )
            .await;
        assert_eq!(
            enabled.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            enabled.body
        );
        assert!(
            enabled.body["fields"]["enabled"].is_string(),
            "{}",
            enabled.body
        );
        let state = app.auto_topup(&account).await;
        assert_eq!(
            (&state["enabled"], &state["state"]),
            (&json!(false), &json!("off"))
        );
        assert_eq!(
            app.stored_topups(&account).await.len(),
            0,
            "nothing was charged"
        );
        assert_eq!(app.balance(&account).await, dec("300"));

        // The credits already paid for are still the customer's to use.
        let service = app.key("service", None).await;
        assert_eq!(
            app.debit(&service, &account, "after-close", 30)
                .await
                .status,
            StatusCode::CREATED
        );
        assert_eq!(app.balance(&account).await, dec("290"));

        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &app.admin)
            .await;
        let entry = audit.body["data"]
            .as_array()
            .expect("entries")
            .iter()
            .find(|e| e["action"] == "account.close")
            .cloned()
            .expect("closing audited once");
        assert_eq!(entry["detail"]["reason"], "customer asked to leave");

        // A paused account closed: its pause ends with it, and nothing retries it.
        let (paused, paused_key) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 1);
        let closed = app
            .post(
                &format!("/v1/admin/accounts/{paused}/close"),
                &support,
                json!({ "reason": "fraud" }),
            )
            .await;
        assert_eq!(closed.status, StatusCode::OK, "{}", closed.body);
        assert_eq!(app.auto_topup(&paused).await["state"], "off");
        let retried = app
            .post(
                &format!("/v1/accounts/{paused}/auto-topup/retry"),
                &paused_key,
                json!({}),
            )
            .await;
        assert_eq!(retried.status, StatusCode::CONFLICT, "{}", retried.body);
        assert_eq!(
            app.stored_topups(&paused).await.len(),
            1,
            "only the declined one"
        );
    })
    .await;
}

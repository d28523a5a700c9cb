//! The account directory: the host's own ids, idempotent opening, and finding accounts
//! without knowing their ids.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, each_backend};

impl TestApp {
    async fn find(&self, query: &str) -> Vec<Value> {
        let found = self
            .get(&format!("/v1/admin/accounts?{query}"), &self.admin)
            .await;
        assert_eq!(found.status, StatusCode::OK, "{query}: {}", found.body);
        found.body["data"].as_array().expect("data").clone()
    }
}

fn emails(accounts: &[Value]) -> Vec<&str> {
    accounts
        .iter()
        .map(|a| a["email"].as_str().expect("email"))
        .collect()
}

#[tokio::test]
async fn an_external_id_opens_one_account_however_often_it_is_sent() {
    each_backend(async |app| {
        let body = json!({
            "email": "ada@example.com", "name": "Ada", "external_id": "user-42",
            "metadata": { "plan": "pro" },
        });
        let first = app.post("/v1/admin/accounts", &app.admin, body.clone()).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        assert_eq!(first.body["external_id"], "user-42");
        assert_eq!(first.body["metadata"], json!({ "plan": "pro" }));
        let again = app.post("/v1/admin/accounts", &app.admin, body.clone()).await;
        assert_eq!(again.status, StatusCode::OK, "{}", again.body);
        assert_eq!(again.body["id"], first.body["id"]);
        let mut other = body.clone();
        other["name"] = json!("Ada L.");
        let conflict = app.post("/v1/admin/accounts", &app.admin, other).await;
        assert_eq!(conflict.status, StatusCode::CONFLICT, "{}", conflict.body);
        assert!(
            conflict.body["message"].as_str().expect("message").contains("name"),
            "{}",
            conflict.body
        );

        // Two at once: one opens it, the other is answered the same account.
        let racing = json!({ "email": "bo@example.com", "name": "Bo", "external_id": "user-43" });
        let (a, b) = tokio::join!(
            app.post("/v1/admin/accounts", &app.admin, racing.clone()),
            app.post("/v1/admin/accounts", &app.admin, racing.clone()),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::CREATED]);
        assert_eq!(a.body["id"], b.body["id"]);
        assert_eq!(app.find("external_id=user-43").await.len(), 1);

        for (bad, field) in [
            (json!({ "email": "c@example.com", "name": "C", "external_id": "has space" }), "external_id"),
            (json!({ "email": "c@example.com", "name": "C", "metadata": { "k": "\u{0007}" } }), "metadata.k"),
            (json!({ "email": "c@example.com", "name": "C", "metadata": { "a_key_much_longer_than_forty_characters_here": "v" } }), "metadata"),
        ] {
            let refused = app.post("/v1/admin/accounts", &app.admin, bad).await;
            assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.body);
            assert!(refused.body["fields"][field].is_string(), "{field}: {}", refused.body);
        }
        assert!(app.find("email=c%40example.com").await.is_empty(), "nothing opened");
    })
    .await;
}

#[tokio::test]
async fn staff_find_accounts_by_email_id_state_and_balance_a_page_at_a_time() {
    each_backend(async |app| {
        app.account_with_email("ann@example.com", "50").await;
        app.account_with_email("Anna@Example.com", "500").await;
        app.account_with_email("bo_b@example.com", "5").await;
        let (paused, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 1);

        assert_eq!(
            emails(&app.find("email=ADA%40example.com").await),
            ["ada@example.com"]
        );
        // Newest first.
        assert_eq!(
            emails(&app.find("email_prefix=an").await),
            ["Anna@Example.com", "ann@example.com"]
        );
        // A prefix is text, not a pattern.
        assert!(app.find("email_prefix=bo%25").await.is_empty());
        assert_eq!(
            emails(&app.find("email_prefix=bo_").await),
            ["bo_b@example.com"]
        );
        assert!(app.find("email_prefix=b_").await.is_empty());
        assert_eq!(
            emails(&app.find("balance_below=50&email_prefix=%25").await),
            Vec::<&str>::new()
        );
        let poor = app.find("balance_below=50").await;
        assert!(emails(&poor).contains(&"bo_b@example.com"));
        assert!(!emails(&poor).contains(&"ann@example.com"));
        let found = app
            .find("auto_topup_state=paused&paused_reason=payment_failed")
            .await;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0]["id"], paused.as_str());
        assert!(app.find("auto_topup_state=active").await.is_empty());

        let first = app.get("/v1/admin/accounts?limit=2", &app.admin).await;
        let cursor = first.body["next_cursor"].as_str().expect("a next page");
        let rest = app
            .get(
                &format!("/v1/admin/accounts?limit=2&cursor={cursor}"),
                &app.admin,
            )
            .await;
        let all: Vec<Value> = [first.body["data"].clone(), rest.body["data"].clone()]
            .iter()
            .flat_map(|d| d.as_array().expect("data").clone())
            .collect();
        assert_eq!(all.len(), 4, "{all:#?}");
        assert!(rest.body["next_cursor"].is_null());

        let support = app.key("support", None).await;
        assert_eq!(
            app.get("/v1/admin/accounts", &support).await.status,
            StatusCode::OK
        );
        let customer = app.key("customer", Some(&paused)).await;
        assert_eq!(
            app.get("/v1/admin/accounts", &customer).await.status,
            StatusCode::FORBIDDEN
        );
        for (query, field) in [
            ("auto_topup_state=sleeping", "auto_topup_state"),
            ("paused_reason=tired", "paused_reason"),
            ("balance_below=lots", "balance_below"),
            ("limit=0", "limit"),
        ] {
            let refused = app
                .get(&format!("/v1/admin/accounts?{query}"), &app.admin)
                .await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{query}");
            assert!(
                refused.body["fields"][field].is_string(),
                "{query}: {}",
                refused.body
            );
        }
    })
    .await;
}

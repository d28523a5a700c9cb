//! Refunds and disputes made at the provider reach the credits: through the stub's
//! Stripe API over HTTP and its webhooks, on both databases, duplicated and reordered.

use std::time::Duration;

use reqwest::StatusCode;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use topupd::payments::signature;

use crate::helpers::{TestApp, credits, dec, each_backend};

impl TestApp {
    /// Buys `credits` with `card` for a new customer with auto top-up on: the account,
    /// its customer key and the purchase's charge id.
    async fn bought_with(&self, card: &str, credits: i64) -> (String, String, String) {
        let (account, key) = self.customer_with_card(card).await;
        self.enable_auto_topup(&account, &key).await;
        let bought = self.buy(&key, &account, credits, None).await;
        assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
        let charge = bought.body["charge_id"]
            .as_str()
            .expect("a charge")
            .to_owned();
        (account, key, charge)
    }

    /// Waits until the account's balance is `expected` credits (a webhook's work).
    async fn balance_becomes(&self, account: &str, expected: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let balance = self.balance(account).await;
            if balance == dec(expected) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "balance stayed {balance}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The account's ledger entries of `kind`, oldest first: (credits, balance after).
    async fn entries(&self, account: &str, kind: &str) -> Vec<(Decimal, Decimal)> {
        let ledger = self
            .get(
                &format!("/v1/accounts/{account}/ledger?limit=200"),
                &self.admin,
            )
            .await;
        assert_eq!(ledger.status, StatusCode::OK, "{}", ledger.body);
        let mut entries: Vec<(Decimal, Decimal)> = ledger.body["data"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["kind"] == kind)
            .map(|e| (credits(&e["amount"]), credits(&e["balance_after"])))
            .collect();
        entries.reverse();
        entries
    }

    /// The events the stub sent of `kind`, as `GET /v1/events/{id}` has them.
    async fn sent_events(&self, kind: &str) -> Vec<Value> {
        let read = async |path: String| self.stub_get(&path).await;
        let mut events = Vec::new();
        for delivery in read("/_stub/events".into())
            .await
            .as_array()
            .expect("deliveries")
        {
            let event = read(format!(
                "/v1/events/{}",
                delivery["event_id"].as_str().expect("id")
            ))
            .await;
            if event["type"] == kind {
                events.push(event);
            }
        }
        events
    }

    /// Delivers `event` (signed) again, as the provider does when it retries, or under a
    /// new id, as a second event about the same object.
    async fn redeliver(&self, event: &Value, new_id: Option<&str>) {
        let mut event = event.clone();
        if let Some(id) = new_id {
            event["id"] = json!(id);
        }
        let body = serde_json::to_vec(&event).expect("JSON");
        let signed = signature::sign(&self.webhook_secret, self.now_secs(), &body);
        let answer = self.deliver_webhook(&body, Some(signed)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    async fn notices_to(&self, account: &str, kind: &str) -> Vec<Value> {
        let listed = self.get("/v1/admin/notices?limit=200", &self.admin).await;
        listed.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter(|n| n["account_id"] == account && n["kind"] == kind)
            .cloned()
            .collect()
    }

    async fn pause_reason(&self, account: &str) -> Value {
        self.auto_topup(account).await["pause"]["reason"].clone()
    }
}

#[tokio::test]
async fn a_refund_at_the_provider_takes_back_its_credits_once_even_below_zero() {
    each_backend(async |app| {
        let (account, key, charge) = app.bought_with("pm_card_visa", 2000).await;
        let service = app.key("service", None).await;
        // Half of the credits are spent (150 minutes of dubbing at 10 credits a minute).
        assert_eq!(
            app.debit(&service, &account, "req-1", 150 * 60)
                .await
                .status,
            StatusCode::CREATED
        );
        app.balance_becomes(&account, "500").await;

        // Support refunds a quarter of the payment in the provider's dashboard.
        let (status, refund) = app
            .stripe(
                "/v1/refunds",
                &[("charge", &charge), ("amount", "500")],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{refund}");
        app.balance_becomes(&account, "0").await;
        assert_eq!(app.pause_reason(&account).await, "refunded");

        // The provider retries the event, and another event names the same charge: both
        // re-read it and find nothing new.
        let refunded = app.sent_events("charge.refunded").await;
        assert_eq!(refunded.len(), 1);
        app.redeliver(&refunded[0], None).await;
        app.redeliver(&refunded[0], Some("evt_again")).await;
        assert_eq!(app.balance(&account).await, dec("0"));

        // Then the rest: the credits were spent, so the balance goes below zero.
        let (status, _) = app
            .stripe("/v1/refunds", &[("charge", &charge)], Some("refund-rest"))
            .await;
        assert_eq!(status, StatusCode::OK);
        app.balance_becomes(&account, "-1500").await;
        // An old event arriving last changes nothing either.
        app.redeliver(&refunded[0], Some("evt_late")).await;
        assert_eq!(
            app.entries(&account, "payment_refund").await,
            [(dec("-500"), dec("0")), (dec("-1500"), dec("-1500"))]
        );
        let topup = &app.stored_topups(&account).await[0];
        assert_eq!(topup["refunded_cents"], 2000, "{topup}");

        // Below zero, usage is refused with what is short.
        let refused = app.debit(&service, &account, "req-2", 60).await;
        assert_eq!(
            refused.status,
            StatusCode::PAYMENT_REQUIRED,
            "{}",
            refused.body
        );
        assert_eq!(credits(&refused.body["available"]), dec("-1500"));
        // The customer cannot pay the pause away; support resumes it.
        let retried = app
            .post(
                &format!("/v1/accounts/{account}/auto-topup/retry"),
                &key,
                json!({}),
            )
            .await;
        assert_eq!(retried.status, StatusCode::CONFLICT, "{}", retried.body);
        assert!(
            retried.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("refunded"))
        );
        let told = app.notices_to(&account, "credits_refunded").await;
        assert_eq!(told.len(), 2, "one notice per refund");
        assert_eq!(told[0]["recipient"], "ada@example.com");
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
async fn money_taken_back_whose_webhooks_were_lost_is_found_by_the_event_sweep() {
    each_backend(async |app| {
        let (account, _, charge) = app.bought_with("pm_card_visa", 2000).await;
        // A sweep sees the purchase's events (whether or not their webhooks came first);
        // then the refund's webhooks are lost.
        app.topups.sweep_events().await.expect("a sweep");
        app.lose_webhooks(2).await; // charge.refunded and refund.created
        let (status, _) = app
            .stripe("/v1/refunds", &[("charge", &charge)], None)
            .await;
        assert_eq!(status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(app.balance(&account).await, dec("2000"), "nothing arrived");

        assert_eq!(app.topups.sweep_events().await.expect("a sweep"), 1);
        assert_eq!(app.balance(&account).await, dec("0"));
        assert_eq!(app.pause_reason(&account).await, "refunded");
        // The next sweep finds it again, and it is not new.
        assert_eq!(app.topups.sweep_events().await.expect("a sweep"), 0);
        assert_eq!(app.entries(&account, "payment_refund").await.len(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_dispute_holds_its_credits_pauses_and_tells_support_and_a_won_one_gives_them_back() {
    each_backend(async |app| {
        // Stripe's test card that is disputed as soon as it pays.
        let (account, _, charge) = app.bought_with("pm_card_createDispute", 2000).await;
        app.balance_becomes(&account, "0").await;
        assert_eq!(app.pause_reason(&account).await, "disputed");
        let opened = app.notices_to(&account, "dispute_opened").await;
        assert_eq!(opened.len(), 1);
        assert_eq!(opened[0]["recipient"], app.config.email.support_email);

        let created = app.sent_events("charge.dispute.created").await;
        let dispute = created[0]["data"]["object"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_eq!(created[0]["data"]["object"]["charge"], charge.as_str());
        app.redeliver(&created[0], Some("evt_created_again")).await;

        // Support answers with evidence Stripe's test mode wins with.
        let (status, won) = app
            .stripe(
                &format!("/v1/disputes/{dispute}"),
                &[("evidence[uncategorized_text]", "winning_evidence")],
                None,
            )
            .await;
        assert_eq!(
            (status, won["status"].as_str()),
            (StatusCode::OK, Some("won")),
            "{won}"
        );
        app.balance_becomes(&account, "2000").await;
        // Every report of it, old or new, again or out of order, changes nothing more.
        let closed = app.sent_events("charge.dispute.closed").await;
        app.redeliver(&closed[0], Some("evt_closed_again")).await;
        app.redeliver(&created[0], Some("evt_created_late")).await;
        assert_eq!(app.balance(&account).await, dec("2000"));
        assert_eq!(
            app.entries(&account, "dispute_hold").await,
            [(dec("-2000"), dec("0"))]
        );
        assert_eq!(
            app.entries(&account, "dispute_release").await,
            [(dec("2000"), dec("2000"))]
        );
        assert_eq!(app.notices_to(&account, "dispute_closed").await.len(), 1);
        // Winning the dispute does not resume charging the card: support decides.
        assert_eq!(app.pause_reason(&account).await, "disputed");
        let resumed = app
            .post(
                &format!("/v1/admin/accounts/{account}/auto-topup/resume"),
                &app.admin,
                json!({ "note": "dispute won; customer confirmed by phone" }),
            )
            .await;
        assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
        assert_eq!(app.auto_topup(&account).await["state"], "active");
    })
    .await;
}

#[tokio::test]
async fn a_lost_dispute_keeps_spent_credits_removed_even_when_its_close_arrives_first() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_createDispute").await;
        app.enable_auto_topup(&account, &key).await;
        // The dispute's opening is lost on the way: its close is the first news of it.
        app.lose_webhooks(3).await; // the payment created and succeeded, the dispute opened
        let bought = app.buy(&key, &account, 2000, None).await;
        assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
        assert_eq!(app.balance(&account).await, dec("2000"));
        let service = app.key("service", None).await;
        assert_eq!(
            app.debit(&service, &account, "req-1", 200 * 60)
                .await
                .status,
            StatusCode::CREATED
        );
        let created = app.sent_events("charge.dispute.created").await;
        let dispute = created[0]["data"]["object"]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let (status, lost) = app
            .stripe(&format!("/v1/disputes/{dispute}/close"), &[], None)
            .await;
        assert_eq!(
            (status, lost["status"].as_str()),
            (StatusCode::OK, Some("lost")),
            "{lost}"
        );
        app.balance_becomes(&account, "-2000").await;
        assert_eq!(app.pause_reason(&account).await, "disputed");
        // The opening arrives at last, and changes nothing.
        app.redeliver(&created[0], None).await;
        assert_eq!(app.balance(&account).await, dec("-2000"));
        assert_eq!(
            app.entries(&account, "dispute_hold").await,
            [(dec("-2000"), dec("-2000"))]
        );
        assert!(app.entries(&account, "dispute_release").await.is_empty());
        let kinds = app.notice_kinds(&account).await;
        assert!(
            kinds.contains(&"dispute_opened".to_owned())
                && kinds.contains(&"dispute_closed".to_owned()),
            "{kinds:?}"
        );
        let refused = app.debit(&service, &account, "req-2", 60).await;
        assert_eq!(refused.status, StatusCode::PAYMENT_REQUIRED);
    })
    .await;
}

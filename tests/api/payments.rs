//! Saved cards, manual top-ups and webhooks, through the stub provider over real HTTP.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use topupd::payments::{
    client::{NewPayment, ProviderClient, ProviderError},
    signature,
    stub::world::{FaultTarget, Faults},
};

use crate::helpers::{
    Answer, TestApp, backends, credits, dec, each_backend, test_config, unused_port,
};

impl TestApp {
    /// A new account with a customer key and `card` saved as its default. `card` is one
    /// of Stripe's test payment methods, or `declining:<decline code>` for a card that
    /// saves well and declines with that code when charged (Stripe's test mode has only
    /// `pm_card_chargeCustomerFail`, which declines `generic_decline`; the stub makes a
    /// saved card decline with any code).
    pub async fn customer_with_card(&self, card: &str) -> (String, String) {
        let account = self.funded_account("0").await;
        let key = self.key("customer", Some(&account)).await;
        let declining = card.strip_prefix("declining:");
        let saved = self
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                &key,
                json!({ "payment_method_id": declining.map_or(card, |_| "pm_card_chargeCustomerFail") }),
            )
            .await;
        assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.body);
        if let Some(code) = declining {
            let id = saved.body["id"].as_str().expect("the card's id");
            assert_eq!(self.stub.decline_from_now(id, code).await, StatusCode::OK);
        }
        (account, key)
    }

    pub async fn buy(
        &self,
        key: &str,
        account: &str,
        credits: i64,
        idempotency_key: Option<&str>,
    ) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/v1/accounts/{account}/topups", self.base_url))
            .bearer_auth(key)
            .json(&json!({ "credits": credits }));
        if let Some(idempotency_key) = idempotency_key {
            request = request.header("Idempotency-Key", idempotency_key);
        }
        crate::helpers::answer(request.send().await.expect("answered")).await
    }

    /// The account's top-ups as stored, without asking the provider.
    pub async fn stored_topups(&self, account: &str) -> Vec<Value> {
        let listed = self
            .get(&format!("/v1/accounts/{account}/topups"), &self.admin)
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        listed.body["data"].as_array().expect("data").clone()
    }

    /// Waits until the account's newest top-up is stored in `state` (a webhook's work).
    pub async fn wait_for_topup_state(&self, account: &str, state: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let newest = self
                .stored_topups(account)
                .await
                .into_iter()
                .next()
                .expect("a top-up");
            if newest["state"] == state {
                return newest;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "top-up stayed {}",
                newest["state"]
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The kinds of the notices queued to the account, newest first, but for the
    /// confirmations of its auto top-up settings (every test that turns auto top-up on
    /// queues one; `notices::each_change_of_what_auto_top_up_charges_is_confirmed_...`
    /// counts them).
    pub async fn notice_kinds(&self, account: &str) -> Vec<String> {
        let listed = self.get("/v1/admin/notices?limit=200", &self.admin).await;
        listed.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter(|n| n["account_id"] == account && n["kind"] != "auto_topup_changed")
            .map(|n| n["kind"].as_str().expect("kind").to_owned())
            .collect()
    }

    /// Posts a webhook body with the given signature header (or none).
    pub async fn deliver_webhook(&self, body: &[u8], signature: Option<String>) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/v1/webhooks/payments", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_vec());
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        crate::helpers::answer(request.send().await.expect("answered")).await
    }

    pub fn now_secs(&self) -> i64 {
        topupd::clock::Clock::now_ms(&self.clock) / 1000
    }

    /// A customer buys `credits` with a card that asks for 3-D Secure and completes it at
    /// the provider, while every webhook of the payment is lost: the provider knows the
    /// payment succeeded, topupd does not yet. Returns the account, its key and the
    /// purchase answer.
    pub async fn authenticated_without_webhooks(&self, credits: i64) -> (String, String, Answer) {
        let (account, key) = self
            .customer_with_card("pm_card_authenticationRequired")
            .await;
        // created, requires_action and succeeded
        self.lose_webhooks(3).await;
        let started = self.buy(&key, &account, credits, None).await;
        let url = started.body["next_action"]["url"]
            .as_str()
            .expect("secure link");
        self.client
            .post(format!("{url}/complete"))
            .send()
            .await
            .expect("complete");
        (account, key, started)
    }

    /// The stub drops its next `n` webhooks.
    pub async fn lose_webhooks(&self, n: u32) {
        self.stub
            .set_faults(Faults {
                drop_webhooks: n,
                ..Faults::default()
            })
            .await;
    }

    /// The account's customer at the provider.
    pub async fn provider_customer(&self, account: &str) -> String {
        self.db
            .account(account)
            .await
            .expect("read")
            .expect("account")
            .provider_customer_id
            .expect("the account has a provider customer")
    }

    /// Every payment the provider holds for the account, whatever its state.
    pub async fn payments_of(&self, account: &str) -> Vec<topupd::payments::types::PaymentIntent> {
        let customer = self.provider_customer(account).await;
        let all: topupd::payments::types::List<topupd::payments::types::PaymentIntent> = self
            .client
            .get(format!("{}/_stub/payment_intents", self.stub.base_url()))
            .send()
            .await
            .expect("listed")
            .json()
            .await
            .expect("payments");
        all.data
            .into_iter()
            .filter(|pi| pi.customer.as_deref() == Some(customer.as_str()))
            .collect()
    }

    pub fn provider(&self) -> ProviderClient {
        ProviderClient::new(&self.config.payments, self.stub.base_url()).expect("client")
    }
}

#[tokio::test]
async fn each_test_card_has_its_outcome_through_a_manual_top_up() {
    each_backend(async |app| {
        // Stripe checks a card when it is saved: these never get that far.
        for (card, code) in [
            ("pm_card_chargeDeclined", "generic_decline"),
            (
                "pm_card_chargeDeclinedInsufficientFunds",
                "insufficient_funds",
            ),
            ("pm_card_chargeDeclinedExpiredCard", "expired_card"),
            ("pm_card_chargeDeclinedFraudulent", "fraudulent"),
        ] {
            let account = app.funded_account("0").await;
            let key = app.key("customer", Some(&account)).await;
            let refused = app
                .post(
                    &format!("/v1/accounts/{account}/payment-methods"),
                    &key,
                    json!({ "payment_method_id": card }),
                )
                .await;
            assert_eq!(
                refused.status,
                StatusCode::PAYMENT_REQUIRED,
                "{card}: {}",
                refused.body
            );
            assert_eq!(refused.body["decline_code"], code, "{card}");
            let cards = app
                .get(&format!("/v1/accounts/{account}/payment-methods"), &key)
                .await;
            assert_eq!(cards.body["data"], json!([]), "{card}: nothing saved");
        }
        let cases = [
            ("pm_card_visa", StatusCode::CREATED, "succeeded", None),
            (
                "pm_card_chargeCustomerFail",
                StatusCode::PAYMENT_REQUIRED,
                "failed",
                Some("generic_decline"),
            ),
            (
                "declining:insufficient_funds",
                StatusCode::PAYMENT_REQUIRED,
                "failed",
                Some("insufficient_funds"),
            ),
            (
                "declining:expired_card",
                StatusCode::PAYMENT_REQUIRED,
                "failed",
                Some("expired_card"),
            ),
            (
                "pm_card_authenticationRequired",
                StatusCode::ACCEPTED,
                "requires_action",
                None,
            ),
        ];
        for (card, status, state, decline) in cases {
            let (account, key) = app.customer_with_card(card).await;
            let answer = app.buy(&key, &account, 5000, None).await;
            assert_eq!(
                answer.status, status,
                "{:?} {card}: {}",
                app.backend, answer.body
            );
            let topup = if status == StatusCode::PAYMENT_REQUIRED {
                &answer.body["topup"]
            } else {
                &answer.body
            };
            assert_eq!(topup["state"], state, "{card}");
            assert_eq!(topup["amount_cents"], 5000);
            assert_eq!(topup["amount_usd"], "$50.00");
            assert!(
                topup["transaction_id"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("pi_")),
                "{card}"
            );
            let payment = app.payments_of(&account).await.remove(0);
            assert_eq!(
                payment.setup_future_usage.as_deref(),
                Some("off_session"),
                "a purchase with the customer there sets the card up for later"
            );
            if state != "requires_action" {
                assert!(
                    topup["charge_id"]
                        .as_str()
                        .is_some_and(|c| c.starts_with("ch_")),
                    "{card}: {topup}"
                );
                assert_eq!(
                    topup["charge_id"].as_str(),
                    payment.latest_charge.as_deref(),
                    "{card}"
                );
            }
            let expected_balance = if state == "succeeded" { "5000" } else { "0" };
            assert_eq!(app.balance(&account).await, dec(expected_balance), "{card}");
            match decline {
                Some(code) => {
                    assert_eq!(answer.body["error"], "payment_failed");
                    assert_eq!(answer.body["decline_code"], code);
                    assert_eq!(
                        app.notice_kinds(&account).await,
                        ["payment_failed"],
                        "{card}"
                    );
                }
                None if state == "succeeded" => {
                    assert_eq!(app.notice_kinds(&account).await, ["topup_receipt"]);
                    let ledger = app
                        .get(&format!("/v1/accounts/{account}/ledger"), &key)
                        .await;
                    assert_eq!(ledger.body["data"][0]["kind"], "manual_topup");
                    assert_eq!(ledger.body["data"][0]["reference"], topup["id"]);
                }
                None => {
                    let url = topup["next_action"]["url"].as_str().expect("a secure link");
                    assert!(url.contains("/_stub/authenticate/"), "{url}");
                    assert!(app.notice_kinds(&account).await.is_empty());
                }
            }
        }
        let charges = app.stub.charges().await;
        assert_eq!(
            charges.len(),
            1,
            "only the visa card was charged: {charges:?}"
        );
        assert_eq!(charges[0].amount_received, 5000);
        assert!(app.cli(&["verify"]).await.status.success());
    })
    .await;
}

#[tokio::test]
async fn a_purchase_retried_with_the_same_idempotency_key_charges_once() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let first = app.buy(&key, &account, 500, Some("order-1")).await;
        assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
        let again = app.buy(&key, &account, 500, Some("order-1")).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert_eq!(again.body["id"], first.body["id"]);
        let other = app.buy(&key, &account, 600, Some("order-1")).await;
        assert_eq!(other.status, StatusCode::CONFLICT, "{}", other.body);
        assert_eq!(app.balance(&account).await, dec("500"));
        assert_eq!(app.stub.charges().await.len(), 1);
        assert_eq!(app.stored_topups(&account).await.len(), 1);

        let next = app.buy(&key, &account, 500, Some("order-2")).await;
        assert_eq!(next.status, StatusCode::CREATED);
        assert_eq!(app.balance(&account).await, dec("1000"));
        assert_eq!(app.stub.charges().await.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn the_provider_replays_a_create_for_the_same_key_and_detects_a_mismatched_replay() {
    each_backend(async |app| {
        let (account, _) = app.customer_with_card("pm_card_visa").await;
        let customer = app.provider_customer(&account).await;
        let card = app
            .db
            .default_card(&account)
            .await
            .expect("read")
            .expect("card")
            .id;
        let client = app.provider();
        let payment = |amount_cents| NewPayment {
            amount_cents,
            currency: "usd",
            customer: &customer,
            payment_method: &card,
            metadata: vec![("topup_attempt_id", "tpu_test".to_owned())],
            idempotency_key: "test:key:1",
            save_for_off_session: false,
        };
        let first = client
            .create_payment_intent(&payment(1000))
            .await
            .expect("created");
        let replayed = client
            .create_payment_intent(&payment(1000))
            .await
            .expect("replayed");
        assert_eq!(replayed.id, first.id);
        let mismatch = client.create_payment_intent(&payment(2000)).await;
        assert!(
            matches!(mismatch, Err(ProviderError::IdempotencyMismatch { .. })),
            "{mismatch:?}"
        );
        let listed = app.payments_of(&account).await;
        assert_eq!(listed.len(), 1, "one payment for one key");
    })
    .await;
}

#[tokio::test]
async fn completing_3d_secure_credits_once_through_the_webhook() {
    each_backend(async |app| {
        let (account, key) = app
            .customer_with_card("pm_card_authenticationRequired")
            .await;
        let started = app.buy(&key, &account, 2000, None).await;
        assert_eq!(started.status, StatusCode::ACCEPTED);
        let url = started.body["next_action"]["url"]
            .as_str()
            .expect("secure link")
            .to_owned();

        let page = app.client.get(&url).send().await.expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(
            page.text()
                .await
                .expect("html")
                .contains("Complete authentication")
        );
        // The webhook for the completion arrives twice.
        app.stub
            .set_faults(Faults {
                duplicate_webhooks: 1,
                ..Faults::default()
            })
            .await;
        let completed = app
            .client
            .post(format!("{url}/complete"))
            .send()
            .await
            .expect("complete");
        assert_eq!(completed.status(), StatusCode::OK);

        let settled = app.wait_for_topup_state(&account, "succeeded").await;
        assert!(settled["next_action"].is_null());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(app.balance(&account).await, dec("2000"), "credited once");
        assert_eq!(app.notice_kinds(&account).await, ["topup_receipt"]);
        assert_eq!(app.stub.charges().await.len(), 1);
        assert!(app.cli(&["verify"]).await.status.success());
    })
    .await;
}

#[tokio::test]
async fn failing_3d_secure_leaves_no_credit_and_queues_payment_failed() {
    each_backend(async |app| {
        let (account, key) = app
            .customer_with_card("pm_card_authenticationRequired")
            .await;
        let started = app.buy(&key, &account, 2000, None).await;
        let url = started.body["next_action"]["url"]
            .as_str()
            .expect("secure link")
            .to_owned();
        app.client
            .post(format!("{url}/fail"))
            .send()
            .await
            .expect("fail");
        let failed = app.wait_for_topup_state(&account, "failed").await;
        assert_eq!(
            failed["decline_code"],
            "payment_intent_authentication_failure"
        );
        assert_eq!(app.balance(&account).await, dec("0"));
        assert_eq!(app.notice_kinds(&account).await, ["payment_failed"]);
        assert!(app.stub.charges().await.is_empty());
    })
    .await;
}

/// A `payment_intent.*` event about `payment_id`, to sign.
pub fn event(id: &str, kind: &str, payment_id: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": 0,
        "data": { "object": { "id": payment_id, "object": "payment_intent", "status": "succeeded" } },
    }))
    .expect("JSON")
}

#[tokio::test]
async fn forged_stale_or_unsigned_webhooks_are_refused_and_store_nothing() {
    each_backend(async |app| {
        let (account, _, started) = app.authenticated_without_webhooks(2000).await;
        let payment = started.body["transaction_id"]
            .as_str()
            .expect("payment")
            .to_owned();

        let body = event("evt_forged", "payment_intent.succeeded", &payment);
        let now = app.now_secs();
        let mut altered = body.clone();
        let last = altered.len() - 2;
        altered[last] ^= 0x01;
        let secret = app.webhook_secret.clone();
        let cases: Vec<(&str, Vec<u8>, Option<String>)> = vec![
            ("missing header", body.clone(), None),
            (
                "wrong secret",
                body.clone(),
                Some(signature::sign("whsec_wrong", now, &body)),
            ),
            (
                "body altered by one byte",
                altered.clone(),
                Some(signature::sign(&secret, now, &body)),
            ),
            (
                "older than 5 minutes",
                body.clone(),
                Some(signature::sign(&secret, now - 301, &body)),
            ),
            (
                "replay of an old valid event",
                body.clone(),
                Some(signature::sign(&secret, now - 3600, &body)),
            ),
            ("malformed header", body.clone(), Some("t=abc,v1=zz".into())),
            (
                "the right signature among 5,000 values",
                body.clone(),
                Some(
                    format!(
                        "{}{}",
                        format!(",v1={}", "00".repeat(32)).repeat(5_000),
                        signature::sign(&secret, now, &body).replacen("t=", ",t=", 1)
                    )
                    .trim_start_matches(',')
                    .to_owned(),
                ),
            ),
        ];
        for (case, body, header) in cases {
            let answer = app.deliver_webhook(&body, header).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{case}: {}",
                answer.body
            );
            assert_eq!(answer.body["error"], "invalid_signature", "{case}");
            assert!(
                app.db.event("evt_forged").await.expect("read").is_none(),
                "{case}: stored"
            );
        }
        assert_eq!(
            app.stored_topups(&account).await[0]["state"],
            "requires_action",
            "nothing applied"
        );
        assert_eq!(app.balance(&account).await, dec("0"));

        let valid = app
            .deliver_webhook(&body, Some(signature::sign(&secret, now, &body)))
            .await;
        assert_eq!(valid.status, StatusCode::OK, "{}", valid.body);
        assert!(app.db.event("evt_forged").await.expect("read").is_some());
        assert_eq!(app.stored_topups(&account).await[0]["state"], "succeeded");
        assert_eq!(app.balance(&account).await, dec("2000"));
    })
    .await;
}

#[tokio::test]
async fn duplicated_and_reordered_webhooks_apply_once_and_never_move_back() {
    each_backend(async |app| {
        let (account, key, started) = app.authenticated_without_webhooks(3000).await;
        let payment = started.body["transaction_id"]
            .as_str()
            .expect("payment")
            .to_owned();

        let secret = app.webhook_secret.clone();
        let now = app.now_secs();
        let succeeded = event("evt_2", "payment_intent.succeeded", &payment);
        let earlier = event("evt_1", "payment_intent.requires_action", &payment);
        for body in [&succeeded, &succeeded, &earlier, &succeeded] {
            let answer = app
                .deliver_webhook(body, Some(signature::sign(&secret, now, body)))
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        }
        let topups = app.stored_topups(&account).await;
        assert_eq!(topups.len(), 1);
        assert_eq!(topups[0]["state"], "succeeded");
        assert_eq!(app.balance(&account).await, dec("3000"), "credited once");
        let ledger = app
            .get(&format!("/v1/accounts/{account}/ledger"), &key)
            .await;
        assert_eq!(ledger.body["data"].as_array().expect("entries").len(), 1);
        assert_eq!(app.notice_kinds(&account).await, ["topup_receipt"]);
    })
    .await;
}

#[tokio::test]
async fn a_provider_timing_out_after_recording_the_charge_is_resolved_by_a_retry_with_the_same_key()
{
    for backend in backends() {
        let mut config = test_config(unused_port());
        config.payments.request_timeout_secs = 1;
        config.payments.retry_base_ms = 10;
        config.payments.retry_max_ms = 20;
        let app = TestApp::spawn_with(backend, config).await;
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        app.stub
            .set_faults(Faults {
                target: FaultTarget::Confirm,
                hang_after: 3,
                hang_ms: 1_500,
                drop_webhooks: 2,
                ..Faults::default()
            })
            .await;

        let first = app.buy(&key, &account, 700, Some("order-7")).await;
        assert_eq!(
            first.status,
            StatusCode::ACCEPTED,
            "{backend:?}: {}",
            first.body
        );
        assert_eq!(
            first.body["state"], "confirming",
            "the outcome is unknown, not declined"
        );
        assert_eq!(
            app.stub.charges().await.len(),
            1,
            "the provider recorded the charge"
        );
        assert_eq!(app.balance(&account).await, dec("0"));

        let retried = app.buy(&key, &account, 700, Some("order-7")).await;
        assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.body);
        assert_eq!(retried.body["id"], first.body["id"]);
        assert_eq!(retried.body["state"], "succeeded");
        assert_eq!(app.balance(&account).await, dec("700"));
        assert_eq!(app.stub.charges().await.len(), 1, "no second charge");
        assert!(app.cli(&["verify"]).await.status.success());
        app.stop().await;
    }
}

#[tokio::test]
async fn cards_are_saved_with_provider_details_and_cannot_be_removed_while_charged() {
    each_backend(async |app| {
        let (account, key) = app
            .customer_with_card("pm_card_authenticationRequired")
            .await;
        let path = format!("/v1/accounts/{account}/payment-methods");
        let visa = app
            .post(&path, &key, json!({ "payment_method_id": "pm_card_visa" }))
            .await;
        assert_eq!(visa.status, StatusCode::CREATED);
        assert_eq!(
            (visa.body["brand"].as_str(), visa.body["last4"].as_str()),
            (Some("visa"), Some("4242"))
        );
        assert_eq!(
            (
                visa.body["exp_month"].as_i64(),
                visa.body["exp_year"].as_i64()
            ),
            (Some(12), Some(2034))
        );
        assert_eq!(
            visa.body["default"], false,
            "the first card stays the default"
        );
        let listed = app.get(&path, &key).await;
        let cards = listed.body["data"].as_array().expect("cards");
        assert_eq!(cards.len(), 2);
        assert_eq!(cards[0]["last4"], "3184");
        assert_eq!(cards[0]["default"], true);
        let three_ds = cards[0]["id"].as_str().expect("id").to_owned();

        let started = app.buy(&key, &account, 500, None).await;
        assert_eq!(started.body["state"], "requires_action");
        let busy = app
            .request(
                Method::DELETE,
                &format!("{path}/{three_ds}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
        let concurrent = app.buy(&key, &account, 500, None).await;
        assert_eq!(
            concurrent.status,
            StatusCode::CONFLICT,
            "one open top-up per account"
        );

        let visa_id = visa.body["id"].as_str().expect("id");
        let made_default = app
            .post(&format!("{path}/{visa_id}/default"), &key, json!(null))
            .await;
        assert_eq!(made_default.status, StatusCode::OK);
        assert_eq!(app.get(&path, &key).await.body["data"][0]["id"], visa_id);
        let removed = app
            .request(
                Method::DELETE,
                &format!("{path}/{visa_id}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(removed.status, StatusCode::OK);
        assert_eq!(
            app.get(&path, &key).await.body["data"]
                .as_array()
                .expect("cards")
                .len(),
            1
        );

        let unknown = app
            .post(&path, &key, json!({ "payment_method_id": "pm_nope" }))
            .await;
        assert_eq!(
            unknown.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            unknown.body
        );
        assert!(unknown.body["fields"]["payment_method_id"].is_string());
        let other = app.funded_account("0").await;
        let foreign = app
            .get(&format!("/v1/accounts/{other}/payment-methods"), &key)
            .await;
        assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn purchases_outside_the_limits_or_without_a_card_change_nothing() {
    each_backend(async |app| {
        let pricing = app.request(Method::GET, "/v1/pricing", None, None).await;
        let packages: Vec<i64> = pricing.body["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .map(|p| p["credits"].as_i64().expect("credits"))
            .collect();
        assert_eq!(packages, [500, 5000, 50000, 125000]);
        assert_eq!(pricing.body["packages"][3]["amount_usd"], "$1,250.00");

        let (account, key) = app.customer_with_card("pm_card_visa").await;
        for credits in [0, 99, 1_000_001, -5] {
            let answer = app.buy(&key, &account, credits, None).await;
            assert_eq!(
                answer.status,
                StatusCode::BAD_REQUEST,
                "{credits}: {}",
                answer.body
            );
            assert_eq!(answer.body["error"], "invalid_amount");
        }
        for ok in [100, 1_000_000] {
            assert_eq!(
                app.buy(&key, &account, ok, None).await.status,
                StatusCode::CREATED,
                "{ok}"
            );
        }
        assert_eq!(
            credits(&app.get(&format!("/v1/accounts/{account}"), &key).await.body["balance"]),
            dec("1000100")
        );

        let bare = app.funded_account("0").await;
        let bare_key = app.key("customer", Some(&bare)).await;
        let answer = app.buy(&bare_key, &bare, 500, None).await;
        assert_eq!(answer.status, StatusCode::CONFLICT);
        assert!(
            answer.body["message"]
                .as_str()
                .is_some_and(|m| m.contains("payment method"))
        );
        let support = app.key("support", None).await;
        assert_eq!(
            app.buy(&support, &account, 500, None).await.status,
            StatusCode::FORBIDDEN,
            "customers buy for themselves"
        );
        assert_eq!(app.stub.charges().await.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_lost_webhook_is_made_up_for_by_polling_the_top_up() {
    each_backend(async |app| {
        let (account, key, started) = app.authenticated_without_webhooks(800).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            app.stored_topups(&account).await[0]["state"],
            "requires_action"
        );

        let id = started.body["id"].as_str().expect("id");
        let polled = app
            .get(&format!("/v1/accounts/{account}/topups/{id}"), &key)
            .await;
        assert_eq!(polled.status, StatusCode::OK);
        assert_eq!(polled.body["state"], "succeeded");
        assert_eq!(app.balance(&account).await, dec("800"));
    })
    .await;
}

#[tokio::test]
async fn the_stub_answers_409_while_a_key_is_in_flight() {
    each_backend(async |app| {
        app.stub
            .set_faults(Faults {
                latency_ms: 300,
                ..Faults::default()
            })
            .await;
        let send = || {
            app.client
                .post(format!("{}/v1/customers", app.stub.base_url()))
                .bearer_auth("sk_test")
                .header("Idempotency-Key", "same-key")
                .form(&[("email", "ada@example.com")])
                .send()
        };
        let (first, second) = tokio::join!(send(), send());
        let mut statuses = [
            first.expect("answered").status(),
            second.expect("answered").status(),
        ];
        statuses.sort();
        assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
        let replay = send().await.expect("answered");
        assert_eq!(replay.status(), StatusCode::OK);
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
    })
    .await;
}

#[tokio::test]
async fn the_stub_finishes_a_request_whose_client_hung_up_so_its_key_is_not_held_for_good() {
    // Found by the fault harness: a topupd killed while waiting on the stub left the key
    // in flight, and every retry of the attempt got 409 forever.
    let app = TestApp::spawn(backends()[0]).await;
    app.stub
        .set_faults(Faults {
            latency_ms: 1_500,
            ..Faults::default()
        })
        .await;
    let send = |timeout| {
        app.client
            .post(format!("{}/v1/customers", app.stub.base_url()))
            .bearer_auth("sk_test")
            .header("Idempotency-Key", "abandoned-key")
            .form(&[("email", "ada@example.com")])
            .timeout(timeout)
            .send()
    };
    // The client waits long enough for the stub to have taken the request in, even on a
    // loaded machine, and hangs up well before the stub answers.
    let abandoned = send(Duration::from_millis(500)).await;
    assert!(
        abandoned.is_err_and(|e| e.is_timeout()),
        "the client hangs up"
    );
    let mut retry = send(Duration::from_secs(10)).await.expect("answered");
    for _ in 0..50 {
        if retry.status() != StatusCode::CONFLICT {
            break;
        }
        // Still in flight: the abandoned request has not finished yet.
        tokio::time::sleep(Duration::from_millis(200)).await;
        retry = send(Duration::from_secs(10)).await.expect("answered");
    }
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry.headers()["idempotent-replayed"], "true");
    app.stop().await;
}

#[tokio::test]
async fn the_stub_retries_each_webhook_until_it_is_acknowledged() {
    use std::sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    };
    use topupd::payments::stub::{Stub, WebhookTarget};

    // An endpoint that fails twice before acknowledging.
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    let endpoint = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, endpoint).await });

    let cancel = tokio_util::sync::CancellationToken::new();
    let stub = Stub::start(
        tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind"),
        Arc::new(topupd::clock::SystemClock),
        Some(WebhookTarget {
            url: hook,
            secret: "whsec_test".into(),
        }),
        Faults::default(),
        cancel.clone(),
    )
    .await
    .expect("stub starts");
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/v1/customers", stub.base_url()))
        .form(&[("email", "ada@example.com")])
        .send()
        .await
        .expect("customer");
    let customer: Value = created.json().await.expect("JSON");
    let intent = client
        .post(format!("{}/v1/payment_intents", stub.base_url()))
        .form(&[
            ("amount", "100"),
            ("currency", "usd"),
            ("customer", customer["id"].as_str().expect("id")),
        ])
        .send()
        .await
        .expect("payment");
    assert_eq!(intent.status(), StatusCode::OK);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events: Vec<Value> = client
            .get(format!("{}/_stub/events", stub.base_url()))
            .send()
            .await
            .expect("events")
            .json()
            .await
            .expect("JSON");
        if events.iter().any(|e| e["delivered"] == 1) {
            break events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never acknowledged: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(events[0]["attempts"], 3);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    cancel.cancel();
}

#[tokio::test]
async fn saved_cards_keep_working_when_the_in_process_stub_restarts() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        assert_eq!(
            app.buy(&key, &account, 500, None).await.status,
            StatusCode::CREATED
        );
        // The stub keeps nothing across restarts; the database keeps the card and customer.
        let app = app.restart().await;
        let again = app.buy(&key, &account, 500, None).await;
        assert_eq!(
            again.status,
            StatusCode::CREATED,
            "{backend:?}: {}",
            again.body
        );
        assert_eq!(app.balance(&account).await, dec("1000"));
        let ids: Vec<String> = app
            .stored_topups(&account)
            .await
            .iter()
            .map(|t| t["transaction_id"].as_str().expect("id").to_owned())
            .collect();
        assert_ne!(ids[0], ids[1], "payment ids never repeat across stub runs");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_card_saved_by_one_account_cannot_be_taken_by_another() {
    each_backend(async |app| {
        let (owner, owner_key) = app.customer_with_card("pm_card_visa").await;
        let card = app
            .get(&format!("/v1/accounts/{owner}/payment-methods"), &owner_key)
            .await
            .body["data"][0]["id"]
            .as_str()
            .expect("card")
            .to_owned();
        let other = app.funded_account("0").await;
        let other_key = app.key("customer", Some(&other)).await;
        let taken = app
            .post(
                &format!("/v1/accounts/{other}/payment-methods"),
                &other_key,
                json!({ "payment_method_id": card }),
            )
            .await;
        assert_eq!(
            taken.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            taken.body
        );
        assert!(taken.body["fields"]["payment_method_id"].is_string());
        assert_eq!(
            app.buy(&owner_key, &owner, 500, None).await.status,
            StatusCode::CREATED,
            "the owner still pays with it"
        );
    })
    .await;
}

#[tokio::test]
async fn the_return_page_shows_the_outcome_only_to_the_customer_the_provider_sent_back() {
    each_backend(async |app| {
        let (account, key) = app
            .customer_with_card("pm_card_authenticationRequired")
            .await;
        app.lose_webhooks(3).await;
        let started = app.buy(&key, &account, 700, None).await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        let url = started.body["next_action"]["url"]
            .as_str()
            .expect("secure link");
        let done = app
            .client
            .post(format!("{url}/complete"))
            .send()
            .await
            .expect("complete")
            .text()
            .await
            .expect("page");
        // The provider's page sends the customer back with the payment's id and secret.
        let query = done
            .split("url=")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|back| back.split_once('?'))
            .map(|(_, query)| query.replace("&amp;", "&"))
            .unwrap_or_else(|| panic!("no way back in {done}"));
        assert!(query.contains("payment_intent_client_secret="), "{query}");
        let payment = started.body["transaction_id"].as_str().expect("payment");
        let page = async |query: &str| {
            let answer = app
                .client
                .get(format!("{}/v1/payments/return?{query}", app.base_url))
                .send()
                .await
                .expect("return page");
            (answer.status(), answer.text().await.expect("html"))
        };

        for stranger in [
            format!("payment_intent={payment}"),
            format!("payment_intent={payment}&payment_intent_client_secret={payment}_secret_guess"),
            format!("payment_intent_client_secret={payment}_secret_guess"),
        ] {
            let (status, html) = page(&stranger).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{stranger}");
            assert!(html.contains("could not find"), "{html}");
        }
        assert_eq!(
            app.stored_topups(&account).await[0]["state"],
            "requires_action",
            "no stranger's hit asked the provider"
        );
        assert_eq!(app.balance(&account).await, dec("0"));

        let (status, html) = page(&query).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("went through"), "{html}");
        assert_eq!(app.balance(&account).await, dec("700"));
        let (status, html) = page(&query).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "settled: answered from the database"
        );
        assert!(html.contains("went through"), "{html}");
        assert_eq!(app.balance(&account).await, dec("700"), "credited once");
    })
    .await;
}

#[tokio::test]
async fn an_oversized_webhook_is_refused_with_a_json_error() {
    each_backend(async |app| {
        let body = vec![b'x'; 100_000];
        let answer = app.deliver_webhook(&body, Some("t=1,v1=00".into())).await;
        assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(answer.body["error"], "invalid_request");
    })
    .await;
}

#[tokio::test]
async fn a_succeeded_payment_that_does_not_say_what_it_received_stays_open_and_credits_nothing() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        app.stub
            .set_faults(Faults {
                omit_fields: vec!["amount_received".into()],
                ..Faults::default()
            })
            .await;
        let bought = app.buy(&key, &account, 500, None).await;
        assert_eq!(bought.status, StatusCode::ACCEPTED, "{}", bought.body);
        let id = bought.body["id"].as_str().expect("id").to_owned();
        assert_eq!(app.stub.charges().await.len(), 1, "the card was charged");

        // The webhook is handled once: the payment read again says no amount either, and
        // the event is not left to loop.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !app
            .db
            .events_in(topupd::db::webhooks::EventState::Pending, 10)
            .await
            .expect("events")
            .is_empty()
        {
            assert!(tokio::time::Instant::now() < deadline, "the event loops");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let polled = app
            .get(&format!("/v1/accounts/{account}/topups/{id}"), &key)
            .await;
        assert_eq!(polled.status, StatusCode::OK, "{}", polled.body);
        assert!(
            !["succeeded", "failed"].contains(&polled.body["state"].as_str().unwrap_or("")),
            "still open: {}",
            polled.body
        );
        assert_eq!(app.balance(&account).await, dec("0"));

        // Once the provider says what it received, the poll credits it, once.
        app.stub.set_faults(Faults::default()).await;
        let polled = app
            .get(&format!("/v1/accounts/{account}/topups/{id}"), &key)
            .await;
        assert_eq!(polled.body["state"], "succeeded", "{}", polled.body);
        assert_eq!(app.balance(&account).await, dec("500"));
    })
    .await;
}

#[tokio::test]
async fn every_provider_request_pins_the_api_version_and_names_topupd() {
    let app = TestApp::spawn(backends()[0]).await;
    let (account, key) = app.customer_with_card("pm_card_visa").await;
    let bought = app.buy(&key, &account, 500, None).await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let callers = app.stub.callers().await;
    assert_eq!(
        callers.api_versions.into_iter().collect::<Vec<_>>(),
        [Some(topupd::payments::API_VERSION.to_owned())]
    );
    let agents: Vec<_> = callers.user_agents.into_iter().collect();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert!(
        agents[0]
            .as_deref()
            .is_some_and(|a| a.starts_with("topupd/")),
        "{agents:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_stub_answers_as_stripe_test_mode_does() {
    let app = TestApp::spawn(backends()[0]).await;
    let (_, customer) = app
        .stripe(
            "/v1/customers",
            &[("name", "Ada"), ("email", "ada@example.com")],
            None,
        )
        .await;
    let customer = customer["id"].as_str().expect("customer").to_owned();
    let attach = async |card: &str| {
        app.stripe(
            &format!("/v1/payment_methods/{card}/attach"),
            &[("customer", &customer)],
            None,
        )
        .await
    };

    // Unknown parameters are refused, not ignored, and save no answer under the key.
    let (status, refused) = app
        .stripe("/v1/customers", &[("nmae", "Ada")], Some("k-unknown"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"]["code"], "parameter_unknown");
    assert_eq!(refused["error"]["param"], "nmae");
    let (status, _) = app
        .stripe("/v1/customers", &[("name", "Ada")], Some("k-unknown"))
        .await;
    assert_eq!(status, StatusCode::OK, "the key was not used up");

    // Declining cards are refused when attached; chargeCustomerFail attaches and declines later.
    let (status, declined) = attach("pm_card_chargeDeclinedInsufficientFunds").await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(declined["error"]["decline_code"], "insufficient_funds");
    let (status, failing) = attach("pm_card_chargeCustomerFail").await;
    assert_eq!(status, StatusCode::OK);
    let failing = failing["id"].as_str().expect("card").to_owned();
    let (_, visa) = attach("pm_card_visa").await;
    let visa = visa["id"].as_str().expect("card").to_owned();
    let (_, authenticating) = attach("pm_card_authenticationRequired").await;
    let authenticating = authenticating["id"].as_str().expect("card").to_owned();

    // The one-call form charges or declines in the create call itself.
    let pay = |card: &str| {
        vec![
            ("amount", "1000".to_owned()),
            ("currency", "usd".to_owned()),
            ("customer", customer.clone()),
            ("payment_method", card.to_owned()),
            ("confirm", "true".to_owned()),
            ("off_session", "true".to_owned()),
        ]
    };
    let form = |pairs: &[(&'static str, String)]| -> Vec<(&'static str, String)> { pairs.to_vec() };
    let call = async |path: &str, pairs: Vec<(&str, String)>, key: Option<&str>| {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        app.stripe(path, &pairs, key).await
    };
    let (status, paid) = call("/v1/payment_intents", form(&pay(&visa)), None).await;
    assert_eq!(
        (status, paid["status"].as_str()),
        (StatusCode::OK, Some("succeeded")),
        "{paid}"
    );
    assert_eq!(paid["amount_received"], 1000);
    let (status, failed) = call("/v1/payment_intents", form(&pay(&failing)), None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    assert_eq!(failed["error"]["decline_code"], "generic_decline");

    // Off-session 3-D Secure: a 402 authentication_required with the payment, and no link.
    let (status, declined) = call("/v1/payment_intents", form(&pay(&authenticating)), None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{declined}");
    let error = &declined["error"];
    assert_eq!(error["code"], "authentication_required");
    assert_eq!(error["decline_code"], "authentication_required");
    assert_eq!(error["payment_intent"]["status"], "requires_payment_method");
    assert!(error["payment_intent"]["next_action"].is_null());
    assert!(
        error["payment_intent"]["payment_method"].is_null(),
        "Stripe takes the card off"
    );
    assert_eq!(
        error["payment_intent"]["last_payment_error"]["payment_method"]["id"],
        authenticating
    );
    let payment = error["payment_intent"]["id"]
        .as_str()
        .expect("payment")
        .to_owned();

    // On-session, with return_url: requires_action and a redirect that echoes it; without
    // one, a next action for Stripe.js.
    let confirm = format!("/v1/payment_intents/{payment}/confirm");
    let (status, waiting) = call(
        &confirm,
        vec![
            ("payment_method", authenticating.clone()),
            ("return_url", "https://shop.example/back".into()),
        ],
        None,
    )
    .await;
    assert_eq!(
        (status, waiting["status"].as_str()),
        (StatusCode::OK, Some("requires_action"))
    );
    assert_eq!(waiting["next_action"]["type"], "redirect_to_url");
    assert_eq!(
        waiting["next_action"]["redirect_to_url"]["return_url"],
        "https://shop.example/back"
    );
    let (_, created) = call(
        "/v1/payment_intents",
        vec![
            ("amount", "500".into()),
            ("currency", "usd".into()),
            ("customer", customer.clone()),
            ("payment_method", authenticating.clone()),
        ],
        None,
    )
    .await;
    let sdk = format!(
        "/v1/payment_intents/{}/confirm",
        created["id"].as_str().expect("id")
    );
    let (_, sdk) = call(&sdk, vec![], None).await;
    assert_eq!(sdk["next_action"]["type"], "use_stripe_sdk", "{sdk}");
    assert!(
        sdk["client_secret"]
            .as_str()
            .is_some_and(|s| s.contains("_secret_"))
    );

    // The first answer under a key, a 500 included, is what the key answers.
    app.stub
        .set_faults(Faults {
            target: FaultTarget::Create,
            fail_after: 1,
            ..Faults::default()
        })
        .await;
    let (first, _) = call("/v1/payment_intents", form(&pay(&visa)), Some("k-500")).await;
    let (again, _) = call("/v1/payment_intents", form(&pay(&visa)), Some("k-500")).await;
    assert_eq!(
        (first, again),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::INTERNAL_SERVER_ERROR
        )
    );

    // Lists page with has_more and starting_after.
    let list = async |extra: &str| -> Value {
        app.client
            .get(format!(
                "{}/v1/payment_intents?customer={customer}&limit=2{extra}",
                app.stub.base_url()
            ))
            .bearer_auth("sk_test_stub")
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("JSON")
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut page = list("").await;
    loop {
        for pi in page["data"].as_array().expect("data") {
            assert!(
                seen.insert(pi["id"].as_str().expect("id").to_owned()),
                "no payment twice"
            );
        }
        if page["has_more"] != true {
            break;
        }
        let last = page["data"][1]["id"].as_str().expect("last").to_owned();
        page = list(&format!("&starting_after={last}")).await;
    }
    assert_eq!(seen.len(), 5, "every payment of the customer: {seen:?}");
    app.stop().await;
}

#[tokio::test]
async fn the_provider_knows_each_customer_by_the_account_name_and_email() {
    each_backend(async |app| {
        let account = app.account_with_email("grace@example.com", "0").await;
        let key = app.key("customer", Some(&account)).await;
        let saved = app
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                &key,
                json!({ "payment_method_id": "pm_card_visa" }),
            )
            .await;
        assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.body);
        let customer = app.provider_customer(&account).await;
        let at_provider: Value = app
            .client
            .get(format!("{}/v1/customers/{customer}", app.stub.base_url()))
            .send()
            .await
            .expect("read")
            .json()
            .await
            .expect("JSON");
        assert_eq!(at_provider["name"], "Ada");
        assert_eq!(at_provider["email"], "grace@example.com");
        assert_eq!(at_provider["metadata"]["account_id"], account);
    })
    .await;
}

#[tokio::test]
async fn without_a_return_url_a_payment_to_authenticate_carries_its_client_secret_for_stripe_js() {
    for backend in backends() {
        let mut config = test_config(unused_port());
        config.payments.return_url = String::new();
        let app = TestApp::spawn_with(backend, config).await;
        let (account, key) = app
            .customer_with_card("pm_card_authenticationRequired")
            .await;
        let started = app.buy(&key, &account, 2000, None).await;
        assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
        let payment = started.body["transaction_id"]
            .as_str()
            .expect("payment")
            .to_owned();
        let intent = app
            .payments_of(&account)
            .await
            .into_iter()
            .find(|pi| pi.id == payment)
            .expect("the payment");
        // Stripe leaves the action to Stripe.js when no return URL is given.
        let action = intent.next_action.as_ref().expect("an action");
        assert_eq!(action.kind, "use_stripe_sdk");
        let next = &started.body["next_action"];
        assert_eq!(
            next["client_secret"].as_str(),
            intent.client_secret.as_deref(),
            "{next}"
        );
        assert!(
            next["url"]
                .as_str()
                .is_some_and(|u| u.contains("/v1/payments/confirm/")),
            "topupd's own page, for customers without one: {next}"
        );
        // Stripe.js opens the bank's page and the customer completes it.
        let page = action.use_stripe_sdk.as_ref().expect("sdk data")["stripe_js"]
            .as_str()
            .expect("the page")
            .to_owned();
        app.client
            .post(format!("{page}/complete"))
            .send()
            .await
            .expect("complete");
        app.wait_for_topup_state(&account, "succeeded").await;
        assert_eq!(
            credits(&app.get(&format!("/v1/accounts/{account}"), &key).await.body["balance"]),
            dec("2000")
        );
        app.stop().await;
    }
}

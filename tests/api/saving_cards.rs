//! Saving cards the way Stripe intends: on Checkout's page in setup mode, or with a
//! SetupIntent that the host's own card form confirms; the card is saved from the
//! provider's word (the way back, or the webhook), once.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, backends, each_backend, test_config, unused_port};

impl TestApp {
    /// The account's saved cards, newest first.
    pub async fn cards(&self, account: &str) -> Vec<Value> {
        let listed = self
            .get(
                &format!("/v1/accounts/{account}/payment-methods"),
                &self.admin,
            )
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        listed.body["data"].as_array().expect("data").clone()
    }

    /// Waits until the account has `count` saved cards (a webhook's work).
    async fn wait_for_cards(&self, account: &str, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let cards = self.cards(account).await;
            if cards.len() == count {
                return cards;
            }
            assert!(tokio::time::Instant::now() < deadline, "cards: {cards:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Opens Checkout for the account and picks `card` on its page, as a browser does.
    /// Returns the page the browser ends on, and its text.
    pub async fn save_on_checkout(&self, account: &str, key: &str, card: &str) -> (String, String) {
        let started = self
            .post(
                &format!("/v1/accounts/{account}/payment-methods/checkout"),
                key,
                json!({}),
            )
            .await;
        assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
        let url = started.body["url"]
            .as_str()
            .expect("the provider's page")
            .to_owned();
        assert!(
            started.body["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("cs_"))
        );
        let page = self.client.get(&url).send().await.expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        assert!(page.text().await.expect("html").contains(card));
        let chosen = self
            .client
            .post(&url)
            .form(&[("card", card)])
            .send()
            .await
            .expect("chosen");
        assert_eq!(chosen.status(), StatusCode::OK);
        let landed = chosen.url().to_string();
        (landed, chosen.text().await.expect("html"))
    }
}

#[tokio::test]
async fn a_card_saved_on_checkouts_page_becomes_the_default_and_pays_off_session() {
    each_backend(async |app| {
        let account = app.funded_account("0").await;
        let key = app.key("customer", Some(&account)).await;
        let (landed, text) = app.save_on_checkout(&account, &key, "pm_card_visa").await;
        assert!(
            landed.starts_with(&format!(
                "{}/v1/payments/card-saved?session_id=cs_",
                app.base_url
            )),
            "{landed}"
        );
        assert!(text.contains("your card is being saved"), "{text}");
        // The webhook saves it, once, however often the provider sends it.
        let cards = app.wait_for_cards(&account, 1).await;
        assert_eq!(
            (cards[0]["last4"].as_str(), cards[0]["default"].as_bool()),
            (Some("4242"), Some(true))
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(app.cards(&account).await, cards);

        app.enable_auto_topup(&account, &key).await;
        assert_eq!(
            app.scan().await.succeeded,
            1,
            "charged off-session with the saved card"
        );
    })
    .await;
}

#[tokio::test]
async fn a_card_refused_on_checkouts_page_saves_nothing() {
    each_backend(async |app| {
        let account = app.funded_account("0").await;
        let key = app.key("customer", Some(&account)).await;
        let (landed, text) = app
            .save_on_checkout(&account, &key, "pm_card_chargeDeclined")
            .await;
        assert!(
            landed.contains("/_stub/checkout/"),
            "stays on the provider's page: {landed}"
        );
        assert!(text.contains("declined"), "{text}");
        // The customer gives up: the page's cancel link leads back to topupd.
        let cancel = text
            .split("<a href=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a cancel link")
            .replace("&amp;", "&");
        assert_eq!(
            cancel,
            format!("{}/v1/payments/card-saved?cancelled=true", app.base_url)
        );
        let back = app.client.get(&cancel).send().await.expect("page");
        assert!(
            back.text()
                .await
                .expect("html")
                .contains("No card was saved")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(app.cards(&account).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_setup_intent_confirmed_by_the_hosts_card_form_saves_the_card_through_the_webhook() {
    for backend in backends() {
        let mut config = test_config(unused_port());
        config.payments.publishable_key = "pk_test_topupd".into();
        let app = TestApp::spawn_with(backend, config).await;
        let account = app.funded_account("0").await;
        let key = app.key("customer", Some(&account)).await;
        let setup = async || {
            let started = app
                .post(
                    &format!("/v1/accounts/{account}/payment-methods/setup-intents"),
                    &key,
                    json!({}),
                )
                .await;
            assert_eq!(started.status, StatusCode::CREATED, "{}", started.body);
            assert_eq!(started.body["publishable_key"], "pk_test_topupd");
            let id = started.body["id"].as_str().expect("id").to_owned();
            let secret = started.body["client_secret"].as_str().expect("secret");
            assert!(secret.starts_with(&format!("{id}_secret_")), "{secret}");
            id
        };
        // What Stripe.js does with the client secret and the card the customer typed.
        let confirm = async |id: &str, card: &str| -> Value {
            app.client
                .post(format!(
                    "{}/v1/setup_intents/{id}/confirm",
                    app.stub.base_url()
                ))
                .bearer_auth("pk_test_topupd")
                .form(&[
                    ("payment_method", card),
                    ("return_url", "https://host.example/cards"),
                ])
                .send()
                .await
                .expect("confirmed")
                .json()
                .await
                .expect("JSON")
        };
        let first = setup().await;
        assert_eq!(
            confirm(&first, "pm_card_mastercard").await["status"],
            "succeeded"
        );
        let cards = app.wait_for_cards(&account, 1).await;
        assert_eq!(
            (cards[0]["brand"].as_str(), cards[0]["default"].as_bool()),
            (Some("mastercard"), Some(true))
        );

        // A card whose bank wants 3-D Secure at setup is saved once authenticated.
        let second = setup().await;
        let waiting = confirm(&second, "pm_card_authenticationRequired").await;
        assert_eq!(waiting["status"], "requires_action", "{waiting}");
        let bank = waiting["next_action"]["redirect_to_url"]["url"]
            .as_str()
            .expect("bank page");
        app.client
            .post(format!("{bank}/complete"))
            .send()
            .await
            .expect("authenticated");
        let cards = app.wait_for_cards(&account, 2).await;
        assert_eq!(cards.iter().filter(|c| c["default"] == true).count(), 1);
        assert!(
            cards
                .iter()
                .any(|c| c["last4"] == "3184" && c["default"] == false),
            "{cards:?}"
        );

        // A declining card is refused at setup and saves nothing.
        let third = setup().await;
        let refused = confirm(&third, "pm_card_chargeDeclinedFraudulent").await;
        assert_eq!(refused["error"]["decline_code"], "fraudulent");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(app.cards(&account).await.len(), 2);
        app.stop().await;
    }
}

#[tokio::test]
async fn removing_the_default_card_makes_the_newest_other_card_the_default() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        app.clock.advance_ms(1_000);
        let added = app
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                &key,
                json!({ "payment_method_id": "pm_card_mastercard" }),
            )
            .await;
        assert_eq!(added.status, StatusCode::CREATED);
        assert_eq!(
            added.body["default"], false,
            "the first card stays the default"
        );
        let visa = app
            .cards(&account)
            .await
            .into_iter()
            .find(|c| c["last4"] == "4242")
            .expect("visa");
        let removed = app
            .request(
                Method::DELETE,
                &format!(
                    "/v1/accounts/{account}/payment-methods/{}",
                    visa["id"].as_str().expect("id")
                ),
                Some(&key),
                None,
            )
            .await;
        assert!(removed.status.is_success(), "{}", removed.body);
        let cards = app.cards(&account).await;
        assert_eq!(cards.len(), 1);
        assert_eq!(
            (cards[0]["last4"].as_str(), cards[0]["default"].as_bool()),
            (Some("4444"), Some(true))
        );
    })
    .await;
}

#[tokio::test]
async fn cards_changed_or_detached_at_the_provider_are_changed_or_forgotten_here() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let added = app
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                &key,
                json!({ "payment_method_id": "pm_card_mastercard" }),
            )
            .await;
        let mastercard = added.body["id"].as_str().expect("id").to_owned();
        let visa = app
            .cards(&account)
            .await
            .into_iter()
            .find(|c| c["last4"] == "4242")
            .expect("visa");
        let visa = visa["id"].as_str().expect("id").to_owned();
        let at_provider = async |path: String, form: &[(&str, &str)]| {
            let (status, answer) = app.stripe(&path, form, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        };
        let card = async |id: &str| {
            app.cards(&account)
                .await
                .into_iter()
                .find(|c| c["id"] == id)
        };
        let eventually = async |what: &str, check: &dyn Fn(Option<Value>) -> bool, id: &str| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !check(card(id).await) {
                assert!(tokio::time::Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };

        // The customer changed the expiry in the provider's dashboard.
        at_provider(
            format!("/v1/payment_methods/{visa}"),
            &[("card[exp_month]", "3"), ("card[exp_year]", "2031")],
        )
        .await;
        eventually(
            "the new expiry",
            &|c| c.is_some_and(|c| c["exp_month"] == 3 && c["exp_year"] == 2031),
            &visa,
        )
        .await;
        // The card network replaced the mastercard.
        at_provider(
            format!("/_stub/payment_methods/{mastercard}/renew"),
            &[("last4", "1111")],
        )
        .await;
        eventually(
            "the renewed card",
            &|c| c.is_some_and(|c| c["last4"] == "1111" && c["exp_year"] == 2037),
            &mastercard,
        )
        .await;
        // The default card was detached at the provider: forgotten here, never charged.
        at_provider(format!("/v1/payment_methods/{visa}/detach"), &[]).await;
        eventually("the detached card gone", &|c| c.is_none(), &visa).await;
        let cards = app.cards(&account).await;
        assert_eq!(cards.len(), 1);
        assert_eq!(
            (cards[0]["id"].as_str(), cards[0]["default"].as_bool()),
            (Some(mastercard.as_str()), Some(true))
        );

        app.enable_auto_topup(&account, &key).await;
        assert_eq!(app.scan().await.succeeded, 1);
        let payments = app.payments_of(&account).await;
        assert_eq!(payments.len(), 1);
        assert_eq!(
            payments[0].payment_method.as_deref(),
            Some(mastercard.as_str())
        );
    })
    .await;
}

//! Backup cards: a declined automatic charge is followed, within the same top-up, by the
//! customer's next backup card; never two charges, each decline in the decision history.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, dec, each_backend};

impl TestApp {
    /// Saves `card` (a stub test card, or `declining:CODE`) for the account; its id.
    async fn save_card(&self, account: &str, key: &str, card: &str) -> String {
        let declining = card.strip_prefix("declining:");
        let saved = self
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                key,
                json!({ "payment_method_id": declining.map_or(card, |_| "pm_card_visa") }),
            )
            .await;
        assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.body);
        let id = saved.body["id"].as_str().expect("card id").to_owned();
        if let Some(code) = declining {
            assert_eq!(self.stub.decline_from_now(&id, code).await, StatusCode::OK);
        }
        id
    }

    /// An account charging `first` (its default card) with `backups` behind it, auto
    /// top-up on with a balance of 0; the account, its key and the backups' ids.
    async fn with_backups(&self, first: &str, backups: &[&str]) -> (String, String, Vec<String>) {
        let (account, key) = self.customer_with_card(first).await;
        let mut ids = Vec::new();
        for card in backups {
            ids.push(self.save_card(&account, &key, card).await);
        }
        let set = self
            .request(
                Method::PUT,
                &format!("/v1/accounts/{account}/auto-topup"),
                Some(&key),
                Some(json!({
                    "enabled": true, "threshold": 1000, "target": 5000,
                    "backup_payment_method_ids": ids,
                })),
            )
            .await;
        assert_eq!(set.status, StatusCode::OK, "{}", set.body);
        assert_eq!(set.body["backup_payment_method_ids"], json!(ids));
        (account, key, ids)
    }

    async fn decisions_of(&self, account: &str) -> Vec<Value> {
        let listed = self
            .get(
                &format!("/v1/accounts/{account}/auto-topup/decisions"),
                &self.admin,
            )
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        listed.body["data"].as_array().expect("decisions").clone()
    }
}

#[tokio::test]
async fn a_declined_card_is_followed_by_the_next_backup_as_one_top_up() {
    each_backend(async |app: &TestApp| {
        let (account, _, backups) = app
            .with_backups(
                "pm_card_chargeCustomerFail",
                &["declining:expired_card", "pm_card_mastercard"],
            )
            .await;
        let report = app.scan().await;
        assert_eq!(
            (report.claimed, report.succeeded, report.failed),
            (1, 1, 0),
            "{report:?}"
        );
        assert_eq!(app.balance(&account).await, dec("5000"));
        let payments = app.payments_of(&account).await;
        let statuses: Vec<&str> = payments.iter().map(|p| p.status.as_str()).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == "succeeded").count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(payments.len(), 3, "one try per card: {statuses:?}");
        let state = app.auto_topup(&account).await;
        assert_eq!(state["state"], "active", "{state}");
        assert_eq!(
            state["last_topup"]["payment_method_id"],
            backups[1].as_str()
        );
        assert_eq!(app.notice_kinds(&account).await, ["topup_receipt"]);

        let decisions = app.decisions_of(&account).await;
        let declined: Vec<&Value> = decisions
            .iter()
            .filter(|d| d["decision"] == "declined")
            .collect();
        assert_eq!(declined.len(), 2, "{decisions:#?}");
        // Newest first: the expired backup, then the first card.
        let reasons: Vec<&str> = declined
            .iter()
            .map(|d| d["reason"].as_str().expect("reason"))
            .collect();
        assert!(
            reasons[0].contains("expired_card") && reasons[0].contains(&backups[1]),
            "{reasons:?}"
        );
        assert!(
            reasons[1].contains("generic_decline") && reasons[1].contains(&backups[0]),
            "{reasons:?}"
        );

        // The window holds for the whole top-up: nothing more is charged in it.
        let again = app.scan().await;
        assert_eq!(again.claimed, 0, "{again:?}");
    })
    .await;
}

#[tokio::test]
async fn when_every_card_declines_auto_topup_pauses_once_with_the_last_code() {
    each_backend(async |app: &TestApp| {
        let (account, _, _) = app
            .with_backups(
                "pm_card_chargeCustomerFail",
                &["declining:insufficient_funds"],
            )
            .await;
        let report = app.scan().await;
        assert_eq!((report.succeeded, report.failed), (0, 1), "{report:?}");
        let state = app.auto_topup(&account).await;
        assert_eq!(state["pause"]["reason"], "payment_failed", "{state}");
        assert_eq!(
            state["pause"]["decline_code"], "insufficient_funds",
            "{state}"
        );
        assert_eq!(app.notice_kinds(&account).await, ["payment_failed"]);
        assert_eq!(app.balance(&account).await, dec("0"));
        let decisions = app.decisions_of(&account).await;
        let declined: Vec<&str> = decisions
            .iter()
            .filter(|d| d["decision"] == "declined")
            .map(|d| d["reason"].as_str().expect("reason"))
            .collect();
        assert_eq!(declined.len(), 2, "{decisions:#?}");
        assert!(declined[0].contains("no backup card left"), "{declined:?}");
    })
    .await;
}

#[tokio::test]
async fn a_request_to_authenticate_is_not_followed_by_a_backup_card() {
    each_backend(async |app: &TestApp| {
        let (account, _, _) = app
            .with_backups("pm_card_authenticationRequired", &["pm_card_visa"])
            .await;
        let report = app.scan().await;
        assert_eq!(report.requires_action, 1, "{report:?}");
        assert_eq!(app.payments_of(&account).await.len(), 1);
        let state = app.auto_topup(&account).await;
        assert_eq!(state["pause"]["reason"], "authentication_required");
    })
    .await;
}

#[tokio::test]
async fn backup_cards_must_be_distinct_saved_cards_of_the_account() {
    each_backend(async |app: &TestApp| {
        let (account, key, backups) = app
            .with_backups("pm_card_visa", &["pm_card_mastercard"])
            .await;
        let (other, other_key) = app.customer_with_card("pm_card_visa").await;
        let foreign = app.save_card(&other, &other_key, "pm_card_visa").await;
        let before = app.snapshot(&account).await;
        for cards in [
            json!([foreign]),
            json!([backups[0], backups[0]]),
            json!(["pm_nope"]),
            json!(["a", "b", "c", "d", "e", "f"]),
        ] {
            let refused = app
                .request(
                    Method::PUT,
                    &format!("/v1/accounts/{account}/auto-topup"),
                    Some(&key),
                    Some(json!({
                        "enabled": true, "threshold": 1000, "target": 5000,
                        "backup_payment_method_ids": cards,
                    })),
                )
                .await;
            assert_eq!(
                refused.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{cards}: {}",
                refused.body
            );
            assert!(
                refused
                    .body
                    .to_string()
                    .contains("backup_payment_method_ids"),
                "{}",
                refused.body
            );
        }
        assert_eq!(app.snapshot(&account).await, before, "nothing changed");
        let state = app.auto_topup(&account).await;
        assert_eq!(state["backup_payment_method_ids"], json!(backups));
    })
    .await;
}

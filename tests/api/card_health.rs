//! Card health: the card auto top-up charges, in the auto top-up response and on the
//! billing page, and the customer warned ahead of time (once) when it has expired, will
//! have by the next likely top-up, or was detached at the provider.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::{TestApp, each_backend, tamper};

const DAY_MS: i64 = 86_400_000;

impl TestApp {
    /// Notices of cards at risk queued to the account.
    async fn card_warnings(&self, account: &str) -> usize {
        let listed = self.get("/v1/admin/notices?limit=200", &self.admin).await;
        listed.body["data"]
            .as_array()
            .expect("data")
            .iter()
            .filter(|n| n["account_id"] == account && n["kind"] == "card_at_risk")
            .count()
    }
}

#[tokio::test]
async fn a_card_expiring_before_the_next_likely_top_up_is_reported_and_its_owner_warned_once() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_visa", "0").await;
        assert_eq!(app.scan().await.succeeded, 1, "topped up to 5,000");
        let fresh = app.auto_topup(&account).await;
        assert_eq!(fresh["card"]["health"], "ok", "{fresh}");
        assert_eq!(fresh["card"]["last4"], "4242");
        assert_eq!(
            fresh["card"]["next_top_up_likely_at"],
            serde_json::Value::Null,
            "nothing used yet"
        );

        // 2,000 credits in 10 days: the 2,000 left above the threshold last 10 more, to
        // 21 January.
        let service = app.key("service", None).await;
        assert!(
            app.debit(&service, &account, "use", 12_000)
                .await
                .status
                .is_success()
        );
        app.clock.advance_ms(10 * DAY_MS);
        let paced = app.auto_topup(&account).await;
        assert_eq!(
            paced["card"]["next_top_up_likely_at"], "2026-01-21T00:00:00.000Z",
            "{paced}"
        );
        assert_eq!(paced["card"]["health"], "ok", "valid to 2034");
        assert_eq!(app.topups.warn_of_expiring_cards().await.expect("check"), 0);

        tamper(
            app,
            "UPDATE payment_methods SET exp_month = 1, exp_year = 2026 WHERE account_id = $1",
            &account,
        )
        .await;
        assert_eq!(
            app.auto_topup(&account).await["card"]["health"],
            "ok",
            "valid through 31 January"
        );
        tamper(
            app,
            "UPDATE payment_methods SET exp_month = 12, exp_year = 2025 WHERE account_id = $1",
            &account,
        )
        .await;
        assert_eq!(app.auto_topup(&account).await["card"]["health"], "expired");
        tamper(
            app,
            "UPDATE payment_methods SET exp_month = 1, exp_year = 2026 WHERE account_id = $1",
            &account,
        )
        .await;
        // 8 days on, with 10 more credits used, the pace puts the top-up in February,
        // after the card ends.
        assert!(
            app.debit(&service, &account, "more", 60)
                .await
                .status
                .is_success()
        );
        app.clock.advance_ms(8 * DAY_MS);
        let at_risk = app.auto_topup(&account).await;
        assert_eq!(
            at_risk["card"]["health"], "expires_before_next_top_up",
            "{at_risk}"
        );

        assert_eq!(app.topups.warn_of_expiring_cards().await.expect("check"), 1);
        assert_eq!(
            app.topups.warn_of_expiring_cards().await.expect("check"),
            0,
            "told once"
        );
        assert_eq!(app.card_warnings(&account).await, 1);

        let page = app
            .billing_session(&account)
            .await
            .get("/billing")
            .await
            .body;
        assert!(page.contains("Your card needs attention."), "{page}");
        assert!(
            page.contains("Visa ending 4242 expires at the end of January 2026"),
            "{page}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_card_auto_top_up_charges_detached_at_the_provider_is_reported_at_once() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_visa", "2000").await;
        let visa = crate::auto_topup::payment_method(app, &account).await;
        let (status, answer) = app
            .stripe(&format!("/v1/payment_methods/{visa}/detach"), &[], None)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while app.card_warnings(&account).await == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never warned");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let state = app.auto_topup(&account).await;
        assert_eq!(state["card"]["health"], "missing", "{state}");
        let page = app
            .billing_session(&account)
            .await
            .get("/billing")
            .await
            .body;
        assert!(
            page.contains("Automatic top-ups have no card to charge."),
            "{page}"
        );
    })
    .await;
}

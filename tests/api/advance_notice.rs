//! Advance notice of automatic charges: the customer who asks is emailed how much and
//! from when before each one, the charge made is the one announced, and it can be
//! cancelled from the billing page or the API.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, dec, each_backend};

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

impl TestApp {
    /// A customer with a card, 500 credits and auto top-up on (threshold 1,000, target
    /// 5,000), told 30 minutes before each automatic charge.
    async fn told_first(&self) -> (String, String) {
        let (account, key) = self.customer_with_card("pm_card_visa").await;
        let funded = self
            .post(
                &format!("/v1/admin/accounts/{account}/adjustments"),
                &self.admin,
                json!({ "credits": 500, "reason": "starting balance" }),
            )
            .await;
        assert_eq!(funded.status, StatusCode::CREATED, "{}", funded.body);
        let saved = self
            .request(
                Method::PUT,
                &format!("/v1/accounts/{account}/auto-topup"),
                Some(&key),
                Some(json!({ "enabled": true, "threshold": 1000, "target": 5000, "advance_notice_minutes": 30 })),
            )
            .await;
        assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
        assert_eq!(saved.body["advance_notice_minutes"], 30);
        (account, key)
    }
}

#[tokio::test]
async fn the_charge_announced_is_the_one_made_once_its_time_has_come() {
    each_backend(async |app| {
        let (account, _) = app.told_first().await;
        let report = app.scan().await;
        assert_eq!((report.announced, report.claimed), (1, 0), "{report:?}");
        assert_eq!(app.charges_of(&account).await, 0, "nothing charged yet");
        let state = app.auto_topup(&account).await;
        assert_eq!(state["announced"]["amount_cents"], 4_500, "{state}");
        assert_eq!(state["announced"]["at"], "2026-01-01T00:30:00.000Z");
        assert_eq!(state["last_scan"]["decision"], "announced");
        assert!(
            state["last_scan"]["reason"]
                .as_str()
                .expect("reason")
                .contains("$45.00")
        );
        assert_eq!(app.notice_kinds(&account).await, ["topup_announced"]);

        // Before its time: nothing charged, nothing announced again.
        let service = app.key("service", None).await;
        assert!(
            app.debit(&service, &account, "use", 600)
                .await
                .status
                .is_success()
        );
        app.clock.advance_ms(29 * MINUTE_MS);
        let report = app.scan().await;
        assert_eq!((report.announced, report.claimed), (0, 0), "{report:?}");

        app.clock.advance_ms(MINUTE_MS);
        let report = app.scan().await;
        assert_eq!((report.claimed, report.succeeded), (1, 1), "{report:?}");
        assert_eq!(
            app.balance(&account).await,
            dec("4900"),
            "the $45.00 announced, not the $46.00 the balance would call for now"
        );
        let state = app.auto_topup(&account).await;
        assert_eq!(state["announced"], Value::Null, "{state}");
        assert_eq!(state["last_topup"]["amount_cents"], 4_500);
        assert_eq!(
            app.notice_kinds(&account).await,
            ["topup_receipt", "topup_announced"]
        );
    })
    .await;
}

#[tokio::test]
async fn an_announced_charge_cancelled_is_never_made_and_the_next_waits_for_the_window() {
    each_backend(async |app| {
        let (account, key) = app.told_first().await;
        assert_eq!(app.scan().await.announced, 1);
        let path = format!("/v1/accounts/{account}/auto-topup/announced");
        let cancelled = app.request(Method::DELETE, &path, Some(&key), None).await;
        assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
        assert_eq!(cancelled.body["announced"], Value::Null);
        assert_eq!(cancelled.body["state"], "active", "auto top-up stays on");
        let again = app.request(Method::DELETE, &path, Some(&key), None).await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &app.admin)
            .await;
        assert_eq!(
            audit.body["data"][0]["action"], "auto_topup.cancel_announced",
            "{}",
            audit.body
        );

        app.clock.advance_ms(HOUR_MS);
        let report = app.scan().await;
        assert_eq!(
            (report.announced, report.claimed),
            (0, 0),
            "the window holds: {report:?}"
        );
        assert_eq!(app.charges_of(&account).await, 0);

        // After the window, the next charge is announced again, and cancelled from the
        // billing page this time.
        app.clock.advance_ms(6 * HOUR_MS);
        assert_eq!(app.scan().await.announced, 1);
        let session = app.billing_session(&account).await;
        let overview = session.get("/billing").await;
        assert!(
            overview.body.contains("A top-up is coming."),
            "{}",
            overview.body
        );
        assert!(
            overview.body.contains("we will charge $45.00"),
            "{}",
            overview.body
        );
        let pressed = session
            .post(
                "/billing/auto-topup/cancel-announced",
                &[("csrf", &overview.csrf())],
            )
            .await;
        assert_eq!(pressed.status, StatusCode::SEE_OTHER, "{}", pressed.body);
        let after = session
            .get(pressed.location.as_deref().expect("to the overview"))
            .await;
        assert!(
            after.body.contains("nothing was charged for it"),
            "{}",
            after.body
        );
        assert_eq!(app.auto_topup(&account).await["announced"], Value::Null);
        app.clock.advance_ms(HOUR_MS);
        assert_eq!(app.scan().await.claimed, 0);
        assert_eq!(app.charges_of(&account).await, 0);
    })
    .await;
}

#[tokio::test]
async fn a_notice_outside_its_bounds_is_refused_naming_the_field() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let before = app.snapshot(&account).await;
        for minutes in [json!(4), json!(1441), json!(2.5), json!(-30)] {
            let answer = app
                .request(
                    Method::PUT,
                    &format!("/v1/accounts/{account}/auto-topup"),
                    Some(&key),
                    Some(json!({ "enabled": true, "threshold": 1000, "target": 5000, "advance_notice_minutes": minutes })),
                )
                .await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{minutes}: {}", answer.body);
            let named: Vec<&str> =
                answer.body["fields"].as_object().expect("fields").keys().map(String::as_str).collect();
            assert_eq!(named, ["advance_notice_minutes"], "{minutes}");
        }
        assert_eq!(app.snapshot(&account).await, before);
    })
    .await;
}

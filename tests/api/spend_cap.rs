//! The monthly spend cap on automatic top-ups: settings, the pause the claim makes when a
//! top-up would pass it, its notice, and how the pause ends (a new month in the account's
//! time zone, or a raised cap) and how it does not (a retry, support, a lower cap).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, dec, each_backend};

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;
/// 2026-01-10T00:00:00Z, inside January in New York as in UTC.
const TENTH_OF_JANUARY_MS: i64 = 1_768_003_200_000;
/// Midnight on 1 February 2026 in New York (UTC-5).
const FEBRUARY_IN_NEW_YORK: &str = "2026-02-01T05:00:00.000Z";

impl TestApp {
    /// Saves auto top-up settings (threshold 1,000, target 5,000) with `extra` fields.
    async fn put_settings(&self, account: &str, key: &str, extra: Value) -> crate::helpers::Answer {
        let mut body = json!({ "enabled": true, "threshold": 1000, "target": 5000 });
        body.as_object_mut()
            .expect("object")
            .extend(extra.as_object().expect("object").clone());
        self.request(
            Method::PUT,
            &format!("/v1/accounts/{account}/auto-topup"),
            Some(key),
            Some(body),
        )
        .await
    }

    /// Uses 4,500 credits of the account (450 started minutes of dubbing), so a balance of
    /// 5,000 falls to 500, below the threshold, and then lets the 6-hour window pass.
    async fn spend_down(&self, service: &str, account: &str, request_id: &str) {
        let debited = self.debit(service, account, request_id, 27_000).await;
        assert!(debited.status.is_success(), "{}", debited.body);
        self.clock.advance_ms(7 * HOUR_MS);
    }

    fn now(&self) -> i64 {
        topupd::clock::Clock::now_ms(&self.clock)
    }
}

#[tokio::test]
async fn the_top_up_that_would_pass_the_cap_pauses_instead_until_the_month_ends_in_the_accounts_time_zone()
 {
    each_backend(async |app| {
        app.clock.advance_ms(TENTH_OF_JANUARY_MS - app.now());
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let service = app.key("service", None).await;
        let saved = app
            .put_settings(
                &account,
                &key,
                json!({ "monthly_spend_cap": 120, "time_zone": "America/New_York" }),
            )
            .await;
        assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
        assert_eq!(saved.body["time_zone"], "America/New_York");
        assert_eq!(saved.body["spend_cap"]["cap_usd"], "$120.00");
        assert_eq!(saved.body["spend_cap"]["spent_cents"], 0);
        assert_eq!(
            saved.body["spend_cap"]["month_starts_at"],
            "2026-01-01T05:00:00.000Z"
        );
        assert_eq!(
            saved.body["spend_cap"]["month_ends_at"],
            FEBRUARY_IN_NEW_YORK
        );

        // $50.00 from nothing, then $45.00 from 500 credits: $95.00 of $120.00.
        assert_eq!(app.scan().await.succeeded, 1);
        app.spend_down(&service, &account, "first").await;
        assert_eq!(app.scan().await.succeeded, 1);
        assert_eq!(
            app.auto_topup(&account).await["spend_cap"]["spent_cents"],
            9_500
        );

        // Another $45.00 would make $140.00.
        app.spend_down(&service, &account, "second").await;
        let report = app.scan().await;
        assert_eq!(
            (report.due, report.claimed, report.capped),
            (1, 0, 1),
            "{report:?}"
        );
        assert_eq!(
            app.charges_of(&account).await,
            2,
            "nothing charged past the cap"
        );
        assert_eq!(app.balance(&account).await, dec("500"));
        let paused = app.auto_topup(&account).await;
        assert_eq!(paused["state"], "paused", "{paused}");
        assert_eq!(paused["pause"]["reason"], "spend_cap_reached");
        assert_eq!(paused["pause"]["until"], FEBRUARY_IN_NEW_YORK);
        assert_eq!(paused["last_scan"]["decision"], "spend_cap_reached");
        let reason = paused["last_scan"]["reason"].as_str().expect("reason");
        for figure in ["$45.00", "$95.00", "$120.00", FEBRUARY_IN_NEW_YORK] {
            assert!(reason.contains(figure), "{figure} in {reason}");
        }
        let history = app
            .get(
                &format!("/v1/accounts/{account}/auto-topup/decisions"),
                &app.admin,
            )
            .await;
        assert_eq!(history.body["data"][0]["decision"], "spend_cap_reached");
        assert_eq!(
            app.notice_kinds(&account)
                .await
                .iter()
                .filter(|k| *k == "spend_cap_reached")
                .count(),
            1,
            "the customer is told once"
        );

        // Neither paying nor support ends it: the cap would be passed all the same.
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
                .expect("message")
                .contains("spend cap"),
            "{}",
            retried.body
        );
        let support = app.key("support", None).await;
        let resumed = app
            .post(
                &format!("/v1/admin/accounts/{account}/auto-topup/resume"),
                &support,
                json!({ "note": "customer asked" }),
            )
            .await;
        assert_eq!(resumed.status, StatusCode::CONFLICT, "{}", resumed.body);
        assert_eq!(app.scan().await.due, 0, "a paused account is not due");

        // One millisecond before February in New York it still holds; at it, it lifts and
        // the same scan charges the account.
        let february = chrono::DateTime::parse_from_rfc3339(FEBRUARY_IN_NEW_YORK)
            .expect("time")
            .timestamp_millis();
        app.clock.advance_ms(february - 1 - app.now());
        assert_eq!(app.scan().await.due, 0);
        assert_eq!(app.auto_topup(&account).await["state"], "paused");
        app.clock.advance_ms(1);
        let report = app.scan().await;
        assert_eq!((report.claimed, report.succeeded), (1, 1), "{report:?}");
        let resumed = app.auto_topup(&account).await;
        assert_eq!(resumed["state"], "active", "{resumed}");
        assert_eq!(resumed["spend_cap"]["spent_cents"], 4_500, "February's own");
        assert_eq!(app.charges_of(&account).await, 3);
        assert!(
            app.notice_kinds(&account)
                .await
                .contains(&"auto_topup_resumed".to_owned())
        );
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &app.admin)
            .await;
        assert!(
            audit.body["data"]
                .as_array()
                .expect("audit")
                .iter()
                .any(|e| e["action"] == "auto_topup.resume" && e["actor_role"] == "schedule"),
            "{}",
            audit.body
        );
        assert!(app.cli(&["verify"]).await.status.success());
    })
    .await;
}

#[tokio::test]
async fn raising_or_removing_the_cap_ends_its_pause_and_lowering_it_does_not() {
    each_backend(async |app| {
        app.clock.advance_ms(TENTH_OF_JANUARY_MS - app.now());
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let service = app.key("service", None).await;
        let saved = app
            .put_settings(&account, &key, json!({ "monthly_spend_cap": 60 }))
            .await;
        assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
        assert_eq!(saved.body["time_zone"], "UTC", "the default");
        assert_eq!(app.scan().await.succeeded, 1);
        app.spend_down(&service, &account, "first").await;
        assert_eq!(app.scan().await.capped, 1);

        let lower = app
            .put_settings(&account, &key, json!({ "monthly_spend_cap": 55 }))
            .await;
        assert_eq!(lower.status, StatusCode::OK, "{}", lower.body);
        assert_eq!(
            lower.body["pause"]["reason"], "spend_cap_reached",
            "lowered: still paused"
        );
        let kept = app.put_settings(&account, &key, json!({})).await;
        assert_eq!(
            kept.body["spend_cap"]["cap_cents"], 5_500,
            "left out, the cap is kept"
        );
        assert_eq!(kept.body["state"], "paused");

        let raised = app
            .put_settings(&account, &key, json!({ "monthly_spend_cap": 100 }))
            .await;
        assert_eq!(raised.status, StatusCode::OK, "{}", raised.body);
        assert_eq!(raised.body["state"], "active", "{}", raised.body);
        assert_eq!(raised.body["pause"], Value::Null);
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &app.admin)
            .await;
        assert_eq!(
            audit.body["data"][0]["detail"]["ended_spend_cap_pause"], true,
            "{}",
            audit.body
        );
        assert_eq!(app.scan().await.succeeded, 1, "charged once raised");

        // $95.00 of $100.00: the next $45.00 would pass it, but the cap is removed.
        app.spend_down(&service, &account, "second").await;
        let removed = app
            .put_settings(&account, &key, json!({ "monthly_spend_cap": null }))
            .await;
        assert_eq!(removed.body["spend_cap"], Value::Null, "{}", removed.body);
        assert_eq!(app.scan().await.succeeded, 1);
        assert_eq!(app.charges_of(&account).await, 3);
    })
    .await;
}

#[tokio::test]
async fn a_bad_cap_or_time_zone_is_refused_naming_the_field_and_changes_nothing() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let saved = app
            .put_settings(&account, &key, json!({ "monthly_spend_cap": 80 }))
            .await;
        assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
        let before = app.snapshot(&account).await;
        for (extra, field) in [
            (json!({ "monthly_spend_cap": 0.99 }), "monthly_spend_cap"),
            (json!({ "monthly_spend_cap": 10.001 }), "monthly_spend_cap"),
            (json!({ "monthly_spend_cap": -5 }), "monthly_spend_cap"),
            (
                json!({ "monthly_spend_cap": 1_000_000.01 }),
                "monthly_spend_cap",
            ),
            (json!({ "time_zone": "Mars/Olympus" }), "time_zone"),
            (json!({ "time_zone": "+02:00" }), "time_zone"),
        ] {
            let answer = app.put_settings(&account, &key, extra.clone()).await;
            assert_eq!(
                answer.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{extra}: {}",
                answer.body
            );
            let named: Vec<&str> = answer.body["fields"]
                .as_object()
                .expect("fields")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(named, [field], "{extra}");
        }
        assert_eq!(
            app.snapshot(&account).await,
            before,
            "refused settings change nothing"
        );
        let support = app.key("support", None).await;
        let by_support = app
            .request(
                Method::PUT,
                &format!("/v1/accounts/{account}/auto-topup"),
                Some(&support),
                Some(json!({ "enabled": false, "monthly_spend_cap": null })),
            )
            .await;
        assert_eq!(
            by_support.status,
            StatusCode::FORBIDDEN,
            "the cap is the customer's"
        );
        assert_eq!(
            app.auto_topup(&account).await["spend_cap"]["cap_cents"],
            8_000
        );
    })
    .await;
}

#[tokio::test]
async fn scans_running_at_once_pause_each_capped_account_once_and_charge_none_past_its_cap() {
    each_backend(async |app| {
        app.clock.advance_ms(TENTH_OF_JANUARY_MS - app.now());
        let service = app.key("service", None).await;
        let mut accounts = Vec::new();
        for _ in 0..30 {
            let (account, key) = app.customer_with_card("pm_card_visa").await;
            let saved = app
                .put_settings(&account, &key, json!({ "monthly_spend_cap": 90 }))
                .await;
            assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
            accounts.push(account);
        }
        assert_eq!(app.scan().await.succeeded, 30, "$50.00 each fits");
        for (i, account) in accounts.iter().enumerate() {
            let debited = app
                .debit(&service, account, &format!("use-{i}"), 27_000)
                .await;
            assert!(debited.status.is_success(), "{}", debited.body);
        }
        app.clock.advance_ms(DAY_MS);
        let reports = app.scans_at_once(3).await;
        let capped: usize = reports.iter().map(|r| r.capped).sum();
        let claimed: usize = reports.iter().map(|r| r.claimed).sum();
        assert_eq!((capped, claimed), (30, 0), "{reports:?}");
        assert_eq!(app.stub.charges().await.len(), 30);
        let notices = app.get("/v1/admin/notices?limit=200", &app.admin).await;
        let told = notices.body["data"]
            .as_array()
            .expect("notices")
            .iter()
            .filter(|n| n["kind"] == "spend_cap_reached")
            .count();
        assert_eq!(told, 30, "one notice each");
        for account in &accounts {
            let state = app.auto_topup(account).await;
            assert_eq!(state["pause"]["reason"], "spend_cap_reached", "{state}");
            assert_eq!(state["spend_cap"]["spent_cents"], 5_000);
        }
    })
    .await;
}

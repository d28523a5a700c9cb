//! The provider against the ledger: `Topups::check_provider` (run daily by `serve`) and
//! `topupd reconcile --since`, over the stub's list of payments, page by page.

use reqwest::StatusCode;
use serde_json::Value;
use topupd::topups::provider_check::SETTLING_MS;

use crate::helpers::{EPOCH_MS, TestApp, each_backend, tamper};

impl TestApp {
    /// The account's one top-up's id.
    async fn topup_of(&self, account: &str) -> String {
        let listed = self
            .get(&format!("/v1/accounts/{account}/topups"), &self.admin)
            .await;
        listed.body["data"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("a top-up: {}", listed.body))
            .to_owned()
    }

    /// A payment made at the provider outside topupd, naming `topup_id` in its metadata
    /// as topupd's own do.
    async fn payment_made_elsewhere(&self, account: &str, topup_id: &str) {
        let customer = self.provider_customer(account).await;
        let card = crate::auto_topup::payment_method(self, account).await;
        let (status, body) = self
            .stripe(
                "/v1/payment_intents",
                &[
                    ("amount", "700"),
                    ("currency", "usd"),
                    ("customer", &customer),
                    ("payment_method", &card),
                    ("confirm", "true"),
                    ("off_session", "true"),
                    ("metadata[topup_attempt_id]", topup_id),
                ],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "succeeded", "{body}");
    }
}

#[tokio::test]
async fn the_check_names_each_disagreement_with_the_ledger_and_flags_its_top_up_for_support() {
    each_backend(async |app| {
        // 120 paid top-ups: more than a page of the provider's list.
        let mut paid = Vec::new();
        for _ in 0..120 {
            let (account, key) = app.customer_with_card("pm_card_visa").await;
            assert_eq!(app.buy(&key, &account, 1000, None).await.status, StatusCode::CREATED);
            paid.push(account);
        }
        let (declined, key) = app.customer_with_card("pm_card_chargeCustomerFail").await;
        assert_eq!(
            app.buy(&key, &declined, 1000, None).await.status,
            StatusCode::PAYMENT_REQUIRED
        );
        // A payment the host made for something else is not a top-up.
        let (status, body) = app
            .stripe(
                "/v1/payment_intents",
                &[
                    ("amount", "900"),
                    ("currency", "usd"),
                    ("customer", &app.provider_customer(&paid[0]).await),
                    ("payment_method", &crate::auto_topup::payment_method(app, &paid[0]).await),
                    ("confirm", "true"),
                    ("off_session", "true"),
                ],
                None,
            )
            .await;
        assert_eq!((status, &body["status"]), (StatusCode::OK, &Value::from("succeeded")));
        app.clock.advance_ms(SETTLING_MS + 1);
        let clean = app.topups.check_provider(EPOCH_MS).await.expect("check");
        assert_eq!((clean.charges, clean.topups, clean.mismatches.len()), (120, 121, 0), "{clean:?}");

        let recorded_less = app.topup_of(&paid[1]).await;
        tamper(app, "UPDATE topup_attempts SET amount_cents = amount_cents - 1 WHERE id = $1", &recorded_less)
            .await;
        let credited_declined = app.topup_of(&declined).await;
        tamper(
            app,
            "INSERT INTO ledger_entries (account_id, kind, reference, amount, balance_after, description, created_at) \
             SELECT account_id, 'manual_topup', id, credits, credits, 'forged', created_at FROM topup_attempts WHERE id = $1",
            &credited_declined,
        )
        .await;
        app.payment_made_elsewhere(&paid[2], "tpu_never_recorded").await;
        // A second payment naming a paid top-up.
        app.payment_made_elsewhere(&paid[3], &app.topup_of(&paid[3]).await).await;
        app.clock.advance_ms(SETTLING_MS + 1);
        // A payment too recent to judge is left to the next check, with its top-up.
        let (fresh, fresh_key) = app.customer_with_card("pm_card_visa").await;
        assert_eq!(app.buy(&fresh_key, &fresh, 1000, None).await.status, StatusCode::CREATED);

        let check = app.topups.check_provider(EPOCH_MS).await.expect("check");
        assert_eq!(check.settling, 1, "{check:?}");
        let mut found: Vec<(&str, Option<&str>)> =
            check.mismatches.iter().map(|m| (m.kind(), m.topup_id())).collect();
        found.sort();
        let paid_twice = app.topup_of(&paid[3]).await;
        let mut expected = vec![
            ("amount_mismatch", Some(recorded_less.as_str())),
            ("charge_without_credit", Some("tpu_never_recorded")),
            ("charge_without_credit", Some(paid_twice.as_str())),
            ("credit_without_charge", Some(credited_declined.as_str())),
        ];
        expected.sort();
        assert_eq!(found, expected, "{check:?}");

        let issues = app.get("/v1/admin/auto-topups", &app.admin).await;
        let flagged: Vec<&str> = issues.body["provider_mismatches"]
            .as_array()
            .expect("mismatches")
            .iter()
            .map(|m| m["topup_id"].as_str().expect("id"))
            .collect();
        let mut flagged = flagged.clone();
        flagged.sort();
        let mut recorded = vec![
            recorded_less.as_str(),
            credited_declined.as_str(),
            paid_twice.as_str(),
        ];
        recorded.sort();
        assert_eq!(flagged, recorded, "{}", issues.body);
        assert!(
            issues.body["provider_mismatches"][0]["detail"].as_str().expect("detail").contains("$"),
            "{}",
            issues.body
        );

        // Put right (the amount as charged), the top-up is no longer listed.
        tamper(app, "UPDATE topup_attempts SET amount_cents = amount_cents + 1 WHERE id = $1", &recorded_less)
            .await;
        let again = app.topups.check_provider(EPOCH_MS).await.expect("check");
        assert_eq!(again.mismatches.len(), 3, "{again:?}");
        let issues = app.get("/v1/admin/auto-topups", &app.admin).await;
        assert_eq!(issues.body["provider_mismatches"].as_array().map(Vec::len), Some(2), "{}", issues.body);
    })
    .await;
}

#[tokio::test]
async fn reconcile_prints_each_mismatch_and_exits_1_and_0_when_all_agree() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        assert_eq!(app.buy(&key, &account, 1000, None).await.status, StatusCode::CREATED);
        let agreeing = app.cli_through_the_servers_stub(&["reconcile", "--since", "2026-01-01"]).await;
        let stdout = String::from_utf8_lossy(&agreeing.stdout);
        assert!(agreeing.status.success(), "{stdout}{}", String::from_utf8_lossy(&agreeing.stderr));
        assert!(
            stdout.contains("since 2026-01-01T00:00:00Z: 1 provider charge and 1 top-up compared, 0 still settling, 0 mismatched"),
            "{stdout}"
        );

        app.payment_made_elsewhere(&account, "tpu_never_recorded").await;
        let found = app
            .cli_through_the_servers_stub(&["reconcile", "--since", "2026-01-01", "--json"])
            .await;
        assert_eq!(found.status.code(), Some(1), "{}", String::from_utf8_lossy(&found.stderr));
        let printed: Value = serde_json::from_slice(&found.stdout).expect("JSON");
        assert_eq!(printed["mismatches"][0]["kind"], "charge_without_credit", "{printed}");
        assert_eq!(printed["mismatches"][0]["topup_id"], "tpu_never_recorded");

        let refused = app.cli(&["reconcile", "--since", "2026-01-01"]).await;
        assert_eq!(refused.status.code(), Some(2), "without the server's stub, nothing to ask");
        let bad = app.cli(&["reconcile", "--since", "last tuesday"]).await;
        assert_eq!(bad.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("2026-12-01"));
    })
    .await;
}

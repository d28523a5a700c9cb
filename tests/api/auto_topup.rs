//! The auto top-up engine end to end: settings, every outcome, pauses and resumes, the
//! 6-hour window, crash recovery, concurrent scans and racing debits.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use topupd::{
    db::{
        attempts::{AttemptMove, SettleWrite},
        auto_topup::{AutoClaim, AutoClaimOutcome, ClaimTerms},
        group_commit::{GroupCommit, Writers},
    },
    domain::attempt::{Attempt, AttemptState, AttemptTrigger, ProviderFacts},
    payments::{
        client::{NewPayment, Presence},
        signature,
        stub::world::{FaultTarget, Faults},
    },
    topups::{Topups, auto::ScanReport},
};

use topupd::app::Roles;

use crate::helpers::{TestApp, backends, dec, each_backend, tamper, test_config, unused_port};

const HOUR_MS: i64 = 3_600_000;

impl TestApp {
    /// An account with `card` saved and auto top-up on (threshold 1,000, target 5,000),
    /// with `balance` credits.
    pub async fn auto_account(&self, card: &str, balance: &str) -> (String, String) {
        let (account, key) = self.customer_with_card(card).await;
        if dec(balance) > dec("0") {
            let funded = self
                .post(
                    &format!("/v1/admin/accounts/{account}/adjustments"),
                    &self.admin,
                    json!({ "credits": crate::helpers::number(balance), "reason": "starting balance" }),
                )
                .await;
            assert_eq!(funded.status, StatusCode::CREATED);
        }
        self.enable_auto_topup(&account, &key).await;
        (account, key)
    }

    /// Opens the link the customer was sent for the account's waiting top-up (topupd's
    /// page) and confirms the payment there, as a browser does: the page's form is posted
    /// and its redirect followed. Returns the bank's authentication page it led to.
    pub async fn confirm_on_topupd_page(&self, account: &str) -> String {
        let link = self.confirmation_link(account).await;
        let page = self.client.get(&link).send().await.expect("page");
        assert_eq!(page.status(), StatusCode::OK);
        let html = page.text().await.expect("html");
        assert!(html.contains("<form method=\"post\""), "{html}");
        let (bank, _) = self.press_confirm(&link).await;
        assert!(
            bank.contains("/_stub/authenticate/"),
            "sent to the bank: {bank}"
        );
        bank
    }

    /// The link the customer was sent for the account's waiting top-up.
    pub async fn confirmation_link(&self, account: &str) -> String {
        let state = self.auto_topup(account).await;
        let link = state["last_topup"]["next_action"]["url"]
            .as_str()
            .expect("the confirmation link")
            .to_owned();
        assert!(
            link.starts_with(&format!("{}/v1/payments/confirm/", self.base_url)),
            "{link}"
        );
        link
    }

    /// Presses the confirm button of the page `link` opens, as a browser does (following
    /// the redirect), and returns where it landed and what it says.
    pub async fn press_confirm(&self, link: &str) -> (String, String) {
        let (path, query) = link.split_once('?').expect("signed");
        let form: Vec<(String, String)> = serde_urlencoded::from_str(query).expect("query");
        let confirmed = self
            .client
            .post(path)
            .form(&form)
            .send()
            .await
            .expect("confirmed");
        assert_eq!(confirmed.status(), StatusCode::OK);
        let landed = confirmed.url().to_string();
        (landed, confirmed.text().await.expect("html"))
    }

    /// An account whose automatic top-up was declined, and so paused, with a card that
    /// works saved as its default since.
    pub async fn paused_with_a_new_card(&self) -> (String, String) {
        let (account, key) = self.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(self.scan().await.failed, 1);
        let visa = self
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                &key,
                json!({ "payment_method_id": "pm_card_visa", "default": true }),
            )
            .await;
        assert_eq!(visa.status, StatusCode::CREATED, "{}", visa.body);
        (account, key)
    }

    /// The account's newest audit entry of `action`.
    pub async fn audited(&self, account: &str, action: &str) -> Value {
        let audit = self
            .get(
                &format!("/v1/admin/audit?account_id={account}"),
                &self.admin,
            )
            .await;
        audit.body["data"]
            .as_array()
            .expect("audit")
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("{action} is audited: {}", audit.body))
            .clone()
    }

    /// Moves one attempt `from` -> `to`, as the engine's step queue does for a batch of one.
    pub async fn move_attempt_alone(
        &self,
        id: &str,
        from: AttemptState,
        to: AttemptState,
        provider_payment_id: Option<&str>,
        at: i64,
    ) -> Result<Option<Attempt>, topupd::db::DbError> {
        let step = AttemptMove {
            id: id.to_owned(),
            from,
            to,
            provider_payment_id: provider_payment_id.map(str::to_owned),
            at,
        };
        Ok(self.db.move_attempts(&[&step]).await?.pop().flatten())
    }

    /// The claim of an automatic attempt that a scan makes now.
    pub fn scan_claim<'a>(&'a self, account: &'a str) -> AutoClaim<'a> {
        AutoClaim {
            account_id: account,
            trigger: AttemptTrigger::Auto,
            respect_window: true,
            terms: ClaimTerms {
                window_ms: 6 * HOUR_MS,
                credit_price_cents: 1,
                min_amount_cents: 100,
                currency: "usd",
                key_prefix: "topupd",
                email: &self.config.email,
                at: topupd::clock::Clock::now_ms(&self.clock),
            },
            staff: None,
        }
    }

    /// Claims an automatic attempt for a due account, the first step of a scan.
    pub async fn claim_as_the_scan_would(&self, account: &str) -> Attempt {
        let claim = self.scan_claim(account);
        match self.db.claim_auto_attempt(&claim).await.expect("claim") {
            AutoClaimOutcome::Claimed(attempt) => attempt,
            other => panic!("{account}: not claimed: {other:?}"),
        }
    }

    /// Attempts claimed as the scan would, each of a new account paying with a Visa card
    /// (threshold 1,000, target 5,000, balance 0).
    pub async fn claimed_attempts(&self, count: usize) -> Vec<Attempt> {
        let mut attempts = Vec::with_capacity(count);
        for _ in 0..count {
            let (account, _) = self.auto_account("pm_card_visa", "0").await;
            attempts.push(self.claim_as_the_scan_would(&account).await);
        }
        attempts
    }

    pub async fn scan(&self) -> ScanReport {
        self.topups
            .scan(&CancellationToken::new(), None)
            .await
            .expect("scan")
    }

    /// `n` scans started together, their reports once all are done.
    pub async fn scans_at_once(&self, n: usize) -> Vec<ScanReport> {
        let mut scans = tokio::task::JoinSet::new();
        for _ in 0..n {
            let topups = self.topups.clone();
            scans.spawn(async move {
                topups
                    .scan(&CancellationToken::new(), None)
                    .await
                    .expect("scan")
            });
        }
        scans.join_all().await
    }

    /// Moves time past the reconciler's patience, then runs it, as at a restart.
    pub async fn reconcile_later(&self) {
        self.clock.advance_ms(61_000);
        self.topups
            .reconcile(&CancellationToken::new())
            .await
            .expect("reconcile");
    }

    pub async fn auto_topup(&self, account: &str) -> Value {
        let answer = self
            .get(&format!("/v1/accounts/{account}/auto-topup"), &self.admin)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body
    }

    /// Charges at the stub for the account's provider customer.
    pub async fn charges_of(&self, account: &str) -> usize {
        let customer = Some(self.provider_customer(account).await);
        self.stub
            .charges()
            .await
            .iter()
            .filter(|c| c.customer == customer)
            .count()
    }
}

#[tokio::test]
async fn settings_are_validated_and_recorded_and_nothing_else_turns_them_on() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        assert_eq!(app.buy(&key, &account, 500, None).await.status, StatusCode::CREATED);
        let fresh = app.auto_topup(&account).await;
        assert_eq!((fresh["enabled"].as_bool(), fresh["state"].as_str()), (Some(false), Some("off")), "{fresh}");
        assert_eq!(fresh["decision"]["decision"], "not_enabled");

        let path = format!("/v1/accounts/{account}/auto-topup");
        for (body, fields) in [
            (json!({ "enabled": true, "threshold": 50, "target": 500 }), vec!["target", "threshold"]),
            (json!({ "enabled": true, "threshold": 1000, "target": 1500 }), vec!["target"]),
            (json!({ "enabled": true, "threshold": 99001, "target": 100000 }), vec!["threshold"]),
            (json!({ "enabled": true, "threshold": 1000, "target": 100001 }), vec!["target"]),
            (json!({ "enabled": true, "threshold": 1000, "target": 5000, "payment_method_id": "pm_other" }), vec!["payment_method_id"]),
        ] {
            let answer = app.request(Method::PUT, &path, Some(&key), Some(body.clone())).await;
            assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", answer.body);
            let named: Vec<&str> = answer.body["fields"].as_object().expect("fields").keys().map(String::as_str).collect();
            assert_eq!(named, fields, "{body}");
        }
        assert_eq!(app.auto_topup(&account).await["enabled"], false, "a rejected update changes nothing");

        let customer_key_id = app.get(&format!("/v1/admin/audit?account_id={account}"), &app.admin).await.body["data"]
            .as_array()
            .expect("audit")
            .iter()
            .find(|e| e["action"] == "api_key.create")
            .expect("customer key")["detail"]["key_id"]
            .clone();
        let saved = app.request(Method::PUT, &path, Some(&key), Some(json!({ "enabled": true, "threshold": 100, "target": 1100 }))).await;
        assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
        assert_eq!(saved.body["state"], "active");
        assert_eq!(saved.body["enabled_by"], customer_key_id);
        assert_eq!(saved.body["enabled_at"], "2026-01-01T00:00:00.000Z");
        assert_eq!(saved.body["threshold"], 100);
        let audit = app.get(&format!("/v1/admin/audit?account_id={account}"), &app.admin).await;
        assert_eq!(audit.body["data"][0]["action"], "auto_topup.update");
    })
    .await;
}

#[tokio::test]
async fn a_successful_auto_top_up_restores_the_target_and_sends_a_receipt() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_visa", "499.5").await;
        let report = app.scan().await;
        assert_eq!(
            (report.due, report.claimed, report.succeeded),
            (1, 1, 1),
            "{report:?}"
        );
        assert_eq!(
            app.balance(&account).await,
            dec("5000.5"),
            "4,501 whole credits bought"
        );
        let state = app.auto_topup(&account).await;
        assert_eq!(state["state"], "active");
        assert_eq!(state["last_topup"]["state"], "succeeded");
        assert_eq!(state["last_topup"]["amount_cents"], 4501);
        assert_eq!(state["last_scan"]["decision"], "charged");
        assert_eq!(
            state["last_scan"]["next_eligible_at"],
            "2026-01-01T06:00:00.000Z"
        );
        assert_eq!(
            state["decision"]["next_eligible_at"],
            "2026-01-01T06:00:00.000Z"
        );
        assert_eq!(state["decision"]["decision"], "above_threshold");
        assert_eq!(app.notice_kinds(&account).await, ["topup_receipt"]);
        let ledger = app
            .get(&format!("/v1/accounts/{account}/ledger"), &app.admin)
            .await;
        assert_eq!(ledger.body["data"][0]["kind"], "auto_topup");
        assert_eq!(app.scan().await.due, 0, "nothing due any more");
        assert_eq!(app.charges_of(&account).await, 1);
    })
    .await;
}

#[tokio::test]
async fn a_decline_pauses_with_its_code_and_is_never_retried_automatically() {
    each_backend(async |app| {
        for (card, code) in [
            ("pm_card_chargeCustomerFail", "generic_decline"),
            ("declining:insufficient_funds", "insufficient_funds"),
            ("declining:expired_card", "expired_card"),
            ("declining:fraudulent", "fraudulent"),
        ] {
            let (account, _) = app.auto_account(card, "0").await;
            let report = app.scan().await;
            assert_eq!(report.failed, 1, "{card}: {report:?}");
            let state = app.auto_topup(&account).await;
            assert_eq!(state["state"], "paused", "{card}");
            assert_eq!(state["pause"]["reason"], "payment_failed");
            assert_eq!(state["pause"]["decline_code"], code);
            assert_eq!(state["pause"]["since"], "2026-01-01T00:00:00.000Z");
            assert_eq!(
                app.notice_kinds(&account).await,
                ["payment_failed"],
                "{card}"
            );
            assert_eq!(app.balance(&account).await, dec("0"));
        }
        // Every payment the provider was asked for, declined ones included.
        let payments = async || {
            let listed = app
                .client
                .get(format!("{}/_stub/payment_intents", app.stub.base_url()))
                .send()
                .await
                .expect("list");
            listed.json::<Value>().await.expect("JSON")["data"]
                .as_array()
                .expect("data")
                .len()
        };
        let attempts_before = payments().await;
        assert_eq!(attempts_before, 4, "one payment per declining card");
        // A declined payment is cancelled, so nothing can take money for it later.
        let listed: Value = app
            .client
            .get(format!("{}/_stub/payment_intents", app.stub.base_url()))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("JSON");
        for payment in listed["data"].as_array().expect("data") {
            assert_eq!(payment["status"], "canceled", "{payment}");
        }
        for _ in 0..3 {
            app.clock.advance_ms(7 * HOUR_MS);
            assert_eq!(
                app.scan().await.claimed,
                0,
                "a paused account is not charged"
            );
        }
        assert_eq!(
            payments().await,
            attempts_before,
            "no declined card was tried again"
        );
    })
    .await;
}

/// What becomes of a declined top-up whose payment the provider would not cancel at once
/// (every cancel answered 500), so the attempt stays open with the decline recorded.
#[derive(Debug, Clone, Copy)]
enum AfterAnUnansweredCancel {
    /// The cancel goes through later, and its webhook (saying nothing of why) settles it.
    Cancelled,
    /// The customer pays it after all with a card that works.
    Paid,
    /// The customer confirms it with a card that needs 3-D Secure, then gives up on it.
    AuthenticatedThenCancelled,
}

#[tokio::test]
async fn a_decline_recorded_before_its_cancel_is_reported_only_if_the_payment_is_cancelled() {
    use AfterAnUnansweredCancel::*;
    each_backend(async |app| {
        for after in [Cancelled, Paid, AuthenticatedThenCancelled] {
            let (account, _) = app.auto_account("declining:insufficient_funds", "0").await;
            // The decline's own event is dropped: handled once the cancel is answered
            // again, it would cancel the payment before the customer acts on it.
            app.stub
                .set_faults(Faults {
                    target: FaultTarget::Cancel,
                    fail_before: 1_000,
                    drop_webhooks: 1_000,
                    ..Faults::default()
                })
                .await;
            let report = app.scan().await;
            app.stub.set_faults(Faults::default()).await;
            assert_eq!(report.pending, 1, "{after:?}: {report:?}");
            let payment = app.payments_of(&account).await.remove(0);
            assert_eq!(payment.status, "requires_payment_method", "{after:?}");
            let path = |verb: &str| format!("/v1/payment_intents/{}/{verb}", payment.id);
            let (expected_state, expected_decline) = match after {
                Cancelled => {
                    let (status, _) = app.stripe(&path("cancel"), &[], None).await;
                    assert_eq!(status, StatusCode::OK);
                    ("failed", Value::from("insufficient_funds"))
                }
                Paid => {
                    let form = [("payment_method", "pm_card_visa")];
                    let (status, paid) = app.stripe(&path("confirm"), &form, None).await;
                    assert_eq!(status, StatusCode::OK, "{paid}");
                    ("succeeded", Value::Null)
                }
                AuthenticatedThenCancelled => {
                    let form = [("payment_method", "pm_card_authenticationRequired")];
                    let (status, waiting) = app.stripe(&path("confirm"), &form, None).await;
                    assert_eq!(waiting["status"], "requires_action", "{status} {waiting}");
                    app.wait_for_topup_state(&account, "requires_action").await;
                    let (status, _) = app.stripe(&path("cancel"), &[], None).await;
                    assert_eq!(status, StatusCode::OK);
                    ("canceled", Value::Null)
                }
            };
            let topup = app.wait_for_topup_state(&account, expected_state).await;
            assert_eq!(
                topup["decline_code"], expected_decline,
                "{after:?}: {topup}"
            );
            let kinds = app.notice_kinds(&account).await;
            assert_eq!(
                kinds.iter().any(|k| k == "payment_failed"),
                matches!(after, Cancelled),
                "{after:?}: {kinds:?}"
            );
            if matches!(after, Paid) {
                assert_eq!(app.balance(&account).await, dec("5000"));
            }
        }
    })
    .await;
}

/// An event's handler that read the attempt before its decline was recorded, and then
/// finds the payment cancelled for that decline, still reports the decline: not a cancel
/// the customer made.
#[tokio::test]
async fn a_handler_that_read_the_attempt_before_its_decline_was_recorded_still_reports_it() {
    each_backend(async |app| {
        // The cancel stays unanswered throughout, so that the decline's own event
        // cannot settle the attempt either.
        let (account, _) = app.auto_account("declining:insufficient_funds", "0").await;
        app.stub
            .set_faults(Faults {
                target: FaultTarget::Cancel,
                fail_before: 1_000,
                ..Faults::default()
            })
            .await;
        assert_eq!(app.scan().await.pending, 1);
        let payment = app.payments_of(&account).await.remove(0);
        let mut read_before = app
            .db
            .attempt_for_payment(&payment.id)
            .await
            .expect("read")
            .expect("the attempt");
        assert!(read_before.failing.is_some(), "{read_before:?}");
        read_before.failing = None;
        // The cancel's own event would settle it first: this handler is the one to.
        app.stub
            .set_faults(Faults {
                drop_webhooks: 1_000,
                ..Faults::default()
            })
            .await;
        let cancel = format!("/v1/payment_intents/{}/cancel", payment.id);
        let (status, cancelled) = app.stripe(&cancel, &[], None).await;
        assert_eq!(status, StatusCode::OK, "{cancelled}");
        let intent = serde_json::from_value(cancelled).expect("a payment intent");
        let applied = app
            .topups
            .apply(read_before, &intent)
            .await
            .expect("applied");
        assert_eq!(applied.state, AttemptState::Failed, "{applied:?}");
        assert_eq!(applied.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(app.notice_kinds(&account).await, ["payment_failed"]);
    })
    .await;
}

#[tokio::test]
async fn an_account_without_a_card_pauses_like_a_decline() {
    each_backend(async |app| {
        let (account, key) = app.auto_account("pm_card_visa", "0").await;
        let card = app
            .get(&format!("/v1/accounts/{account}/payment-methods"), &key)
            .await
            .body["data"][0]["id"]
            .as_str()
            .expect("card")
            .to_owned();
        let removed = app
            .request(
                Method::DELETE,
                &format!("/v1/accounts/{account}/payment-methods/{card}"),
                Some(&key),
                None,
            )
            .await;
        assert_eq!(removed.status, StatusCode::OK);
        assert_eq!(app.scan().await.failed, 1);
        let state = app.auto_topup(&account).await;
        assert_eq!(state["pause"]["decline_code"], "no_payment_method");
        assert_eq!(
            state["last_topup"]["failure_message"], "the account has no saved card to charge",
            "said in our words, without asking the provider about a card that is not there"
        );
        assert_eq!(app.notice_kinds(&account).await, ["payment_failed"]);
    })
    .await;
}

#[tokio::test]
async fn three_d_secure_pauses_then_completing_it_credits_and_resumes() {
    each_backend(async |app| {
        let (account, _) = app
            .auto_account("pm_card_authenticationRequired", "0")
            .await;
        let report = app.scan().await;
        assert_eq!(report.requires_action, 1, "{report:?}");
        let state = app.auto_topup(&account).await;
        assert_eq!(
            (state["state"].as_str(), state["pause"]["reason"].as_str()),
            (Some("paused"), Some("authentication_required"))
        );
        assert_eq!(
            app.notice_kinds(&account).await,
            ["authentication_required"]
        );
        let notice = &app.notices_in("pending").await[0];
        assert_eq!(notice["kind"], "authentication_required");
        // As Stripe answers an off-session charge that needs 3-D Secure: a decline, and
        // no page at the bank until the customer confirms with them there.
        let payment = &app.payments_of(&account).await[0];
        assert_eq!(payment.status, "requires_payment_method");
        assert_eq!(payment.failure_code(), Some("authentication_required"));
        let url = app.confirm_on_topupd_page(&account).await;

        app.client
            .post(format!("{url}/complete"))
            .send()
            .await
            .expect("complete");
        app.wait_for_topup_state(&account, "succeeded").await;
        assert_eq!(app.balance(&account).await, dec("5000"));
        let state = app.auto_topup(&account).await;
        assert_eq!(state["state"], "active", "{state}");
        assert!(state["pause"].is_null());
        let mut kinds = app.notice_kinds(&account).await;
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "authentication_required",
                "auto_topup_resumed",
                "topup_receipt"
            ]
        );
        assert!(app.cli(&["verify"]).await.status.success());
    })
    .await;
}

/// The card the account's default is at the provider.
pub async fn payment_method(app: &TestApp, account: &str) -> String {
    app.db
        .default_card(account)
        .await
        .expect("read")
        .expect("a card")
        .id
}

#[tokio::test]
async fn failing_three_d_secure_stays_paused_as_payment_failed() {
    each_backend(async |app| {
        let (account, _) = app
            .auto_account("pm_card_authenticationRequired", "0")
            .await;
        app.scan().await;
        let link = app.confirmation_link(&account).await;
        let url = app.confirm_on_topupd_page(&account).await;
        app.client
            .post(format!("{url}/fail"))
            .send()
            .await
            .expect("fail");
        app.wait_for_topup_state(&account, "failed").await;
        // Failed for good, so its payment is cancelled: a second press on the confirmation
        // page, or Stripe.js with the client secret, can never take money for it.
        let payment = app.payments_of(&account).await.remove(0);
        assert_eq!(payment.status, "canceled");
        let confirm = format!("/v1/payment_intents/{}/confirm", payment.id);
        let (status, refused) = app
            .stripe(
                &confirm,
                &[("payment_method", &payment_method(app, &account).await)],
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
        let (_, again) = app.press_confirm(&link).await;
        assert!(again.contains("did not go through"), "{again}");
        assert_eq!(app.charges_of(&account).await, 0);
        let state = app.auto_topup(&account).await;
        assert_eq!(state["pause"]["reason"], "payment_failed");
        assert_eq!(
            state["pause"]["since"], "2026-01-01T00:00:00.000Z",
            "the pause keeps its start"
        );
        assert_eq!(app.balance(&account).await, dec("0"));
        let mut kinds = app.notice_kinds(&account).await;
        kinds.sort();
        assert_eq!(kinds, ["authentication_required", "payment_failed"]);
    })
    .await;
}

#[tokio::test]
async fn provider_timeouts_and_5xx_leave_the_attempt_open_until_the_same_key_finds_the_truth() {
    for backend in backends() {
        let cases = [
            (
                "5xx before the charge is recorded",
                Faults {
                    target: FaultTarget::Create,
                    fail_before: 3,
                    ..Faults::default()
                },
                0,
            ),
            (
                "5xx after the charge is recorded",
                Faults {
                    target: FaultTarget::Confirm,
                    fail_after: 3,
                    drop_webhooks: 2,
                    ..Faults::default()
                },
                1,
            ),
            (
                // Stripe replays the first answer under a key, a 500 included: asking
                // again cannot tell, so the payment is found by its metadata.
                "5xx after the payment is created",
                Faults {
                    target: FaultTarget::Create,
                    fail_after: 1,
                    ..Faults::default()
                },
                0,
            ),
            (
                "timeout after the charge is recorded",
                Faults {
                    target: FaultTarget::Confirm,
                    hang_after: 3,
                    hang_ms: 1_500,
                    drop_webhooks: 2,
                    ..Faults::default()
                },
                1,
            ),
        ];
        for (case, faults, charged_at_once) in cases {
            let mut config = test_config(unused_port());
            config.payments.request_timeout_secs = 1;
            config.payments.retry_base_ms = 10;
            config.payments.retry_max_ms = 20;
            let app = TestApp::spawn_with(backend, config).await;
            let (account, _) = app.auto_account("pm_card_visa", "0").await;
            app.stub.set_faults(faults).await;
            let report = app.scan().await;
            assert_eq!(report.pending, 1, "{backend:?} {case}: {report:?}");
            // The account reads the same wherever it is looked at: in progress, not paused
            // (an unknown outcome never pauses), and no other word for it.
            let state = app.auto_topup(&account).await;
            assert_eq!(
                (
                    state["state"].as_str(),
                    state["decision"]["decision"].as_str()
                ),
                (Some("in_progress"), Some("in_progress")),
                "{case}: {state}"
            );
            assert!(state["decision"]["next_top_up_at"].is_null(), "{state}");
            let summary = app
                .get(&format!("/v1/accounts/{account}"), &app.admin)
                .await;
            assert_eq!(summary.body["auto_topup"]["state"], "in_progress", "{case}");
            let listed = |filter: &'static str| {
                let app = &app;
                async move {
                    let found = app
                        .get(
                            &format!("/v1/admin/accounts?auto_topup_state={filter}"),
                            &app.admin,
                        )
                        .await;
                    assert_eq!(found.status, StatusCode::OK, "{}", found.body);
                    found.body["data"]
                        .as_array()
                        .expect("a page")
                        .iter()
                        .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
                        .collect::<Vec<_>>()
                }
            };
            assert_eq!(
                listed("in_progress").await,
                std::slice::from_ref(&account),
                "{case}"
            );
            assert!(listed("active").await.is_empty(), "{case}");
            assert_eq!(app.charges_of(&account).await, charged_at_once, "{case}");
            assert_eq!(app.balance(&account).await, dec("0"));

            app.reconcile_later().await;
            assert_eq!(
                app.auto_topup(&account).await["last_topup"]["state"],
                "succeeded",
                "{case}"
            );
            assert_eq!(app.balance(&account).await, dec("5000"), "{case}");
            assert_eq!(app.charges_of(&account).await, 1, "{case}: one charge");
            let payments = app.payments_of(&account).await;
            assert_eq!(payments.len(), 1, "{case}: one payment, one key");
            app.stop().await;
        }
    }
}

#[tokio::test]
async fn the_six_hour_window_holds_for_successes_and_failures_but_not_for_a_manual_retry() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_visa", "0").await;
        assert_eq!(app.scan().await.succeeded, 1);
        // Spend it again, below the threshold.
        let spend = app
            .post(
                &format!("/v1/admin/accounts/{account}/adjustments"),
                &app.admin,
                json!({ "credits": -4990, "reason": "spent" }),
            )
            .await;
        assert_eq!(spend.status, StatusCode::CREATED);

        app.clock.advance_ms(6 * HOUR_MS - 1_000);
        assert_eq!(app.scan().await.claimed, 0, "not at t+5h59m59s");
        let state = app.auto_topup(&account).await;
        assert_eq!(state["decision"]["decision"], "rate_limited");
        assert_eq!(
            state["decision"]["next_eligible_at"],
            "2026-01-01T06:00:00.000Z"
        );
        app.clock.advance_ms(1_000);
        assert_eq!(app.scan().await.succeeded, 1, "at t+6h");
        assert_eq!(app.charges_of(&account).await, 2);

        // A failed attempt holds the window too; the customer's retry is not bound by it.
        let (failing, _) = app.paused_with_a_new_card().await;
        let support = app.key("support", None).await;
        let resumed = app
            .post(
                &format!("/v1/admin/accounts/{failing}/auto-topup/resume"),
                &support,
                json!({ "note": "card replaced" }),
            )
            .await;
        assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
        app.clock.advance_ms(HOUR_MS);
        assert_eq!(
            app.scan().await.claimed,
            0,
            "resumed, but the failed attempt still holds the window"
        );
        assert_eq!(
            app.auto_topup(&failing).await["decision"]["decision"],
            "rate_limited"
        );

        let (retrying, retry_key) = app.paused_with_a_new_card().await;
        app.clock.advance_ms(60_000);
        let retried = app
            .post(
                &format!("/v1/accounts/{retrying}/auto-topup/retry"),
                &retry_key,
                json!(null),
            )
            .await;
        assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.body);
        assert_eq!(retried.body["trigger"], "retry");
        assert_eq!(app.balance(&retrying).await, dec("5000"));
        assert_eq!(
            app.auto_topup(&retrying).await["state"],
            "active",
            "a successful retry resumes"
        );
        let again = app
            .post(
                &format!("/v1/accounts/{retrying}/auto-topup/retry"),
                &retry_key,
                json!(null),
            )
            .await;
        assert_eq!(
            again.status,
            StatusCode::CONFLICT,
            "nothing to retry once active"
        );
    })
    .await;
}

#[tokio::test]
async fn support_sees_paused_accounts_and_resumes_them_with_an_audited_note() {
    each_backend(async |app| {
        let (account, key) = app.auto_account("declining:expired_card", "0").await;
        app.scan().await;
        let support = app.key("support", None).await;
        let listed = app
            .get("/v1/admin/auto-topups?state=paused", &support)
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        let paused = &listed.body["paused"][0];
        assert_eq!(
            (
                paused["account_id"].as_str(),
                paused["reason"].as_str(),
                paused["decline_code"].as_str()
            ),
            (
                Some(account.as_str()),
                Some("payment_failed"),
                Some("expired_card")
            )
        );
        assert_eq!(paused["since"], "2026-01-01T00:00:00.000Z");
        assert_eq!(
            app.get("/v1/admin/auto-topups", &key).await.status,
            StatusCode::FORBIDDEN
        );

        let no_note = app
            .post(
                &format!("/v1/admin/accounts/{account}/auto-topup/resume"),
                &support,
                json!({ "note": "" }),
            )
            .await;
        assert_eq!(no_note.status, StatusCode::UNPROCESSABLE_ENTITY);
        app.post(
            &format!("/v1/accounts/{account}/payment-methods"),
            &key,
            json!({ "payment_method_id": "pm_card_visa", "default": true }),
        )
        .await;
        let resumed = app
            .post(
                &format!("/v1/admin/accounts/{account}/auto-topup/resume"),
                &support,
                json!({ "note": "customer added a new card", "try_now": true }),
            )
            .await;
        assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
        assert_eq!(resumed.body["outcome"], "charged", "{}", resumed.body);
        let charged = app.audited(&account, "auto_topup.retry").await;
        assert_eq!(charged["detail"]["topup_id"], resumed.body["topup"]["id"]);
        assert_eq!(charged["actor_role"], "support");
        assert_eq!(
            resumed.body["topup"]["state"], "succeeded",
            "try now charges inside the window"
        );
        assert_eq!(resumed.body["auto_topup"]["state"], "active");
        assert_eq!(app.balance(&account).await, dec("5000"));
        let resume = app.audited(&account, "auto_topup.resume").await;
        assert_eq!(resume["detail"]["note"], "customer added a new card");
        assert_eq!(resume["actor_role"], "support");
        assert!(
            app.notice_kinds(&account)
                .await
                .contains(&"auto_topup_resumed".to_owned())
        );
        let twice = app
            .post(
                &format!("/v1/admin/accounts/{account}/auto-topup/resume"),
                &support,
                json!({ "note": "again" }),
            )
            .await;
        assert_eq!(twice.status, StatusCode::CONFLICT);
    })
    .await;
}

#[tokio::test]
async fn a_402_says_what_auto_top_up_will_do() {
    for backend in backends() {
        let mut config = test_config(unused_port());
        // Scans at :00 and :30; this app runs no scheduler, the test scans by hand.
        config.auto_topup.scan_schedule = "0 */30 * * * *".to_owned();
        let by_hand = Roles {
            scheduler: false,
            notices: false,
            ..Roles::ALL
        };
        let app = TestApp::spawn_with_roles(backend, config, by_hand).await;
        let service = app.key("service", None).await;
        let short = async |account: &str| {
            let answer = app
                .debit(&service, account, &format!("big-{}", uuid_like()), 86_400)
                .await;
            assert_eq!(
                answer.status,
                StatusCode::PAYMENT_REQUIRED,
                "{}",
                answer.body
            );
            answer.body["auto_topup"].clone()
        };
        let off = app.funded_account("0").await;
        assert_eq!(short(&off).await, json!({ "state": "off" }));

        let (active, _) = app.auto_account("pm_card_visa", "0").await;
        let summary = short(&active).await;
        assert_eq!(summary["state"], "active");
        assert_eq!(summary["next_top_up_at"], "2026-01-01T00:00:00.000Z");
        app.clock.advance_ms(60_000);
        let summary = short(&active).await;
        assert_eq!(
            summary["next_top_up_at"], "2026-01-01T00:30:00.000Z",
            "the next scan, not now: {summary}"
        );
        app.scan().await;
        let summary = short(&active).await;
        assert_eq!(summary["state"], "active");
        assert_eq!(
            summary["next_top_up_at"], "2026-01-01T06:30:00.000Z",
            "the window opened at 00:01 ends at 06:01: the 06:30 scan charges it ({summary})"
        );

        let (paused, _) = app.auto_account("declining:insufficient_funds", "0").await;
        app.scan().await;
        let summary = short(&paused).await;
        assert_eq!(
            (
                summary["state"].as_str(),
                summary["reason"].as_str(),
                summary["decline_code"].as_str()
            ),
            (
                Some("paused"),
                Some("payment_failed"),
                Some("insufficient_funds")
            )
        );

        let (pending, key) = app
            .customer_with_card("pm_card_authenticationRequired")
            .await;
        app.buy(&key, &pending, 500, None).await;
        assert_eq!(short(&pending).await["state"], "in_progress");
        app.stop().await;
    }
}

#[tokio::test]
async fn steps_written_together_keep_their_own_outcomes() {
    use AttemptState::*;
    each_backend(async |app| {
        let attempts = app.claimed_attempts(4).await;
        let now = topupd::clock::Clock::now_ms(&app.clock);
        let step = |attempt: &Attempt, from, to, payment: Option<&str>| AttemptMove {
            id: attempt.id.clone(),
            from,
            to,
            provider_payment_id: payment.map(str::to_owned),
            at: now,
        };
        // Moved ahead of the batch, so its step from `claimed` finds it gone.
        app.move_attempt_alone(&attempts[3].id, Claimed, Creating, None, now)
            .await
            .expect("write")
            .expect("moved");
        let steps = [
            step(&attempts[0], Claimed, Creating, None),
            step(&attempts[1], Claimed, Creating, None),
            step(&attempts[2], Claimed, Creating, None),
            step(&attempts[3], Claimed, Creating, None),
        ];
        let moved = app
            .db
            .move_attempts(&steps.iter().collect::<Vec<_>>())
            .await
            .expect("the batch commits");
        let states: Vec<Option<AttemptState>> =
            moved.iter().map(|m| m.as_ref().map(|a| a.state)).collect();
        assert_eq!(
            states,
            [Some(Creating), Some(Creating), Some(Creating), None]
        );
        for (attempt, moved) in attempts.iter().zip(&moved).take(3) {
            assert_eq!(moved.as_ref().expect("moved").id, attempt.id);
        }

        // Different steps in one batch, one with the provider's payment id.
        let steps = [
            step(&attempts[0], Creating, Created, Some("pi_batch_0")),
            step(&attempts[1], Creating, Created, None),
            step(&attempts[3], Creating, Created, Some("pi_batch_3")),
        ];
        let moved = app
            .db
            .move_attempts(&steps.iter().collect::<Vec<_>>())
            .await
            .expect("the batch commits");
        let payments: Vec<Option<&str>> = moved
            .iter()
            .map(|m| m.as_ref().expect("moved").provider_payment_id.as_deref())
            .collect();
        assert_eq!(payments, [Some("pi_batch_0"), None, Some("pi_batch_3")]);
        for (attempt, state, payment) in [
            (&attempts[0], Created, Some("pi_batch_0")),
            (&attempts[1], Created, None),
            (&attempts[2], Creating, None),
            (&attempts[3], Created, Some("pi_batch_3")),
        ] {
            let stored = app
                .db
                .attempt(&attempt.id)
                .await
                .expect("read")
                .expect("stored");
            assert_eq!(stored.state, state, "{}", attempt.id);
            assert_eq!(stored.provider_payment_id.as_deref(), payment);
        }
    })
    .await;
}

#[tokio::test]
async fn settlements_written_together_keep_their_own_outcomes() {
    use AttemptState::*;
    each_backend(async |app| {
        let attempts = app.claimed_attempts(4).await;
        let accounts: Vec<String> = attempts.iter().map(|a| a.account_id.clone()).collect();
        let now = topupd::clock::Clock::now_ms(&app.clock);
        let paid = |attempt: &Attempt| {
            let facts = ProviderFacts {
                amount_received: Some(attempt.amount),
                ..ProviderFacts::default()
            };
            let moved = attempt.settled(Succeeded, &facts, now);
            app.topups.settle_write(Claimed, moved, now)
        };
        let declined = |attempt: &Attempt| {
            let facts = ProviderFacts {
                decline_code: Some("insufficient_funds"),
                ..ProviderFacts::default()
            };
            let moved = attempt.settled(Failed, &facts, now);
            app.topups.settle_write(Claimed, moved, now)
        };
        // Settled alone first, so its settlement in the batch finds it moved.
        let alone = paid(&attempts[3]);
        let first = app.db.settle_attempts(&[&alone]).await.expect("written");
        assert!(first[0].is_some());
        let writes = [
            paid(&attempts[0]),
            declined(&attempts[1]),
            paid(&attempts[2]),
            alone,
        ];
        let settled = app
            .db
            .settle_attempts(&writes.iter().collect::<Vec<_>>())
            .await
            .expect("the batch commits");
        let queued: Vec<Option<Vec<&str>>> = settled
            .iter()
            .map(|s| s.as_ref().map(|s| s.queued.clone()))
            .collect();
        assert_eq!(
            queued,
            [
                Some(vec!["topup_receipt"]),
                Some(vec!["payment_failed"]),
                Some(vec!["topup_receipt"]),
                None
            ]
        );
        for (account, balance, kinds) in [
            (&accounts[0], "5000", "topup_receipt"),
            (&accounts[1], "0", "payment_failed"),
            (&accounts[2], "5000", "topup_receipt"),
            (&accounts[3], "5000", "topup_receipt"),
        ] {
            assert_eq!(app.balance(account).await, dec(balance), "{account}");
            assert_eq!(app.notice_kinds(account).await, [kinds], "{account}");
        }
        let paused = app.auto_topup(&accounts[1]).await;
        assert_eq!(paused["pause"]["decline_code"], "insufficient_funds");
        assert!(app.auto_topup(&accounts[0]).await["pause"].is_null());
    })
    .await;
}

/// A batch failed by one of its settlements is written again one at a time: only that
/// one fails, and it writes nothing.
#[tokio::test]
async fn a_settlement_that_fails_its_batch_fails_alone() {
    each_backend(async |app| {
        let attempts = app.claimed_attempts(3).await;
        let now = topupd::clock::Clock::now_ms(&app.clock);
        let facts = ProviderFacts {
            amount_received: Some(attempts[0].amount),
            ..ProviderFacts::default()
        };
        let mut writes: [SettleWrite; 3] = std::array::from_fn(|i| {
            let moved = attempts[i].settled(AttemptState::Succeeded, &facts, now);
            app.topups.settle_write(AttemptState::Claimed, moved, now)
        });
        // Its credit goes to an account that is not there.
        writes[1].attempt.account_id = "acct_not_there".into();
        // Handed in together before the writer runs (the test's runtime has one thread),
        // so the three are one batch.
        let queue = GroupCommit::start(app.db.clone(), &Writers::default());
        let [first, second, third] = writes.map(|w| queue.write(w));
        let settled = tokio::join!(first, second, third);
        assert!(matches!(settled.0, Ok(Some(_))), "{:?}", settled.0);
        assert!(settled.1.is_err(), "{:?}", settled.1);
        assert!(matches!(settled.2, Ok(Some(_))), "{:?}", settled.2);
        for (attempt, state) in attempts.iter().zip(["succeeded", "claimed", "succeeded"]) {
            let stored = app
                .db
                .attempt(&attempt.id)
                .await
                .expect("read")
                .expect("stored");
            assert_eq!(stored.state.as_str(), state, "{}", attempt.id);
        }
    })
    .await;
}

fn uuid_like() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Drives an automatic attempt the way the engine does, stopping at `stop` as if the
/// process died there: after writing the state, before or after the provider call. The
/// stops at `creating` and `created` are where the release before, which wrote those
/// states too, could leave an attempt.
async fn crash_at(app: &TestApp, attempt: Attempt, stop: &str) {
    use AttemptState::*;
    let provider = app.provider();
    let now = topupd::clock::Clock::now_ms(&app.clock);
    if stop == "claimed" {
        return;
    }
    let before = matches!(
        stop,
        "creating, before the call" | "creating, after the call" | "created"
    );
    let mut attempt = attempt;
    if before {
        attempt = app
            .move_attempt_alone(&attempt.id, Claimed, Creating, None, now)
            .await
            .expect("write")
            .expect("moved");
        if stop == "creating, before the call" {
            return;
        }
    }
    let created = provider
        .create_payment_intent(&Topups::create_request(&attempt))
        .await
        .expect("created");
    if matches!(
        stop,
        "claimed, after the create call" | "creating, after the call"
    ) {
        return;
    }
    if before {
        app.move_attempt_alone(&attempt.id, Creating, Created, Some(&created.id), now)
            .await
            .expect("write")
            .expect("moved");
        assert_eq!(stop, "created");
        return;
    }
    app.move_attempt_alone(&attempt.id, Claimed, Confirming, Some(&created.id), now)
        .await
        .expect("write")
        .expect("moved");
    if stop == "confirming, before the call" {
        return;
    }
    let _ = provider
        .confirm_payment_intent(
            &created.id,
            &attempt.payment_method_id,
            Presence::OffSession,
            &format!("{}:confirm", attempt.idempotency_key),
        )
        .await;
    assert_eq!(stop, "confirming, after the call");
}

#[tokio::test]
async fn a_restart_at_any_persisted_state_charges_at_most_once_and_credits_exactly_what_was_charged()
 {
    let stops = [
        "claimed",
        "claimed, after the create call",
        "confirming, before the call",
        "confirming, after the call",
        "creating, before the call",
        "creating, after the call",
        "created",
    ];
    each_backend(async |app| {
        // Webhooks are lost: only the restart's reconciler may settle.
        app.lose_webhooks(10_000).await;
        for card in [
            "pm_card_visa",
            "pm_card_chargeCustomerFail",
            "pm_card_authenticationRequired",
        ] {
            for stop in stops {
                let (account, _) = app.auto_account(card, "0").await;
                let attempt = app.claim_as_the_scan_would(&account).await;
                crash_at(app, attempt, stop).await;
                app.reconcile_later().await;

                let charges = app.charges_of(&account).await;
                let state = app.auto_topup(&account).await;
                let outcome = state["last_topup"]["state"]
                    .as_str()
                    .expect("state")
                    .to_owned();
                let expected = match card {
                    "pm_card_visa" => ("succeeded", 1, "5000", "active"),
                    "pm_card_chargeCustomerFail" => ("failed", 0, "0", "paused"),
                    _ => ("requires_action", 0, "0", "paused"),
                };
                assert_eq!(
                    (outcome.as_str(), charges),
                    (expected.0, expected.1),
                    "{card}, {stop}"
                );
                assert_eq!(
                    app.balance(&account).await,
                    dec(expected.2),
                    "{card}, {stop}"
                );
                assert_eq!(state["state"], expected.3, "{card}, {stop}");
                let payments = app.payments_of(&account).await;
                assert!(
                    payments.len() <= 1,
                    "{card}, {stop}: {} payments",
                    payments.len()
                );
            }
        }
        assert!(app.cli(&["verify"]).await.status.success());
    })
    .await;
}

#[tokio::test]
async fn a_scan_that_reaches_the_next_tick_claims_no_more_and_the_next_scan_goes_on() {
    const DUE: usize = 6;
    for backend in backends() {
        let mut config = test_config(unused_port());
        config.auto_topup.charge_concurrency = 1;
        let app = TestApp::spawn_with(backend, config).await;
        for _ in 0..DUE {
            seed_due_account(&app).await;
        }
        app.stub
            .set_faults(Faults {
                latency_ms: 150,
                ..Faults::default()
            })
            .await;
        let next_tick = topupd::clock::Clock::now_ms(&app.clock) + 1_000;
        // The clock reaches the next tick once the first charge has gone through.
        let ticking = {
            let (stub, clock) = (app.stub.clone(), app.clock.clone());
            tokio::spawn(async move {
                while stub.charges().await.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                clock.advance_ms(2_000);
            })
        };
        let overran = app
            .topups
            .scan(&CancellationToken::new(), Some(next_tick))
            .await
            .expect("scan");
        ticking.await.expect("the clock moved");
        assert!(
            (1..DUE).contains(&overran.claimed),
            "{backend:?}: claimed until the next tick, then stopped: {overran:?}"
        );
        assert_eq!(overran.succeeded, overran.claimed, "{overran:?}");
        let next = app.scan().await;
        assert_eq!(
            overran.claimed + next.claimed,
            DUE,
            "{backend:?}: the next scan went on with the rest: {next:?}"
        );
        assert_eq!(app.stub.charges().await.len(), DUE, "{backend:?}");
        let overruns = app.counter("topupd_scans_overran_total").await;
        assert!(overruns >= 1.0, "{overruns}");
    }
}

#[tokio::test]
async fn four_scans_at_once_charge_each_of_1000_due_accounts_exactly_once() {
    each_backend(async |app| {
        let mut accounts = Vec::new();
        for _ in 0..1000 {
            accounts.push(seed_due_account(app).await);
        }
        let reports = app.scans_at_once(4).await;
        let claimed: usize = reports.iter().map(|r| r.claimed).sum();
        assert_eq!(claimed, 1000, "{:?}: {reports:?}", app.backend);
        assert_eq!(app.stub.charges().await.len(), 1000);
        for account in accounts.iter().step_by(97) {
            assert_eq!(app.balance(account).await, dec("5000"));
        }
        assert_journal_names_each_charge(app, &accounts).await;
        assert!(app.cli(&["verify"]).await.status.success());
    })
    .await;
}

/// The scan that charged an account owns its journal entry, whatever lost the race to it.
async fn assert_journal_names_each_charge(app: &TestApp, accounts: &[String]) {
    let mut lost = Vec::new();
    for account in accounts {
        let entry = app
            .db
            .decision(account)
            .await
            .expect("read")
            .expect("entry");
        if entry.decision != "charged" || entry.attempt_id.is_none() {
            lost.push(format!("{account}: {}", entry.decision));
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} entries lost their charge: {:?}",
        lost.len(),
        accounts.len(),
        &lost[..lost.len().min(5)]
    );
}

/// A due account with a card, made through the engine's own parts without HTTP.
async fn seed_due_account(app: &TestApp) -> String {
    use topupd::db::{audit::Actor, auto_topup::SettingsUpdate};
    use topupd::domain::credits::Millicredits;
    let now = topupd::clock::Clock::now_ms(&app.clock);
    let account = app
        .db
        .create_account(
            &topupd::db::accounts::NewAccount::named("bulk@example.com", "Bulk"),
            &Actor::cli(),
            now,
        )
        .await
        .expect("account");
    let topupd::db::accounts::Opened::Created(account) = account else {
        panic!("a new account");
    };
    app.topups
        .save_card(&account.id, "pm_card_visa", true, None)
        .await
        .expect("card");
    let settings = SettingsUpdate {
        enabled: true,
        threshold: Some(Millicredits(1_000_000)),
        target: Some(Millicredits(5_000_000)),
        payment_method_id: None,
        monthly_cap: None,
        time_zone: None,
        low_balance_email: None,
        notice_minutes: None,
        backup_cards: None,
    };
    app.db
        .update_auto_topup(
            &account.id,
            &settings,
            &Actor::cli(),
            (&app.config.email, now),
        )
        .await
        .expect("settings");
    account.id
}

/// What a `scan --once` printed: how many it charged and how many it left.
fn scan_summary(stdout: &str) -> (usize, usize) {
    let count = |noun: &str| -> usize {
        stdout
            .split(noun)
            .next()
            .and_then(|s| s.rsplit([',', '(']).next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{noun} in the summary: {stdout}"))
    };
    (count(" charged"), count(" skipped"))
}

#[tokio::test]
async fn three_replicas_scanning_at_once_on_postgresql_split_the_due_set_without_losing_claims() {
    use topupd::db::Db;
    if !backends().contains(&crate::helpers::Backend::Postgres) {
        return;
    }
    let app = TestApp::spawn(crate::helpers::Backend::Postgres).await;
    let mut accounts = Vec::new();
    for _ in 0..3000 {
        accounts.push(seed_due_account(&app).await);
    }
    let Db::Postgres(pool) = &app.db else {
        panic!("a PostgreSQL app");
    };
    let mut processes = Vec::new();
    for _ in 0..3 {
        processes.push(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_topupd"))
                .args(["scan", "--once"])
                .env("TOPUPD_DATABASE__URL", &app.database.url)
                .env("TOPUPD_PAYMENTS__PROVIDER", "stripe")
                .env("TOPUPD_PAYMENTS__BASE_URL", app.stub.base_url())
                .env("TOPUPD_PAYMENTS__SECRET_KEY", "sk_test_stub")
                .env(
                    "TOPUPD_PAYMENTS__WEBHOOK_SECRETS",
                    format!("[\"{}\"]", app.webhook_secret),
                )
                .env("TOPUPD_HTTP__LISTEN", "127.0.0.1:0")
                .env("TOPUPD_PAYMENTS__MAX_REQUESTS_PER_SEC", "10000")
                .env(
                    "TOPUPD_PAYMENTS__MAX_REQUESTS_PER_SEC_PER_ENDPOINT",
                    "10000",
                )
                .kill_on_drop(true)
                .output(),
        );
    }
    let mut charged_by = Vec::new();
    for process in processes {
        let output = tokio::time::timeout(Duration::from_secs(300), process)
            .await
            .expect("a scan of 3,000 accounts ends")
            .expect("scan process");
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (charged, skipped) = scan_summary(&stdout);
        assert_eq!(skipped, 0, "no replica lost a claim to another: {stdout}");
        charged_by.push(charged);
    }
    assert_eq!(charged_by.iter().sum::<usize>(), 3000, "{charged_by:?}");
    assert!(
        charged_by.iter().all(|&n| n > 0),
        "each replica took a share of the work: {charged_by:?}"
    );
    assert_eq!(
        app.stub.charges().await.len(),
        3000,
        "one charge per account across replicas"
    );
    assert_journal_names_each_charge(&app, &accounts).await;
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM auto_topup_decision_log")
        .fetch_one(pool)
        .await
        .expect("history");
    // A claim that lost to another scan's would have written a decision of its own.
    assert_eq!(logged, 3000, "one decision per account: the charge");
    assert!(app.cli(&["verify"]).await.status.success());
    app.stop().await;
}

#[test]
fn a_scan_summary_reads_its_counts() {
    let line = "12 due, 10 charged (9 succeeded, 1 failed, 0 awaiting authentication, 0 pending), 2 skipped";
    assert_eq!(scan_summary(line), (10, 2));
}

#[tokio::test]
async fn debits_racing_top_ups_keep_every_balance_equal_to_its_history() {
    each_backend(async |app| {
        let service = app.key("service", None).await;
        let mut accounts = Vec::new();
        for _ in 0..10 {
            accounts.push(app.auto_account("pm_card_visa", "1500").await.0);
        }
        let debits = {
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..300 {
                let (client, url, key) = (
                    app.client.clone(),
                    format!("{}/v1/usage", app.base_url),
                    service.clone(),
                );
                let account = accounts[i % accounts.len()].clone();
                tasks.spawn(async move {
                    let response = client
                        .post(url)
                        .bearer_auth(key)
                        .json(&crate::helpers::usage_body(
                            &account,
                            &format!("req-{i}"),
                            600,
                        ))
                        .send()
                        .await
                        .expect("answered");
                    (account, response.status())
                });
            }
            tasks
        };
        for _ in 0..5 {
            app.scan().await;
            app.clock.advance_ms(6 * HOUR_MS);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let results = debits.join_all().await;
        app.scan().await;
        for account in &accounts {
            let debited = results
                .iter()
                .filter(|(a, s)| a == account && *s == StatusCode::CREATED)
                .count();
            let bought: i64 = app
                .stored_topups(account)
                .await
                .iter()
                .filter(|t| t["state"] == "succeeded")
                .map(|t| t["credits"].as_i64().expect("credits"))
                .sum();
            let expected = dec("1500") + rust_decimal::Decimal::from(bought)
                - rust_decimal::Decimal::from(debited as i64 * 100);
            let balance = app.balance(account).await;
            assert_eq!(
                balance, expected,
                "{account}: 1500 + {bought} bought - {debited} debits of 100"
            );
            assert!(balance >= dec("0"));
        }
        assert!(
            results
                .iter()
                .all(|(_, s)| *s == StatusCode::CREATED || *s == StatusCode::PAYMENT_REQUIRED)
        );
        assert!(app.cli(&["verify"]).await.status.success());
    })
    .await;
}

#[tokio::test]
async fn duplicated_and_reordered_webhooks_of_an_auto_top_up_credit_and_resume_once() {
    each_backend(async |app| {
        app.lose_webhooks(10).await;
        let (account, _) = app.auto_account("pm_card_authenticationRequired", "0").await;
        app.scan().await;
        let payment = app.auto_topup(&account).await["last_topup"]["transaction_id"].as_str().expect("payment").to_owned();
        let url = app.confirm_on_topupd_page(&account).await;
        app.client.post(format!("{url}/complete")).send().await.expect("complete");
        let now = app.now_secs();
        let event = |id: &str, kind: &str| {
            serde_json::to_vec(&json!({ "id": id, "type": kind, "created": now, "data": { "object": { "id": payment } } })).expect("JSON")
        };
        let (succeeded, earlier) = (event("evt_b", "payment_intent.succeeded"), event("evt_a", "payment_intent.requires_action"));
        for body in [&succeeded, &earlier, &succeeded, &earlier] {
            let answer = app.deliver_webhook(body, Some(signature::sign(&app.webhook_secret, now, body))).await;
            assert_eq!(answer.status, StatusCode::OK);
        }
        assert_eq!(app.balance(&account).await, dec("5000"));
        assert_eq!(app.auto_topup(&account).await["state"], "active");
        let kinds = app.notice_kinds(&account).await;
        assert_eq!(kinds.iter().filter(|k| *k == "auto_topup_resumed").count(), 1);
        assert_eq!(kinds.iter().filter(|k| *k == "topup_receipt").count(), 1);
    })
    .await;
}

#[tokio::test]
async fn serve_scans_on_its_schedule_and_scan_once_prints_a_summary() {
    for backend in backends() {
        let mut config = test_config(unused_port());
        config.auto_topup.scan_schedule = "* * * * * *".into();
        let app = TestApp::spawn_with(backend, config).await;
        let (account, _) = app.auto_account("pm_card_visa", "0").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while app.balance(&account).await != dec("5000") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{backend:?}: the scheduled scan never charged"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let once = app.scan_once_through_the_servers_stub().await;
        assert!(
            once.status.success(),
            "{}",
            String::from_utf8_lossy(&once.stderr)
        );
        let stdout = String::from_utf8_lossy(&once.stdout);
        assert!(stdout.starts_with("scan: 0 due, 0 charged"), "{stdout}");
        assert_eq!(app.charges_of(&account).await, 1);
        app.stop().await;
    }
}

impl TestApp {
    /// `topupd scan --once` charging through this app's stub, as it would through the
    /// stub of a server whose `payments.stub.listen` is a fixed address.
    async fn scan_once_through_the_servers_stub(&self) -> std::process::Output {
        self.cli_through_the_servers_stub(&["scan", "--once"]).await
    }

    /// A `topupd` command asking the provider through this app's stub, as it would
    /// through the stub of a server whose `payments.stub.listen` is a fixed address.
    pub async fn cli_through_the_servers_stub(&self, args: &[&str]) -> std::process::Output {
        let stub = self
            .stub
            .base_url()
            .trim_start_matches("http://")
            .to_owned();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_topupd"))
            .args(args)
            .env("TOPUPD_DATABASE__URL", &self.database.url)
            .env("TOPUPD_PAYMENTS__STUB__LISTEN", stub)
            .output()
            .await
            .expect("run topupd")
    }
}

#[tokio::test]
async fn scan_once_never_charges_through_a_stub_that_exits_with_it() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_visa", "0").await;
        let refused = app.cli(&["scan", "--once"]).await;
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("payments.stub.listen") && stderr.contains("topupd serve"),
            "says why and what to do: {stderr}"
        );
        let port = unused_port();
        let nobody = tokio::process::Command::new(env!("CARGO_BIN_EXE_topupd"))
            .args(["scan", "--once"])
            .env("TOPUPD_DATABASE__URL", &app.database.url)
            .env("TOPUPD_PAYMENTS__STUB__LISTEN", format!("127.0.0.1:{port}"))
            .output()
            .await
            .expect("run topupd");
        let stderr = String::from_utf8_lossy(&nobody.stderr);
        assert_eq!(nobody.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
        assert!(
            app.db
                .open_attempt_of(&account)
                .await
                .expect("read")
                .is_none()
                && app
                    .db
                    .latest_auto_attempt(&account)
                    .await
                    .expect("read")
                    .is_none(),
            "nothing was claimed"
        );
        assert_eq!(app.balance(&account).await, dec("0"));

        // Through the server's stub, the scan charges where the server can see it.
        let once = app.scan_once_through_the_servers_stub().await;
        let stdout = String::from_utf8_lossy(&once.stdout);
        assert!(
            once.status.success(),
            "{}",
            String::from_utf8_lossy(&once.stderr)
        );
        assert!(stdout.contains("1 succeeded"), "{stdout}");
        assert_eq!(
            app.charges_of(&account).await,
            1,
            "the server's stub holds the charge"
        );
        assert_eq!(app.balance(&account).await, dec("5000"));
    })
    .await;
}

#[tokio::test]
async fn an_attempt_unresolved_too_long_is_flagged_for_support_and_blocks_a_retry() {
    each_backend(async |app| {
        let (account, key) = app
            .auto_account("pm_card_authenticationRequired", "0")
            .await;
        app.scan().await;
        let retry = app
            .post(
                &format!("/v1/accounts/{account}/auto-topup/retry"),
                &key,
                json!(null),
            )
            .await;
        assert_eq!(
            retry.status,
            StatusCode::CONFLICT,
            "the open attempt must be completed first: {}",
            retry.body
        );

        app.clock.advance_ms(23 * HOUR_MS);
        app.reconcile_later().await;
        let support = app.key("support", None).await;
        assert!(
            app.get("/v1/admin/auto-topups", &support).await.body["flagged"]
                .as_array()
                .expect("flagged")
                .is_empty()
        );
        app.clock.advance_ms(HOUR_MS);
        app.reconcile_later().await;
        let listed = app.get("/v1/admin/auto-topups", &support).await;
        let flagged = listed.body["flagged"].as_array().expect("flagged");
        assert_eq!(flagged.len(), 1, "{}", listed.body);
        assert_eq!(flagged[0]["account_id"], account.as_str());
        assert_eq!(flagged[0]["state"], "requires_action");
    })
    .await;
}

#[tokio::test]
async fn the_database_clock_that_replicas_share_is_readable_on_both_backends() {
    each_backend(async |app| {
        let database = app.db.clock_ms().await.expect("database clock");
        let host = topupd::clock::Clock::now_ms(&topupd::clock::SystemClock);
        assert!(
            (database - host).abs() < 5_000,
            "{:?}: database {database}, host {host}",
            app.backend
        );
    })
    .await;
}

#[tokio::test]
async fn attempts_waiting_on_customers_never_starve_the_reconciler() {
    for backend in backends() {
        let mut config = test_config(unused_port());
        config.auto_topup.scan_batch_size = 2;
        config.payments.request_timeout_secs = 1;
        config.payments.retry_base_ms = 10;
        config.payments.retry_max_ms = 20;
        let app = TestApp::spawn_with(backend, config).await;
        for _ in 0..2 {
            app.auto_account("pm_card_authenticationRequired", "0")
                .await;
        }
        assert_eq!(app.scan().await.requires_action, 2);
        let (account, _) = app.auto_account("pm_card_visa", "0").await;
        app.stub
            .set_faults(Faults {
                target: FaultTarget::Confirm,
                hang_after: 3,
                hang_ms: 1_500,
                drop_webhooks: 2,
                ..Faults::default()
            })
            .await;
        assert_eq!(app.scan().await.pending, 1);
        for _ in 0..3 {
            app.reconcile_later().await;
        }
        assert_eq!(
            app.auto_topup(&account).await["last_topup"]["state"],
            "succeeded",
            "{backend:?}"
        );
        assert_eq!(app.balance(&account).await, dec("5000"));
        app.stop().await;
    }
}

#[tokio::test]
async fn a_lost_claim_commit_adopts_the_charge_already_made_instead_of_charging_again() {
    each_backend(async |app| {
        app.lose_webhooks(10).await;
        let (account, _) = app.auto_account("pm_card_visa", "0").await;
        let lost = app.claim_as_the_scan_would(&account).await;
        // The charge reaches the provider...
        let provider = app.provider();
        let created = provider
            .create_payment_intent(&Topups::create_request(&lost))
            .await
            .expect("created");
        provider
            .confirm_payment_intent(
                &created.id,
                &lost.payment_method_id,
                Presence::OffSession,
                &format!("{}:confirm", lost.idempotency_key),
            )
            .await
            .expect("charged");
        // ...the customer has made 150 other payments since, so the charge is on the
        // second page of their list...
        for n in 0..150 {
            let key = format!("test:other:{n}");
            let other = NewPayment {
                metadata: vec![("seq", format!("other-{n}"))],
                idempotency_key: &key,
                ..Topups::create_request(&lost)
            };
            provider
                .create_payment_intent(&other)
                .await
                .expect("another payment");
        }
        // ...and then the database loses the claim, as a failover to a stale replica would.
        tamper(
            app,
            "DELETE FROM auto_topup_decisions WHERE account_id = $1",
            &account,
        )
        .await;
        tamper(
            app,
            "DELETE FROM topup_attempts WHERE account_id = $1",
            &account,
        )
        .await;
        tamper(
            app,
            "UPDATE accounts SET topup_seq = 0, auto_topup_window_ends_at = 0 WHERE id = $1",
            &account,
        )
        .await;

        let report = app.scan().await;
        assert_eq!(report.succeeded, 1, "{:?}: {report:?}", app.backend);
        assert_eq!(
            app.charges_of(&account).await,
            1,
            "the same key finds the same charge"
        );
        assert_eq!(app.balance(&account).await, dec("5000"));
        assert!(app.cli(&["verify"]).await.status.success());
    })
    .await;
}

#[tokio::test]
async fn concurrent_resumes_resume_once() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        app.scan().await;
        let support = app.key("support", None).await;
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..8 {
            let (client, url, key) = (
                app.client.clone(),
                format!(
                    "{}/v1/admin/accounts/{account}/auto-topup/resume",
                    app.base_url
                ),
                support.clone(),
            );
            tasks.spawn(async move {
                client
                    .post(url)
                    .bearer_auth(key)
                    .json(&json!({ "note": format!("attempt {i}") }))
                    .send()
                    .await
                    .expect("answered")
                    .status()
            });
        }
        let statuses = tasks.join_all().await;
        assert_eq!(
            statuses.iter().filter(|s| **s == StatusCode::OK).count(),
            1,
            "{statuses:?}"
        );
        assert_eq!(
            statuses
                .iter()
                .filter(|s| **s == StatusCode::CONFLICT)
                .count(),
            7
        );
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &support)
            .await;
        let resumes = audit.body["data"]
            .as_array()
            .expect("audit")
            .iter()
            .filter(|e| e["action"] == "auto_topup.resume")
            .count();
        assert_eq!(resumes, 1);
    })
    .await;
}

#[tokio::test]
async fn support_turns_auto_top_up_off_but_never_on_nor_changes_what_it_charges() {
    each_backend(async |app| {
        let (account, customer) = app.auto_account("pm_card_visa", "0").await;
        let other = app
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                &customer,
                json!({ "payment_method_id": "pm_card_mastercard" }),
            )
            .await;
        assert_eq!(other.status, StatusCode::CREATED, "{}", other.body);
        let other = other.body["id"].as_str().expect("card id").to_owned();
        let support = app.key("support", None).await;
        let path = format!("/v1/accounts/{account}/auto-topup");
        let before = app.auto_topup(&account).await;
        for body in [
            json!({ "enabled": true, "threshold": 99000, "target": 100000, "payment_method_id": other }),
            json!({ "enabled": true, "threshold": 1000, "target": 5000 }),
            json!({ "enabled": true }),
            json!({ "enabled": false, "threshold": 99000, "target": 100000 }),
            json!({ "enabled": false, "payment_method_id": other }),
        ] {
            let refused = app
                .request(Method::PUT, &path, Some(&support), Some(body.clone()))
                .await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{body}: {}", refused.body);
        }
        let unchanged = app.auto_topup(&account).await;
        for field in ["enabled", "threshold", "target", "payment_method_id", "enabled_by"] {
            assert_eq!(unchanged[field], before[field], "{field}");
        }

        let off = app
            .request(Method::PUT, &path, Some(&support), Some(json!({ "enabled": false })))
            .await;
        assert_eq!(off.status, StatusCode::OK, "{}", off.body);
        assert_eq!(off.body["enabled"], false);
        assert_eq!(off.body["threshold"], before["threshold"], "the bounds stay");
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &support)
            .await;
        assert_eq!(audit.body["data"][0]["action"], "auto_topup.update");
        assert_eq!(audit.body["data"][0]["actor_role"], "support");

        // An admin may change what it charges; it is audited as the admin's.
        let admin = app
            .request(
                Method::PUT,
                &path,
                Some(&app.admin),
                Some(json!({ "enabled": true, "threshold": 2000, "target": 6000, "payment_method_id": other })),
            )
            .await;
        assert_eq!(admin.status, StatusCode::OK, "{}", admin.body);
        assert_eq!(admin.body["payment_method_id"], other.as_str());
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &support)
            .await;
        assert_eq!(audit.body["data"][0]["actor_role"], "admin");
    })
    .await;
}

#[tokio::test]
async fn a_customer_turning_auto_top_up_off_while_support_asks_to_turn_it_on_leaves_it_off() {
    each_backend(async |app| {
        let (account, customer) = app.auto_account("pm_card_visa", "0").await;
        let support = app.key("support", None).await;
        let path = format!("/v1/accounts/{account}/auto-topup");
        let enable = json!({ "enabled": true, "threshold": 99000, "target": 100000 });
        for round in 0..100 {
            let on = app
                .request(
                    Method::PUT,
                    &path,
                    Some(&customer),
                    Some(json!({ "enabled": true, "threshold": 1000, "target": 5000 })),
                )
                .await;
            assert_eq!(on.status, StatusCode::OK, "{}", on.body);
            let (off, raced) = tokio::join!(
                app.request(
                    Method::PUT,
                    &path,
                    Some(&customer),
                    Some(json!({ "enabled": false }))
                ),
                app.request(Method::PUT, &path, Some(&support), Some(enable.clone())),
            );
            assert_eq!(off.status, StatusCode::OK, "round {round}: {}", off.body);
            assert_eq!(
                raced.status,
                StatusCode::FORBIDDEN,
                "round {round}: {}",
                raced.body
            );
            let settled = app.auto_topup(&account).await;
            assert_eq!(settled["enabled"], false, "round {round}: {settled}");
            assert_eq!(settled["threshold"], json!(1000), "round {round}");
            assert_eq!(
                settled["enabled_by"], on.body["enabled_by"],
                "round {round}: the customer's key turned it on last"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_retry_with_less_missing_than_the_smallest_purchase_resumes_without_a_charge() {
    each_backend(async |app| {
        let (account, _) = app.paused_with_a_new_card().await;
        let funded = app
            .post(
                &format!("/v1/admin/accounts/{account}/adjustments"),
                &app.admin,
                json!({ "credits": crate::helpers::number("4999.999"), "reason": "goodwill" }),
            )
            .await;
        assert_eq!(funded.status, StatusCode::CREATED, "{}", funded.body);
        let support = app.key("support", None).await;
        let retried = app
            .post(
                &format!("/v1/accounts/{account}/auto-topup/retry"),
                &support,
                json!(null),
            )
            .await;
        assert_eq!(retried.status, StatusCode::OK, "{}", retried.body);
        assert_eq!(retried.body["state"], "active", "{}", retried.body);
        assert_eq!(app.charges_of(&account).await, 0, "no 1-cent charge");
        assert_eq!(app.balance(&account).await, dec("4999.999"));
        let resume = app.audited(&account, "auto_topup.resume").await;
        assert!(
            resume["detail"]["note"]
                .as_str()
                .is_some_and(|n| n.contains("nothing worth charging")),
            "{resume}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_resume_whose_try_fails_again_says_so_and_never_tells_the_customer_it_is_back_on() {
    each_backend(async |app| {
        let (declining, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        let (untried, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 2);
        let support = app.key("support", None).await;
        let resume = async |account: &str, body: Value| {
            let answer = app
                .post(
                    &format!("/v1/admin/accounts/{account}/auto-topup/resume"),
                    &support,
                    body,
                )
                .await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
            answer.body
        };

        let tried = resume(&declining, json!({ "note": "try again", "try_now": true })).await;
        assert_eq!(tried["outcome"], "charge_failed", "{tried}");
        assert_eq!(tried["topup"]["state"], "failed");
        assert_eq!(tried["auto_topup"]["state"], "paused");
        assert!(
            tried["message"]
                .as_str()
                .is_some_and(|m| m.contains("declined") && m.contains("paused again")),
            "{tried}"
        );
        let kinds = app.notice_kinds(&declining).await;
        assert!(
            !kinds.contains(&"auto_topup_resumed".to_owned()),
            "no 'back on' after a failed try: {kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| *k == "payment_failed").count(),
            2,
            "{kinds:?}"
        );

        // Without a try, the customer is told at once; with auto top-up off, never.
        let plain = resume(&untried, json!({ "note": "card fixed by phone" })).await;
        assert_eq!(plain["outcome"], "resumed", "{plain}");
        assert!(
            app.notice_kinds(&untried)
                .await
                .contains(&"auto_topup_resumed".to_owned())
        );
        let (off, key) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 1);
        let disabled = app
            .request(
                Method::PUT,
                &format!("/v1/accounts/{off}/auto-topup"),
                Some(&key),
                Some(json!({ "enabled": false })),
            )
            .await;
        assert_eq!(disabled.status, StatusCode::OK, "{}", disabled.body);
        let cleared = resume(
            &off,
            json!({ "note": "clearing the pause", "try_now": true }),
        )
        .await;
        assert_eq!(cleared["outcome"], "not_charged", "{cleared}");
        assert!(
            !app.notice_kinds(&off)
                .await
                .contains(&"auto_topup_resumed".to_owned()),
            "auto top-up is off: it is not back on"
        );
    })
    .await;
}

#[tokio::test]
async fn a_staff_retry_is_audited_with_the_top_up_it_claimed() {
    each_backend(async |app| {
        let (account, _) = app.paused_with_a_new_card().await;
        let support = app.key("support", None).await;
        let retried = app
            .post(
                &format!("/v1/accounts/{account}/auto-topup/retry"),
                &support,
                json!(null),
            )
            .await;
        assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.body);
        let audited = app.audited(&account, "auto_topup.retry").await;
        assert_eq!(audited["actor_role"], "support");
        assert_eq!(audited["detail"]["topup_id"], retried.body["id"]);

        // The customer's own retry is theirs, not a staff action.
        let (own, own_key) = app.paused_with_a_new_card().await;
        let mine = app
            .post(
                &format!("/v1/accounts/{own}/auto-topup/retry"),
                &own_key,
                json!(null),
            )
            .await;
        assert_eq!(mine.status, StatusCode::CREATED, "{}", mine.body);
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={own}"), &app.admin)
            .await;
        assert!(
            !audit.body["data"]
                .as_array()
                .expect("audit")
                .iter()
                .any(|e| e["action"] == "auto_topup.retry"),
            "{}",
            audit.body
        );
    })
    .await;
}

#[tokio::test]
async fn the_due_query_and_the_claim_agree_with_the_rule_on_generated_accounts() {
    use std::collections::BTreeSet;

    use proptest::{
        prelude::*,
        strategy::ValueTree,
        test_runner::{Config, TestRunner},
    };
    use topupd::{
        db::audit::Actor,
        domain::{
            auto_topup::{Decision, PauseReason, Standing, decide},
            credits::Millicredits,
        },
    };

    let pause = prop::option::weighted(
        0.3,
        prop_oneof![
            Just(PauseReason::PaymentFailed),
            Just(PauseReason::AuthenticationRequired)
        ],
    );
    // Around the edges: balances either side of thresholds, windows either side of now.
    // Weighted so that a run always holds both due and not-due accounts.
    let accounts = (
        prop::bool::weighted(0.75),
        pause,
        prop_oneof![Just(1_000_000i64), Just(999_999), 0i64..3_000_000],
        prop::option::weighted(0.8, prop_oneof![Just(1_000_000i64), 100_000i64..2_000_000]),
        prop_oneof![Just(0i64), Just(-1), Just(1), -2 * HOUR_MS..2 * HOUR_MS],
    );
    each_backend(async |app| {
        let now = topupd::clock::Clock::now_ms(&app.clock);
        let mut runner = TestRunner::new(Config::default());
        let mut expected = BTreeSet::new();
        let mut generated = Vec::new();
        while generated.len() < 150 || expected.len() < 10 || expected.len() == generated.len() {
            let (enabled, paused, balance, threshold, window) = accounts
                .new_tree(&mut runner)
                .expect("a generated account")
                .current();
            let account = app
                .db
                .create_account(&topupd::db::accounts::NewAccount::named("rule@example.com", "Rule"), &Actor::cli(), now)
                .await
                .expect("account");
            let topupd::db::accounts::Opened::Created(account) = account else {
                panic!("a new account");
            };
            let sql_opt = |v: Option<String>| v.unwrap_or_else(|| "NULL".to_owned());
            tamper(
                app,
                &format!(
                    "UPDATE accounts SET auto_topup_enabled = {enabled}, auto_topup_paused_reason = {}, \
                     auto_topup_paused_at = {}, balance = {balance}, auto_topup_threshold = {}, \
                     auto_topup_target = {}, auto_topup_window_ends_at = {} WHERE id = $1",
                    sql_opt(paused.map(|p| format!("'{}'", p.as_str()))),
                    sql_opt(paused.map(|_| now.to_string())),
                    sql_opt(threshold.map(|t| t.to_string())),
                    sql_opt(threshold.map(|t| (t + 1_000_000).to_string())),
                    now + window,
                ),
                &account.id,
            )
            .await;
            let standing = Standing {
                enabled,
                paused,
                balance: Millicredits(balance),
                threshold: threshold.map(Millicredits),
                window_ends_at: now + window,
                attempt_open: false,
            };
            if decide(&standing, now) == Decision::Due {
                expected.insert(account.id.clone());
            }
            generated.push((account.id, standing));
        }
        let mut listed = BTreeSet::new();
        let mut cursor = None;
        loop {
            let page = app
                .db
                .due_accounts(now, cursor.as_ref(), 16)
                .await
                .expect("due");
            let Some(last) = page.last().cloned() else {
                break;
            };
            listed.extend(page.into_iter().map(|due| due.id));
            cursor = Some(last);
        }
        assert_eq!(listed, expected, "the due query against the rule");

        for (id, standing) in &generated {
            let claimed = matches!(
                app.db
                    .claim_auto_attempt(&AutoClaim {
                        account_id: id,
                        ..app.scan_claim("")
                    })
                    .await
                    .expect("claim"),
                AutoClaimOutcome::Claimed(_)
            );
            assert_eq!(
                claimed,
                expected.contains(id),
                "the claim against the rule for {standing:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn a_confirmation_the_provider_refuses_outright_fails_at_once_and_is_flagged_for_support() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_visa", "0").await;
        app.stub
            .set_faults(Faults {
                target: FaultTarget::Confirm,
                refuse: 1,
                ..Faults::default()
            })
            .await;
        let report = app.scan().await;
        assert_eq!(report.failed, 1, "{:?}: {report:?}", app.backend);
        let state = app.auto_topup(&account).await;
        let topup = &state["last_topup"];
        assert_eq!(topup["state"], "failed");
        assert_eq!(topup["decline_code"], "parameter_invalid");
        assert_eq!(topup["failure_message"], "Injected refusal of the request.");
        assert!(topup["flagged_at"].is_string(), "{topup}");
        assert_eq!(state["pause"]["reason"], "payment_failed");
        let support = app.key("support", None).await;
        let listed = app.get("/v1/admin/auto-topups", &support).await;
        let flagged = listed.body["flagged"].as_array().expect("flagged");
        assert_eq!(flagged.len(), 1, "{}", listed.body);
        assert_eq!(flagged[0]["id"], topup["id"]);
        // Failed, not left to be asked again: later reconciling changes nothing.
        app.reconcile_later().await;
        assert_eq!(app.charges_of(&account).await, 0);
        assert_eq!(
            app.auto_topup(&account).await["last_topup"]["state"],
            "failed"
        );
    })
    .await;
}

#[tokio::test]
async fn the_confirmation_link_opens_only_its_own_waiting_payment_until_it_expires() {
    each_backend(async |app| {
        let (account, _) = app
            .auto_account("pm_card_authenticationRequired", "0")
            .await;
        let (other, _) = app
            .auto_account("pm_card_authenticationRequired", "0")
            .await;
        assert_eq!(app.scan().await.requires_action, 2);
        let link_of = async |account: &str| {
            app.auto_topup(account).await["last_topup"]["next_action"]["url"]
                .as_str()
                .expect("link")
                .to_owned()
        };
        let (link, other_link) = (link_of(&account).await, link_of(&other).await);
        let (path, query) = link.split_once('?').expect("signed");
        let other_query = other_link.split_once('?').expect("signed").1;
        let status = async |url: String| app.client.get(url).send().await.expect("page").status();
        for forged in [
            format!("{path}?{other_query}"),
            format!("{path}?{}", query.replace("signature=", "signature=0")),
            format!(
                "{path}?expires=99999999999&{}",
                query.split_once('&').expect("two").1
            ),
            path.to_owned(),
        ] {
            assert_eq!(
                status(forged.clone()).await,
                StatusCode::NOT_FOUND,
                "{forged}"
            );
        }
        let posted = app
            .client
            .post(path)
            .form(&[("expires", "1"), ("signature", "00")])
            .send()
            .await
            .expect("posted");
        assert_eq!(posted.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            app.payments_of(&account).await[0].status,
            "requires_payment_method"
        );

        // The customer confirms twice (a double click, a second tab): one payment, one
        // charge, whatever the order.
        let bank = app.confirm_on_topupd_page(&account).await;
        let again = app.confirm_on_topupd_page(&account).await;
        assert_eq!(bank, again, "the same payment at the bank");
        app.client
            .post(format!("{bank}/complete"))
            .send()
            .await
            .expect("complete");
        app.wait_for_topup_state(&account, "succeeded").await;
        let done = app.client.get(&link).send().await.expect("page");
        assert_eq!(done.status(), StatusCode::OK);
        assert!(done.text().await.expect("html").contains("went through"));
        assert_eq!(app.charges_of(&account).await, 1);
        assert_eq!(app.balance(&account).await, dec("5000"));
        assert_eq!(app.auto_topup(&account).await["state"], "active");

        // Past the moment the waiting payment is given up, the other link opens nothing.
        app.clock.advance_ms(72 * HOUR_MS);
        assert_eq!(status(other_link).await, StatusCode::NOT_FOUND);
        assert_eq!(app.charges_of(&other).await, 0);
    })
    .await;
}

#[tokio::test]
async fn every_scan_decision_is_kept_with_its_reason_until_its_retention_ends() {
    each_backend(async |app| {
        let (account, key) = app.auto_account("pm_card_visa", "0").await;
        assert_eq!(app.scan().await.succeeded, 1);
        let spend = app
            .post(
                &format!("/v1/admin/accounts/{account}/adjustments"),
                &app.admin,
                json!({ "credits": -4500, "reason": "spent" }),
            )
            .await;
        assert_eq!(spend.status, StatusCode::CREATED);
        app.clock.advance_ms(6 * HOUR_MS);
        assert_eq!(app.scan().await.succeeded, 1);

        let path = format!("/v1/accounts/{account}/auto-topup/decisions");
        let listed = app.get(&path, &key).await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        let decisions = listed.body["data"].as_array().expect("decisions").clone();
        assert_eq!(decisions.len(), 2, "{decisions:#?}");
        // Newest first: the second charge was taken on a balance of 500.
        assert_eq!(decisions[0]["decided_at"], "2026-01-01T06:00:00.000Z");
        assert_eq!(decisions[1]["decided_at"], "2026-01-01T00:00:00.000Z");
        for (decision, balance) in decisions.iter().zip(["500", "0"]) {
            assert_eq!(decision["decision"], "charged");
            assert_eq!(decision["balance"], json!(dec(balance)));
            assert_eq!(decision["threshold"], 1000);
            assert!(decision["topup_id"].is_string());
            let reason = decision["reason"].as_str().expect("reason");
            assert!(
                reason.contains(&format!(
                    "the balance ({balance} credits) was below the threshold (1,000 credits)"
                )),
                "{reason}"
            );
        }
        assert_eq!(
            app.auto_topup(&account).await["last_scan"]["reason"],
            decisions[0]["reason"]
        );
        let (stranger, stranger_key) = app.customer_with_card("pm_card_visa").await;
        assert_ne!(stranger, account);
        assert_eq!(
            app.get(&path, &stranger_key).await.status,
            StatusCode::NOT_FOUND
        );

        let pruner = topupd::jobs::decision_pruner::DecisionPruner::new(
            app.db.clone(),
            std::sync::Arc::new(app.clock.clone()),
            90,
        );
        app.clock.advance_ms(90 * 24 * HOUR_MS - 6 * HOUR_MS);
        assert_eq!(
            pruner.run_once().await.expect("prune"),
            0,
            "90 days not yet over"
        );
        app.clock.advance_ms(1);
        assert_eq!(
            pruner.run_once().await.expect("prune"),
            1,
            "the first decision"
        );
        let left = app.get(&path, &key).await;
        assert_eq!(left.body["data"].as_array().expect("decisions").len(), 1);
    })
    .await;
}

/// A replica of the release before, still running during a rollout, writes `attempt_open`
/// for a top-up in progress: it reads as this release's `in_progress`.
#[tokio::test]
async fn a_decision_written_in_the_older_word_reads_in_the_one_vocabulary() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_visa", "500").await;
        for sql in [
            "INSERT INTO auto_topup_decision_log (account_id, decision, balance, threshold, \
             target, decided_at, reason) VALUES ($1, 'attempt_open', 0, 0, 0, 1, 'old')",
            "INSERT INTO auto_topup_decisions (account_id, decision, balance, threshold, \
             target, decided_at, reason) VALUES ($1, 'attempt_open', 0, 0, 0, 1, 'old')",
        ] {
            tamper(app, sql, &account).await;
        }
        let logged = app
            .get(
                &format!("/v1/accounts/{account}/auto-topup/decisions"),
                &app.admin,
            )
            .await;
        assert_eq!(
            logged.body["data"][0]["decision"], "in_progress",
            "{}",
            logged.body
        );
        let state = app.auto_topup(&account).await;
        assert_eq!(state["last_scan"]["decision"], "in_progress", "{state}");
    })
    .await;
}

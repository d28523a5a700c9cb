//! Stored webhook events that cannot be handled: retried later each time, set aside as
//! dead for support, requeued, and never in the way of newer events.

use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use topupd::{
    domain::attempt::AttemptState::{Claimed, Created, Creating},
    jobs::webhook_processor,
    payments::{
        signature,
        stub::world::{FaultTarget, Faults},
    },
};

use crate::{
    helpers::{TestApp, backends, dec, each_backend, test_config, unused_port},
    payments::event,
};

impl TestApp {
    /// Delivers a signed `payment_intent.succeeded` event about `payment`.
    async fn deliver_succeeded(&self, id: &str, payment: &str) {
        self.deliver_event(id, "payment_intent.succeeded", payment)
            .await;
    }

    /// Delivers a signed event of `kind` about `payment`.
    async fn deliver_event(&self, id: &str, kind: &str, payment: &str) {
        let body = event(id, kind, payment);
        let signed = signature::sign(&self.webhook_secret, self.now_secs(), &body);
        let answer = self.deliver_webhook(&body, Some(signed)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    /// One round of the webhook processor: how many events it handled.
    async fn process_webhooks(&self) -> usize {
        webhook_processor::run_once(&self.topups, &CancellationToken::new())
            .await
            .expect("processor round")
    }

    /// Every read of the provider fails from now on, as in an outage.
    async fn fail_reads(&self) {
        self.stub
            .set_faults(Faults {
                target: FaultTarget::Read,
                fail_before: 1_000,
                ..Faults::default()
            })
            .await;
    }

    async fn webhook_events(&self, state: &str) -> Vec<Value> {
        let listed = self
            .get(
                &format!("/v1/admin/webhook-events?state={state}"),
                &self.admin,
            )
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        listed.body["data"].as_array().expect("events").clone()
    }
}

#[tokio::test]
async fn the_event_of_a_settled_top_up_is_acknowledged_without_asking_the_provider() {
    each_backend(async |app| {
        // Only the events this test delivers reach topupd: none of the stub's own can be
        // handled half before and half after the provider stops answering reads.
        app.lose_webhooks(10_000).await;
        let (paid, _) = app.auto_account("pm_card_visa", "0").await;
        let (declined, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        let report = app.scan().await;
        assert_eq!((report.succeeded, report.failed), (1, 1), "{report:?}");
        let payment = async |account: &str| {
            app.auto_topup(account).await["last_topup"]["transaction_id"]
                .as_str()
                .expect("payment")
                .to_owned()
        };
        let (paid, declined) = (payment(&paid).await, payment(&declined).await);
        // Any read of the provider would fail, and leave its event pending.
        app.fail_reads().await;
        app.deliver_succeeded("evt_paid_again", &paid).await;
        app.deliver_event(
            "evt_declined_again",
            "payment_intent.payment_failed",
            &declined,
        )
        .await;
        let pending = app.webhook_events("pending").await;
        assert!(
            pending.is_empty(),
            "{:?}: handled without a read: {pending:?}",
            app.backend
        );
        // A success reported for a top-up that failed is asked about all the same.
        app.deliver_succeeded("evt_declined_paid", &declined).await;
        let pending = app.webhook_events("pending").await;
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0]["id"], "evt_declined_paid");
    })
    .await;
}

#[tokio::test]
async fn an_event_that_cannot_be_handled_is_tried_later_each_time_then_set_aside_for_support() {
    for backend in backends() {
        let mut config = test_config(unused_port());
        config.payments.webhook_max_attempts = 3;
        config.payments.webhook_retry_base_secs = 5;
        config.payments.webhook_retry_max_secs = 60;
        config.payments.max_retries = 0;
        let app = TestApp::spawn_with(backend, config).await;
        let (account, _, started) = app.authenticated_without_webhooks(2000).await;
        let payment = started.body["transaction_id"].as_str().expect("payment");
        // The provider cannot be read: every try of the event fails.
        app.fail_reads().await;

        app.deliver_succeeded("evt_stuck", payment).await;
        let pending = app.webhook_events("pending").await;
        assert_eq!(pending.len(), 1, "{backend:?}");
        assert_eq!(pending[0]["attempts"], 1);
        assert!(
            pending[0]["last_error"]
                .as_str()
                .is_some_and(|e| !e.is_empty())
        );
        // Not due again before its delay: a round now leaves it alone.
        assert_eq!(app.process_webhooks().await, 0);
        assert_eq!(app.webhook_events("pending").await[0]["attempts"], 1);

        // The second try waits at most 5 s, the third at most 10 s; the third is the last.
        app.clock.advance_ms(5_001);
        app.process_webhooks().await;
        assert_eq!(app.webhook_events("pending").await[0]["attempts"], 2);
        app.clock.advance_ms(10_001);
        app.process_webhooks().await;
        assert!(app.webhook_events("pending").await.is_empty());
        let dead = app.webhook_events("dead").await;
        assert_eq!(dead.len(), 1, "{backend:?}");
        assert_eq!(dead[0]["id"], "evt_stuck");
        assert_eq!(dead[0]["attempts"], 3);
        assert_eq!(dead[0]["type"], "payment_intent.succeeded");
        assert!(dead[0]["dead_at"].is_string());
        assert_eq!(dead[0]["next_attempt_at"], Value::Null);
        // A dead event is not tried again by itself, however long it waits.
        app.clock.advance_ms(3_600_000);
        assert_eq!(app.process_webhooks().await, 0);
        assert_eq!(app.balance(&account).await, dec("0"));
        // Other tests share the process's counters: this one made at least one dead event.
        let dead = app.counter("topupd_webhook_events_dead_total").await;
        assert!(dead >= 1.0, "{dead}");

        // Support requeues it once the provider answers again; it is handled and credits.
        app.stub.set_faults(Faults::default()).await;
        let customer = app.key("customer", Some(&account)).await;
        let refused = app
            .post(
                "/v1/admin/webhook-events/evt_stuck/requeue",
                &customer,
                Value::Null,
            )
            .await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        let support = app.key("support", None).await;
        let requeued = app
            .post(
                "/v1/admin/webhook-events/evt_stuck/requeue",
                &support,
                Value::Null,
            )
            .await;
        assert_eq!(requeued.status, StatusCode::OK, "{}", requeued.body);
        assert_eq!(requeued.body["state"], "pending");
        assert_eq!(requeued.body["attempts"], 0);
        let audit = app.get("/v1/admin/audit", &app.admin).await;
        assert!(
            audit.body["data"]
                .as_array()
                .expect("entries")
                .iter()
                .any(|e| e["action"] == "webhook_event.requeue" && e["actor_role"] == "support"),
            "{}",
            audit.body
        );
        assert_eq!(app.process_webhooks().await, 1);
        assert_eq!(app.balance(&account).await, dec("2000"), "{backend:?}");
        let processed = app.webhook_events("processed").await;
        assert!(processed.iter().any(|e| e["id"] == "evt_stuck"));

        let again = app
            .post(
                "/v1/admin/webhook-events/evt_stuck/requeue",
                &support,
                Value::Null,
            )
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
        let unknown = app
            .post(
                "/v1/admin/webhook-events/evt_nope/requeue",
                &support,
                Value::Null,
            )
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        let bad = app
            .get("/v1/admin/webhook-events?state=stuck", &support)
            .await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
        assert!(bad.body["fields"]["state"].is_string(), "{}", bad.body);
        app.stop().await;
    }
}

#[tokio::test]
async fn events_that_keep_failing_never_hold_back_a_newer_one() {
    each_backend(async |app| {
        // An attempt whose payment the provider does not know: every event about it fails.
        let (gone, _) = app.auto_account("pm_card_visa", "0").await;
        let attempt = app.claim_as_the_scan_would(&gone).await;
        let now = topupd::clock::Clock::now_ms(&app.clock);
        for (from, to, payment) in [
            (Claimed, Creating, None),
            (Creating, Created, Some("pi_gone")),
        ] {
            app.move_attempt_alone(&attempt.id, from, to, payment, now)
                .await
                .expect("write")
                .expect("moved");
        }
        // More failing events than a round takes, each tried once as it arrived.
        for i in 0..60 {
            app.deliver_succeeded(&format!("evt_gone_{i:02}"), "pi_gone")
                .await;
        }
        assert_eq!(app.webhook_events("pending").await.len(), 60);

        // A newer event, stored but not handled (its process stopped in between).
        let (account, _, started) = app.authenticated_without_webhooks(3000).await;
        let payment = started.body["transaction_id"].as_str().expect("payment");
        let body = event("evt_new", "payment_intent.succeeded", payment);
        let stored = app
            .db
            .store_event(
                "evt_new",
                "payment_intent.succeeded",
                Some(payment),
                &String::from_utf8(body).expect("UTF-8"),
                topupd::clock::Clock::now_ms(&app.clock),
            )
            .await
            .expect("stored");
        assert!(stored);

        // The failing ones wait out their delay; the newer one is handled at once.
        assert_eq!(app.process_webhooks().await, 1);
        assert_eq!(app.balance(&account).await, dec("3000"));
        let pending = app.webhook_events("pending").await;
        assert_eq!(pending.len(), 60);
        assert!(pending.iter().all(|e| e["attempts"] == 1));
    })
    .await;
}

//! The notice outbox and its sender, against a real SMTP server.

use reqwest::{Method, StatusCode};
use serde_json::json;
use topupd::{
    db::{
        Db,
        notices::{NewNotice, NoticeState, NoticeWrites, QueueWhen},
    },
    domain::{
        credits::Millicredits,
        money::Cents,
        notice::{
            AuthenticationRequest, Notice, PaymentFailure, Receipt, ResumedBy, Resumption, Trigger,
        },
    },
    notices::mailer::Mailer,
};

use crate::{
    helpers::{TestApp, backends, test_config},
    smtp::SmtpSink,
};

fn receipt(transaction: &str) -> Notice {
    Notice::TopupReceipt(Receipt {
        trigger: Trigger::Automatic,
        credits: Millicredits(9_000_000),
        amount: Cents(9_000),
        transaction_id: transaction.into(),
        new_balance: Millicredits(10_000_000),
        at: crate::helpers::EPOCH_MS,
    })
}

impl TestApp {
    /// Queues `notice` for the account in a transaction of its own, as a state change
    /// would; false when the cause was already queued.
    pub async fn queue(&self, cause: &str, account_id: &str, notice: &Notice) -> bool {
        let now = topupd::clock::Clock::now_ms(&self.clock);
        let row = NewNotice {
            envelope: topupd::db::notices::Envelope::to_owner(
                cause.to_owned(),
                account_id,
                &self.config.email,
                now,
            ),
            notice: notice.clone(),
        };
        macro_rules! queue_in_transaction {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await.expect("begin");
                let queued = tx
                    .queue_notice(&row, QueueWhen::Always)
                    .await
                    .expect("queue notice");
                tx.commit().await.expect("commit");
                queued
            }};
        }
        match &self.db {
            Db::Sqlite(pool) => queue_in_transaction!(pool),
            Db::Postgres(pool) => queue_in_transaction!(pool),
        }
    }

    pub async fn notices_in(&self, state: &str) -> Vec<serde_json::Value> {
        let answer = self
            .get(
                &format!("/v1/admin/notices?state={state}&limit=200"),
                &self.admin,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["data"].as_array().expect("data").clone()
    }

    /// Moves time past any retry delay or lease.
    pub fn skip_hours(&self, hours: i64) {
        self.clock.advance_ms(hours * 3_600_000);
    }
}

#[tokio::test]
async fn queued_notices_arrive_with_recipient_subject_both_parts_and_a_stable_message_id() {
    for backend in backends() {
        let smtp = SmtpSink::started().await;
        let app = TestApp::spawn_with(backend, test_config(smtp.port)).await;
        let account = app.account_with_email("ada@example.com", "0").await;
        let kinds = [
            receipt("pi_1"),
            Notice::PaymentFailed(PaymentFailure {
                trigger: Trigger::Automatic,
                decline_code: "expired_card".into(),
                credits: Millicredits(5_000_000),
                amount: Cents(5_000),
                at: crate::helpers::EPOCH_MS,
            }),
            Notice::AuthenticationRequired(AuthenticationRequest {
                link: Some("https://pay.example/3ds/abc".into()),
                credits: Millicredits(5_000_000),
                amount: Cents(5_000),
            }),
            Notice::AutoTopupResumed(Resumption {
                by: ResumedBy::Payment,
                at: crate::helpers::EPOCH_MS,
            }),
        ];
        for (i, notice) in kinds.iter().enumerate() {
            assert!(app.queue(&format!("test:{i}"), &account, notice).await);
        }
        let report = app.send_notices().await;
        assert_eq!((report.claimed, report.sent), (4, 4), "{backend:?}");

        let received = smtp.wait_for(4).await;
        assert_eq!(received.len(), 4);
        let sent = app.notices_in("sent").await;
        for message in &received {
            let notice = sent
                .iter()
                .find(|n| n["message_id"].as_str() == Some(&format!("<{}>", message.message_id)))
                .unwrap_or_else(|| {
                    panic!(
                        "{backend:?}: no notice has Message-ID {}",
                        message.message_id
                    )
                });
            assert_eq!(message.to, "ada@example.com");
            assert_eq!(notice["subject"], message.subject.as_str());
            assert_eq!(message.content_type, "multipart/alternative");
            assert!(message.text.contains("Hello Ada"), "{}", message.text);
            assert!(
                message.html.contains("<p>Hello Ada,</p>"),
                "{}",
                message.html
            );
            assert!(message.message_id.ends_with("@topupd.localhost"));
        }
        let link = received
            .iter()
            .find(|m| m.subject.contains("confirm"))
            .expect("3-D Secure notice");
        // topupd's own billing page confirms the payment: the notice signs the customer in
        // there rather than sending them to the provider's page.
        let own_page = format!("{}/billing/from-email?account={account}&", app.base_url);
        assert!(link.text.contains(&own_page), "{}", link.text);
        assert!(!link.text.contains("https://pay.example/3ds/abc"));
        assert!(app.notices_in("pending").await.is_empty());
        app.stop().await;
    }
}

#[tokio::test]
async fn notices_queued_while_smtp_is_down_all_arrive_exactly_once_when_it_is_back() {
    for backend in backends() {
        let mut smtp = SmtpSink::reserve();
        let app = TestApp::spawn_with(backend, test_config(smtp.port)).await;
        let account = app.account_with_email("ada@example.com", "0").await;
        for i in 0..5 {
            app.queue(&format!("test:{i}"), &account, &receipt(&format!("pi_{i}")))
                .await;
        }
        for _ in 0..3 {
            let report = app.send_notices().await;
            assert_eq!(report.sent, 0, "{backend:?}");
            app.skip_hours(2);
        }
        let waiting = app.notices_in("pending").await;
        assert_eq!(waiting.len(), 5, "nothing lost while SMTP is down");
        assert!(
            waiting
                .iter()
                .all(|n| n["attempts"] == 3 && n["last_error"].is_string()),
            "{waiting:?}"
        );

        smtp.start().await;
        app.skip_hours(2);
        let report = app.send_notices().await;
        assert_eq!(report.sent, 5, "{backend:?}: {report:?}");
        assert_eq!(app.send_notices().await.claimed, 0, "nothing left to send");

        let received = smtp.wait_for(5).await;
        assert_eq!(received.len(), 5, "each notice arrives once");
        let mut ids: Vec<_> = received.iter().map(|m| m.message_id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_permanent_rejection_fails_after_one_try_and_support_can_requeue_it() {
    for backend in backends() {
        let smtp = SmtpSink::started().await;
        let app = TestApp::spawn_with(backend, test_config(smtp.port)).await;
        let rejected = app
            .account_with_email("reject-permanent@example.com", "0")
            .await;
        let deferred = app
            .account_with_email("reject-temporary@example.com", "0")
            .await;
        app.queue("test:permanent", &rejected, &receipt("pi_1"))
            .await;
        app.queue("test:temporary", &deferred, &receipt("pi_2"))
            .await;

        let report = app.send_notices().await;
        assert_eq!(
            (report.failed, report.retried),
            (1, 1),
            "{backend:?}: {report:?}"
        );
        app.skip_hours(24);
        let report = app.send_notices().await;
        assert_eq!(
            (report.claimed, report.retried),
            (1, 1),
            "only the 4xx one is retried: {report:?}"
        );

        let failed = app.notices_in("failed").await;
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0]["attempts"], 1, "no retry loop on a 5xx");
        assert!(
            failed[0]["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("550")),
            "{}",
            failed[0]
        );
        assert_eq!(failed[0]["account_id"], rejected.as_str());
        assert!(smtp.received().is_empty());

        let support = app.key("support", None).await;
        let id = failed[0]["id"].as_str().expect("id");
        let pending_id = app.notices_in("pending").await[0]["id"]
            .as_str()
            .expect("id")
            .to_owned();
        let not_failed = app
            .request(
                Method::POST,
                &format!("/v1/admin/notices/{pending_id}/requeue"),
                Some(&support),
                None,
            )
            .await;
        assert_eq!(not_failed.status, StatusCode::CONFLICT);
        let requeued = app
            .request(
                Method::POST,
                &format!("/v1/admin/notices/{id}/requeue"),
                Some(&support),
                None,
            )
            .await;
        assert_eq!(requeued.status, StatusCode::OK, "{}", requeued.body);
        assert_eq!(requeued.body["state"], "pending");
        assert_eq!(requeued.body["attempts"], 0);
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={rejected}"), &support)
            .await;
        assert_eq!(audit.body["data"][0]["action"], "notice.requeue");
        let bad = app.get("/v1/admin/notices?state=lost", &support).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST);
        assert!(bad.body["fields"]["state"].is_string());
        let customer = app.key("customer", Some(&rejected)).await;
        assert_eq!(
            app.get("/v1/admin/notices", &customer).await.status,
            StatusCode::FORBIDDEN
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn queuing_the_same_cause_twice_sends_one_message() {
    for backend in backends() {
        let smtp = SmtpSink::started().await;
        let app = TestApp::spawn_with(backend, test_config(smtp.port)).await;
        let account = app.account_with_email("ada@example.com", "0").await;
        assert!(
            app.queue("attempt:1:succeeded", &account, &receipt("pi_1"))
                .await
        );
        assert!(
            !app.queue("attempt:1:succeeded", &account, &receipt("pi_1"))
                .await
        );
        app.send_notices().await;
        app.skip_hours(1);
        app.send_notices().await;
        assert_eq!(smtp.wait_for(1).await.len(), 1, "{backend:?}");
        app.stop().await;
    }
}

#[tokio::test]
async fn a_send_interrupted_before_it_is_recorded_is_resent_with_the_same_message_id() {
    for backend in backends() {
        let smtp = SmtpSink::started().await;
        let app = TestApp::spawn_with(backend, test_config(smtp.port)).await;
        let account = app.account_with_email("ada@example.com", "0").await;
        app.queue("test:crash", &account, &receipt("pi_1")).await;

        // A sender claims the notice and the SMTP server accepts it, then the sender dies
        // before recording that: the claim is all that is left.
        let now = topupd::clock::Clock::now_ms(&app.clock);
        let claimed = app
            .db
            .claim_notices("dead-sender", now, now + 120_000, 10)
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 1);
        Mailer::from_config(&app.config.email)
            .expect("mailer")
            .send(&claimed[0], &app.letterhead)
            .await
            .expect("accepted by SMTP");

        assert_eq!(app.send_notices().await.claimed, 0, "the lease still holds");
        app.clock.advance_ms(121_000);
        assert_eq!(
            app.send_notices().await.sent,
            1,
            "{backend:?}: resent after the lease"
        );

        let received = smtp.wait_for(2).await;
        assert_eq!(received.len(), 2);
        assert_eq!(
            received[0], received[1],
            "the resend is the same message, Message-ID included"
        );
        let sent = app.notices_in("sent").await;
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0]["attempts"], 2);
        app.stop().await;
    }
}

#[tokio::test]
async fn serve_delivers_in_the_background_and_a_restart_keeps_what_was_not_delivered() {
    for backend in backends() {
        let mut smtp = SmtpSink::reserve();
        let mut config = test_config(smtp.port);
        config.email.poll_interval_ms = 20;
        let app = TestApp::spawn_with_roles(backend, config, topupd::app::Roles::ALL).await;
        let account = app.account_with_email("ada@example.com", "0").await;
        for i in 0..3 {
            app.queue(&format!("test:{i}"), &account, &receipt(&format!("pi_{i}")))
                .await;
        }
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        // Until every notice has been tried (and so waits for its retry).
        while app
            .notices_in("pending")
            .await
            .iter()
            .filter(|n| n["attempts"] == 1)
            .count()
            < 3
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the background sender never tried"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }

        let app = app.restart().await;
        let kept = app.notices_in("pending").await;
        assert_eq!(kept.len(), 3, "{backend:?}: shutdown loses nothing");
        assert!(
            app.notices_in(NoticeState::Sending.as_str())
                .await
                .is_empty(),
            "no claim left behind"
        );

        smtp.start().await;
        app.skip_hours(2);
        let received = smtp.wait_for(3).await;
        assert_eq!(received.len(), 3, "{backend:?}");
        app.stop().await;
    }
}

/// A database at the schema before notices were stored as facts, holding one rendered
/// notice queued then.
async fn database_with_a_notice_rendered_when_queued(
    backend: crate::helpers::Backend,
) -> crate::helpers::TestDatabase {
    use sqlx::migrate::Migrator;
    let database = crate::helpers::TestDatabase::create(backend).await;
    let folder = match backend {
        crate::helpers::Backend::Sqlite => "migrations/sqlite",
        crate::helpers::Backend::Postgres => "migrations/postgres",
    };
    let mut migrator = Migrator::new(std::path::Path::new(folder))
        .await
        .expect("migrations");
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= 6)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    const ACCOUNT: &str = "INSERT INTO accounts (id, email, name, balance, created_at) \
                           VALUES ('acct_old', 'ada@example.com', 'Ada', 0, 0)";
    const NOTICE: &str = "INSERT INTO notices (id, cause, kind, account_id, recipient, subject, \
         text_body, html_body, message_id, state, next_attempt_at, created_at) VALUES \
         ('ntc_old', 'attempt:tpu_old:topup_receipt', 'topup_receipt', 'acct_old', \
         'ada@example.com', 'Receipt queued before the upgrade', 'Hello Ada, as queued.', \
         '<p>Hello Ada, as queued.</p>', '<ntc_old@topupd.local>', 'pending', 0, 0)";
    macro_rules! at_schema_6 {
        ($pool:expr) => {{
            let pool = $pool;
            migrator.run(&pool).await.expect("migrate to 6");
            sqlx::query(ACCOUNT).execute(&pool).await.expect("account");
            sqlx::query(NOTICE).execute(&pool).await.expect("notice");
            pool.close().await;
        }};
    }
    match backend {
        crate::helpers::Backend::Sqlite => at_schema_6!(
            sqlx::SqlitePool::connect(&format!("{}?mode=rwc", database.url))
                .await
                .expect("sqlite")
        ),
        crate::helpers::Backend::Postgres => at_schema_6!(
            sqlx::PgPool::connect(&database.url)
                .await
                .expect("postgres")
        ),
    }
    database
}

#[tokio::test]
async fn a_notice_rendered_when_it_was_queued_is_sent_as_it_was_after_the_upgrade() {
    for backend in backends() {
        let smtp = SmtpSink::started().await;
        let database = database_with_a_notice_rendered_when_queued(backend).await;
        let app = TestApp::spawn_on(backend, database, test_config(smtp.port)).await;
        let listed = app.notices_in("pending").await;
        assert_eq!(listed.len(), 1, "{backend:?}");
        assert_eq!(listed[0]["subject"], "Receipt queued before the upgrade");
        assert_eq!(app.send_notices().await.sent, 1, "{backend:?}");
        let received = smtp.wait_for(1).await;
        assert_eq!(received[0].subject, "Receipt queued before the upgrade");
        assert!(received[0].text.contains("Hello Ada, as queued."));
        app.stop().await;
    }
}

#[tokio::test]
async fn each_change_of_what_auto_top_up_charges_is_confirmed_by_email_saying_who_made_it() {
    for backend in backends() {
        let smtp = SmtpSink::started().await;
        let app = TestApp::spawn_with(backend, test_config(smtp.port)).await;
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let support = app.key("support", None).await;
        let path = format!("/v1/accounts/{account}/auto-topup");
        let on = json!({ "enabled": true, "threshold": 1000, "target": 5000 });
        for (caller, body) in [
            (&key, on.clone()),
            // The same settings again change nothing, and tell nothing.
            (&key, on.clone()),
            (&support, json!({ "enabled": false })),
            (
                &app.admin,
                json!({ "enabled": true, "threshold": 1000, "target": 5000, "monthly_spend_cap": 250 }),
            ),
        ] {
            let saved = app
                .request(Method::PUT, &path, Some(caller), Some(body))
                .await;
            assert_eq!(saved.status, StatusCode::OK, "{backend:?}: {}", saved.body);
        }
        assert_eq!(app.send_notices().await.sent, 3, "{backend:?}");
        let received = smtp.wait_for(3).await;
        let mut told: Vec<(&str, bool)> = received
            .iter()
            .map(|m| {
                let who = [
                    "You (or someone signed in",
                    "Our support team",
                    "An administrator",
                ]
                .into_iter()
                .find(|who| m.text.contains(who))
                .unwrap_or("nobody");
                (who, m.subject.contains("is on"))
            })
            .collect();
        told.sort();
        assert_eq!(
            told,
            [
                ("An administrator", true),
                ("Our support team", false),
                ("You (or someone signed in", true),
            ],
            "{backend:?}"
        );
        let by_admin = received
            .iter()
            .find(|m| m.text.contains("An administrator"))
            .expect("the administrator's change");
        assert!(by_admin.text.contains("$250.00"), "{}", by_admin.text);
        app.stop().await;
    }
}

#[tokio::test]
async fn a_low_balance_is_emailed_once_per_crossing_to_those_who_asked_with_auto_top_up_off() {
    crate::helpers::each_backend(async |app| {
        let line = app.config.low_balance_warning();
        let warn = async || {
            let now = topupd::clock::Clock::now_ms(&app.clock);
            app.db
                .warn_low_balances(line, &app.config.email, now)
                .await
                .expect("warned")
        };
        let service = app.key("service", None).await;
        let asked = app.funded_account("150").await;
        let asked_key = app.key("customer", Some(&asked)).await;
        let not_asked = app.funded_account("150").await;
        let (auto_on, auto_key) = app.customer_with_card("pm_card_visa").await;
        let path = |account: &str| format!("/v1/accounts/{account}/auto-topup");
        for (account, key, body) in [
            (&asked, &asked_key, json!({ "enabled": false, "low_balance_email": true })),
            (
                &auto_on,
                &auto_key,
                json!({ "enabled": true, "threshold": 1000, "target": 5000, "low_balance_email": true }),
            ),
        ] {
            let saved = app.request(Method::PUT, &path(account), Some(key), Some(body)).await;
            assert_eq!(saved.status, StatusCode::OK, "{}", saved.body);
            assert_eq!(saved.body["low_balance_email"], true);
        }
        assert_eq!(warn().await, 0, "150 credits are above the line of 100");

        // 60 credits used: 90 left, below the line.
        for account in [&asked, &not_asked] {
            let debited = app.debit(&service, account, "use-1", 360).await;
            assert!(debited.status.is_success(), "{}", debited.body);
        }
        assert_eq!(warn().await, 1, "only the account that asked, with auto top-up off");
        assert_eq!(warn().await, 0, "once per crossing");
        let adjusted = app
            .post(
                &format!("/v1/admin/accounts/{asked}/adjustments"),
                &app.admin,
                json!({ "credits": 100, "reason": "bought more" }),
            )
            .await;
        assert_eq!(adjusted.status, StatusCode::CREATED, "{}", adjusted.body);
        assert_eq!(warn().await, 0, "back above the line");
        let debited = app.debit(&service, &asked, "use-2", 720).await;
        assert!(debited.status.is_success(), "{}", debited.body);
        assert_eq!(warn().await, 1, "a new crossing is told again");
        let kinds = app.notice_kinds(&asked).await;
        assert_eq!(kinds, ["low_balance", "low_balance"], "{kinds:?}");
        assert!(app.notice_kinds(&not_asked).await.is_empty());
        assert!(!app.notice_kinds(&auto_on).await.contains(&"low_balance".to_owned()));
    })
    .await;
}

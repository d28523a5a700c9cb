//! Webhooks out to the host: endpoints through the admin API, events written with the
//! changes they report, signatures checked by the reference Standard Webhooks library,
//! retries with backoff, the disabling of an endpoint that never answers, ordering per
//! endpoint and account, and replays.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU16, Ordering},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode as AxumStatus},
    routing::post,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use topupd::jobs::webhook_sender::{DeliveryReport, WebhookSender};

use crate::helpers::{TestApp, backends, each_backend};

/// What a host's endpoint received: each request's headers and body.
type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// A host's endpoint on loopback: keeps what it receives and answers `status`.
#[derive(Clone)]
struct Host {
    url: String,
    received: Received,
    status: Arc<AtomicU16>,
}

impl Host {
    async fn started() -> Self {
        let received = Arc::new(Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(204));
        let state = (received.clone(), status.clone());
        let router = Router::new()
            .route(
                "/hooks",
                post(
                    async |State((received, status)): State<(Received, Arc<AtomicU16>)>,
                           headers: HeaderMap,
                           body: Bytes| {
                        let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        received.lock().expect("lock").push((headers, body));
                        AxumStatus::from_u16(status.load(Ordering::SeqCst))
                            .unwrap_or(AxumStatus::OK)
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            received,
            status,
        }
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// The event types received for `account`, in the order they arrived.
    fn types_for(&self, account: &str) -> Vec<String> {
        self.bodies()
            .iter()
            .filter(|b| b["data"]["account_id"] == account)
            .map(|b| b["type"].as_str().expect("type").to_owned())
            .collect()
    }

    fn bodies(&self) -> Vec<Value> {
        let received = self.received.lock().expect("lock");
        received.iter().map(|(_, body)| body.clone()).collect()
    }

    fn ids(&self) -> Vec<String> {
        let received = self.received.lock().expect("lock");
        received
            .iter()
            .map(|(headers, _)| headers["webhook-id"].to_str().expect("ascii").to_owned())
            .collect()
    }
}

impl TestApp {
    fn webhook_sender(&self) -> WebhookSender {
        WebhookSender::new(
            self.db.clone(),
            Arc::new(self.clock.clone()),
            self.config.webhooks.clone(),
            Arc::new(self.config.email.clone()),
        )
    }

    /// One round of the webhook sender.
    async fn send_webhooks(&self) -> DeliveryReport {
        self.webhook_sender()
            .run_once(&CancellationToken::new())
            .await
            .expect("sender round")
    }

    /// Rounds of the webhook sender until one finds nothing due, as `serve` runs them;
    /// how many were delivered.
    async fn deliver_all(&self) -> usize {
        let mut delivered = 0;
        loop {
            let round = self.send_webhooks().await;
            delivered += round.delivered;
            if round.delivered == 0 {
                return delivered;
            }
        }
    }

    /// Adds an endpoint for `events` at `url`; its id and secret.
    async fn webhook_endpoint(&self, url: &str, events: Value) -> (String, String) {
        let created = self
            .post(
                "/v1/admin/webhook-endpoints",
                &self.admin,
                json!({ "url": url, "events": events, "description": "the host" }),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        (
            created.body["id"].as_str().expect("id").to_owned(),
            created.body["secret"].as_str().expect("secret").to_owned(),
        )
    }

    async fn deliveries(&self, endpoint: &str, query: &str) -> Vec<Value> {
        let listed = self
            .get(
                &format!("/v1/admin/webhook-endpoints/{endpoint}/deliveries?{query}"),
                &self.admin,
            )
            .await;
        assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
        listed.body["data"].as_array().expect("data").clone()
    }
}

#[tokio::test]
async fn deliveries_verify_with_the_reference_library_before_and_after_a_rotation() {
    let Some(python) = crate::helpers::sdk_python() else {
        return;
    };
    let app = TestApp::spawn(backends()[0]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (secrets, log) = (dir.path().join("secrets"), dir.path().join("log"));
    std::fs::write(&secrets, "").expect("secrets file");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/standard_webhooks.py"
    );
    let mut receiver = tokio::process::Command::new(python)
        .args([script.as_ref(), secrets.as_os_str(), log.as_os_str()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python runs");
    let mut port = String::new();
    tokio::io::BufReader::new(receiver.stdout.take().expect("stdout"))
        .read_line(&mut port)
        .await
        .expect("the receiver prints its port");
    let url = format!("http://127.0.0.1:{}/hooks", port.trim());
    let (endpoint, first) = app.webhook_endpoint(&url, json!(["*"])).await;
    assert!(first.starts_with("whsec_"), "{first}");
    // A secret of no endpoint's, which must verify nothing.
    let stranger = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    let account = app.funded_account("0").await;
    let key = app.key("customer", Some(&account)).await;
    std::fs::write(&secrets, format!("{first}\n{stranger}\n")).expect("secrets");
    app.enable_auto_topup(&account, &key).await;
    assert_eq!(app.send_webhooks().await.delivered, 1);

    let rotated = app
        .post(
            &format!("/v1/admin/webhook-endpoints/{endpoint}/rotate-secret"),
            &app.admin,
            json!({}),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let second = rotated.body["secret"]
        .as_str()
        .expect("new secret")
        .to_owned();
    assert_ne!(second, first);
    assert!(rotated.body["previous_secret_expires_at"].is_string());
    std::fs::write(&secrets, format!("{first}\n{second}\n{stranger}\n")).expect("secrets");
    let off = app
        .request(
            Method::PUT,
            &format!("/v1/accounts/{account}/auto-topup"),
            Some(&key),
            Some(json!({ "enabled": false })),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    assert_eq!(app.send_webhooks().await.delivered, 1);

    // A day later the old secret no longer signs.
    app.skip_hours(25);
    std::fs::write(&secrets, format!("{first}\n{second}\n")).expect("secrets");
    app.enable_auto_topup(&account, &key).await;
    assert_eq!(app.send_webhooks().await.delivered, 1);

    let lines: Vec<Value> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let verified: Vec<&Value> = lines.iter().map(|l| &l["verified"]).collect();
    assert_eq!(
        verified,
        [
            &json!([true, false]),
            &json!([true, true, false]),
            &json!([false, true]),
        ],
        "{lines:?}"
    );
    for line in &lines {
        assert_eq!(line["payload"]["type"], "auto_topup.settings_changed");
        assert_eq!(line["payload"]["data"]["account_id"], account.as_str());
        assert!(line["id"].as_str().is_some_and(|id| id.starts_with("msg_")));
    }
    assert_eq!(lines[0]["payload"]["data"]["enabled"], true);
    assert_eq!(lines[1]["payload"]["data"]["enabled"], false);
    drop(receiver);
    app.stop().await;
}

#[tokio::test]
async fn the_host_hears_each_change_in_order_and_only_what_it_subscribed_to() {
    each_backend(async |app: &TestApp| {
        let host = Host::started().await;
        let (all, _) = app.webhook_endpoint(&host.url, json!(["*"])).await;
        let receipts = Host::started().await;
        app.webhook_endpoint(&receipts.url, json!(["topup.succeeded"]))
            .await;

        let (account, key) = app.auto_account("pm_card_visa", "1000.5").await;
        let service = app.key("service", None).await;
        // 10 credits take the balance from 1,000.5 below the threshold of 1,000.
        let debited = app.debit(&service, &account, "r1", 30).await;
        assert_eq!(debited.status, StatusCode::CREATED, "{}", debited.body);
        // A debit that stays below it is not news.
        let again = app.debit(&service, &account, "r2", 30).await;
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
        assert_eq!(app.scan().await.succeeded, 1);
        app.deliver_all().await;
        assert_eq!(
            host.types_for(&account),
            [
                "auto_topup.settings_changed",
                "balance.low",
                "topup.succeeded"
            ]
        );
        assert_eq!(receipts.types_for(&account), ["topup.succeeded"]);
        let bodies = host.bodies();
        let low = bodies
            .iter()
            .find(|b| b["type"] == "balance.low")
            .expect("balance.low");
        assert_eq!(low["data"]["line"], json!(1000));
        assert_eq!(low["data"]["balance"], json!(990.5));
        let paid = bodies
            .iter()
            .find(|b| b["type"] == "topup.succeeded")
            .expect("topup.succeeded");
        assert_eq!(paid["data"]["trigger"], "automatic");
        assert!(
            paid["data"]["transaction_id"]
                .as_str()
                .is_some_and(|t| t.starts_with("pi_"))
        );
        assert!(paid["timestamp"].is_string());

        // Out of credits: the first refused debit is news, the next is not.
        let empty = app.funded_account("5").await;
        for request in ["e1", "e2"] {
            let refused = app.debit(&service, &empty, request, 60).await;
            assert_eq!(
                refused.status,
                StatusCode::PAYMENT_REQUIRED,
                "{}",
                refused.body
            );
        }
        app.deliver_all().await;
        assert_eq!(host.types_for(&empty), ["balance.depleted"]);
        let depleted = host
            .bodies()
            .into_iter()
            .find(|b| b["type"] == "balance.depleted")
            .expect("balance.depleted");
        assert_eq!(depleted["data"]["balance"], json!(5));
        assert_eq!(depleted["data"]["required"], json!(10));

        // A paused automatic top-up is news, and so is support resuming it.
        let (declined, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 1);
        let support = app.key("support", None).await;
        let resumed = app
            .post(
                &format!("/v1/admin/accounts/{declined}/auto-topup/resume"),
                &support,
                json!({ "note": "the customer called" }),
            )
            .await;
        assert_eq!(resumed.status, StatusCode::OK, "{}", resumed.body);
        app.deliver_all().await;
        assert_eq!(
            host.types_for(&declined),
            [
                "auto_topup.settings_changed",
                "topup.failed",
                "auto_topup.paused",
                "auto_topup.resumed"
            ]
        );
        let paused = host
            .bodies()
            .into_iter()
            .find(|b| b["type"] == "auto_topup.paused" && b["data"]["account_id"] == declined)
            .expect("paused");
        assert_eq!(paused["data"]["reason"], "payment_failed");
        assert_eq!(paused["data"]["decline_code"], "generic_decline");
        let delivered = app.deliveries(&all, "state=delivered&limit=200").await;
        assert_eq!(delivered.len(), host.ids().len());
        let _ = key;
    })
    .await;
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_in_order_for_a_day_then_disabled_with_a_notice() {
    each_backend(async |app: &TestApp| {
        let host = Host::started().await;
        host.answer(500);
        let (endpoint, _) = app.webhook_endpoint(&host.url, json!(["*"])).await;
        let account = app.funded_account("0").await;
        let key = app.key("customer", Some(&account)).await;
        app.enable_auto_topup(&account, &key).await;
        let off = app
            .request(
                Method::PUT,
                &format!("/v1/accounts/{account}/auto-topup"),
                Some(&key),
                Some(json!({ "enabled": false })),
            )
            .await;
        assert_eq!(off.status, StatusCode::OK, "{}", off.body);

        // Nine tries of the first; the second, for the same account, waits behind it.
        let mut waited_ms = 0;
        for attempt in 1..=9u32 {
            let report = app.send_webhooks().await;
            assert_eq!(report.claimed, 1, "try {attempt}");
            if let Some(delay) = topupd::domain::webhook::retry_delay(attempt) {
                let delay = i64::try_from(delay.as_millis()).expect("ms");
                // Not a moment early.
                app.clock.advance_ms(delay - 1);
                assert_eq!(app.send_webhooks().await.claimed, 0, "try {attempt}");
                app.clock.advance_ms(1);
                waited_ms += delay;
            } else {
                assert_eq!(report.failed, 1);
            }
        }
        assert!(waited_ms >= 24 * 3_600_000, "{waited_ms}");
        let ids = host.ids();
        assert_eq!(ids.len(), 9);
        assert!(
            ids.windows(2).all(|w| w[0] == w[1]),
            "one message, tried again: {ids:?}"
        );

        let shown = app
            .get(
                &format!("/v1/admin/webhook-endpoints/{endpoint}"),
                &app.admin,
            )
            .await;
        assert_eq!(shown.body["enabled"], false);
        assert!(shown.body["disabled_reason"].is_string());
        assert!(shown.body.get("secret").is_none());
        let failed = app.deliveries(&endpoint, "state=failed").await;
        assert_eq!(failed.len(), 1);
        let detail = app
            .get(
                &format!(
                    "/v1/admin/webhook-deliveries/{}",
                    failed[0]["id"].as_str().expect("id")
                ),
                &app.admin,
            )
            .await;
        let tries = detail.body["tries"].as_array().expect("tries");
        assert_eq!(tries.len(), 9);
        assert!(tries.iter().all(|t| t["status"] == 500));
        assert_eq!(
            detail.body["payload"]["type"],
            "auto_topup.settings_changed"
        );
        let told = app.notices_in("pending").await;
        assert!(
            told.iter().any(|n| n["kind"] == "webhook_endpoint_disabled"
                && n["recipient"] == app.config.email.support_email.as_str()),
            "{told:?}"
        );
        // Disabled, it hears nothing new and sends nothing.
        app.enable_auto_topup(&account, &key).await;
        assert_eq!(app.send_webhooks().await.claimed, 0);

        // Back on: the waiting one goes out; the failed one is replayed after it.
        host.answer(200);
        let enabled = app
            .request(
                Method::PATCH,
                &format!("/v1/admin/webhook-endpoints/{endpoint}"),
                Some(&app.admin),
                Some(json!({ "enabled": true })),
            )
            .await;
        assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
        assert_eq!(enabled.body["disabled_reason"], Value::Null);
        let replay = app
            .post(
                &format!(
                    "/v1/admin/webhook-deliveries/{}/replay",
                    failed[0]["id"].as_str().expect("id")
                ),
                &app.admin,
                json!({}),
            )
            .await;
        assert_eq!(replay.status, StatusCode::CREATED, "{}", replay.body);
        assert_eq!(replay.body["message_id"], failed[0]["message_id"]);
        app.send_webhooks().await;
        app.send_webhooks().await;
        let bodies = host.bodies();
        let last_two: Vec<&Value> = bodies[9..].iter().map(|b| &b["data"]["enabled"]).collect();
        assert_eq!(last_two, [&json!(false), &json!(true)], "{bodies:?}");
        let again = app
            .post(
                &format!(
                    "/v1/admin/webhook-deliveries/{}/replay",
                    replay.body["id"].as_str().expect("id")
                ),
                &app.admin,
                json!({}),
            )
            .await;
        assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
        let in_flight = app
            .post(
                &format!(
                    "/v1/admin/webhook-deliveries/{}/replay",
                    again.body["id"].as_str().expect("id")
                ),
                &app.admin,
                json!({}),
            )
            .await;
        assert_eq!(in_flight.status, StatusCode::CONFLICT, "{}", in_flight.body);
    })
    .await;
}

#[tokio::test]
async fn bad_endpoints_are_refused_naming_the_field_and_only_admins_manage_them() {
    each_backend(async |app: &TestApp| {
        for (body, field) in [
            (json!({ "url": "ftp://host.example/", "events": ["*"] }), "url"),
            (json!({ "url": "https://u:p@host.example/", "events": ["*"] }), "url"),
            (json!({ "url": "https://host.example/", "events": [] }), "events"),
            (json!({ "url": "https://host.example/", "events": ["topup.exploded"] }), "events"),
            (
                json!({ "url": "https://host.example/", "events": ["*"], "description": "a\u{0007}b" }),
                "description",
            ),
        ] {
            let refused = app
                .post("/v1/admin/webhook-endpoints", &app.admin, body.clone())
                .await;
            assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {}", refused.body);
            assert!(refused.body.to_string().contains(field), "{field}: {}", refused.body);
        }
        let listed = app.get("/v1/admin/webhook-endpoints", &app.admin).await;
        assert_eq!(listed.body["data"], json!([]), "nothing was added");

        let support = app.key("support", None).await;
        let forbidden = app
            .post(
                "/v1/admin/webhook-endpoints",
                &support,
                json!({ "url": "https://host.example/", "events": ["*"] }),
            )
            .await;
        assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

        let (endpoint, _) = app
            .webhook_endpoint("https://host.example/in", json!(["topup.failed"]))
            .await;
        let bad_change = app
            .request(
                Method::PATCH,
                &format!("/v1/admin/webhook-endpoints/{endpoint}"),
                Some(&app.admin),
                Some(json!({ "events": ["nope"], "url": "https://other.example/" })),
            )
            .await;
        assert_eq!(bad_change.status, StatusCode::UNPROCESSABLE_ENTITY);
        let shown = app
            .get(&format!("/v1/admin/webhook-endpoints/{endpoint}"), &app.admin)
            .await;
        assert_eq!(shown.body["url"], "https://host.example/in", "nothing changed");
        assert_eq!(shown.body["events"], json!(["topup.failed"]));
        let deleted = app
            .request(
                Method::DELETE,
                &format!("/v1/admin/webhook-endpoints/{endpoint}"),
                Some(&app.admin),
                None,
            )
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let gone = app
            .get(&format!("/v1/admin/webhook-endpoints/{endpoint}"), &app.admin)
            .await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND);
    })
    .await;
}

//! The host's webhook endpoint in a drill: it keeps every delivery it is sent, checks its
//! signature, and notes the order in which each account's messages first arrived. It
//! answers each a moment after keeping it, so that kills land between the two.

use std::sync::{Arc, Mutex};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};

/// One delivery as received.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub message_id: String,
    pub account_id: String,
    pub signed: bool,
}

#[derive(Clone)]
pub struct WebhookHost {
    pub url: String,
    secret: Arc<Mutex<String>>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
}

type Shared = (Arc<Mutex<String>>, Arc<Mutex<Vec<Arrival>>>);

async fn receive(State((secret, arrivals)): State<Shared>, headers: HeaderMap, body: Bytes) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
    let body = String::from_utf8_lossy(&body).into_owned();
    let expected = topupd::domain::webhook::signature(
        &[secret.lock().expect("lock").as_str()],
        &id,
        timestamp.parse().unwrap_or(-1),
        &body,
    );
    let account_id = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|b| b["data"]["account_id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    arrivals.lock().expect("lock").push(Arrival {
        message_id: id,
        account_id,
        signed: header("webhook-signature") == expected,
    });
    // Kept before it is answered, as a host's handler does its work first: a kill in
    // this moment leaves a delivery the host has but topupd does not know it has.
    tokio::time::sleep(ANSWER_AFTER).await;
}

const ANSWER_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

impl WebhookHost {
    pub async fn start() -> Self {
        let secret = Arc::new(Mutex::new(String::new()));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/hooks", post(receive))
            .with_state((secret.clone(), arrivals.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        Self {
            url,
            secret,
            arrivals,
        }
    }

    /// The secret the endpoint was given, to check signatures with.
    pub fn trust(&self, secret: &str) {
        *self.secret.lock().expect("lock") = secret.to_owned();
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().expect("lock").clone()
    }
}

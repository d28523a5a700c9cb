//! The provider's rate as a budget: replicas share one pace through the database, and a
//! 429 holds them all back.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::response::IntoResponse;
use reqwest::StatusCode;
use topupd::payments::{
    budget::Budget,
    client::{CustomerDetails, ProviderClient},
};

use crate::helpers::each_backend;

/// A provider that notes when each request arrived, and answers the `limited`-th (from 0)
/// with a 429 asking for `retry_after` seconds.
async fn provider(limited: usize, retry_after: &'static str) -> (String, Arc<Mutex<Vec<Instant>>>) {
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let router = axum::Router::new().route(
        "/v1/customers/{id}",
        axum::routing::post({
            let arrivals = arrivals.clone();
            move || async move {
                let nth = {
                    let mut arrivals = arrivals.lock().expect("arrivals");
                    arrivals.push(Instant::now());
                    arrivals.len() - 1
                };
                if nth == limited {
                    (
                        StatusCode::TOO_MANY_REQUESTS,
                        [("retry-after", retry_after)],
                        r#"{"error":{"type":"invalid_request_error","code":"rate_limit"}}"#,
                    )
                        .into_response()
                } else {
                    (StatusCode::OK, r#"{"id":"cus_1"}"#).into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    (format!("http://{address}"), arrivals)
}

#[tokio::test]
async fn replicas_share_one_pace_and_a_429_holds_them_all_back() {
    each_backend(async |app| {
        const PER_SEC: u32 = 5;
        const REQUESTS: usize = 16;
        let (url, arrivals) = provider(4, "2").await;
        let mut config = app.config.payments.clone();
        config.max_requests_per_sec = PER_SEC;
        config.max_requests_per_sec_per_endpoint = PER_SEC;
        config.retry_base_ms = 1;
        config.retry_max_ms = 2;
        // Two replicas: two clients, one database.
        let replicas: Vec<Arc<ProviderClient>> = (0..2)
            .map(|_| {
                let budget = Budget::new(Arc::new(app.db.clone()), &config);
                Arc::new(
                    ProviderClient::new(&config, &url)
                        .expect("client")
                        .paced_by(budget),
                )
            })
            .collect();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..REQUESTS {
            let client = replicas[i % 2].clone();
            calls.spawn(async move {
                let details = CustomerDetails {
                    account_id: "acct_1",
                    name: "Ada",
                    email: "ada@example.com",
                };
                client
                    .update_customer("cus_1", &details, &format!("key-{i}"))
                    .await
            });
        }
        for answered in calls.join_all().await {
            let customer = answered.expect("a 429 is asked again, never a failure");
            assert_eq!(customer.id, "cus_1");
        }
        let mut arrived = arrivals.lock().expect("arrivals").clone();
        arrived.sort();
        assert_eq!(
            arrived.len(),
            REQUESTS + 1,
            "each request, and the one limited again"
        );

        // Paced: every PER_SEC requests span close to a second, whichever replica sent
        // them (loose below, as a loaded machine delays some arrivals, never hastens them).
        let spacing = Duration::from_secs(1) / PER_SEC;
        for window in arrived.windows(PER_SEC as usize + 1) {
            let span = window[PER_SEC as usize] - window[0];
            assert!(
                span >= spacing * PER_SEC * 7 / 10,
                "{} requests within {span:?}: {arrived:?}",
                PER_SEC + 1
            );
        }
        // Held back: after the 429 (the fifth arrival) nothing arrives for the 2 seconds
        // it asked, from either replica, but what was on its way already.
        let limited_at = arrived[4];
        let during_hold: Vec<Duration> = arrived[5..]
            .iter()
            .map(|at| *at - limited_at)
            .filter(|after| *after > spacing / 2 && *after < Duration::from_millis(1900))
            .collect();
        assert!(
            during_hold.is_empty(),
            "arrivals during the hold: {during_hold:?}"
        );
    })
    .await;
}

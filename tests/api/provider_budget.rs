//! The provider's rate as a budget: replicas split it by their leases in the database, and
//! a 429 holds them all back.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::response::IntoResponse;
use reqwest::StatusCode;
use topupd::payments::{
    budget::{Budget, RENEW_EVERY},
    client::{CustomerDetails, ProviderClient},
};

use crate::helpers::each_backend;

/// A provider that notes when each request arrived, and answers the `limited`-th (from 0)
/// with a 429 of error `code`, asking for `retry_after` seconds if given.
async fn provider(
    limited: usize,
    code: &'static str,
    retry_after: Option<&'static str>,
) -> (String, Arc<Mutex<Vec<Instant>>>) {
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
                    let body = format!(
                        r#"{{"error":{{"type":"invalid_request_error","code":"{code}"}}}}"#
                    );
                    let mut answer = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
                    if let Some(secs) = retry_after {
                        answer
                            .headers_mut()
                            .insert("retry-after", secs.parse().expect("a header value"));
                    }
                    answer
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
async fn replicas_split_the_budget_and_a_429_holds_them_all_back() {
    each_backend(async |app| {
        const PER_SEC: u32 = 5;
        const REQUESTS: usize = 16;
        const HOLD: Duration = Duration::from_secs(3);
        let (url, arrivals) = provider(4, "rate_limit", Some("3")).await;
        let mut config = app.config.payments.clone();
        config.max_requests_per_sec = PER_SEC;
        config.max_requests_per_sec_per_endpoint = PER_SEC;
        config.retry_base_ms = 1;
        config.retry_max_ms = 2;
        // Two replicas: two budgets and clients, one database, which the app's own
        // replica shares too. Each counts the ones after it from its next renewal on.
        let mut budgets = Vec::new();
        for _ in 0..2 {
            budgets.push(Budget::start(Arc::new(app.db.clone()), &config).await);
        }
        tokio::time::sleep(RENEW_EVERY + Duration::from_millis(300)).await;
        const LIVE: u32 = 3;
        for budget in &budgets {
            assert_eq!(budget.replicas(), LIVE, "{:?}", app.backend);
        }
        let replicas: Vec<Arc<ProviderClient>> = budgets
            .iter()
            .map(|budget| {
                Arc::new(
                    ProviderClient::new(&config, &url)
                        .expect("client")
                        .paced_by(budget.clone()),
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

        // Paced: the two senders hold two shares of three, whichever sent what (loose
        // below, as a loaded machine delays some arrivals, never hastens them).
        let spacing = Duration::from_secs(1) * LIVE / PER_SEC / 2;
        let burst = PER_SEC as usize;
        for window in arrived.windows(burst + 1) {
            let span = window[burst] - window[0];
            assert!(
                span >= spacing * PER_SEC * 7 / 10,
                "{} requests within {span:?}: {arrived:?}",
                burst + 1
            );
        }
        // Held back: after the 429 (the fifth arrival) the replica that met it sends
        // nothing for the seconds it asked, and the other nothing from its next renewal
        // on, but what was on its way already.
        let limited_at = arrived[4];
        let during_hold: Vec<Duration> = arrived[5..]
            .iter()
            .map(|at| *at - limited_at)
            .filter(|after| {
                *after > RENEW_EVERY + spacing && *after < HOLD - Duration::from_millis(100)
            })
            .collect();
        assert!(
            during_hold.is_empty(),
            "arrivals during the hold: {during_hold:?} of {arrived:?}"
        );

        // A replica that leaves gives its lease up: the others count without it from
        // their next renewal on.
        drop(replicas);
        let left = budgets.pop().expect("a second replica");
        left.release().await;
        tokio::time::sleep(RENEW_EVERY + Duration::from_millis(300)).await;
        assert_eq!(budgets[0].replicas(), LIVE - 1, "{:?}", app.backend);
        // One that stops renewing without leaving (a crash) counts until its lease runs out.
        let crashed = Budget::start(Arc::new(app.db.clone()), &config).await;
        tokio::time::sleep(RENEW_EVERY + Duration::from_millis(300)).await;
        assert_eq!(budgets[0].replicas(), LIVE, "{:?}", app.backend);
        drop(crashed);
        tokio::time::sleep(Duration::from_secs(6) + RENEW_EVERY).await;
        assert_eq!(budgets[0].replicas(), LIVE - 1, "{:?}", app.backend);
    })
    .await;
}

#[tokio::test]
async fn only_a_429_that_limits_the_rate_holds_the_replicas_back() {
    use topupd::payments::budget::LeaseStore;
    each_backend(async |app| {
        let now_ms = || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after the epoch")
                .as_millis() as i64
        };
        let mut config = app.config.payments.clone();
        config.retry_base_ms = 1;
        config.retry_max_ms = 2;
        let budget = Budget::start(Arc::new(app.db.clone()), &config).await;
        // Stripe's 429 for an object another request holds is that request's to retry;
        // a rate limit's holds everyone for what it asks (0 included), 1 s if it says not.
        for (code, retry_after, hold_ms) in [
            ("lock_timeout", None, None),
            ("rate_limit", Some("0"), Some(0)),
            ("rate_limit", None, Some(1_000)),
        ] {
            let (url, arrivals) = provider(0, code, retry_after).await;
            let client = ProviderClient::new(&config, &url)
                .expect("client")
                .paced_by(budget.clone());
            let details = CustomerDetails {
                account_id: "acct_1",
                name: "Ada",
                email: "ada@example.com",
            };
            let before = now_ms();
            let customer = client
                .update_customer("cus_1", &details, code)
                .await
                .expect("asked again");
            assert_eq!(customer.id, "cus_1");
            assert_eq!(arrivals.lock().expect("arrivals").len(), 2, "{code}");
            let held_until = app
                .db
                .renew("probe", now_ms(), 0)
                .await
                .expect("standing")
                .held_until_ms;
            match hold_ms {
                None => assert_eq!(held_until, 0, "{code}: nobody held back"),
                Some(hold) => assert!(
                    held_until >= before + hold && held_until <= now_ms() + hold,
                    "{code} {retry_after:?}: held until {held_until}, asked at {before}"
                ),
            }
        }
    })
    .await;
}

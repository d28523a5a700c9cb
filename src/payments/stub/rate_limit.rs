//! Stripe's rate limiter, as the stub plays it: API requests per second, all together and
//! per endpoint (a method and a route: `POST /v1/payment_intents` and `GET
//! /v1/payment_intents/{id}` are two, whatever the id), each over the last second. A
//! request over either limit is answered 429 and does nothing. Off unless the faults set
//! `rate_limit_per_sec` or `endpoint_rate_limit_per_sec`.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use axum::{
    extract::{MatchedPath, Request, State},
    http::StatusCode,
    middleware::Next,
    response::Response,
};
use serde::Serialize;

use super::{Stub, answer, world::error};

const WINDOW: Duration = Duration::from_secs(1);
/// The key of the limit on all requests.
const ALL: &str = "";

/// The requests of the last second, by endpoint, and the 429s answered.
#[derive(Debug, Default)]
pub struct Limiter {
    recent: HashMap<String, VecDeque<Instant>>,
    first: Option<Instant>,
    limited: Vec<Duration>,
}

/// The 429s the stub answered, each as the time since its first API request.
#[derive(Debug, Clone, Serialize)]
pub struct Limited {
    pub after_first_request_ms: Vec<u64>,
}

impl Limiter {
    /// Whether a request to `endpoint` now stays within `all` and `per_endpoint` requests
    /// a second (0: no limit); if so it counts.
    fn admit(&mut self, endpoint: &str, all: u32, per_endpoint: u32, now: Instant) -> bool {
        let first = *self.first.get_or_insert(now);
        let mut within = |key: &str, limit: u32| {
            let recent = self.recent.entry(key.to_owned()).or_default();
            while recent.front().is_some_and(|at| now - *at >= WINDOW) {
                recent.pop_front();
            }
            limit == 0 || recent.len() < limit as usize
        };
        if !(within(ALL, all) && within(endpoint, per_endpoint)) {
            self.limited.push(now - first);
            return false;
        }
        for key in [ALL, endpoint] {
            self.recent
                .entry(key.to_owned())
                .or_default()
                .push_back(now);
        }
        true
    }

    pub fn limited(&self) -> Limited {
        Limited {
            after_first_request_ms: self
                .limited
                .iter()
                .map(|after| after.as_millis() as u64)
                .collect(),
        }
    }
}

/// Answers 429 to an API request over the limits, as Stripe does.
pub async fn limited(
    State(stub): State<Stub>,
    path: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let (all, per_endpoint) = {
        let world = stub.inner.world.lock().await;
        let faults = world.faults();
        (
            faults.rate_limit_per_sec,
            faults.endpoint_rate_limit_per_sec,
        )
    };
    if all > 0 || per_endpoint > 0 {
        let endpoint = format!("{} {}", request.method(), path.as_str());
        let admitted =
            stub.inner
                .limiter
                .lock()
                .await
                .admit(&endpoint, all, per_endpoint, Instant::now());
        if !admitted {
            return answer(error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                "rate_limit",
                "Too many requests hit the API too quickly. We recommend an exponential backoff of your requests.",
            ));
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_over_a_limit_in_the_last_second_are_refused_and_counted() {
        let mut limiter = Limiter::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert!(limiter.admit("POST /a", 3, 2, at(0)));
        assert!(limiter.admit("POST /a", 3, 2, at(10)));
        // The endpoint's limit, then the limit of all.
        assert!(!limiter.admit("POST /a", 3, 2, at(20)));
        assert!(limiter.admit("GET /b", 3, 2, at(30)));
        assert!(!limiter.admit("GET /b", 3, 2, at(40)));
        // A second after the first request, its place is free again.
        assert!(limiter.admit("POST /a", 3, 2, at(1_000)));
        assert_eq!(limiter.limited().after_first_request_ms, vec![20, 40]);
        // No limit: every request goes.
        let mut open = Limiter::default();
        assert!((0..100).all(|ms| open.admit("POST /a", 0, 0, at(ms))));
    }
}

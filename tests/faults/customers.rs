//! The customers of a drill, through topupd's HTTP API as support would act for them:
//! accounts with a saved card, auto top-up turned on when the drill says, and answers on
//! the provider's 3-D Secure page.

use std::{collections::HashSet, sync::Arc, time::Duration};

use rand::{Rng, rngs::StdRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinSet};

use crate::cluster::Stub;

/// Cards the customers save: most pay, some decline (pausing auto top-up with a
/// `payment_failed` notice), some ask for 3-D Secure.
const DECLINING_CARDS: [&str; 4] = [
    "pm_card_chargeDeclined",
    "pm_card_chargeDeclinedInsufficientFunds",
    "pm_card_chargeDeclinedExpiredCard",
    "pm_card_chargeDeclinedFraudulent",
];
const PAYING_CARD: &str = "pm_card_visa";
const AUTHENTICATING_CARD: &str = "pm_card_authenticationRequired";
/// Requests in flight while setting accounts up.
const SETUP_CONCURRENCY: usize = 8;

/// An account and the auto top-up settings it will turn on.
#[derive(Debug, Clone)]
pub struct Customer {
    pub account_id: String,
    threshold: u32,
    target: u32,
}

/// topupd's API as the admin key sees it, on any replica.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    admin: String,
}

impl Api {
    pub fn new(admin: String) -> Self {
        Api {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("HTTP client"),
            admin,
        }
    }

    async fn call(&self, method: Method, url: String, body: Value) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, &url)
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Sets up one customer: an account and a saved default card.
    async fn open_account(&self, base: &str, index: usize, card: &'static str) -> String {
        let (status, account) = self
            .call(
                Method::POST,
                format!("{base}/v1/admin/accounts"),
                json!({ "email": format!("customer{index}@example.com"), "name": format!("Customer {index}") }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create account: {account}");
        let id = account["id"].as_str().expect("account id").to_owned();
        let (status, saved) = self
            .call(
                Method::POST,
                format!("{base}/v1/accounts/{id}/payment-methods"),
                json!({ "payment_method_id": card }),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "save {card}: {saved}");
        id
    }

    /// Turns auto top-up on; the account is below its threshold, so it is due at once.
    pub async fn enable_auto_topup(&self, base: &str, customer: &Customer) {
        let (status, body) = self
            .call(
                Method::PUT,
                format!("{base}/v1/accounts/{}/auto-topup", customer.account_id),
                json!({ "enabled": true, "threshold": customer.threshold, "target": customer.target }),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "enable auto top-up: {body}");
    }
}

/// Opens `count` accounts through `base`, with cards and settings drawn from `rng`.
pub async fn open_accounts(api: &Api, base: &str, count: usize, rng: &mut StdRng) -> Vec<Customer> {
    let plans: Vec<(&'static str, u32, u32)> = (0..count)
        .map(|_| {
            let card = match rng.random_range(0..10) {
                0 => DECLINING_CARDS[rng.random_range(0..DECLINING_CARDS.len())],
                1 => AUTHENTICATING_CARD,
                _ => PAYING_CARD,
            };
            let threshold = rng.random_range(100..=2_000);
            (card, threshold, threshold + rng.random_range(1_000..=8_000))
        })
        .collect();
    let permits = Arc::new(Semaphore::new(SETUP_CONCURRENCY));
    let mut opening = JoinSet::new();
    for (index, (card, threshold, target)) in plans.into_iter().enumerate() {
        let (api, base, permits) = (api.clone(), base.to_owned(), permits.clone());
        opening.spawn(async move {
            let _permit = permits.acquire_owned().await.expect("never closed");
            let account_id = api.open_account(&base, index, card).await;
            (
                index,
                Customer {
                    account_id,
                    threshold,
                    target,
                },
            )
        });
    }
    let mut customers = opening.join_all().await;
    customers.sort_by_key(|(index, _)| *index);
    customers.into_iter().map(|(_, c)| c).collect()
}

/// The customers at their 3-D Secure pages: each payment waiting for authentication is
/// answered once, most completing it, some failing it.
pub struct Authenticator {
    answered: HashSet<String>,
    pub completed: usize,
    pub failed: usize,
}

impl Authenticator {
    pub fn new() -> Self {
        Authenticator {
            answered: HashSet::new(),
            completed: 0,
            failed: 0,
        }
    }

    pub async fn answer_waiting(&mut self, stub: &Stub, rng: &mut StdRng) {
        let mut waiting: Vec<String> = stub
            .payment_intents()
            .await
            .into_iter()
            .filter(|pi| pi["status"] == "requires_action")
            .filter_map(|pi| pi["id"].as_str().map(str::to_owned))
            .filter(|id| !self.answered.contains(id))
            .collect();
        // The stub lists newest first; answer in creation order so a seed replays.
        waiting.sort();
        for id in waiting {
            let complete = rng.random_bool(0.75);
            stub.authenticate(&id, complete).await;
            if complete {
                self.completed += 1;
            } else {
                self.failed += 1;
            }
            self.answered.insert(id);
        }
    }
}

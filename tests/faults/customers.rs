//! The customers of a drill, through topupd's HTTP API as support would act for them:
//! accounts with a saved card, auto top-up turned on when the drill says, and customers
//! confirming the payments their bank would not take without them: on topupd's page, then
//! on the provider's 3-D Secure page.

use std::{collections::HashSet, sync::Arc, time::Duration};

use rand::{Rng, rngs::StdRng};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinSet};

use crate::cluster::Stub;

/// Cards the customers save: most pay, some decline when charged (pausing auto top-up
/// with a `payment_failed` notice), some ask for 3-D Secure, some are disputed.
const DECLINING_CARD: &str = "pm_card_chargeCustomerFail";
const PAYING_CARD: &str = "pm_card_visa";
const AUTHENTICATING_CARD: &str = "pm_card_authenticationRequired";
/// Pays, then the payer disputes the charge with their bank.
const DISPUTING_CARD: &str = "pm_card_createDispute";
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

    /// Adds the host's webhook endpoint for every event; its signing secret.
    pub async fn add_webhook_endpoint(&self, base: &str, url: &str) -> String {
        let (status, endpoint) = self
            .call(
                Method::POST,
                format!("{base}/v1/admin/webhook-endpoints"),
                json!({ "url": url, "events": ["*"], "description": "the drill's host" }),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "add webhook endpoint: {endpoint}"
        );
        endpoint["secret"].as_str().expect("secret").to_owned()
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

    /// The customer follows the link they were sent for the account's waiting top-up of
    /// `payment` and confirms it on topupd's page. Whether it led to the provider's
    /// authentication page (a provider fault or a replica going down may stop it short;
    /// the customer tries again later).
    async fn confirm_on_topupd_page(&self, base: &str, account: &str, payment: &str) -> bool {
        let (status, view) = self
            .call(
                Method::GET,
                format!("{base}/v1/accounts/{account}/auto-topup"),
                Value::Null,
            )
            .await;
        let topup = &view["last_topup"];
        let link = match topup["next_action"]["url"].as_str() {
            Some(link) if status == StatusCode::OK && topup["transaction_id"] == payment => link,
            _ => return false,
        };
        // The link names the replicas' public address; the drill reaches them at `base`.
        let (Some(path), Some((_, query))) = (
            link.find("/v1/").map(|at| &link[at..]),
            link.split_once('?'),
        ) else {
            return false;
        };
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        let form: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
        match self
            .client
            .post(format!("{base}{path}"))
            .form(&form)
            .send()
            .await
        {
            Ok(page) => page.url().path().starts_with("/_stub/authenticate/"),
            Err(_) => false,
        }
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
                0 => DECLINING_CARD,
                1 => AUTHENTICATING_CARD,
                2 => DISPUTING_CARD,
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

    /// Each payment declined for want of the customer is confirmed by them on topupd's
    /// page, then completed or failed on the provider's.
    pub async fn answer_waiting(&mut self, api: &Api, base: &str, stub: &Stub, rng: &mut StdRng) {
        let mut waiting: Vec<(String, String)> = stub
            .payment_intents()
            .await
            .into_iter()
            // Declined for want of the customer, or already sent to authenticate by a
            // confirmation whose answer the customer never saw.
            .filter(|pi| {
                (pi["status"] == "requires_payment_method"
                    && pi["last_payment_error"]["code"] == "authentication_required")
                    || pi["status"] == "requires_action"
            })
            .filter_map(|pi| {
                let id = pi["id"].as_str()?.to_owned();
                let account = pi["metadata"]["account_id"].as_str()?.to_owned();
                Some((id, account))
            })
            .filter(|(id, _)| !self.answered.contains(id))
            .collect();
        // The stub lists newest first; answer in creation order so a seed replays.
        waiting.sort();
        for (id, account) in waiting {
            let complete = rng.random_bool(0.75);
            if !api.confirm_on_topupd_page(base, &account, &id).await {
                continue;
            }
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

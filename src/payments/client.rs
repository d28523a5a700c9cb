//! The provider client: Stripe's API subset over HTTP, form-encoded, with idempotency keys.
//!
//! An ambiguous answer (timeout, connection error, 5xx, 409, 429, `Stripe-Should-Retry:
//! true`) may mean the request took effect, so it is retried with the same key and, if it
//! stays ambiguous, reported as [`ProviderError::Unknown`], never as a decline.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, header::HeaderMap};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;

use super::budget::Budget;
use super::types::{
    Charge, CheckoutSession, Customer, Dispute, ErrorEnvelope, Event, List, PaymentIntent,
    PaymentMethod, SetupIntent,
};
use crate::{config::PaymentsConfig, domain::backoff::retry_delay, metrics::label_values};

label_values! {
    /// The provider's API endpoints topupd calls, by route template (never by the ids in
    /// the path), as metrics name them.
    pub enum Endpoint {
        CustomersCreate => "customers.create",
        CustomersUpdate => "customers.update",
        PaymentMethodsRetrieve => "payment_methods.retrieve",
        PaymentMethodsAttach => "payment_methods.attach",
        PaymentMethodsDetach => "payment_methods.detach",
        SetupIntentsCreate => "setup_intents.create",
        SetupIntentsRetrieve => "setup_intents.retrieve",
        CheckoutSessionsCreate => "checkout.sessions.create",
        CheckoutSessionsRetrieve => "checkout.sessions.retrieve",
        PaymentIntentsCreate => "payment_intents.create",
        PaymentIntentsConfirm => "payment_intents.confirm",
        PaymentIntentsRetrieve => "payment_intents.retrieve",
        PaymentIntentsList => "payment_intents.list",
        PaymentIntentsCancel => "payment_intents.cancel",
        ChargesRetrieve => "charges.retrieve",
        DisputesRetrieve => "disputes.retrieve",
        EventsList => "events.list",
    }
}

label_values! {
    /// How one request to the provider ended, as metrics count it.
    pub enum CallOutcome {
        /// A 2xx answer.
        Success => "ok",
        /// 402: the card was declined.
        Declined => "declined",
        /// 429: the provider limits topupd's rate.
        RateLimited => "rate_limited",
        /// Another 4xx.
        ClientError => "client_error",
        /// A 5xx.
        ServerError => "server_error",
        /// No answer in `payments.request_timeout_secs`.
        Timeout => "timeout",
        /// No answer: the connection failed, or the answer could not be read.
        Network => "network",
    }
}

impl CallOutcome {
    fn of_status(status: StatusCode) -> Self {
        match status {
            _ if status.is_success() => Self::Success,
            StatusCode::PAYMENT_REQUIRED => Self::Declined,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            _ if status.is_server_error() => Self::ServerError,
            _ => Self::ClientError,
        }
    }

    fn of_transport(error: &reqwest::Error) -> Self {
        if error.is_timeout() {
            Self::Timeout
        } else {
            Self::Network
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The card was declined (HTTP 402); `code` is the decline code when the bank gave one.
    #[error("card declined: {code}")]
    Declined {
        code: String,
        message: String,
        payment_intent: Option<Box<PaymentIntent>>,
    },
    /// No definite answer after retries: the request may or may not have taken effect.
    #[error("outcome unknown: {reason}")]
    Unknown { reason: String },
    /// The idempotency key was used before with other parameters: an earlier request for
    /// the same purpose reached the provider.
    #[error("idempotency key reused with other parameters: {message}")]
    IdempotencyMismatch { message: String },
    /// The object does not exist (HTTP 404).
    #[error("not found: {message}")]
    NotFound { message: String },
    /// The request was refused as invalid (another 4xx).
    #[error("rejected ({status}): {message}")]
    Rejected {
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The secret key was refused (HTTP 401 or 403): a configuration problem.
    #[error("provider refused the API key: {message}")]
    Unauthorized { message: String },
}

/// One try's result: definite, or worth retrying with the same key.
enum Try<T> {
    Done(Result<T, ProviderError>),
    Ambiguous(String),
}

/// What a new payment charges.
#[derive(Debug, Clone)]
pub struct NewPayment<'a> {
    pub amount_cents: i64,
    pub currency: &'a str,
    pub customer: &'a str,
    pub payment_method: &'a str,
    /// Written on the payment so it can be found again by listing, without our database.
    pub metadata: Vec<(&'static str, String)>,
    pub idempotency_key: &'a str,
    /// The customer is at hand and the card will be charged without them later: Stripe
    /// then authenticates it for off-session use (`setup_future_usage=off_session`).
    pub save_for_off_session: bool,
}

/// Who a provider customer is: the account it pays for.
#[derive(Debug, Clone, Copy)]
pub struct CustomerDetails<'a> {
    pub account_id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
}

impl CustomerDetails<'_> {
    fn form(&self) -> Vec<(String, String)> {
        vec![
            ("name".to_owned(), self.name.to_owned()),
            ("email".to_owned(), self.email.to_owned()),
            (
                "metadata[account_id]".to_owned(),
                self.account_id.to_owned(),
            ),
        ]
    }
}

/// A Checkout Session that saves a card.
#[derive(Debug, Clone, Copy)]
pub struct SetupSession<'a> {
    pub account_id: &'a str,
    pub customer: &'a str,
    pub currency: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
}

/// How a confirmation runs.
#[derive(Debug, Clone, Copy)]
pub enum Presence<'a> {
    /// The customer is not at hand (automatic top-ups).
    OffSession,
    /// The customer is at hand and may authenticate, coming back to `return_url`.
    OnSession { return_url: &'a str },
}

pub struct ProviderClient {
    http: reqwest::Client,
    /// Sent as `Stripe-Version`, so requests and answers follow the version topupd reads,
    /// whatever the account's default.
    api_version: String,
    base_url: String,
    secret_key: SecretString,
    max_retries: u32,
    retry_base: Duration,
    retry_max: Duration,
    /// The pace shared with the other replicas; without one, requests go at once.
    budget: Option<Budget>,
}

impl ProviderClient {
    pub fn new(config: &PaymentsConfig, base_url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("topupd/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs))
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .build()?;
        Ok(Self {
            http,
            api_version: config.api_version.clone(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret_key: config.secret_key.clone(),
            max_retries: config.max_retries,
            retry_base: Duration::from_millis(config.retry_base_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            budget: None,
        })
    }

    /// Sends every request at the pace of `budget`, and lets a 429 slow it down.
    pub fn paced_by(self, budget: Budget) -> Self {
        Self {
            budget: Some(budget),
            ..self
        }
    }

    /// Creates the provider's customer of an account, named and addressed as the account
    /// is, so the provider's dashboard and receipts show who it is.
    pub async fn create_customer(
        &self,
        account: &CustomerDetails<'_>,
        idempotency_key: &str,
    ) -> Result<Customer, ProviderError> {
        self.send(
            Endpoint::CustomersCreate,
            Method::POST,
            "/v1/customers",
            account.form(),
            Some(idempotency_key),
        )
        .await
    }

    /// Gives the customer the account's current name and email.
    pub async fn update_customer(
        &self,
        id: &str,
        account: &CustomerDetails<'_>,
        idempotency_key: &str,
    ) -> Result<Customer, ProviderError> {
        self.send(
            Endpoint::CustomersUpdate,
            Method::POST,
            &format!("/v1/customers/{id}"),
            account.form(),
            Some(idempotency_key),
        )
        .await
    }

    pub async fn payment_method(&self, id: &str) -> Result<PaymentMethod, ProviderError> {
        self.send(
            Endpoint::PaymentMethodsRetrieve,
            Method::GET,
            &format!("/v1/payment_methods/{id}"),
            vec![],
            None,
        )
        .await
    }

    /// Attaches a card to the customer; the answer's id is the one to charge from now on.
    pub async fn attach_payment_method(
        &self,
        id: &str,
        customer: &str,
        idempotency_key: &str,
    ) -> Result<PaymentMethod, ProviderError> {
        let form = vec![("customer".to_owned(), customer.to_owned())];
        self.send(
            Endpoint::PaymentMethodsAttach,
            Method::POST,
            &format!("/v1/payment_methods/{id}/attach"),
            form,
            Some(idempotency_key),
        )
        .await
    }

    pub async fn detach_payment_method(
        &self,
        id: &str,
        idempotency_key: &str,
    ) -> Result<PaymentMethod, ProviderError> {
        self.send(
            Endpoint::PaymentMethodsDetach,
            Method::POST,
            &format!("/v1/payment_methods/{id}/detach"),
            vec![],
            Some(idempotency_key),
        )
        .await
    }

    /// A SetupIntent for saving a card of `customer` to charge without them later; the
    /// customer's browser confirms it with its client secret (Stripe.js).
    pub async fn create_setup_intent(
        &self,
        customer: &str,
        account_id: &str,
        idempotency_key: &str,
    ) -> Result<SetupIntent, ProviderError> {
        let form = vec![
            ("customer".to_owned(), customer.to_owned()),
            ("usage".to_owned(), "off_session".to_owned()),
            ("payment_method_types[]".to_owned(), "card".to_owned()),
            ("metadata[account_id]".to_owned(), account_id.to_owned()),
        ];
        self.send(
            Endpoint::SetupIntentsCreate,
            Method::POST,
            "/v1/setup_intents",
            form,
            Some(idempotency_key),
        )
        .await
    }

    pub async fn setup_intent(&self, id: &str) -> Result<SetupIntent, ProviderError> {
        self.send(
            Endpoint::SetupIntentsRetrieve,
            Method::GET,
            &format!("/v1/setup_intents/{id}"),
            vec![],
            None,
        )
        .await
    }

    /// A Checkout Session in `setup` mode: the provider's page collects a card for
    /// `customer` and sends the browser to `success_url` (or `cancel_url`).
    pub async fn create_setup_session(
        &self,
        session: &SetupSession<'_>,
        idempotency_key: &str,
    ) -> Result<CheckoutSession, ProviderError> {
        let form = vec![
            ("mode".to_owned(), "setup".to_owned()),
            ("customer".to_owned(), session.customer.to_owned()),
            ("currency".to_owned(), session.currency.to_owned()),
            ("payment_method_types[]".to_owned(), "card".to_owned()),
            ("success_url".to_owned(), session.success_url.to_owned()),
            ("cancel_url".to_owned(), session.cancel_url.to_owned()),
            (
                "client_reference_id".to_owned(),
                session.account_id.to_owned(),
            ),
            (
                "setup_intent_data[metadata][account_id]".to_owned(),
                session.account_id.to_owned(),
            ),
        ];
        self.send(
            Endpoint::CheckoutSessionsCreate,
            Method::POST,
            "/v1/checkout/sessions",
            form,
            Some(idempotency_key),
        )
        .await
    }

    pub async fn checkout_session(&self, id: &str) -> Result<CheckoutSession, ProviderError> {
        self.send(
            Endpoint::CheckoutSessionsRetrieve,
            Method::GET,
            &format!("/v1/checkout/sessions/{id}"),
            vec![],
            None,
        )
        .await
    }

    /// Creates a payment without confirming it: no money moves yet.
    pub async fn create_payment_intent(
        &self,
        payment: &NewPayment<'_>,
    ) -> Result<PaymentIntent, ProviderError> {
        let mut form = vec![
            ("amount".to_owned(), payment.amount_cents.to_string()),
            ("currency".to_owned(), payment.currency.to_owned()),
            ("customer".to_owned(), payment.customer.to_owned()),
            (
                "payment_method".to_owned(),
                payment.payment_method.to_owned(),
            ),
            ("payment_method_types[]".to_owned(), "card".to_owned()),
            ("confirm".to_owned(), "false".to_owned()),
        ];
        if payment.save_for_off_session {
            form.push(("setup_future_usage".to_owned(), "off_session".to_owned()));
        }
        form.extend(
            payment
                .metadata
                .iter()
                .map(|(k, v)| (format!("metadata[{k}]"), v.clone())),
        );
        self.send(
            Endpoint::PaymentIntentsCreate,
            Method::POST,
            "/v1/payment_intents",
            form,
            Some(payment.idempotency_key),
        )
        .await
    }

    /// Confirms a created payment with `payment_method`: this is what moves the money.
    /// The card is named every time, because Stripe takes it off a payment that failed,
    /// and a payment declined off-session is confirmed again with the customer there.
    pub async fn confirm_payment_intent(
        &self,
        id: &str,
        payment_method: &str,
        presence: Presence<'_>,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, ProviderError> {
        let mut form = vec![("payment_method".to_owned(), payment_method.to_owned())];
        match presence {
            Presence::OffSession => form.push(("off_session".to_owned(), "true".to_owned())),
            // Without a return URL, Stripe leaves the next action to Stripe.js
            // (`use_stripe_sdk`) on the integrator's own page.
            Presence::OnSession { return_url: "" } => {}
            Presence::OnSession { return_url } => {
                form.push(("return_url".to_owned(), return_url.to_owned()));
            }
        }
        self.send(
            Endpoint::PaymentIntentsConfirm,
            Method::POST,
            &format!("/v1/payment_intents/{id}/confirm"),
            form,
            Some(idempotency_key),
        )
        .await
    }

    pub async fn payment_intent(&self, id: &str) -> Result<PaymentIntent, ProviderError> {
        self.send(
            Endpoint::PaymentIntentsRetrieve,
            Method::GET,
            &format!("/v1/payment_intents/{id}"),
            vec![],
            None,
        )
        .await
    }

    pub async fn charge(&self, id: &str) -> Result<Charge, ProviderError> {
        self.send(
            Endpoint::ChargesRetrieve,
            Method::GET,
            &format!("/v1/charges/{id}"),
            vec![],
            None,
        )
        .await
    }

    pub async fn dispute(&self, id: &str) -> Result<Dispute, ProviderError> {
        self.send(
            Endpoint::DisputesRetrieve,
            Method::GET,
            &format!("/v1/disputes/{id}"),
            vec![],
            None,
        )
        .await
    }

    /// The first of the customer's payments created at or after `created_gte` (Unix
    /// seconds), newest first, that `wanted` picks: how a payment is found again when its
    /// id was never stored. Pages through the whole list if need be.
    pub async fn find_payment_intent(
        &self,
        customer: &str,
        created_gte: i64,
        wanted: impl Fn(&PaymentIntent) -> bool,
    ) -> Result<Option<PaymentIntent>, ProviderError> {
        let mut starting_after: Option<String> = None;
        loop {
            let page = self
                .list_payment_intents(Some(customer), created_gte, starting_after.as_deref())
                .await?;
            let last = page.data.last().map(|pi| pi.id.clone());
            if let Some(found) = page.data.into_iter().find(|pi| wanted(pi)) {
                return Ok(Some(found));
            }
            match last {
                Some(last) if page.has_more => starting_after = Some(last),
                _ => return Ok(None),
            }
        }
    }

    /// A page of 100 payments (of `customer`, or of every customer) created at or after
    /// `created_gte` (Unix seconds), newest first, after `starting_after`.
    pub async fn list_payment_intents(
        &self,
        customer: Option<&str>,
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<List<PaymentIntent>, ProviderError> {
        let mut query = vec![
            ("created[gte]".to_owned(), created_gte.to_string()),
            ("limit".to_owned(), "100".to_owned()),
        ];
        if let Some(customer) = customer {
            query.push(("customer".to_owned(), customer.to_owned()));
        }
        if let Some(last) = starting_after {
            query.push(("starting_after".to_owned(), last.to_owned()));
        }
        self.send(
            Endpoint::PaymentIntentsList,
            Method::GET,
            "/v1/payment_intents",
            query,
            None,
        )
        .await
    }

    /// A page of the provider's events of `types` created at or after `created_gte`
    /// (Unix seconds), newest first, after `starting_after`.
    pub async fn list_events(
        &self,
        types: &[&str],
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<List<Event>, ProviderError> {
        let mut query: Vec<(String, String)> = types
            .iter()
            .map(|kind| ("types[]".to_owned(), (*kind).to_owned()))
            .collect();
        query.push(("created[gte]".to_owned(), created_gte.to_string()));
        query.push(("limit".to_owned(), "100".to_owned()));
        if let Some(last) = starting_after {
            query.push(("starting_after".to_owned(), last.to_owned()));
        }
        self.send(Endpoint::EventsList, Method::GET, "/v1/events", query, None)
            .await
    }

    pub async fn cancel_payment_intent(
        &self,
        id: &str,
        idempotency_key: &str,
    ) -> Result<PaymentIntent, ProviderError> {
        self.send(
            Endpoint::PaymentIntentsCancel,
            Method::POST,
            &format!("/v1/payment_intents/{id}/cancel"),
            vec![],
            Some(idempotency_key),
        )
        .await
    }

    /// Sends a request, retrying ambiguous answers with the same idempotency key.
    async fn send<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        params: Vec<(String, String)>,
        idempotency_key: Option<&str>,
    ) -> Result<T, ProviderError> {
        let mut retry = 0;
        loop {
            match self
                .try_once(endpoint, &method, path, &params, idempotency_key)
                .await
            {
                Try::Done(result) => return result,
                Try::Ambiguous(reason) if retry >= self.max_retries => {
                    tracing::warn!(endpoint = endpoint.as_str(), path, %reason, "provider outcome unknown after retries");
                    return Err(ProviderError::Unknown { reason });
                }
                Try::Ambiguous(reason) => {
                    retry += 1;
                    let delay = retry_delay(
                        retry,
                        self.retry_base,
                        self.retry_max,
                        rand::random::<f64>(),
                    );
                    tracing::info!(endpoint = endpoint.as_str(), path, %reason, retry, delay_ms = delay.as_millis() as u64, "retrying provider call with the same key");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One try, counted and timed by endpoint and outcome.
    async fn try_once<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: &Method,
        path: &str,
        params: &[(String, String)],
        idempotency_key: Option<&str>,
    ) -> Try<T> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(self.secret_key.expose_secret())
            .header("Stripe-Version", &self.api_version);
        request = if *method == Method::GET {
            request.query(params)
        } else {
            request.form(params)
        };
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(budget) = &self.budget {
            budget.wait_turn(endpoint).await;
        }
        let started = Instant::now();
        let answered = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                let should_retry = should_retry(&headers);
                let body = response.bytes().await;
                if let Ok(body) = &body
                    && status == StatusCode::TOO_MANY_REQUESTS
                    && !is_lock_timeout(body)
                {
                    self.slow_down(endpoint, &headers).await;
                }
                body.map(|body| (status, should_retry, body))
            }
            Err(e) => Err(e),
        };
        let outcome = match &answered {
            Ok((status, ..)) => CallOutcome::of_status(*status),
            Err(e) => CallOutcome::of_transport(e),
        };
        crate::metrics::provider_call(endpoint, outcome, started.elapsed().as_secs_f64());
        match answered {
            Ok((status, should_retry, body)) => classify(status, should_retry, &body),
            Err(e) => Try::Ambiguous(transport_problem(&e)),
        }
    }

    /// A 429 that limits our rate: every replica holds back for what the provider asked.
    async fn slow_down(&self, endpoint: Endpoint, headers: &HeaderMap) {
        let Some(budget) = &self.budget else {
            return;
        };
        match budget.slow_down(headers).await {
            Ok(hold) => tracing::warn!(
                endpoint = endpoint.as_str(),
                hold_ms = hold.as_millis() as u64,
                replicas = budget.replicas(),
                "the provider limits our rate; every replica holds back"
            ),
            Err(error) => {
                tracing::warn!(endpoint = endpoint.as_str(), error = %format!("{error:#}"), "the provider limits our rate, and the hold could not be recorded");
            }
        }
    }
}

/// Stripe answers 429 `lock_timeout` when another request holds the same object: a
/// retry of that request, not a reason to slow every request down.
fn is_lock_timeout(body: &[u8]) -> bool {
    serde_json::from_slice::<ErrorEnvelope>(body)
        .is_ok_and(|e| e.error.code.as_deref() == Some("lock_timeout"))
}

/// The provider's explicit retry advice, if it gave any.
fn should_retry(headers: &HeaderMap) -> Option<bool> {
    match headers.get("stripe-should-retry")?.to_str().ok()? {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn transport_problem(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "request timed out".to_owned()
    } else if error.is_connect() {
        "could not connect".to_owned()
    } else {
        format!("connection failed: {error}")
    }
}

/// Maps an answer to a result or to "ask again".
fn classify<T: DeserializeOwned>(
    status: StatusCode,
    should_retry: Option<bool>,
    body: &[u8],
) -> Try<T> {
    if status.is_success() {
        return match serde_json::from_slice(body) {
            Ok(value) => Try::Done(Ok(value)),
            // It worked, but we cannot tell what it did.
            Err(e) => Try::Ambiguous(format!("unreadable success answer: {e}")),
        };
    }
    let ambiguous_status = status.is_server_error()
        || status == StatusCode::CONFLICT
        || status == StatusCode::TOO_MANY_REQUESTS;
    match should_retry {
        Some(true) => return Try::Ambiguous(format!("provider asked for a retry ({status})")),
        None if ambiguous_status => return Try::Ambiguous(format!("provider answered {status}")),
        Some(false) | None => {}
    }
    let error = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error);
    let message = error
        .as_ref()
        .and_then(|e| e.message.clone())
        .unwrap_or_else(|| format!("provider answered {status}"));
    let result = match status {
        StatusCode::PAYMENT_REQUIRED => {
            let error = error.unwrap_or_default();
            ProviderError::Declined {
                code: error
                    .most_specific_code()
                    .unwrap_or("card_declined")
                    .to_owned(),
                message,
                payment_intent: error.payment_intent,
            }
        }
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Unauthorized { message },
        StatusCode::NOT_FOUND => ProviderError::NotFound { message },
        _ if error
            .as_ref()
            .is_some_and(|e| e.kind.as_deref() == Some("idempotency_error")) =>
        {
            ProviderError::IdempotencyMismatch { message }
        }
        // The provider said not to retry something that would otherwise be ambiguous:
        // still nothing definite is known about its effect.
        _ if ambiguous_status => {
            return Try::Done(Err(ProviderError::Unknown {
                reason: format!("provider answered {status} and advised against retrying"),
            }));
        }
        _ => ProviderError::Rejected {
            status: status.as_u16(),
            code: error.and_then(|e| e.code),
            message,
        },
    };
    Try::Done(Err(result))
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use super::*;

    /// The value of `series` in the process's metrics, 0 if absent.
    fn metric(series: &str) -> f64 {
        crate::metrics::handle()
            .render()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Every try is counted by endpoint and outcome and timed; a 429 is counted apart too.
    #[tokio::test]
    async fn each_try_is_counted_by_endpoint_and_outcome_and_429s_apart() {
        // A provider that answers 429, then 503, then the customer.
        let tries = Arc::new(AtomicUsize::new(0));
        let provider = axum::Router::new().route(
            "/v1/customers/{id}",
            axum::routing::post({
                let tries = tries.clone();
                move || async move {
                    match tries.fetch_add(1, Ordering::SeqCst) {
                        0 => (StatusCode::TOO_MANY_REQUESTS, "{}".to_owned()),
                        1 => (StatusCode::SERVICE_UNAVAILABLE, "{}".to_owned()),
                        _ => (StatusCode::OK, r#"{"id":"cus_1"}"#.to_owned()),
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, provider).await });
        let mut config = crate::config::Config::defaults().payments;
        config.max_retries = 2;
        config.retry_base_ms = 1;
        config.retry_max_ms = 2;
        let client = ProviderClient::new(&config, &format!("http://{address}")).expect("client");
        let series = |outcome: &str| {
            format!(
                r#"topupd_provider_requests_total{{endpoint="customers.update",outcome="{outcome}"}}"#
            )
        };
        let rate_limited = r#"topupd_provider_rate_limited_total{endpoint="customers.update"}"#;
        let timed = r#"topupd_provider_request_duration_seconds_count{endpoint="customers.update",outcome="ok"}"#;
        let before: Vec<f64> = ["ok", "rate_limited", "server_error", "declined"]
            .iter()
            .map(|o| metric(&series(o)))
            .chain([metric(rate_limited), metric(timed)])
            .collect();

        let details = CustomerDetails {
            account_id: "acct_1",
            name: "Ada",
            email: "ada@example.com",
        };
        let customer = client
            .update_customer("cus_1", &details, "key")
            .await
            .expect("the third try is answered");
        assert_eq!(customer.id, "cus_1");

        let after: Vec<f64> = ["ok", "rate_limited", "server_error", "declined"]
            .iter()
            .map(|o| metric(&series(o)))
            .chain([metric(rate_limited), metric(timed)])
            .collect();
        let grew: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        assert_eq!(grew, [1.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
    }

    fn outcome(
        status: u16,
        should_retry: Option<bool>,
        body: &str,
    ) -> Result<Result<PaymentMethod, ProviderError>, String> {
        match classify::<PaymentMethod>(
            StatusCode::from_u16(status).expect("status"),
            should_retry,
            body.as_bytes(),
        ) {
            Try::Done(result) => Ok(result),
            Try::Ambiguous(reason) => Err(reason),
        }
    }

    #[test]
    fn ambiguous_answers_are_retried_and_never_declines() {
        for (status, advice) in [
            (500, None),
            (502, None),
            (503, None),
            (409, None),
            (429, None),
            (400, Some(true)),
            (402, Some(true)),
        ] {
            assert!(
                outcome(status, advice, "{}").is_err(),
                "{status} {advice:?} should be retried"
            );
        }
        assert!(
            outcome(200, None, "not json").is_err(),
            "an unreadable success is ambiguous"
        );
    }

    #[test]
    fn definite_answers_map_to_their_variant() {
        let declined = r#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","message":"Your card has insufficient funds."}}"#;
        assert!(
            matches!(outcome(402, None, declined), Ok(Err(ProviderError::Declined { code, .. })) if code == "insufficient_funds")
        );
        let expired =
            r#"{"error":{"type":"card_error","code":"expired_card","message":"expired"}}"#;
        assert!(
            matches!(outcome(402, None, expired), Ok(Err(ProviderError::Declined { code, .. })) if code == "expired_card")
        );
        let mismatch = r#"{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}"#;
        assert!(matches!(
            outcome(400, None, mismatch),
            Ok(Err(ProviderError::IdempotencyMismatch { .. }))
        ));
        assert!(matches!(
            outcome(404, None, "{}"),
            Ok(Err(ProviderError::NotFound { .. }))
        ));
        assert!(matches!(
            outcome(401, None, "{}"),
            Ok(Err(ProviderError::Unauthorized { .. }))
        ));
        assert!(matches!(
            outcome(
                400,
                None,
                r#"{"error":{"type":"invalid_request_error","code":"parameter_missing"}}"#
            ),
            Ok(Err(ProviderError::Rejected { status: 400, .. }))
        ));
        assert!(
            matches!(
                outcome(500, Some(false), "{}"),
                Ok(Err(ProviderError::Unknown { .. }))
            ),
            "no retry, still not a decline"
        );
        let ok = r#"{"id":"pm_1","card":{"brand":"visa","last4":"4242","exp_month":12,"exp_year":2034}}"#;
        assert!(matches!(outcome(200, None, ok), Ok(Ok(pm)) if pm.id == "pm_1"));
    }
}

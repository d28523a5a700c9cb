//! The stub provider: a small HTTP server speaking the same Stripe subset as the client,
//! with Stripe's test cards, idempotency keys, a 3-D Secure page, signed webhooks retried
//! until acknowledged, a list of every payment, and fault injection. Run on its own with
//! `topupd stub-provider`, or in-process by the default configuration.

mod charges;
pub mod dress;
mod rate_limit;
mod saving;
pub mod world;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use serde::Serialize;
use serde_json::json;
use tokio::{net::TcpListener, sync::Mutex};
use tokio_util::sync::CancellationToken;

use self::world::{Answer, Charge, Fault, FaultTarget, Faults, KeyUse, Outcome, World, error};
use super::{
    signature,
    types::{self, Event},
};
use crate::clock::Clock;

/// How long a delivery waits before its first retry; doubled up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Where and how the stub sends webhooks.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    pub url: String,
    pub secret: String,
}

/// A running stub; dropping it does not stop it, cancelling its token does.
#[derive(Clone)]
pub struct Stub {
    inner: Arc<Inner>,
}

struct Inner {
    world: Mutex<World>,
    deliveries: Mutex<BTreeMap<String, Delivery>>,
    clock: Arc<dyn Clock>,
    public_url: String,
    webhooks: Option<WebhookTarget>,
    http: reqwest::Client,
    cancel: CancellationToken,
    /// The `Stripe-Version` and `User-Agent` of the API requests received.
    callers: Mutex<Callers>,
    limiter: Mutex<rate_limit::Limiter>,
}

/// Who called the stub's API, as its requests said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Callers {
    /// `Stripe-Version` headers, `None` for a request without one.
    pub api_versions: BTreeSet<Option<String>>,
    pub user_agents: BTreeSet<Option<String>>,
}

/// How the delivery of one event went.
#[derive(Debug, Clone, Serialize)]
pub struct Delivery {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub object_id: Option<String>,
    pub attempts: u32,
    pub delivered: u32,
    pub dropped: bool,
}

impl Stub {
    /// Serves the stub on `listener` until `cancel` fires.
    pub async fn start(
        listener: TcpListener,
        clock: Arc<dyn Clock>,
        webhooks: Option<WebhookTarget>,
        faults: Faults,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let public_url = format!("http://{}", listener.local_addr()?);
        let world = World::new(faults);
        let stub = Self {
            inner: Arc::new(Inner {
                world: Mutex::new(world),
                deliveries: Mutex::new(BTreeMap::new()),
                clock,
                public_url,
                webhooks,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()?,
                cancel: cancel.clone(),
                callers: Mutex::new(Callers::default()),
                limiter: Mutex::new(rate_limit::Limiter::default()),
            }),
        };
        let router = routes(&stub)
            .layer(axum::middleware::from_fn_with_state(
                stub.clone(),
                versioned,
            ))
            .with_state(stub.clone());
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(?error, "stub provider stopped");
            }
        });
        Ok(stub)
    }

    pub fn base_url(&self) -> &str {
        &self.inner.public_url
    }

    pub async fn set_faults(&self, faults: Faults) {
        self.inner.world.lock().await.set_faults(faults);
    }

    pub async fn charges(&self) -> Vec<Charge> {
        self.inner.world.lock().await.charges()
    }

    /// Makes the saved card `id` decline with `decline_code` from now on.
    pub async fn decline_from_now(&self, id: &str, decline_code: &str) -> StatusCode {
        let outcome = self
            .inner
            .world
            .lock()
            .await
            .decline_from_now(id, decline_code);
        outcome.answer.0
    }

    /// Who has called the API so far.
    pub async fn callers(&self) -> Callers {
        self.inner.callers.lock().await.clone()
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms().div_euclid(1000)
    }

    /// Applies an operation under its idempotency key and the configured faults. Like a
    /// real provider, the stub finishes a request it has started even when the client
    /// hangs up (or dies) meanwhile: the work runs on a task of its own, so a key is never
    /// left in flight for good.
    async fn mutate(
        &self,
        headers: &HeaderMap,
        fingerprint: String,
        target: FaultTarget,
        op: impl FnOnce(&mut World, i64) -> Outcome + Send + 'static,
    ) -> Response {
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let stub = self.clone();
        let work =
            tokio::spawn(async move { stub.mutate_to_end(key, fingerprint, target, op).await });
        match work.await {
            Ok(response) => response,
            Err(error) => answer(error_answer_for(&error)),
        }
    }

    async fn mutate_to_end(
        &self,
        key: Option<String>,
        fingerprint: String,
        target: FaultTarget,
        op: impl FnOnce(&mut World, i64) -> Outcome,
    ) -> Response {
        let latency = {
            let mut world = self.inner.world.lock().await;
            if let Some(key) = &key {
                let now = self.now();
                if matches!(world.keys.get(key), Some(KeyUse::Done { at, .. }) if now - at >= world::KEY_LIFETIME_SECS)
                {
                    world.keys.remove(key);
                }
                match world.keys.get(key) {
                    Some(
                        KeyUse::InFlight { fingerprint: f } | KeyUse::Done { fingerprint: f, .. },
                    ) if *f != fingerprint => {
                        return answer(idempotency_error(
                            StatusCode::BAD_REQUEST,
                            "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                        ));
                    }
                    Some(KeyUse::InFlight { .. }) => {
                        return answer(idempotency_error(
                            StatusCode::CONFLICT,
                            "There is currently another in-progress request using this idempotency key.",
                        ));
                    }
                    Some(KeyUse::Done { .. }) => {}
                    None => {
                        world.keys.insert(
                            key.clone(),
                            KeyUse::InFlight {
                                fingerprint: fingerprint.clone(),
                            },
                        );
                    }
                }
            }
            world.faults().latency_ms
        };
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }

        let mut world = self.inner.world.lock().await;
        let refused = if world.strikes(Fault::FailBefore, target) {
            Some(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "injected_fault",
                "Injected failure before processing.",
            ))
        } else if world.strikes(Fault::Refuse, target) {
            Some(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "parameter_invalid",
                "Injected refusal of the request.",
            ))
        } else {
            None
        };
        if let Some(refused) = refused {
            if let Some(key) = &key
                && matches!(world.keys.get(key), Some(KeyUse::InFlight { .. }))
            {
                world.keys.remove(key);
            }
            return answer(refused);
        }
        let saved = key.as_ref().and_then(|k| match world.keys.get(k) {
            Some(KeyUse::Done { answer, .. }) => Some(answer.clone()),
            _ => None,
        });
        let (result, replayed) = match saved {
            Some(saved) => (saved, true),
            None => {
                let now = self.now();
                let outcome = op(&mut world, now);
                for event in outcome.events {
                    self.emit(&mut world, event);
                }
                // The work is done; a failure now is the answer, and Stripe replays the
                // first answer under a key, a 500 included.
                let answer = if world.strikes(Fault::FailAfter, target) {
                    error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "api_error",
                        "injected_fault",
                        "Injected failure after processing.",
                    )
                } else {
                    outcome.answer
                };
                if let Some(key) = &key {
                    world.keys.insert(
                        key.clone(),
                        KeyUse::Done {
                            fingerprint,
                            answer: answer.clone(),
                            at: now,
                        },
                    );
                }
                (answer, false)
            }
        };
        let hang = world
            .strikes(Fault::HangAfter, target)
            .then_some(world.faults().hang_ms);
        let faults = world.faults().clone();
        drop(world);
        if let Some(ms) = hang {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut response = answer(faults.omit(result));
        if replayed {
            response.headers_mut().insert(
                "idempotent-replayed",
                "true".parse().expect("static header value"),
            );
        }
        response
    }

    async fn read(&self, op: impl FnOnce(&World) -> Answer) -> Response {
        let latency = self.inner.world.lock().await.faults().latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        let mut world = self.inner.world.lock().await;
        // Only faults aimed at reads strike them: `All` means every POST.
        if world.faults().target == FaultTarget::Read
            && world.strikes(Fault::FailBefore, FaultTarget::Read)
        {
            return answer(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "injected_fault",
                "Injected failure of a read.",
            ));
        }
        answer(world.faults().omit(op(&world)))
    }

    /// Sends an event as the webhook faults say: dropped, twice, or once.
    fn emit(&self, world: &mut World, event: Event) {
        let dropped = world.strikes(Fault::DropWebhook, FaultTarget::All);
        let copies = if world.duplicates_webhook() { 2 } else { 1 };
        self.dispatch(event, dropped, copies);
    }

    /// Queues an event for delivery in the background, unless dropped.
    fn dispatch(&self, event: Event, dropped: bool, copies: u32) {
        let Some(target) = self.inner.webhooks.clone() else {
            return;
        };
        let stub = self.clone();
        tokio::spawn(async move {
            let delivery = Delivery {
                event_id: event.id.clone(),
                kind: event.kind.clone(),
                object_id: event
                    .data
                    .object
                    .get("id")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                attempts: 0,
                delivered: 0,
                dropped,
            };
            stub.inner
                .deliveries
                .lock()
                .await
                .insert(event.id.clone(), delivery);
            if dropped {
                return;
            }
            for _ in 0..copies {
                stub.deliver(&event, &target).await;
            }
        });
    }

    /// Posts the event until the endpoint acknowledges it (2xx), signing each attempt.
    async fn deliver(&self, event: &Event, target: &WebhookTarget) {
        let body =
            serde_json::to_vec(&dress::dress(json!(event))).expect("events serialize to JSON");
        let mut delay = FIRST_RETRY_DELAY;
        loop {
            let signature = signature::sign(&target.secret, self.now(), &body);
            let sent = self
                .inner
                .http
                .post(&target.url)
                .header("content-type", "application/json")
                .header("stripe-signature", signature)
                .body(body.clone())
                .send()
                .await;
            let acknowledged = matches!(&sent, Ok(r) if r.status().is_success());
            if let Some(d) = self.inner.deliveries.lock().await.get_mut(&event.id) {
                d.attempts += 1;
                d.delivered += u32::from(acknowledged);
            }
            if acknowledged {
                return;
            }
            tokio::select! {
                () = self.inner.cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RETRY_DELAY);
        }
    }
}

/// The answer when a request's work failed to run to its end.
fn error_answer_for(failure: &tokio::task::JoinError) -> Answer {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "api_error",
        "stub_failure",
        &format!("The request failed: {failure}."),
    )
}

fn idempotency_error(status: StatusCode, message: &str) -> Answer {
    (
        status,
        json!({ "error": { "type": "idempotency_error", "message": message } }),
    )
}

/// An API answer, its objects in Stripe's whole field set.
fn answer((status, body): Answer) -> Response {
    (status, Json(dress::dress(body))).into_response()
}

/// Identifies a request by what it asks, to compare a replay with the first use of a key.
fn fingerprint(path: &str, form: &BTreeMap<String, String>) -> String {
    format!(
        "{path}?{}",
        serde_json::to_string(form).expect("a map serializes")
    )
}

fn form(pairs: Vec<(String, String)>) -> BTreeMap<String, String> {
    pairs.into_iter().collect()
}

/// Notes who calls the API, and answers, as Stripe does, with the API version the
/// request asked for (the stub's own when it asked for none).
async fn versioned(
    State(stub): State<Stub>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (version, agent) = {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        (header("stripe-version"), header("user-agent"))
    };
    let api = request.uri().path().starts_with("/v1/");
    if api {
        let mut callers = stub.inner.callers.lock().await;
        callers.api_versions.insert(version.clone());
        callers.user_agents.insert(agent);
    }
    let mut response = next.run(request).await;
    let answered = version.unwrap_or_else(|| crate::payments::API_VERSION.to_owned());
    if let Ok(value) = answered.parse() {
        response.headers_mut().insert("stripe-version", value);
    }
    response
}

fn routes(stub: &Stub) -> Router<Stub> {
    Router::new()
        .route("/v1/customers", post(create_customer))
        .route("/v1/customers/{id}", get(customer).post(update_customer))
        .route("/v1/events", get(list_events))
        .route("/v1/events/{id}", get(event))
        .route(
            "/v1/payment_methods/{id}",
            get(payment_method).post(update_payment_method),
        )
        .route("/v1/payment_methods/{id}/attach", post(attach))
        .route("/v1/payment_methods/{id}/detach", post(detach))
        .route("/v1/payment_intents", post(create_intent).get(list_intents))
        .route("/v1/payment_intents/{id}", get(payment_intent))
        .route("/v1/payment_intents/{id}/confirm", post(confirm))
        .route("/v1/payment_intents/{id}/cancel", post(cancel))
        .merge(saving::routes())
        .merge(charges::routes())
        .route_layer(axum::middleware::from_fn_with_state(
            stub.clone(),
            rate_limit::limited,
        ))
        .route("/_stub/authenticate/{id}", get(authentication_page))
        .route("/_stub/authenticate/{id}/{choice}", post(authenticate))
        .route(
            "/_stub/payment_methods/{id}/decline",
            post(decline_from_now),
        )
        .route("/_stub/payment_methods/{id}/renew", post(renew_card))
        .route("/_stub/payment_intents", get(all_intents))
        .route("/_stub/charges", get(charges))
        .route("/_stub/events", get(events))
        .route("/_stub/faults", get(faults).post(set_faults))
        .route("/_stub/rate_limited", get(rate_limited))
}

/// The 429s answered so far.
async fn rate_limited(State(stub): State<Stub>) -> Json<rate_limit::Limited> {
    Json(stub.inner.limiter.lock().await.limited())
}

/// The parameters each endpoint takes (besides `expand[]`, which every one takes); any
/// other is refused as Stripe refuses it.
const CUSTOMER_PARAMS: &[&str] = &["email", "name", "description", "phone", "metadata["];
const ATTACH_PARAMS: &[&str] = &["customer"];
const INTENT_PARAMS: &[&str] = &[
    "amount",
    "currency",
    "customer",
    "payment_method",
    "payment_method_types[",
    "confirm",
    "off_session",
    "return_url",
    "setup_future_usage",
    "description",
    "receipt_email",
    "statement_descriptor_suffix",
    "metadata[",
];
const CONFIRM_PARAMS: &[&str] = &[
    "payment_method",
    "off_session",
    "return_url",
    "setup_future_usage",
    "receipt_email",
];
const CANCEL_PARAMS: &[&str] = &["cancellation_reason"];
const UPDATE_METHOD_PARAMS: &[&str] = &["card[", "billing_details[", "metadata["];
const EVENT_LIST_PARAMS: &[&str] = &[
    "type",
    "types[]",
    "created[",
    "limit",
    "starting_after",
    "ending_before",
    "delivery_success",
];
const LIST_PARAMS: &[&str] = &[
    "customer",
    "created[",
    "limit",
    "starting_after",
    "ending_before",
];

/// The request's parameters, unless one of them is unknown to the endpoint.
fn parameters(
    pairs: Vec<(String, String)>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, Answer> {
    let mut form = form(pairs);
    form.retain(|name, _| !name.starts_with("expand["));
    match world::unknown_parameter(&form, allowed) {
        Some(refused) => Err(refused),
        None => Ok(form),
    }
}

impl Stub {
    /// A POST to the API: its parameters checked, then the operation applied under the
    /// request's idempotency key (a refused parameter, as at Stripe, saves no answer).
    async fn post(
        &self,
        headers: &HeaderMap,
        (path, pairs, allowed): (String, Vec<(String, String)>, &[&str]),
        target: FaultTarget,
        op: impl FnOnce(&mut World, &BTreeMap<String, String>, &str, i64) -> Outcome + Send + 'static,
    ) -> Response {
        let form = match parameters(pairs, allowed) {
            Ok(form) => form,
            Err(refused) => return answer(refused),
        };
        let print = fingerprint(&path, &form);
        let public_url = self.inner.public_url.clone();
        self.mutate(headers, print, target, move |w, now| {
            op(w, &form, &public_url, now)
        })
        .await
    }
}

async fn create_customer(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = ("customers".to_owned(), pairs, CUSTOMER_PARAMS);
    stub.post(&headers, request, FaultTarget::All, |w, form, _, _| {
        w.create_customer(form)
    })
    .await
}

async fn update_customer(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (format!("customers/{id}"), pairs, CUSTOMER_PARAMS);
    stub.post(
        &headers,
        request,
        FaultTarget::All,
        move |w, form, _, now| w.update_customer(&id, form, now),
    )
    .await
}

async fn list_events(
    State(stub): State<Stub>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    if let Some(refused) = world::unknown_parameter(&form(pairs.clone()), EVENT_LIST_PARAMS) {
        return answer(refused);
    }
    stub.read(|w| w.list_events(&pairs)).await
}

async fn event(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    stub.read(|w| w.retrieve_event(&id).answer).await
}

async fn customer(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    stub.read(|w| w.retrieve_customer(&id).answer).await
}

async fn payment_method(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    stub.read(|w| w.retrieve_payment_method(&id).answer).await
}

async fn attach(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (format!("attach/{id}"), pairs, ATTACH_PARAMS);
    stub.post(
        &headers,
        request,
        FaultTarget::All,
        move |w, form, _, now| w.attach(&id, form, now),
    )
    .await
}

async fn detach(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (format!("detach/{id}"), pairs, &[] as &[&str]);
    stub.post(&headers, request, FaultTarget::All, move |w, _, _, now| {
        w.detach(&id, now)
    })
    .await
}

async fn create_intent(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = ("payment_intents".to_owned(), pairs, INTENT_PARAMS);
    stub.post(
        &headers,
        request,
        FaultTarget::Create,
        |w, form, url, now| w.create_intent(form, url, now),
    )
    .await
}

async fn list_intents(
    State(stub): State<Stub>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let query = match parameters(pairs, LIST_PARAMS) {
        Ok(query) => query,
        Err(refused) => return answer(refused),
    };
    stub.read(|w| w.list_intents(&query)).await
}

async fn payment_intent(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    stub.read(|w| match w.intents.get(&id) {
        Some(intent) => (StatusCode::OK, json!(intent)),
        None => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "resource_missing",
            &format!("No such payment_intent: '{id}'"),
        ),
    })
    .await
}

async fn confirm(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (format!("confirm/{id}"), pairs, CONFIRM_PARAMS);
    stub.post(
        &headers,
        request,
        FaultTarget::Confirm,
        move |w, form, url, now| w.confirm(&id, form, url, now),
    )
    .await
}

async fn cancel(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (format!("cancel/{id}"), pairs, CANCEL_PARAMS);
    stub.post(
        &headers,
        request,
        FaultTarget::Cancel,
        move |w, _, _, now| w.cancel(&id, now),
    )
    .await
}

async fn update_payment_method(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (format!("payment_methods/{id}"), pairs, UPDATE_METHOD_PARAMS);
    stub.post(
        &headers,
        request,
        FaultTarget::All,
        move |w, form, _, now| w.update_payment_method(&id, form, now),
    )
    .await
}

/// The card network replaced a saved card: a new number ending in `last4` (the form's),
/// three more years.
async fn renew_card(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let last4 = form.get("last4").cloned().unwrap_or_else(|| "0000".into());
    let now = stub.now();
    let mut world = stub.inner.world.lock().await;
    let outcome = world.renew_card(&id, &last4, now);
    for event in outcome.events {
        stub.emit(&mut world, event);
    }
    answer(outcome.answer)
}

/// Makes a saved card decline from now on with the `decline_code` given.
async fn decline_from_now(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let code = form.get("decline_code").cloned().unwrap_or_default();
    let outcome = stub.inner.world.lock().await.decline_from_now(&id, &code);
    answer(outcome.answer)
}

/// What waits for the customer to authenticate: a payment or a card being saved.
struct Waiting {
    /// What the page asks the customer to confirm.
    what: String,
    status: String,
    return_url: Option<String>,
    /// What the way back carries, as Stripe's redirect does: the object's id and client
    /// secret, under the object's names.
    back: [(&'static str, String); 2],
}

fn waiting(world: &World, id: &str) -> Option<Waiting> {
    let return_url = |action: &Option<types::NextAction>| {
        action
            .as_ref()
            .and_then(|a| a.redirect_to_url.as_ref())
            .and_then(|r| r.return_url.clone())
    };
    if let Some(intent) = world.intents.get(id) {
        return Some(Waiting {
            what: format!(
                "your payment of {}",
                crate::domain::money::Cents(intent.amount)
            ),
            status: intent.status.clone(),
            return_url: return_url(&intent.next_action),
            back: [
                ("payment_intent", intent.id.clone()),
                (
                    "payment_intent_client_secret",
                    intent.client_secret.clone().unwrap_or_default(),
                ),
            ],
        });
    }
    let setup = world.setup_intents.get(id)?;
    Some(Waiting {
        what: "saving your card".to_owned(),
        status: setup.status.clone(),
        return_url: return_url(&setup.next_action),
        back: [
            ("setup_intent", setup.id.clone()),
            (
                "setup_intent_client_secret",
                setup.client_secret.clone().unwrap_or_default(),
            ),
        ],
    })
}

/// The customer's 3-D Secure page: complete or fail the authentication.
async fn authentication_page(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    let world = stub.inner.world.lock().await;
    let Some(waiting) = waiting(&world, &id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<p>No such payment.</p>".to_owned()),
        )
            .into_response();
    };
    Html(format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Confirm {what}</title></head><body>\
         <h1>Confirm {what}</h1><p>{id} is {status}.</p>\
         <form method=\"post\" action=\"/_stub/authenticate/{id}/complete\"><button>Complete authentication</button></form>\
         <form method=\"post\" action=\"/_stub/authenticate/{id}/fail\"><button>Fail authentication</button></form>\
         </body></html>",
        what = waiting.what,
        status = waiting.status
    ))
    .into_response()
}

async fn authenticate(
    State(stub): State<Stub>,
    Path((id, choice)): Path<(String, String)>,
) -> Response {
    let complete = match choice.as_str() {
        "complete" => true,
        "fail" => false,
        _ => {
            return answer(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "resource_missing",
                "choose complete or fail",
            ));
        }
    };
    let now = stub.now();
    let mut world = stub.inner.world.lock().await;
    let before = waiting(&world, &id);
    let outcome = world.authenticate(&id, complete, now);
    let (status, _) = outcome.answer;
    for event in outcome.events {
        stub.emit(&mut world, event);
    }
    drop(world);
    if status.is_client_error() && status != StatusCode::PAYMENT_REQUIRED {
        return Html("<p>This is not waiting for authentication.</p>").into_response();
    }
    let done = if complete {
        "Authentication complete."
    } else {
        "Authentication failed."
    };
    // As Stripe does, the customer goes back to the return URL with the object's id and
    // client secret (a page that refreshes, so that clients that follow no redirect
    // stay here).
    let back = before.and_then(|waiting| {
        let return_url = waiting.return_url?;
        let [(id_name, id), (secret_name, secret)] = waiting.back;
        let query = serde_urlencoded::to_string([
            (id_name, id.as_str()),
            (secret_name, secret.as_str()),
            (
                "redirect_status",
                if complete { "succeeded" } else { "failed" },
            ),
        ])
        .ok()?;
        let joiner = if return_url.contains('?') { '&' } else { '?' };
        Some(format!("{return_url}{joiner}{query}"))
    });
    let page = match back {
        Some(url) => {
            let url = crate::notices::templates::escape(&url);
            format!(
                "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={url}\">\
                 <title>{done}</title></head><body><p>{done} <a href=\"{url}\">Back to the merchant</a></p></body></html>"
            )
        }
        None => format!("<p>{done} You can close this page.</p>"),
    };
    Html(page).into_response()
}

async fn all_intents(State(stub): State<Stub>) -> Response {
    stub.read(|w| {
        let data = w.all_intents();
        (
            StatusCode::OK,
            json!({ "object": "list", "data": data, "has_more": false }),
        )
    })
    .await
}

async fn charges(State(stub): State<Stub>) -> Json<Vec<Charge>> {
    Json(stub.charges().await)
}

async fn events(State(stub): State<Stub>) -> Json<Vec<Delivery>> {
    Json(
        stub.inner
            .deliveries
            .lock()
            .await
            .values()
            .cloned()
            .collect(),
    )
}

async fn faults(State(stub): State<Stub>) -> Json<Faults> {
    Json(stub.inner.world.lock().await.faults().clone())
}

async fn set_faults(State(stub): State<Stub>, Json(faults): Json<Faults>) -> Response {
    if let Err(problem) = faults.validate() {
        return answer(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "parameter_invalid",
            &problem,
        ));
    }
    stub.set_faults(faults.clone()).await;
    Json(faults).into_response()
}

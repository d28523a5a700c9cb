//! The stub provider's memory: customers, cards, payments, idempotency keys and the events
//! it has to deliver. Every payment it ever created stays listed, so tests can count
//! charges from the provider's side.

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod charges;
mod saving;

use crate::payments::types::{
    Card, Charge as ProviderCharge, CheckoutSession, Customer, Dispute, ErrorBody, Event,
    EventData, NextAction, PaymentIntent, PaymentMethod, RedirectToUrl, Refund, SetupIntent,
};

/// What a test card does when charged, after Stripe's test payment methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Succeed,
    Decline {
        code: &'static str,
        decline_code: &'static str,
    },
    /// 3-D Secure on every payment: off-session it is declined `authentication_required`,
    /// on-session the customer is asked to authenticate.
    RequireAuthentication,
    /// Pays, then the payer disputes the charge with their bank.
    SucceedThenDispute,
}

impl Behaviour {
    /// The decline a bank gives with `decline_code` (Stripe's `code` for it, then it).
    pub fn declining(decline_code: &str) -> Option<Self> {
        let (code, decline_code) = match decline_code {
            "generic_decline" => ("card_declined", "generic_decline"),
            "insufficient_funds" => ("card_declined", "insufficient_funds"),
            "lost_card" => ("card_declined", "lost_card"),
            "stolen_card" => ("card_declined", "stolen_card"),
            "fraudulent" => ("card_declined", "fraudulent"),
            "expired_card" => ("expired_card", "expired_card"),
            "incorrect_cvc" => ("incorrect_cvc", "incorrect_cvc"),
            _ => return None,
        };
        Some(Self::Decline { code, decline_code })
    }
}

/// One of Stripe's test payment methods.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCard {
    pub behaviour: Behaviour,
    pub card: Card,
    /// Stripe checks a card when it is attached to a customer: the declining cards are
    /// refused then, and only `pm_card_chargeCustomerFail` attaches and declines later.
    pub refused_at_attach: bool,
}

/// Stripe's test payment method ids this stub knows, with their card and behaviour.
pub fn test_card(id: &str) -> Option<TestCard> {
    let decline = |code| Behaviour::declining(code).expect("a known decline code");
    let (behaviour, brand, last4, refused_at_attach) = match id {
        "pm_card_visa" => (Behaviour::Succeed, "visa", "4242", false),
        "pm_card_mastercard" => (Behaviour::Succeed, "mastercard", "4444", false),
        "pm_card_chargeCustomerFail" => (decline("generic_decline"), "visa", "0341", false),
        "pm_card_chargeDeclined" => (decline("generic_decline"), "visa", "0002", true),
        "pm_card_chargeDeclinedInsufficientFunds" => {
            (decline("insufficient_funds"), "visa", "9995", true)
        }
        "pm_card_chargeDeclinedExpiredCard" => (decline("expired_card"), "visa", "0069", true),
        "pm_card_chargeDeclinedFraudulent" => (decline("fraudulent"), "visa", "0019", true),
        "pm_card_authenticationRequired" => {
            (Behaviour::RequireAuthentication, "visa", "3184", false)
        }
        "pm_card_createDispute" => (Behaviour::SucceedThenDispute, "visa", "0259", false),
        _ => return None,
    };
    let card = Card {
        brand: brand.to_owned(),
        last4: last4.to_owned(),
        exp_month: 12,
        exp_year: 2034,
    };
    Some(TestCard {
        behaviour,
        card,
        refused_at_attach,
    })
}

/// Misbehaviour to inject, set by flags or `POST /_stub/faults`. Counts apply to the next
/// matching requests (or events) and run down as they are used; rates (0 to 1) strike
/// each matching request (or event) with that probability, drawn from `seed`, for as
/// long as they are set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every API request.
    pub latency_ms: u64,
    /// API requests a second the stub takes, all together, as Stripe limits them (25 in
    /// a sandbox, 100 in live mode); over it, 429. 0: no limit.
    pub rate_limit_per_sec: u32,
    /// API requests a second the stub takes to one endpoint (25 at Stripe). 0: no limit.
    pub endpoint_rate_limit_per_sec: u32,
    /// Which requests the counted faults hit.
    pub target: FaultTarget,
    /// Answer 500 before doing anything (nothing recorded).
    pub fail_before: u32,
    /// Answer 400 `parameter_invalid` before doing anything, as a provider refusing the
    /// request outright does (nothing recorded, so a retry under the key is tried anew).
    pub refuse: u32,
    /// Do the work, record it under the idempotency key, then answer 500.
    pub fail_after: u32,
    /// Do the work and record it, then answer only after `hang_ms` (past the client's
    /// timeout).
    pub hang_after: u32,
    pub hang_ms: u64,
    /// Events never delivered.
    pub drop_webhooks: u32,
    /// Events delivered twice.
    pub duplicate_webhooks: u32,
    /// Seeds the draws of the rates below, so a fault drill can be replayed (as far as the
    /// requests arrive in the same order).
    pub seed: u64,
    /// Share of matching requests failed as `fail_before` does.
    pub fail_before_rate: f64,
    /// Share of matching requests failed as `fail_after` does.
    pub fail_after_rate: f64,
    /// Share of matching requests that hang as `hang_after` does.
    pub hang_after_rate: f64,
    /// Share of events never delivered.
    pub drop_webhook_rate: f64,
    /// Fields left out of every object the API answers with, as a provider on another API
    /// version (or a broken proxy) might.
    pub omit_fields: Vec<String>,
}

impl Faults {
    /// The answer's object without the fields `omit_fields` names.
    pub fn omit(&self, (status, mut body): (StatusCode, Value)) -> (StatusCode, Value) {
        if let Some(object) = body.as_object_mut() {
            for field in &self.omit_fields {
                object.remove(field);
            }
        }
        (status, body)
    }

    /// Rejects rates that are not probabilities.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("fail_before_rate", self.fail_before_rate),
            ("fail_after_rate", self.fail_after_rate),
            ("hang_after_rate", self.hang_after_rate),
            ("drop_webhook_rate", self.drop_webhook_rate),
        ];
        match rates.iter().find(|(_, rate)| !(0.0..=1.0).contains(rate)) {
            Some((name, rate)) => Err(format!("{name} must be between 0 and 1, not {rate}")),
            None => Ok(()),
        }
    }
}

/// A fault that strikes single requests or events, by count or by rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    FailBefore,
    Refuse,
    FailAfter,
    HangAfter,
    DropWebhook,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultTarget {
    /// Creating payments.
    Create,
    /// Confirming payments.
    Confirm,
    /// Cancelling payments.
    Cancel,
    /// Every POST.
    #[default]
    All,
    /// Reading objects (GET): `fail_before` answers them 500, as a provider outage would.
    Read,
}

/// An API answer: status and JSON body.
pub type Answer = (StatusCode, Value);

/// How long Stripe keeps an idempotency key's first answer, in seconds.
pub const KEY_LIFETIME_SECS: i64 = 24 * 3600;

#[derive(Debug, Clone)]
pub enum KeyUse {
    InFlight {
        fingerprint: String,
    },
    /// The first answer given under the key (a 500 included), replayed until `at` plus
    /// [`KEY_LIFETIME_SECS`].
    Done {
        fingerprint: String,
        answer: Answer,
        at: i64,
    },
}

/// A captured payment, from the stub's own ledger, with what was taken back of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub payment_intent: String,
    pub amount_received: i64,
    pub customer: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The charge that took the money.
    #[serde(default)]
    pub charge_id: Option<String>,
    #[serde(default)]
    pub amount_refunded: i64,
    #[serde(default)]
    pub disputes: Vec<ChargeDispute>,
}

/// A dispute of a captured payment's charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeDispute {
    pub id: String,
    pub amount: i64,
    pub status: String,
}

#[derive(Debug)]
pub struct World {
    pub customers: BTreeMap<String, Customer>,
    pub methods: BTreeMap<String, (PaymentMethod, Behaviour)>,
    pub intents: BTreeMap<String, PaymentIntent>,
    pub setup_intents: BTreeMap<String, SetupIntent>,
    /// Checkout Sessions, with the metadata their setup will carry.
    pub checkout_sessions: BTreeMap<String, (CheckoutSession, BTreeMap<String, String>)>,
    pub events: BTreeMap<String, Event>,
    /// Every try to take a payment's money, by charge id.
    pub charges: BTreeMap<String, ProviderCharge>,
    pub refunds: BTreeMap<String, Refund>,
    pub disputes: BTreeMap<String, Dispute>,
    pub keys: HashMap<String, KeyUse>,
    faults: Faults,
    /// Draws the rated faults; seeded from `faults.seed` whenever faults are set.
    fault_draws: StdRng,
    /// Makes this run's ids unlike any earlier run's: the stub keeps nothing across
    /// restarts, but the databases of its clients do.
    instance: String,
    next_id: u64,
}

/// The stub's answer to a request that changes something, and the events it causes.
pub struct Outcome {
    pub answer: Answer,
    pub events: Vec<Event>,
}

impl Outcome {
    fn ok(value: impl Serialize) -> Self {
        Self::answer((StatusCode::OK, json!(value)))
    }

    fn answer(answer: Answer) -> Self {
        Self {
            answer,
            events: Vec::new(),
        }
    }

    fn with_event(mut self, event: Event) -> Self {
        self.events.push(event);
        self
    }
}

pub fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Answer {
    (
        status,
        json!({ "error": { "type": kind, "code": code, "message": message } }),
    )
}

fn missing(what: &str, id: &str) -> Outcome {
    Outcome::answer(error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "resource_missing",
        &format!("No such {what}: '{id}'"),
    ))
}

fn invalid(message: &str) -> Outcome {
    Outcome::answer(error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "parameter_invalid",
        message,
    ))
}

/// A card refused when it is attached: 402 with the decline, and nothing saved.
fn declined(code: &str, decline_code: &str) -> Outcome {
    let mut answer = error(
        StatusCode::PAYMENT_REQUIRED,
        "card_error",
        code,
        &decline_message(decline_code),
    );
    answer.1["error"]["decline_code"] = json!(decline_code);
    Outcome::answer(answer)
}

fn decline_message(decline_code: &str) -> String {
    match decline_code {
        "insufficient_funds" => "Your card has insufficient funds.".to_owned(),
        "expired_card" => "Your card has expired.".to_owned(),
        "authentication_required" => {
            "Your card was declined. This transaction requires authentication.".to_owned()
        }
        _ => "Your card was declined.".to_owned(),
    }
}

/// Stripe refuses a parameter it does not know rather than ignoring it. `allowed` names
/// the parameters of the endpoint; one ending in `[` admits every key under it.
pub fn unknown_parameter(form: &BTreeMap<String, String>, allowed: &[&str]) -> Option<Answer> {
    let known = |name: &str| {
        allowed.iter().any(|a| {
            if a.ends_with('[') {
                name.starts_with(a)
            } else {
                name == *a
            }
        })
    };
    let name = form.keys().find(|name| !known(name))?;
    let mut answer = error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "parameter_unknown",
        &format!("Received unknown parameter: {name}"),
    );
    answer.1["error"]["param"] = json!(name);
    Some(answer)
}

fn unexpected_state(intent: &PaymentIntent, action: &str) -> Outcome {
    unexpected_status("payment_intent", &intent.status, json!(intent), action)
}

/// The 400 for `object` (a `kind`) in a status that does not allow `action`, with the
/// object, as Stripe answers it.
fn unexpected_status(kind: &str, status: &str, object: Value, action: &str) -> Outcome {
    let name = match kind {
        "payment_intent" => "PaymentIntent",
        _ => "SetupIntent",
    };
    let mut answer = error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        &format!("{kind}_unexpected_state"),
        &format!("You cannot {action} this {name} because it has a status of {status}."),
    );
    answer.1["error"][kind] = object;
    Outcome::answer(answer)
}

impl World {
    pub fn new(faults: Faults) -> Self {
        Self {
            fault_draws: StdRng::seed_from_u64(faults.seed),
            faults,
            instance: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            customers: BTreeMap::new(),
            methods: BTreeMap::new(),
            intents: BTreeMap::new(),
            setup_intents: BTreeMap::new(),
            checkout_sessions: BTreeMap::new(),
            events: BTreeMap::new(),
            charges: BTreeMap::new(),
            refunds: BTreeMap::new(),
            disputes: BTreeMap::new(),
            keys: HashMap::new(),
            next_id: 0,
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Replaces the faults and restarts the draws from their seed.
    pub fn set_faults(&mut self, faults: Faults) {
        self.fault_draws = StdRng::seed_from_u64(faults.seed);
        self.faults = faults;
    }

    /// Whether `fault` strikes the request (to `request`) or event at hand: a count left
    /// is used up first, then the rate is drawn. Webhook faults strike whatever the target.
    pub fn strikes(&mut self, fault: Fault, request: FaultTarget) -> bool {
        let faults = &mut self.faults;
        let (count, rate) = match fault {
            Fault::FailBefore => (&mut faults.fail_before, faults.fail_before_rate),
            Fault::Refuse => (&mut faults.refuse, 0.0),
            Fault::FailAfter => (&mut faults.fail_after, faults.fail_after_rate),
            Fault::HangAfter => (&mut faults.hang_after, faults.hang_after_rate),
            Fault::DropWebhook => (&mut faults.drop_webhooks, faults.drop_webhook_rate),
        };
        let aimed = fault == Fault::DropWebhook
            || faults.target == FaultTarget::All
            || faults.target == request;
        if !aimed {
            return false;
        }
        take(count) || (rate > 0.0 && self.fault_draws.random::<f64>() < rate)
    }

    /// Whether the event at hand is delivered twice (uses one duplication).
    pub fn duplicates_webhook(&mut self) -> bool {
        take(&mut self.faults.duplicate_webhooks)
    }

    fn new_id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{}{:06}", self.instance, self.next_id)
    }

    /// The stub forgets its customers when it stops; one named by a client that
    /// remembers it is taken as known again.
    fn recall_customer(&mut self, id: &str) -> bool {
        if !self.customers.contains_key(id) && id.starts_with("cus_") {
            let customer = Customer {
                id: id.to_owned(),
                name: None,
                email: None,
                metadata: BTreeMap::new(),
            };
            self.customers.insert(id.to_owned(), customer);
        }
        self.customers.contains_key(id)
    }

    /// A new event, kept so that it can be retrieved as Stripe's are.
    fn event(&mut self, kind: &str, object: Value, now: i64) -> Event {
        let event = Event {
            id: self.new_id("evt"),
            kind: kind.to_owned(),
            created: now,
            api_version: Some(crate::payments::API_VERSION.to_owned()),
            data: EventData { object },
        };
        self.events.insert(event.id.clone(), event.clone());
        event
    }

    /// A page of events, newest first, as Stripe lists them: by `type` or `types[]` (the
    /// form gives each `types[]` as its own pair), `created[gte]`, `limit` (1 to 100, 10 by
    /// default) after `starting_after`.
    pub fn list_events(&self, query: &[(String, String)]) -> Answer {
        let one = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        let limit = match one("limit").map(|l| l.parse::<usize>()) {
            None => 10,
            Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
            Some(_) => return invalid("limit must be an integer between 1 and 100.").answer,
        };
        let types: Vec<&String> = query
            .iter()
            .filter(|(k, _)| k == "types[]" || k == "type")
            .map(|(_, v)| v)
            .collect();
        let created_gte = one("created[gte]")
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN);
        let mut events: Vec<&Event> = self
            .events
            .values()
            .filter(|e| types.is_empty() || types.contains(&&e.kind))
            .filter(|e| e.created >= created_gte)
            .collect();
        events.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        let mut after: Vec<&Event> = match one("starting_after") {
            Some(last) if !self.events.contains_key(last) => return missing("event", last).answer,
            Some(last) => events
                .into_iter()
                .skip_while(|e| e.id != *last)
                .skip(1)
                .collect(),
            None => events,
        };
        let has_more = after.len() > limit;
        after.truncate(limit);
        (
            StatusCode::OK,
            json!({ "object": "list", "url": "/v1/events", "data": after, "has_more": has_more }),
        )
    }

    pub fn retrieve_event(&self, id: &str) -> Outcome {
        match self.events.get(id) {
            Some(event) => Outcome::ok(event),
            None => missing("event", id),
        }
    }

    pub fn create_customer(&mut self, form: &BTreeMap<String, String>) -> Outcome {
        let customer = Customer {
            id: self.new_id("cus"),
            name: form.get("name").cloned(),
            email: form.get("email").cloned(),
            metadata: metadata(form),
        };
        self.customers.insert(customer.id.clone(), customer.clone());
        Outcome::ok(customer)
    }

    /// Changes what the form gives of the customer's name, email and metadata.
    pub fn update_customer(
        &mut self,
        id: &str,
        form: &BTreeMap<String, String>,
        now: i64,
    ) -> Outcome {
        if !self.recall_customer(id) {
            return missing("customer", id);
        }
        let customer = self.customers.get_mut(id).expect("recalled above");
        if let Some(name) = form.get("name") {
            customer.name = Some(name.clone());
        }
        if let Some(email) = form.get("email") {
            customer.email = Some(email.clone());
        }
        customer.metadata.extend(metadata(form));
        let customer = customer.clone();
        let event = self.event("customer.updated", json!(customer), now);
        Outcome::ok(customer).with_event(event)
    }

    pub fn retrieve_customer(&self, id: &str) -> Outcome {
        match self.customers.get(id) {
            Some(customer) => Outcome::ok(customer),
            None => missing("customer", id),
        }
    }

    /// A stored card, or a test card as it looks before it is attached. Attached test
    /// cards are named `<test card id>__<unique suffix>`, so they keep working after the
    /// stub restarts.
    pub fn payment_method(&self, id: &str) -> Option<(PaymentMethod, Behaviour)> {
        if let Some(stored) = self.methods.get(id) {
            return Some(stored.clone());
        }
        let test_id = id.split_once("__").map_or(id, |(test_id, _)| test_id);
        test_card(test_id).map(|test| {
            let method = PaymentMethod {
                id: id.to_owned(),
                customer: None,
                card: Some(test.card),
            };
            (method, test.behaviour)
        })
    }

    pub fn retrieve_payment_method(&self, id: &str) -> Outcome {
        match self.payment_method(id) {
            Some((method, _)) => Outcome::ok(method),
            None => missing("payment_method", id),
        }
    }

    /// Attaching a test card makes a new card of the customer's, as Stripe does.
    pub fn attach(&mut self, id: &str, form: &BTreeMap<String, String>, now: i64) -> Outcome {
        let Some(customer) = form.get("customer").cloned() else {
            return invalid("Missing required param: customer.");
        };
        if !self.recall_customer(&customer) {
            return missing("customer", &customer);
        }
        let Some((mut method, behaviour)) = self.payment_method(id) else {
            return missing("payment_method", id);
        };
        if let Some(test) = test_card(id) {
            if test.refused_at_attach
                && let Behaviour::Decline { code, decline_code } = behaviour
            {
                return declined(code, decline_code);
            }
            method.id = format!("{id}__{}", self.new_id("pm"));
        } else if method
            .customer
            .as_ref()
            .is_some_and(|owner| *owner != customer)
        {
            return invalid(
                "The payment method you provided has already been attached to a customer.",
            );
        }
        method.customer = Some(customer);
        self.methods
            .insert(method.id.clone(), (method.clone(), behaviour));
        let event = self.event("payment_method.attached", json!(method), now);
        Outcome::ok(method).with_event(event)
    }

    /// Makes a saved card decline with `decline_code` from now on, as a card whose funds
    /// ran out or that was reported lost does (Stripe's test mode has no such card, so the
    /// stub's tests set it).
    pub fn decline_from_now(&mut self, id: &str, decline_code: &str) -> Outcome {
        let Some(declining) = Behaviour::declining(decline_code) else {
            return invalid(&format!("Unknown decline_code: {decline_code}."));
        };
        match self.methods.get_mut(id) {
            Some((method, behaviour)) => {
                *behaviour = declining;
                Outcome::ok(method.clone())
            }
            None => missing("payment_method", id),
        }
    }

    pub fn detach(&mut self, id: &str, now: i64) -> Outcome {
        let Some((method, _)) = self.methods.get_mut(id) else {
            return missing("payment_method", id);
        };
        method.customer = None;
        let method = method.clone();
        let event = self.event("payment_method.detached", json!(method), now);
        Outcome::ok(method).with_event(event)
    }

    /// Changes a saved card's expiry (`card[exp_month]`, `card[exp_year]`), as Stripe's
    /// update of a payment method does.
    pub fn update_payment_method(
        &mut self,
        id: &str,
        form: &BTreeMap<String, String>,
        now: i64,
    ) -> Outcome {
        let field = |name: &str| form.get(name).map(|v| v.parse::<i64>());
        let (month, year) = (field("card[exp_month]"), field("card[exp_year]"));
        if matches!(month, Some(Err(_)) | Some(Ok(13..)) | Some(Ok(..=0)))
            || matches!(year, Some(Err(_)))
        {
            return invalid("card[exp_month] and card[exp_year] must be a month and a year.");
        }
        self.change_card(id, "payment_method.updated", now, |card| {
            if let Some(Ok(month)) = month {
                card.exp_month = month;
            }
            if let Some(Ok(year)) = year {
                card.exp_year = year;
            }
        })
    }

    /// The card network replaced a saved card (a new expiry and number), as Stripe's card
    /// account updater reports with `payment_method.automatically_updated`.
    pub fn renew_card(&mut self, id: &str, last4: &str, now: i64) -> Outcome {
        let last4 = last4.to_owned();
        self.change_card(id, "payment_method.automatically_updated", now, |card| {
            card.exp_year += 3;
            card.last4 = last4;
        })
    }

    fn change_card(
        &mut self,
        id: &str,
        event: &str,
        now: i64,
        change: impl FnOnce(&mut Card),
    ) -> Outcome {
        let Some((method, _)) = self.methods.get_mut(id) else {
            return missing("payment_method", id);
        };
        if let Some(card) = method.card.as_mut() {
            change(card);
        }
        let method = method.clone();
        let event = self.event(event, json!(method), now);
        Outcome::ok(method).with_event(event)
    }

    pub fn create_intent(
        &mut self,
        form: &BTreeMap<String, String>,
        public_url: &str,
        now: i64,
    ) -> Outcome {
        let Some(amount) = form
            .get("amount")
            .and_then(|a| a.parse::<i64>().ok())
            .filter(|a| *a > 0)
        else {
            return invalid("amount must be a positive integer in the smallest currency unit.");
        };
        let Some(currency) = form.get("currency").cloned() else {
            return invalid("Missing required param: currency.");
        };
        let customer = form.get("customer").cloned();
        if let Some(customer) = &customer
            && !self.recall_customer(customer)
        {
            return missing("customer", customer);
        }
        let payment_method = form.get("payment_method").cloned();
        if let Some(pm) = &payment_method
            && let Some(refused) = self.unusable_method(pm, customer.as_deref())
        {
            return refused;
        }
        let id = self.new_id("pi");
        let intent = PaymentIntent {
            client_secret: Some(format!("{id}_secret_{}", uuid::Uuid::new_v4().simple())),
            id,
            amount,
            amount_received: Some(0),
            currency,
            customer,
            status: if payment_method.is_some() {
                "requires_confirmation"
            } else {
                "requires_payment_method"
            }
            .to_owned(),
            payment_method,
            metadata: metadata(form),
            next_action: None,
            last_payment_error: None,
            latest_charge: None,
            setup_future_usage: form.get("setup_future_usage").cloned(),
            created: now,
        };
        self.intents.insert(intent.id.clone(), intent.clone());
        let event = self.event("payment_intent.created", json!(intent), now);
        let created = Outcome::ok(&intent).with_event(event);
        confirmed_if_asked(created, form, |form| {
            self.confirm(&intent.id, form, public_url, now)
        })
    }

    /// Why `pm` cannot pay for `customer`, if it cannot: it does not exist, or it is saved
    /// for someone else (a detached card charges nobody), as at Stripe.
    fn unusable_method(&self, pm: &str, customer: Option<&str>) -> Option<Outcome> {
        if self.payment_method(pm).is_none() {
            return Some(missing("payment_method", pm));
        }
        match self.methods.get(pm) {
            Some((stored, _)) if stored.customer.as_deref() != customer => Some(invalid(&format!(
                "The PaymentMethod {pm} does not belong to this customer."
            ))),
            _ => None,
        }
    }

    /// Confirms the payment, as Stripe does: with the card given or the one it has (a
    /// payment declined earlier keeps its card only in `last_payment_error`, so confirming
    /// it again names the card). Off-session, a card that asks for 3-D Secure is declined
    /// `authentication_required`; on-session the customer is sent to authenticate, back to
    /// `return_url` afterwards (or, without one, left to Stripe.js).
    pub fn confirm(
        &mut self,
        id: &str,
        form: &BTreeMap<String, String>,
        public_url: &str,
        now: i64,
    ) -> Outcome {
        let Some(intent) = self.intents.get(id).cloned() else {
            return missing("payment_intent", id);
        };
        if !matches!(
            intent.status.as_str(),
            "requires_confirmation" | "requires_payment_method"
        ) {
            return unexpected_state(&intent, "confirm");
        }
        let Some(pm) = form
            .get("payment_method")
            .cloned()
            .or(intent.payment_method.clone())
        else {
            return Outcome::answer(error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "payment_intent_unexpected_state",
                "You cannot confirm this PaymentIntent because it's missing a payment method.",
            ));
        };
        if let Some(refused) = self.unusable_method(&pm, intent.customer.as_deref()) {
            return refused;
        }
        let behaviour = self
            .payment_method(&pm)
            .map_or(Behaviour::Succeed, |(_, b)| b);
        let off_session = form.get("off_session").map(String::as_str) == Some("true");
        let return_url = form.get("return_url").cloned();
        let intent = self.intents.get_mut(id).expect("looked up above");
        intent.payment_method = Some(pm);
        intent.last_payment_error = None;
        match behaviour {
            Behaviour::Succeed | Behaviour::SucceedThenDispute => self.settle(id, true, None, now),
            Behaviour::Decline { code, decline_code } => {
                let failure = card_error(code, decline_code);
                self.settle(id, false, Some(failure), now)
            }
            Behaviour::RequireAuthentication if off_session => {
                let failure = card_error("authentication_required", "authentication_required");
                self.settle(id, false, Some(failure), now)
            }
            Behaviour::RequireAuthentication => {
                let url = format!("{public_url}/_stub/authenticate/{id}");
                intent.status = "requires_action".into();
                intent.next_action = Some(match return_url {
                    Some(return_url) => NextAction {
                        kind: "redirect_to_url".into(),
                        redirect_to_url: Some(RedirectToUrl {
                            url,
                            return_url: Some(return_url),
                        }),
                        use_stripe_sdk: None,
                    },
                    None => NextAction {
                        kind: "use_stripe_sdk".into(),
                        redirect_to_url: None,
                        use_stripe_sdk: Some(json!({
                            "type": "three_d_secure_redirect",
                            "stripe_js": url,
                        })),
                    },
                });
                let intent = intent.clone();
                let event = self.event("payment_intent.requires_action", json!(intent), now);
                Outcome::ok(intent).with_event(event)
            }
        }
    }

    /// Ends a payment that is waiting: captured, or failed with `failure`. A failure
    /// answers 402 with the error, as a declined confirmation does.
    pub fn settle(
        &mut self,
        id: &str,
        success: bool,
        failure: Option<ErrorBody>,
        now: i64,
    ) -> Outcome {
        let tried_with = self
            .intents
            .get(id)
            .and_then(|pi| pi.payment_method.as_deref())
            .and_then(|pm| self.payment_method(pm))
            .map(|(method, _)| json!(method));
        if !self.intents.contains_key(id) {
            return missing("payment_intent", id);
        }
        // Each try to take the money is a charge of its own, as at Stripe.
        let charge = self.new_id("ch");
        let intent = self.intents.get_mut(id).expect("looked up above");
        intent.next_action = None;
        intent.latest_charge = Some(charge.clone());
        if success {
            intent.status = "succeeded".into();
            intent.amount_received = Some(intent.amount);
            let intent = intent.clone();
            let event = self.event("payment_intent.succeeded", json!(intent), now);
            let mut outcome = Outcome::ok(&intent).with_event(event);
            outcome
                .events
                .extend(self.record_charge(&charge, &intent, now));
            return outcome;
        }
        intent.status = "requires_payment_method".into();
        let mut failure = failure.unwrap_or_else(|| card_error("card_declined", "generic_decline"));
        // Stripe takes the card off a failed payment and reports it with the failure.
        intent.payment_method = None;
        failure.payment_method = tried_with;
        intent.last_payment_error = Some(failure.clone());
        let intent = intent.clone();
        let event = self.event("payment_intent.payment_failed", json!(intent), now);
        self.record_charge(&charge, &intent, now);
        failure.payment_intent = Some(Box::new(intent));
        Outcome {
            answer: (StatusCode::PAYMENT_REQUIRED, json!({ "error": failure })),
            events: vec![event],
        }
    }

    /// The customer's choice on the authentication page, for a payment or a setup.
    pub fn authenticate(&mut self, id: &str, complete: bool, now: i64) -> Outcome {
        if let Some(setup) = self.setup_intents.get(id).cloned() {
            if setup.status != "requires_action" {
                return unexpected_status(
                    "setup_intent",
                    &setup.status,
                    json!(setup),
                    "authenticate",
                );
            }
            let card = setup.payment_method.unwrap_or_default();
            if complete {
                return self.finish_setup(id, &card, now);
            }
            let failure = ErrorBody {
                kind: Some("invalid_request_error".into()),
                code: Some("setup_intent_authentication_failure".into()),
                message: Some("The customer did not complete authentication.".into()),
                ..ErrorBody::default()
            };
            return self.fail_setup(id, failure, now);
        }
        match self.intents.get(id) {
            Some(intent) if intent.status == "requires_action" => {}
            Some(intent) => return unexpected_state(&intent.clone(), "authenticate"),
            None => return missing("payment_intent", id),
        }
        if complete {
            return self.settle(id, true, None, now);
        }
        let failure = ErrorBody {
            kind: Some("invalid_request_error".into()),
            code: Some("payment_intent_authentication_failure".into()),
            message: Some("The customer did not complete authentication.".into()),
            ..ErrorBody::default()
        };
        self.settle(id, false, Some(failure), now)
    }

    pub fn cancel(&mut self, id: &str, now: i64) -> Outcome {
        let Some(intent) = self.intents.get_mut(id) else {
            return missing("payment_intent", id);
        };
        if matches!(intent.status.as_str(), "succeeded" | "canceled") {
            let intent = intent.clone();
            return unexpected_state(&intent, "cancel");
        }
        intent.status = "canceled".into();
        intent.next_action = None;
        // Stripe: the previous confirmation's error "will be cleared if the PaymentIntent is
        // later updated for any reason"; a cancelled payment says nothing of why.
        intent.last_payment_error = None;
        let intent = intent.clone();
        let event = self.event("payment_intent.canceled", json!(intent), now);
        Outcome::ok(intent).with_event(event)
    }

    /// Every payment, newest first.
    pub fn all_intents(&self) -> Vec<&PaymentIntent> {
        let mut all: Vec<&PaymentIntent> = self.intents.values().collect();
        all.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        all
    }

    /// A page of payments, newest first, as Stripe lists them: by `customer` and
    /// `created[gte]`, `limit` (1 to 100, 10 by default) after `starting_after`.
    pub fn list_intents(&self, query: &BTreeMap<String, String>) -> Answer {
        let limit = match query.get("limit").map(|l| l.parse::<usize>()) {
            None => 10,
            Some(Ok(limit)) if (1..=100).contains(&limit) => limit,
            Some(_) => return invalid("limit must be an integer between 1 and 100.").answer,
        };
        let created_gte = query
            .get("created[gte]")
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN);
        let customer = query.get("customer");
        let matching = self
            .all_intents()
            .into_iter()
            .filter(|pi| customer.is_none_or(|c| pi.customer.as_ref() == Some(c)))
            .filter(|pi| pi.created >= created_gte);
        let mut after: Vec<&PaymentIntent> = match query.get("starting_after") {
            Some(last) if !self.intents.contains_key(last) => {
                return missing("payment_intent", last).answer;
            }
            Some(last) => matching.skip_while(|pi| pi.id != *last).skip(1).collect(),
            None => matching.collect(),
        };
        let has_more = after.len() > limit;
        after.truncate(limit);
        (
            StatusCode::OK,
            json!({ "object": "list", "url": "/v1/payment_intents", "data": after, "has_more": has_more }),
        )
    }

    pub fn charges(&self) -> Vec<Charge> {
        self.intents
            .values()
            .filter(|pi| pi.status == "succeeded")
            .map(|pi| {
                let charge = pi.latest_charge.as_ref().and_then(|c| self.charges.get(c));
                Charge {
                    payment_intent: pi.id.clone(),
                    amount_received: pi.amount_received.unwrap_or_default(),
                    customer: pi.customer.clone(),
                    metadata: pi.metadata.clone(),
                    charge_id: charge.map(|c| c.id.clone()),
                    amount_refunded: charge.map_or(0, |c| c.amount_refunded),
                    disputes: self
                        .disputes
                        .values()
                        .filter(|d| charge.is_some_and(|c| c.id == d.charge))
                        .map(|d| ChargeDispute {
                            id: d.id.clone(),
                            amount: d.amount,
                            status: d.status.clone(),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

/// Stripe's one-call form: with `confirm=true`, the object just created is confirmed by
/// the same request, whose answer is the confirmation's (after the creation's events).
fn confirmed_if_asked(
    created: Outcome,
    form: &BTreeMap<String, String>,
    confirm: impl FnOnce(&BTreeMap<String, String>) -> Outcome,
) -> Outcome {
    if form.get("confirm").map(String::as_str) != Some("true") {
        return created;
    }
    let mut confirmed = confirm(form);
    confirmed.events.splice(0..0, created.events);
    confirmed
}

/// The error of a declined card.
fn card_error(code: &str, decline_code: &str) -> ErrorBody {
    ErrorBody {
        kind: Some("card_error".into()),
        code: Some(code.into()),
        decline_code: Some(decline_code.into()),
        message: Some(decline_message(decline_code)),
        ..ErrorBody::default()
    }
}

/// Uses one unit of a fault count.
fn take(count: &mut u32) -> bool {
    if *count > 0 {
        *count -= 1;
        true
    } else {
        false
    }
}

/// `metadata[key]=value` form fields as a map.
fn metadata(form: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    form.iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("metadata[")?.strip_suffix(']')?;
            Some((key.to_owned(), v.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strikes(world: &mut World, fault: Fault, n: usize) -> Vec<bool> {
        (0..n)
            .map(|_| world.strikes(fault, FaultTarget::Confirm))
            .collect()
    }

    #[test]
    fn counts_run_down_then_nothing_strikes() {
        let mut world = World::new(Faults {
            fail_after: 2,
            ..Faults::default()
        });
        assert_eq!(
            strikes(&mut world, Fault::FailAfter, 4),
            [true, true, false, false]
        );
        assert_eq!(world.faults().fail_after, 0);
    }

    #[test]
    fn rates_strike_about_their_share_and_replay_from_the_seed() {
        let faults = Faults {
            seed: 42,
            drop_webhook_rate: 0.3,
            ..Faults::default()
        };
        let first = strikes(&mut World::new(faults.clone()), Fault::DropWebhook, 10_000);
        let again = strikes(&mut World::new(faults), Fault::DropWebhook, 10_000);
        assert_eq!(first, again, "the same seed draws the same faults");
        let dropped = first.iter().filter(|&&s| s).count();
        assert!(
            (2_700..3_300).contains(&dropped),
            "{dropped} of 10000 dropped"
        );
    }

    #[test]
    fn setting_faults_restarts_the_draws() {
        let faults = Faults {
            seed: 7,
            fail_before_rate: 0.5,
            ..Faults::default()
        };
        let mut world = World::new(faults.clone());
        let first = strikes(&mut world, Fault::FailBefore, 50);
        world.set_faults(faults);
        assert_eq!(strikes(&mut world, Fault::FailBefore, 50), first);
    }

    #[test]
    fn request_faults_strike_only_their_target_but_webhook_faults_any() {
        let mut world = World::new(Faults {
            target: FaultTarget::Create,
            hang_after_rate: 1.0,
            drop_webhook_rate: 1.0,
            ..Faults::default()
        });
        assert!(!world.strikes(Fault::HangAfter, FaultTarget::Confirm));
        assert!(world.strikes(Fault::HangAfter, FaultTarget::Create));
        assert!(world.strikes(Fault::DropWebhook, FaultTarget::All));
        assert!(!world.strikes(Fault::FailBefore, FaultTarget::Create));
    }

    #[test]
    fn rates_must_be_probabilities() {
        let faults = |rate| Faults {
            fail_after_rate: rate,
            ..Faults::default()
        };
        assert!(faults(0.2).validate().is_ok());
        let error = faults(1.5).validate().expect_err("above 1");
        assert!(error.contains("fail_after_rate"), "{error}");
        assert!(faults(-0.1).validate().is_err());
        assert!(faults(f64::NAN).validate().is_err());
    }

    #[test]
    fn rates_come_from_json() {
        let faults: Faults = serde_json::from_str(
            r#"{"seed":1,"fail_before_rate":0.07,"fail_after_rate":0.07,"hang_after_rate":0.06,"hang_ms":1500,"drop_webhook_rate":0.3}"#,
        )
        .expect("valid faults");
        assert_eq!(faults.hang_after_rate, 0.06);
        assert_eq!(faults.drop_webhook_rate, 0.3);
    }
}

//! The stub provider's memory: customers, cards, payments, idempotency keys and the events
//! it has to deliver. Every payment it ever created stays listed, so tests can count
//! charges from the provider's side.

use std::collections::{BTreeMap, HashMap};

use axum::http::StatusCode;
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::payments::types::{
    Card, Customer, ErrorBody, Event, EventData, NextAction, PaymentIntent, PaymentMethod,
    RedirectToUrl,
};

/// What a test card does when charged, after Stripe's test payment methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Succeed,
    Decline {
        code: &'static str,
        decline_code: &'static str,
    },
    RequireAuthentication,
}

/// Stripe's test payment method ids this stub knows, with their card and behaviour.
pub fn test_card(id: &str) -> Option<(Behaviour, Card)> {
    let decline = |code, decline_code| Behaviour::Decline { code, decline_code };
    let (behaviour, brand, last4) = match id {
        "pm_card_visa" => (Behaviour::Succeed, "visa", "4242"),
        "pm_card_mastercard" => (Behaviour::Succeed, "mastercard", "4444"),
        "pm_card_chargeDeclined" => (decline("card_declined", "generic_decline"), "visa", "0002"),
        "pm_card_chargeDeclinedInsufficientFunds" => (
            decline("card_declined", "insufficient_funds"),
            "visa",
            "9995",
        ),
        "pm_card_chargeDeclinedExpiredCard" => {
            (decline("expired_card", "expired_card"), "visa", "0069")
        }
        "pm_card_chargeDeclinedFraudulent" => {
            (decline("card_declined", "fraudulent"), "visa", "0019")
        }
        "pm_card_authenticationRequired" => (Behaviour::RequireAuthentication, "visa", "3184"),
        _ => return None,
    };
    let card = Card {
        brand: brand.to_owned(),
        last4: last4.to_owned(),
        exp_month: 12,
        exp_year: 2034,
    };
    Some((behaviour, card))
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
    /// Which requests the counted faults hit.
    pub target: FaultTarget,
    /// Answer 500 before doing anything (nothing recorded).
    pub fail_before: u32,
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
    /// Every POST.
    #[default]
    All,
    /// Reading objects (GET): `fail_before` answers them 500, as a provider outage would.
    Read,
}

/// An API answer: status and JSON body.
pub type Answer = (StatusCode, Value);

#[derive(Debug, Clone)]
pub enum KeyUse {
    InFlight { fingerprint: String },
    Done { fingerprint: String, answer: Answer },
}

/// A captured charge, from the stub's own ledger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub payment_intent: String,
    pub amount_received: i64,
    pub customer: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct World {
    pub customers: BTreeMap<String, Customer>,
    pub methods: BTreeMap<String, (PaymentMethod, Behaviour)>,
    pub intents: BTreeMap<String, PaymentIntent>,
    pub keys: HashMap<String, KeyUse>,
    faults: Faults,
    /// Draws the rated faults; seeded from `faults.seed` whenever faults are set.
    fault_draws: StdRng,
    /// Makes this run's ids unlike any earlier run's: the stub keeps nothing across
    /// restarts, but the databases of its clients do.
    instance: String,
    next_id: u64,
}

/// The stub's answer to a request that changes something, and the event it causes.
pub struct Outcome {
    pub answer: Answer,
    pub event: Option<Event>,
}

impl Outcome {
    fn ok(value: impl Serialize) -> Self {
        Self {
            answer: (StatusCode::OK, json!(value)),
            event: None,
        }
    }

    fn with_event(mut self, event: Event) -> Self {
        self.event = Some(event);
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
    Outcome {
        answer: error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "resource_missing",
            &format!("No such {what}: '{id}'"),
        ),
        event: None,
    }
}

fn invalid(message: &str) -> Outcome {
    Outcome {
        answer: error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "parameter_invalid",
            message,
        ),
        event: None,
    }
}

fn unexpected_state(intent: &PaymentIntent, action: &str) -> Outcome {
    let mut answer = error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "payment_intent_unexpected_state",
        &format!(
            "You cannot {action} this PaymentIntent because it has a status of {}.",
            intent.status
        ),
    );
    answer.1["error"]["payment_intent"] = json!(intent);
    Outcome {
        answer,
        event: None,
    }
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
                metadata: BTreeMap::new(),
            };
            self.customers.insert(id.to_owned(), customer);
        }
        self.customers.contains_key(id)
    }

    fn event(&mut self, kind: &str, object: Value, now: i64) -> Event {
        Event {
            id: self.new_id("evt"),
            kind: kind.to_owned(),
            created: now,
            data: EventData { object },
        }
    }

    pub fn create_customer(&mut self, form: &BTreeMap<String, String>) -> Outcome {
        let customer = Customer {
            id: self.new_id("cus"),
            metadata: metadata(form),
        };
        self.customers.insert(customer.id.clone(), customer.clone());
        Outcome::ok(customer)
    }

    /// A stored card, or a test card as it looks before it is attached. Attached test
    /// cards are named `<test card id>__<unique suffix>`, so they keep working after the
    /// stub restarts.
    pub fn payment_method(&self, id: &str) -> Option<(PaymentMethod, Behaviour)> {
        if let Some(stored) = self.methods.get(id) {
            return Some(stored.clone());
        }
        let test_id = id.split_once("__").map_or(id, |(test_id, _)| test_id);
        test_card(test_id).map(|(behaviour, card)| {
            let method = PaymentMethod {
                id: id.to_owned(),
                customer: None,
                card: Some(card),
            };
            (method, behaviour)
        })
    }

    pub fn retrieve_payment_method(&self, id: &str) -> Outcome {
        match self.payment_method(id) {
            Some((method, _)) => Outcome::ok(method),
            None => missing("payment_method", id),
        }
    }

    /// Attaching a test card makes a new card of the customer's, as Stripe does.
    pub fn attach(&mut self, id: &str, form: &BTreeMap<String, String>) -> Outcome {
        let Some(customer) = form.get("customer").cloned() else {
            return invalid("Missing required param: customer.");
        };
        if !self.recall_customer(&customer) {
            return missing("customer", &customer);
        }
        let Some((mut method, behaviour)) = self.payment_method(id) else {
            return missing("payment_method", id);
        };
        if test_card(id).is_some() {
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
        Outcome::ok(method)
    }

    pub fn detach(&mut self, id: &str) -> Outcome {
        match self.methods.get_mut(id) {
            Some((method, _)) => {
                method.customer = None;
                Outcome::ok(method.clone())
            }
            None => missing("payment_method", id),
        }
    }

    pub fn create_intent(&mut self, form: &BTreeMap<String, String>, now: i64) -> Outcome {
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
        if let Some(pm) = &payment_method {
            if self.payment_method(pm).is_none() {
                return missing("payment_method", pm);
            }
            // A saved card charges only for the customer it is attached to (a detached
            // card charges nobody), as at Stripe.
            if let Some((stored, _)) = self.methods.get(pm)
                && stored.customer != customer
            {
                return invalid(&format!(
                    "The PaymentMethod {pm} does not belong to this customer."
                ));
            }
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
            created: now,
        };
        self.intents.insert(intent.id.clone(), intent.clone());
        let event = self.event("payment_intent.created", json!(intent), now);
        Outcome::ok(intent).with_event(event)
    }

    /// Confirms the payment; one that needs authentication sends the customer back to
    /// `return_url` afterwards.
    pub fn confirm(
        &mut self,
        id: &str,
        public_url: &str,
        return_url: Option<String>,
        now: i64,
    ) -> Outcome {
        let Some(intent) = self.intents.get(id).cloned() else {
            return missing("payment_intent", id);
        };
        if intent.status != "requires_confirmation" {
            return unexpected_state(&intent, "confirm");
        }
        let behaviour = intent
            .payment_method
            .as_deref()
            .and_then(|pm| self.payment_method(pm))
            .map_or(Behaviour::Succeed, |(_, b)| b);
        match behaviour {
            Behaviour::Succeed => self.settle(id, true, None, now),
            Behaviour::Decline { code, decline_code } => {
                let failure = ErrorBody {
                    kind: "card_error".into(),
                    code: Some(code.into()),
                    decline_code: Some(decline_code.into()),
                    message: Some(format!("Your card was declined ({decline_code}).")),
                    payment_intent: None,
                };
                self.settle(id, false, Some(failure), now)
            }
            Behaviour::RequireAuthentication => {
                let url = format!("{public_url}/_stub/authenticate/{id}");
                let intent = self.intents.get_mut(id).expect("looked up above");
                intent.status = "requires_action".into();
                intent.next_action = Some(NextAction {
                    kind: "redirect_to_url".into(),
                    redirect_to_url: Some(RedirectToUrl { url, return_url }),
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
        let Some(intent) = self.intents.get_mut(id) else {
            return missing("payment_intent", id);
        };
        intent.next_action = None;
        if success {
            intent.status = "succeeded".into();
            intent.amount_received = Some(intent.amount);
            let intent = intent.clone();
            let event = self.event("payment_intent.succeeded", json!(intent), now);
            return Outcome::ok(intent).with_event(event);
        }
        intent.status = "requires_payment_method".into();
        intent.last_payment_error = failure.clone();
        let intent = intent.clone();
        let event = self.event("payment_intent.payment_failed", json!(intent), now);
        let mut body = failure.unwrap_or_else(|| ErrorBody {
            kind: "card_error".into(),
            code: Some("card_declined".into()),
            decline_code: None,
            message: None,
            payment_intent: None,
        });
        body.payment_intent = Some(Box::new(intent));
        Outcome {
            answer: (StatusCode::PAYMENT_REQUIRED, json!({ "error": body })),
            event: Some(event),
        }
    }

    /// The customer's choice on the authentication page.
    pub fn authenticate(&mut self, id: &str, complete: bool, now: i64) -> Outcome {
        match self.intents.get(id) {
            Some(intent) if intent.status == "requires_action" => {}
            Some(intent) => return unexpected_state(&intent.clone(), "authenticate"),
            None => return missing("payment_intent", id),
        }
        if complete {
            return self.settle(id, true, None, now);
        }
        let failure = ErrorBody {
            kind: "invalid_request_error".into(),
            code: Some("payment_intent_authentication_failure".into()),
            decline_code: None,
            message: Some("The customer did not complete authentication.".into()),
            payment_intent: None,
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
        let intent = intent.clone();
        let event = self.event("payment_intent.canceled", json!(intent), now);
        Outcome::ok(intent).with_event(event)
    }

    pub fn list_intents(&self, customer: Option<&str>, created_gte: i64) -> Value {
        let mut data: Vec<&PaymentIntent> = self
            .intents
            .values()
            .filter(|pi| customer.is_none_or(|c| pi.customer.as_deref() == Some(c)))
            .filter(|pi| pi.created >= created_gte)
            .collect();
        data.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
        json!({ "object": "list", "data": data, "has_more": false })
    }

    pub fn charges(&self) -> Vec<Charge> {
        self.intents
            .values()
            .filter(|pi| pi.status == "succeeded")
            .map(|pi| Charge {
                payment_intent: pi.id.clone(),
                amount_received: pi.amount_received.unwrap_or_default(),
                customer: pi.customer.clone(),
                metadata: pi.metadata.clone(),
            })
            .collect()
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

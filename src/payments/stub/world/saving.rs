//! Saving cards as Stripe does: SetupIntents (created, confirmed with a card, perhaps
//! authenticated) and Checkout Sessions in `setup` mode, whose hosted page collects the
//! card and sends the browser back.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::json;

use super::{
    Behaviour, Outcome, World, card_error, confirmed_if_asked, invalid, metadata, missing,
    test_card, unexpected_status,
};
use crate::payments::types::{
    CheckoutSession, ErrorBody, Event, NextAction, RedirectToUrl, SetupIntent,
};

impl World {
    pub fn create_setup_intent(
        &mut self,
        form: &BTreeMap<String, String>,
        public_url: &str,
        now: i64,
    ) -> Outcome {
        let customer = form.get("customer").cloned();
        if let Some(customer) = &customer
            && !self.recall_customer(customer)
        {
            return missing("customer", customer);
        }
        let id = self.new_id("seti");
        let payment_method = form.get("payment_method").cloned();
        let intent = SetupIntent {
            client_secret: Some(format!("{id}_secret_{}", uuid::Uuid::new_v4().simple())),
            id,
            status: if payment_method.is_some() {
                "requires_confirmation"
            } else {
                "requires_payment_method"
            }
            .to_owned(),
            customer,
            payment_method,
            usage: Some(
                form.get("usage")
                    .cloned()
                    .unwrap_or_else(|| "off_session".to_owned()),
            ),
            metadata: metadata(form),
            next_action: None,
            last_setup_error: None,
            created: now,
        };
        self.setup_intents.insert(intent.id.clone(), intent.clone());
        let event = self.event("setup_intent.created", json!(intent), now);
        let created = Outcome::ok(&intent).with_event(event);
        confirmed_if_asked(created, form, |form| {
            self.confirm_setup_intent(&intent.id, form, public_url, now)
        })
    }

    pub fn retrieve_setup_intent(&self, id: &str) -> Outcome {
        match self.setup_intents.get(id) {
            Some(intent) => Outcome::ok(intent),
            None => missing("setup_intent", id),
        }
    }

    /// Confirms a setup with the card given (or the one it has): a declining card is
    /// refused, a card that asks for 3-D Secure sends the customer to authenticate, and
    /// any other is attached to the customer.
    pub fn confirm_setup_intent(
        &mut self,
        id: &str,
        form: &BTreeMap<String, String>,
        public_url: &str,
        now: i64,
    ) -> Outcome {
        let Some(intent) = self.setup_intents.get(id).cloned() else {
            return missing("setup_intent", id);
        };
        if !matches!(
            intent.status.as_str(),
            "requires_payment_method" | "requires_confirmation"
        ) {
            return unexpected_status("setup_intent", &intent.status, json!(intent), "confirm");
        }
        let Some(card) = form
            .get("payment_method")
            .cloned()
            .or(intent.payment_method.clone())
        else {
            return invalid(
                "You cannot confirm this SetupIntent because it's missing a payment method.",
            );
        };
        let Some((_, behaviour)) = self.payment_method(&card) else {
            return missing("payment_method", &card);
        };
        let refused = test_card(&card).is_some_and(|test| test.refused_at_attach);
        match behaviour {
            Behaviour::Decline { code, decline_code } if refused => {
                self.fail_setup(id, card_error(code, decline_code), now)
            }
            Behaviour::RequireAuthentication => {
                let intent = self.setup_intents.get_mut(id).expect("looked up above");
                intent.payment_method = Some(card);
                intent.status = "requires_action".into();
                intent.next_action = Some(NextAction {
                    kind: "redirect_to_url".into(),
                    redirect_to_url: Some(RedirectToUrl {
                        url: format!("{public_url}/_stub/authenticate/{id}"),
                        return_url: form.get("return_url").cloned(),
                    }),
                    use_stripe_sdk: None,
                });
                let intent = intent.clone();
                let event = self.event("setup_intent.requires_action", json!(intent), now);
                Outcome::ok(intent).with_event(event)
            }
            _ => self.finish_setup(id, &card, now),
        }
    }

    /// The card is saved: attached to the setup's customer, as Stripe does on success.
    pub(super) fn finish_setup(&mut self, id: &str, card: &str, now: i64) -> Outcome {
        let Some(intent) = self.setup_intents.get(id).cloned() else {
            return missing("setup_intent", id);
        };
        let mut attached_events = Vec::new();
        let attached_id = match &intent.customer {
            Some(customer) => {
                let form = BTreeMap::from([("customer".to_owned(), customer.clone())]);
                let attached = self.attach(card, &form, now);
                if !attached.answer.0.is_success() {
                    return attached;
                }
                attached_events = attached.events;
                attached.answer.1["id"]
                    .as_str()
                    .map_or_else(|| card.to_owned(), str::to_owned)
            }
            None => card.to_owned(),
        };
        let intent = self.setup_intents.get_mut(id).expect("looked up above");
        intent.payment_method = Some(attached_id);
        intent.status = "succeeded".into();
        intent.next_action = None;
        intent.last_setup_error = None;
        let intent = intent.clone();
        let event = self.event("setup_intent.succeeded", json!(intent), now);
        let mut outcome = Outcome::ok(intent).with_event(event);
        outcome.events.splice(0..0, attached_events);
        outcome
    }

    pub(super) fn fail_setup(&mut self, id: &str, failure: ErrorBody, now: i64) -> Outcome {
        let Some(intent) = self.setup_intents.get_mut(id) else {
            return missing("setup_intent", id);
        };
        intent.status = "requires_payment_method".into();
        intent.next_action = None;
        intent.payment_method = None;
        intent.last_setup_error = Some(failure.clone());
        let intent = intent.clone();
        let event = self.event("setup_intent.setup_failed", json!(intent), now);
        let mut body = json!({ "error": failure });
        body["error"]["setup_intent"] = json!(intent);
        Outcome {
            answer: (StatusCode::PAYMENT_REQUIRED, body),
            events: vec![event],
        }
    }

    /// A Checkout Session; the stub serves `setup` mode only, which is what saves cards.
    pub fn create_checkout_session(
        &mut self,
        form: &BTreeMap<String, String>,
        public_url: &str,
        now: i64,
    ) -> Outcome {
        match form.get("mode").map(String::as_str) {
            Some("setup") => {}
            Some(_) => return invalid("The stub serves Checkout in mode=setup only."),
            None => return invalid("Missing required param: mode."),
        }
        let Some(success_url) = form.get("success_url").cloned() else {
            return invalid("Missing required param: success_url.");
        };
        let Some(customer) = form.get("customer").cloned() else {
            return invalid("The stub's Checkout needs a customer.");
        };
        if !self.recall_customer(&customer) {
            return missing("customer", &customer);
        }
        let id = self.new_id("cs_test");
        let setup_metadata = form
            .iter()
            .filter_map(|(k, v)| {
                let key = k
                    .strip_prefix("setup_intent_data[metadata][")?
                    .strip_suffix(']')?;
                Some((key.to_owned(), v.clone()))
            })
            .collect();
        let session = CheckoutSession {
            url: Some(format!("{public_url}/_stub/checkout/{id}")),
            id,
            mode: "setup".into(),
            status: Some("open".into()),
            customer: Some(customer),
            setup_intent: None,
            success_url: Some(success_url),
            cancel_url: form.get("cancel_url").cloned(),
            client_reference_id: form.get("client_reference_id").cloned(),
            metadata: metadata(form),
            created: now,
        };
        self.checkout_sessions
            .insert(session.id.clone(), (session.clone(), setup_metadata));
        Outcome::ok(session)
    }

    pub fn retrieve_checkout_session(&self, id: &str) -> Option<&CheckoutSession> {
        self.checkout_sessions.get(id).map(|(session, _)| session)
    }

    /// The customer chose `card` on the hosted page: a setup for the session's customer is
    /// made and confirmed there (3-D Secure, if the bank asks, happens on that page), the
    /// session completes, and the browser goes to `success_url`. A refused card leaves the
    /// session open, with the bank's words.
    /// Returns where the browser goes (or why not) and the events it caused.
    pub fn complete_checkout(
        &mut self,
        id: &str,
        card: &str,
        now: i64,
    ) -> (Result<String, String>, Vec<Event>) {
        let Some((session, setup_metadata)) = self.checkout_sessions.get(id).cloned() else {
            return (Err("No such Checkout Session.".into()), Vec::new());
        };
        if session.status.as_deref() != Some("open") {
            return (
                Err("This Checkout Session is no longer open.".into()),
                Vec::new(),
            );
        }
        let mut form: BTreeMap<String, String> = setup_metadata
            .into_iter()
            .map(|(k, v)| (format!("metadata[{k}]"), v))
            .collect();
        form.insert(
            "customer".into(),
            session.customer.clone().unwrap_or_default(),
        );
        let created = self.create_setup_intent(&form, "", now);
        let mut events = created.events;
        let setup_id = created.answer.1["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let refused = test_card(card).is_some_and(|test| test.refused_at_attach);
        let finished = match self.payment_method(card) {
            Some((_, Behaviour::Decline { code, decline_code })) if refused => {
                self.fail_setup(&setup_id, card_error(code, decline_code), now)
            }
            Some(_) => self.finish_setup(&setup_id, card, now),
            None => return (Err(format!("No such card: {card}.")), events),
        };
        events.extend(finished.events);
        let succeeded = finished.answer.0.is_success();
        if succeeded {
            let (session, _) = self.checkout_sessions.get_mut(id).expect("looked up above");
            session.status = Some("complete".into());
            session.setup_intent = Some(setup_id);
            session.url = None;
            let session = session.clone();
            events.push(self.event("checkout.session.completed", json!(session), now));
        }
        if !succeeded {
            let message = finished.answer.1["error"]["message"]
                .as_str()
                .unwrap_or("Your card was declined.");
            return (Err(message.to_owned()), events);
        }
        let success = session.success_url.unwrap_or_default();
        (Ok(success.replace("{CHECKOUT_SESSION_ID}", id)), events)
    }
}

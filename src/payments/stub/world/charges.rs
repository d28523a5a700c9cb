//! What happens to a charge after it is made, as at Stripe: refunds (`POST /v1/refunds`,
//! whole or in part) and disputes (opened by the payer's bank; `pm_card_createDispute`
//! is disputed as soon as it pays), answered with evidence or accepted.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::json;

use super::{Behaviour, Outcome, World, error, invalid, metadata, missing};
use crate::payments::types::{Charge, Dispute, Event, PaymentIntent, Refund};

/// What Stripe's test mode does with the evidence text of a dispute.
const WINNING_EVIDENCE: &str = "winning_evidence";
const LOSING_EVIDENCE: &str = "losing_evidence";

/// Whether a dispute's status is final.
fn is_closed(status: &str) -> bool {
    matches!(status, "won" | "lost" | "warning_closed")
}

fn refused(code: &str, message: &str) -> Outcome {
    Outcome::answer(error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        code,
        message,
    ))
}

impl World {
    /// Records the charge of one try at `intent` (settled just now), and the dispute its
    /// card opens, if it is one that does.
    pub(super) fn record_charge(
        &mut self,
        id: &str,
        intent: &PaymentIntent,
        now: i64,
    ) -> Vec<Event> {
        let succeeded = intent.status == "succeeded";
        let tried_with = intent.payment_method.clone().or_else(|| {
            intent
                .last_payment_error
                .as_ref()
                .and_then(|e| e.payment_method.as_ref())
                .and_then(|pm| pm["id"].as_str().map(str::to_owned))
        });
        let charge = Charge {
            id: id.to_owned(),
            amount: intent.amount,
            amount_refunded: 0,
            currency: intent.currency.clone(),
            status: if succeeded { "succeeded" } else { "failed" }.to_owned(),
            refunded: false,
            disputed: false,
            customer: intent.customer.clone(),
            payment_intent: Some(intent.id.clone()),
            payment_method: tried_with.clone(),
            metadata: intent.metadata.clone(),
            created: now,
        };
        self.charges.insert(id.to_owned(), charge);
        let disputes = tried_with
            .and_then(|pm| self.payment_method(&pm))
            .is_some_and(|(_, behaviour)| behaviour == Behaviour::SucceedThenDispute);
        if succeeded && disputes {
            vec![self.open_dispute(id, now)]
        } else {
            Vec::new()
        }
    }

    fn open_dispute(&mut self, charge_id: &str, now: i64) -> Event {
        let id = self.new_id("dp");
        let charge = self.charges.get_mut(charge_id).expect("recorded above");
        charge.disputed = true;
        let dispute = Dispute {
            id: id.clone(),
            amount: charge.amount,
            charge: charge_id.to_owned(),
            currency: charge.currency.clone(),
            status: "needs_response".into(),
            reason: Some("fraudulent".into()),
            payment_intent: charge.payment_intent.clone(),
            evidence: Some(json!({})),
            metadata: BTreeMap::new(),
            created: now,
        };
        self.disputes.insert(id, dispute.clone());
        self.event("charge.dispute.created", json!(dispute), now)
    }

    pub fn retrieve_charge(&self, id: &str) -> Outcome {
        match self.charges.get(id) {
            Some(charge) => Outcome::ok(charge),
            None => missing("charge", id),
        }
    }

    pub fn retrieve_dispute(&self, id: &str) -> Outcome {
        match self.disputes.get(id) {
            Some(dispute) => Outcome::ok(dispute),
            None => missing("dispute", id),
        }
    }

    /// Refunds `amount` (all that is left by default) of the charge named, or of the
    /// payment's latest charge.
    pub fn create_refund(&mut self, form: &BTreeMap<String, String>, now: i64) -> Outcome {
        let charge_id = match (form.get("charge"), form.get("payment_intent")) {
            (Some(charge), _) => charge.clone(),
            (None, Some(pi)) => match self.intents.get(pi) {
                Some(intent) => match &intent.latest_charge {
                    Some(charge) => charge.clone(),
                    None => {
                        return refused(
                            "charge_not_refundable",
                            &format!("PaymentIntent {pi} has no charge to refund."),
                        );
                    }
                },
                None => return missing("payment_intent", pi),
            },
            (None, None) => {
                return refused(
                    "parameter_missing",
                    "One of the following params should be provided for this request: payment_intent or charge.",
                );
            }
        };
        let Some(charge) = self.charges.get(&charge_id) else {
            return missing("charge", &charge_id);
        };
        if charge.status != "succeeded" {
            return refused(
                "charge_not_refundable",
                &format!("Charge {charge_id} has not succeeded and cannot be refunded."),
            );
        }
        if charge.disputed {
            return refused(
                "charge_disputed",
                &format!("Charge {charge_id} has been charged back; cannot issue a refund."),
            );
        }
        let left = charge.amount - charge.amount_refunded;
        if left == 0 {
            return refused(
                "charge_already_refunded",
                &format!("Charge {charge_id} has already been refunded."),
            );
        }
        let amount = match form.get("amount").map(|a| a.parse::<i64>()) {
            None => left,
            Some(Ok(amount)) if (1..=left).contains(&amount) => amount,
            Some(Ok(amount)) if amount > left => {
                let mut answer = refused(
                    "amount_too_large",
                    &format!(
                        "Refund amount ({amount}) is greater than unrefunded amount on charge ({left})"
                    ),
                );
                answer.answer.1["error"]["param"] = json!("amount");
                return answer;
            }
            Some(_) => {
                return invalid("amount must be a positive integer in the smallest currency unit.");
            }
        };
        let (payment_intent, currency) = (charge.payment_intent.clone(), charge.currency.clone());
        let refund = Refund {
            id: self.new_id("re"),
            amount,
            charge: Some(charge_id.clone()),
            payment_intent,
            currency,
            status: Some("succeeded".into()),
            reason: form.get("reason").cloned(),
            metadata: metadata(form),
            created: now,
        };
        let charge = self.charges.get_mut(&charge_id).expect("looked up above");
        charge.amount_refunded += amount;
        charge.refunded = charge.amount_refunded == charge.amount;
        let charge = charge.clone();
        self.refunds.insert(refund.id.clone(), refund.clone());
        let refunded = self.event("charge.refunded", json!(charge), now);
        let created = self.event("refund.created", json!(refund), now);
        Outcome::ok(refund).with_event(refunded).with_event(created)
    }

    /// Evidence for a dispute. In test mode, `evidence[uncategorized_text]` decides it:
    /// `winning_evidence` wins it, `losing_evidence` loses it; anything else puts it
    /// under review.
    pub fn update_dispute(
        &mut self,
        id: &str,
        form: &BTreeMap<String, String>,
        now: i64,
    ) -> Outcome {
        let dispute = match self.open_dispute_mut(id) {
            Ok(dispute) => dispute,
            Err(refused) => return refused,
        };
        let mut evidence = dispute.evidence.take().unwrap_or_else(|| json!({}));
        for (name, value) in form {
            if let Some(field) = name
                .strip_prefix("evidence[")
                .and_then(|n| n.strip_suffix(']'))
            {
                evidence[field] = json!(value);
            }
        }
        let decided = evidence["uncategorized_text"].as_str().map(str::to_owned);
        dispute.evidence = Some(evidence);
        dispute.metadata.extend(metadata(form));
        dispute.status = match decided.as_deref() {
            Some(WINNING_EVIDENCE) => "won",
            Some(LOSING_EVIDENCE) => "lost",
            _ => "under_review",
        }
        .to_owned();
        self.dispute_changed(id, now)
    }

    /// Accepts the dispute: it is lost.
    pub fn close_dispute(&mut self, id: &str, now: i64) -> Outcome {
        let dispute = match self.open_dispute_mut(id) {
            Ok(dispute) => dispute,
            Err(refused) => return refused,
        };
        dispute.status = "lost".into();
        self.dispute_changed(id, now)
    }

    /// A dispute that may still change: not closed.
    fn open_dispute_mut(&mut self, id: &str) -> Result<&mut Dispute, Outcome> {
        let Some(dispute) = self.disputes.get_mut(id) else {
            return Err(missing("dispute", id));
        };
        if is_closed(&dispute.status) {
            return Err(refused(
                "dispute_already_closed",
                &format!("This dispute is already closed ({}).", dispute.status),
            ));
        }
        Ok(dispute)
    }

    /// The answer and events of a dispute that changed: updated, and closed once decided.
    fn dispute_changed(&mut self, id: &str, now: i64) -> Outcome {
        let dispute = self.disputes[id].clone();
        let closed = is_closed(&dispute.status);
        let updated = self.event("charge.dispute.updated", json!(dispute), now);
        let outcome = Outcome::ok(&dispute).with_event(updated);
        if closed {
            let event = self.event("charge.dispute.closed", json!(dispute), now);
            return outcome.with_event(event);
        }
        outcome
    }
}

//! The provider's objects on the wire (Stripe's shapes, limited to the fields topupd reads).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub amount: i64,
    /// Absent is not zero: a payment that says it succeeded without saying how much it
    /// received has an unknown outcome.
    #[serde(default)]
    pub amount_received: Option<i64>,
    pub currency: String,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub payment_method: Option<String>,
    pub status: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub next_action: Option<NextAction>,
    /// What the customer's browser confirms the payment with; the provider's redirect
    /// back carries it.
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub last_payment_error: Option<ErrorBody>,
    /// The id of the payment's latest charge (topupd never asks for it expanded).
    #[serde(default)]
    pub latest_charge: Option<String>,
    /// `off_session` when the card is to be set up for charges without the customer.
    #[serde(default)]
    pub setup_future_usage: Option<String>,
    pub created: i64,
}

impl PaymentIntent {
    /// The page where the customer authenticates, when the payment waits for that.
    pub fn redirect_url(&self) -> Option<&str> {
        self.next_action
            .as_ref()
            .and_then(|a| a.redirect_to_url.as_ref())
            .map(|r| r.url.as_str())
    }

    /// Why the last confirmation failed, as the most specific code given.
    pub fn failure_code(&self) -> Option<&str> {
        self.last_payment_error
            .as_ref()
            .and_then(ErrorBody::most_specific_code)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextAction {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub redirect_to_url: Option<RedirectToUrl>,
    /// What Stripe.js needs to finish the action itself, with the payment's client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_stripe_sdk: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedirectToUrl {
    pub url: String,
    #[serde(default)]
    pub return_url: Option<String>,
}

/// Stripe's `error` object (also a payment's `last_payment_error`). Every field may be
/// missing: what is read from it is only ever a reason, never an amount.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub decline_code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_intent: Option<Box<PaymentIntent>>,
    /// The card a failed payment was tried with (Stripe takes it off the payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_method: Option<serde_json::Value>,
}

impl ErrorBody {
    /// `decline_code` when the bank gave one, else `code`.
    pub fn most_specific_code(&self) -> Option<&str> {
        self.decline_code.as_deref().or(self.code.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub id: String,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub card: Option<Card>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
    #[serde(default)]
    pub has_more: bool,
}

/// A webhook event. Only the object's id is trusted from it: the object itself is always
/// re-read from the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub created: i64,
    /// The API version the event's object was rendered with (the webhook endpoint's).
    #[serde(default)]
    pub api_version: Option<String>,
    pub data: EventData,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    pub object: serde_json::Value,
}

/// A SetupIntent: a card saved for later charges without the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetupIntent {
    pub id: String,
    pub status: String,
    #[serde(default)]
    pub customer: Option<String>,
    /// The card, once the customer gave one (an id; Stripe expands it only on request).
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub usage: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub next_action: Option<NextAction>,
    #[serde(default)]
    pub last_setup_error: Option<ErrorBody>,
    pub created: i64,
}

/// A Checkout Session; topupd opens them in `setup` mode, to save a card on Stripe's page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub mode: String,
    /// `open`, `complete` or `expired`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub setup_intent: Option<String>,
    /// The hosted page, while the session is open.
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub success_url: Option<String>,
    #[serde(default)]
    pub cancel_url: Option<String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
}

/// A charge: one try to take a payment's money. Refunds and disputes name it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub amount: i64,
    /// Required: a charge that does not say how much of it was refunded has an unknown
    /// refund, never none.
    pub amount_refunded: i64,
    pub currency: String,
    /// `succeeded`, `pending` or `failed`.
    pub status: String,
    #[serde(default)]
    pub refunded: bool,
    #[serde(default)]
    pub disputed: bool,
    #[serde(default)]
    pub customer: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
}

/// A refund of (part of) a charge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub amount: i64,
    #[serde(default)]
    pub charge: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    pub currency: String,
    /// `pending`, `requires_action`, `succeeded`, `failed` or `canceled`.
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
}

/// A dispute of a charge, opened by the payer with their bank.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispute {
    pub id: String,
    /// The disputed amount, in the charge's currency.
    pub amount: i64,
    /// The disputed charge's id (topupd never asks for it expanded).
    pub charge: String,
    pub currency: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub evidence: Option<serde_json::Value>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    pub created: i64,
}

impl Dispute {
    /// What a dispute's status says of the disputed money: still out, back, or gone.
    pub fn standing(&self) -> DisputeStanding {
        match self.status.as_str() {
            "won" | "warning_closed" | "prevented" => DisputeStanding::Won,
            "lost" => DisputeStanding::Lost,
            _ => DisputeStanding::Open,
        }
    }
}

/// Where a dispute stands, as far as the credits are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisputeStanding {
    Open,
    /// Closed in the merchant's favour (or an inquiry closed without a chargeback).
    Won,
    Lost,
}

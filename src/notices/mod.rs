//! Customer notices by email. A notice is rendered and queued in the outbox inside the
//! transaction of the state change that causes it, keyed by its cause so a replayed event
//! queues nothing new; the sender job delivers it later through the configured [`mailer`].

pub mod mailer;
pub mod templates;

use crate::{
    clock::Millis,
    config::EmailConfig,
    db::notices::NewNotice,
    domain::{credits::Millicredits, money::Cents},
};

/// What happened, with the facts the customer needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    TopupReceipt(Receipt),
    PaymentFailed(PaymentFailure),
    AuthenticationRequired(AuthenticationRequest),
    AutoTopupResumed(Resumption),
}

/// Whether a payment was started by the auto top-up scheduler or by the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Automatic,
    Manual,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub trigger: Trigger,
    pub credits: Millicredits,
    pub amount: Cents,
    /// The payment provider's id of the charge.
    pub transaction_id: String,
    pub new_balance: Millicredits,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentFailure {
    pub trigger: Trigger,
    /// The provider's decline code, explained in plain words by the template.
    pub decline_code: String,
    pub credits: Millicredits,
    pub amount: Cents,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthenticationRequest {
    /// The provider's page where the customer completes 3-D Secure; none when the bank
    /// wants the payment made again on-session (the customer retries it).
    pub link: Option<String>,
    pub credits: Millicredits,
    pub amount: Cents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumedBy {
    /// A payment completed, so automatic top-ups run again.
    Payment,
    /// Support resumed it by hand.
    Support,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Resumption {
    pub by: ResumedBy,
    pub at: Millis,
}

impl Notice {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::TopupReceipt(_) => "topup_receipt",
            Self::PaymentFailed(_) => "payment_failed",
            Self::AuthenticationRequired(_) => "authentication_required",
            Self::AutoTopupResumed(_) => "auto_topup_resumed",
        }
    }
}

/// The recipient of a notice.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub account_id: &'a str,
    pub name: &'a str,
    pub email: &'a str,
}

/// Renders a notice into an outbox row. `cause` names what caused it (for example
/// `attempt:<id>:declined`); a second notice with the same cause is not queued.
pub fn compose(
    cause: String,
    recipient: Recipient<'_>,
    notice: &Notice,
    email: &EmailConfig,
    at: Millis,
) -> NewNotice {
    let rendered = templates::render(notice, recipient.name, &email.letterhead());
    let id = crate::db::new_id("ntc");
    NewNotice {
        message_id: format!("<{id}@{}>", email.message_id_domain()),
        id,
        cause,
        kind: notice.kind(),
        account_id: recipient.account_id.to_owned(),
        recipient: recipient.email.to_owned(),
        subject: rendered.subject,
        text_body: rendered.text,
        html_body: rendered.html,
        at,
    }
}

//! What a customer (or support) is told, as facts: the notice outbox stores these, and
//! the sender renders them into an email when it sends.

use serde::{Deserialize, Serialize};

use super::{credits::Millicredits, money::Cents};
use crate::clock::Millis;

/// What happened, with the facts the customer needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    TopupReceipt(Receipt),
    /// To the customer who asked to be told first: an automatic charge is coming.
    TopupAnnounced(Announcement),
    PaymentFailed(PaymentFailure),
    AuthenticationRequired(AuthenticationRequest),
    AutoTopupResumed(Resumption),
    /// To the customer: auto top-up was turned on or off, or what it charges changed, and
    /// by whom.
    AutoTopupChanged(SettingsChange),
    /// To the customer who asked for it, with auto top-up off: the balance fell below the
    /// low-balance line.
    LowBalance(LowBalanceFacts),
    /// To the customer: the card auto top-up charges has expired, will have by the next
    /// likely top-up, or was removed at the provider.
    CardAtRisk(CardFacts),
    /// To the customer: the next automatic top-up would go past the monthly spend cap, so
    /// auto top-up is paused until the month ends.
    SpendCapReached(CapFacts),
    /// To the customer: a top-up's charge was refunded, so its credits were removed.
    CreditsRefunded(RefundFacts),
    /// To support: a top-up's charge is disputed.
    DisputeOpened(DisputeFacts),
    /// To support: a dispute closed, and what became of its credits.
    DisputeClosed(DisputeFacts),
    /// To support: a webhook endpoint ran out of tries for a delivery and was disabled.
    WebhookEndpointDisabled(EndpointFailure),
}

/// Who a notice is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Customer,
    Support,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundFacts {
    /// The part of the payment refunded this time.
    pub amount: Cents,
    /// The credits removed for it.
    pub credits: Millicredits,
    /// The provider's id of the refunded charge.
    pub transaction_id: String,
    pub new_balance: Millicredits,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    pub credits: Millicredits,
    pub amount: Cents,
    /// From when the charge is made (by the first scan then).
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LowBalanceFacts {
    pub balance: Millicredits,
    /// The line it fell below.
    pub line: Millicredits,
    pub at: Millis,
}

/// Why the card auto top-up charges will not work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardRisk {
    Expired,
    ExpiresBeforeNextTopUp,
    /// Removed at the provider (the bank cancelled or replaced it).
    Detached,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardFacts {
    pub risk: CardRisk,
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    /// When the next automatic top-up is likely, when that is known.
    pub next_top_up_at: Option<Millis>,
}

/// Who changed the auto top-up settings, as the customer is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangedBy {
    /// The customer, through the billing page or a key of their account.
    Customer,
    Support,
    /// An administrator's key, or an operator at the server's command line.
    Administrator,
}

impl ChangedBy {
    /// Who acted, by the role of the key (or `operator` for the command line).
    pub fn of_role(role: &str) -> Self {
        match role {
            "customer" => Self::Customer,
            "support" => Self::Support,
            _ => Self::Administrator,
        }
    }
}

/// The auto top-up settings as they stand after a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettingsChange {
    pub by: ChangedBy,
    pub enabled: bool,
    pub threshold: Option<Millicredits>,
    pub target: Option<Millicredits>,
    pub monthly_cap: Option<Cents>,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapFacts {
    pub cap: Cents,
    /// This month's automatic top-ups so far, those in progress included.
    pub spent: Cents,
    /// The top-up that would have gone past the cap.
    pub charge: Cents,
    /// When automatic top-ups start again: the month's end in `time_zone`.
    pub until: Millis,
    /// The account's time zone (an IANA name), which its months follow.
    pub time_zone: String,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointFailure {
    pub endpoint_id: String,
    pub url: String,
    /// The event whose delivery failed, and its message id.
    pub event_type: String,
    pub message_id: String,
    pub attempts: i64,
    /// The last try's error, or the status the endpoint answered.
    pub last_error: String,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisputeFacts {
    pub dispute_id: String,
    pub account_id: String,
    /// The disputed charge.
    pub charge_id: String,
    pub amount: Cents,
    /// The provider's status of the dispute (`needs_response`, `won`, `lost`...).
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    /// The credits held while it is open (given back if it is won).
    pub credits_held: Millicredits,
    pub new_balance: Millicredits,
    pub at: Millis,
}

/// Whether a payment was started by the auto top-up scheduler or by the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Automatic,
    Manual,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub trigger: Trigger,
    pub credits: Millicredits,
    pub amount: Cents,
    /// The payment provider's id of the charge.
    pub transaction_id: String,
    pub new_balance: Millicredits,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailure {
    pub trigger: Trigger,
    /// The provider's decline code, explained in plain words by the template.
    pub decline_code: String,
    pub credits: Millicredits,
    pub amount: Cents,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthenticationRequest {
    /// The provider's page where the customer completes 3-D Secure; none when the bank
    /// wants the payment made again on-session (the customer retries it).
    pub link: Option<String>,
    pub credits: Millicredits,
    pub amount: Cents,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumedBy {
    /// A payment completed, so automatic top-ups run again.
    Payment,
    /// Support resumed it by hand.
    Support,
    /// A new month began, so a pause for reaching the monthly spend cap lifted.
    NewMonth,
}

impl ResumedBy {
    pub const ALL: [Self; 3] = [Self::Payment, Self::Support, Self::NewMonth];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Payment => "payment",
            Self::Support => "support",
            Self::NewMonth => "new_month",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resumption {
    pub by: ResumedBy,
    pub at: Millis,
}

/// A notice's kind, as it is stored and listed (the API document lists these values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    TopupReceipt,
    TopupAnnounced,
    PaymentFailed,
    AuthenticationRequired,
    AutoTopupResumed,
    AutoTopupChanged,
    CardAtRisk,
    LowBalance,
    SpendCapReached,
    CreditsRefunded,
    DisputeOpened,
    DisputeClosed,
    WebhookEndpointDisabled,
}

impl NoticeKind {
    pub const ALL: [Self; 13] = [
        Self::TopupReceipt,
        Self::TopupAnnounced,
        Self::PaymentFailed,
        Self::AuthenticationRequired,
        Self::AutoTopupResumed,
        Self::AutoTopupChanged,
        Self::CardAtRisk,
        Self::LowBalance,
        Self::SpendCapReached,
        Self::CreditsRefunded,
        Self::DisputeOpened,
        Self::DisputeClosed,
        Self::WebhookEndpointDisabled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TopupReceipt => "topup_receipt",
            Self::TopupAnnounced => "topup_announced",
            Self::PaymentFailed => "payment_failed",
            Self::AuthenticationRequired => "authentication_required",
            Self::AutoTopupResumed => "auto_topup_resumed",
            Self::AutoTopupChanged => "auto_topup_changed",
            Self::CardAtRisk => "card_at_risk",
            Self::LowBalance => "low_balance",
            Self::SpendCapReached => "spend_cap_reached",
            Self::CreditsRefunded => "credits_refunded",
            Self::DisputeOpened => "dispute_opened",
            Self::DisputeClosed => "dispute_closed",
            Self::WebhookEndpointDisabled => "webhook_endpoint_disabled",
        }
    }
}

impl Notice {
    pub fn kind(&self) -> &'static str {
        let kind = match self {
            Self::TopupReceipt(_) => NoticeKind::TopupReceipt,
            Self::TopupAnnounced(_) => NoticeKind::TopupAnnounced,
            Self::PaymentFailed(_) => NoticeKind::PaymentFailed,
            Self::AuthenticationRequired(_) => NoticeKind::AuthenticationRequired,
            Self::AutoTopupResumed(_) => NoticeKind::AutoTopupResumed,
            Self::AutoTopupChanged(_) => NoticeKind::AutoTopupChanged,
            Self::CardAtRisk(_) => NoticeKind::CardAtRisk,
            Self::LowBalance(_) => NoticeKind::LowBalance,
            Self::SpendCapReached(_) => NoticeKind::SpendCapReached,
            Self::CreditsRefunded(_) => NoticeKind::CreditsRefunded,
            Self::DisputeOpened(_) => NoticeKind::DisputeOpened,
            Self::DisputeClosed(_) => NoticeKind::DisputeClosed,
            Self::WebhookEndpointDisabled(_) => NoticeKind::WebhookEndpointDisabled,
        };
        kind.as_str()
    }

    pub fn audience(&self) -> Audience {
        match self {
            Self::DisputeOpened(_) | Self::DisputeClosed(_) | Self::WebhookEndpointDisabled(_) => {
                Audience::Support
            }
            _ => Audience::Customer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_changed_the_settings_follows_the_role_of_the_key() {
        assert_eq!(ChangedBy::of_role("customer"), ChangedBy::Customer);
        assert_eq!(ChangedBy::of_role("support"), ChangedBy::Support);
        for role in ["admin", "operator"] {
            assert_eq!(ChangedBy::of_role(role), ChangedBy::Administrator, "{role}");
        }
    }

    #[test]
    fn every_notice_reads_back_as_it_was_stored() {
        let (credits, amount) = (Millicredits(1_847_500), Cents(1_848));
        for notice in [
            Notice::TopupReceipt(Receipt {
                trigger: Trigger::Automatic,
                credits,
                amount,
                transaction_id: "pi_1".into(),
                new_balance: Millicredits(2_000_001),
                at: 1_700_000_000_123,
            }),
            Notice::PaymentFailed(PaymentFailure {
                trigger: Trigger::Manual,
                decline_code: "insufficient_funds".into(),
                credits,
                amount,
                at: 7,
            }),
            Notice::AuthenticationRequired(AuthenticationRequest {
                link: Some("https://bank.example/3ds?a=1&b=2".into()),
                credits,
                amount,
            }),
            Notice::AutoTopupResumed(Resumption {
                by: ResumedBy::Support,
                at: 7,
            }),
            Notice::AutoTopupChanged(SettingsChange {
                by: ChangedBy::Support,
                enabled: false,
                threshold: Some(credits),
                target: None,
                monthly_cap: Some(amount),
                at: 7,
            }),
            Notice::TopupAnnounced(Announcement {
                credits,
                amount,
                at: 7,
            }),
            Notice::LowBalance(LowBalanceFacts {
                balance: credits,
                line: Millicredits(2_000_000),
                at: 7,
            }),
            Notice::CardAtRisk(CardFacts {
                risk: CardRisk::ExpiresBeforeNextTopUp,
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2026,
                next_top_up_at: Some(9),
            }),
            Notice::SpendCapReached(CapFacts {
                cap: Cents(10_000),
                spent: Cents(9_000),
                charge: amount,
                until: 1_800_000_000_000,
                time_zone: "Europe/Paris".into(),
                at: 7,
            }),
            Notice::CreditsRefunded(RefundFacts {
                amount,
                credits,
                transaction_id: "ch_1".into(),
                new_balance: Millicredits(-5),
                at: 7,
            }),
            Notice::DisputeClosed(DisputeFacts {
                dispute_id: "dp_1".into(),
                account_id: "acct_1".into(),
                charge_id: "ch_1".into(),
                amount,
                status: "won".into(),
                reason: Some("fraudulent".into()),
                credits_held: credits,
                new_balance: Millicredits(0),
                at: 7,
            }),
        ] {
            let stored = serde_json::to_string(&notice).expect("written");
            assert!(stored.contains(&format!("\"kind\":\"{}\"", notice.kind())));
            let read: Notice = serde_json::from_str(&stored).expect("read");
            assert_eq!(read, notice, "{stored}");
        }
    }
}

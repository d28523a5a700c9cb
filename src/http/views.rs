//! What the API answers with about top-ups, the ledger, usage and auto top-up, shared by
//! the resources (and the errors) that show them.

use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::state::AppState;
use crate::{
    clock::rfc3339,
    db::{DbError, ledger::LedgerEntry, usage::UsageRecord},
    domain::{
        account::Account,
        attempt::{Attempt, AttemptState, AttemptTrigger},
        auto_topup::decide,
        credits::Millicredits,
        pricing::Quote,
    },
};

#[derive(Debug, Serialize, ToSchema)]
pub struct TopupView {
    id: String,
    account_id: String,
    trigger: AttemptTrigger,
    state: AttemptState,
    credits: Millicredits,
    amount_cents: i64,
    amount_usd: String,
    currency: String,
    payment_method_id: String,
    /// The provider's payment id.
    transaction_id: Option<String>,
    /// The provider's charge of the payment (`ch_...`), which refunds and disputes name.
    charge_id: Option<String>,
    /// How much of the charge the provider has refunded; its credits were taken back.
    refunded_cents: i64,
    next_action: Option<NextActionView>,
    decline_code: Option<String>,
    failure_message: Option<String>,
    created_at: String,
    settled_at: Option<String>,
    /// Set when the top-up stayed unresolved too long and support was alerted.
    flagged_at: Option<String>,
}

/// What the customer must do for the payment to go on.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextActionView {
    /// `redirect_to_url`: send the customer to `url`, the bank's 3-D Secure page or
    /// topupd's page where they confirm the payment.
    #[serde(rename = "type")]
    kind: &'static str,
    url: String,
    /// The payment's client secret, for a page of your own: Stripe.js finishes the
    /// payment with it (`stripe.handleNextAction` for a `use_stripe_sdk` action, or
    /// `stripe.confirmCardPayment`), with the publishable key `payments.publishable_key`.
    client_secret: Option<String>,
}

impl From<Attempt> for TopupView {
    fn from(a: Attempt) -> Self {
        let waiting = a.state == AttemptState::RequiresAction;
        Self {
            next_action: a
                .next_action_url
                .filter(|_| waiting)
                .map(|url| NextActionView {
                    kind: "redirect_to_url",
                    url,
                    client_secret: a.client_secret.clone(),
                }),
            id: a.id,
            account_id: a.account_id,
            trigger: a.trigger,
            state: a.state,
            credits: a.credits,
            amount_cents: a.amount.0,
            amount_usd: a.amount.to_string(),
            currency: a.currency,
            payment_method_id: a.payment_method_id,
            transaction_id: a.provider_payment_id,
            charge_id: a.provider_charge_id,
            refunded_cents: a.refunded.0,
            decline_code: a.decline_code,
            failure_message: a.failure_message,
            created_at: rfc3339(a.created_at),
            settled_at: a.settled_at.map(rfc3339),
            flagged_at: a.flagged_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEntryView {
    id: i64,
    account_id: String,
    /// What moved the balance: `usage`, `refund` (of usage), `auto_topup`, `manual_topup`,
    /// `adjustment`, `payment_refund` (a top-up's charge refunded at the provider),
    /// `dispute_hold` or `dispute_release`.
    kind: String,
    /// What it belongs to (a top-up, usage record or adjustment id); unique per kind.
    reference: String,
    amount: Millicredits,
    balance_after: Millicredits,
    description: String,
    created_at: String,
}

impl From<LedgerEntry> for LedgerEntryView {
    fn from(entry: LedgerEntry) -> Self {
        Self {
            id: entry.id,
            account_id: entry.account_id,
            kind: entry.kind,
            reference: entry.reference,
            amount: entry.amount,
            balance_after: entry.balance_after,
            description: entry.description,
            created_at: rfc3339(entry.created_at),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UsageView {
    id: String,
    account_id: String,
    request_id: String,
    service: String,
    cost: Millicredits,
    /// The quote it was priced by, as `POST /v1/estimate` answers it.
    #[schema(value_type = Quote)]
    quote: Box<RawValue>,
    created_at: String,
    refunded_at: Option<String>,
}

impl UsageView {
    pub fn new(record: UsageRecord) -> Result<Self, DbError> {
        // Passed on as stored: checked to be JSON, not parsed into values and written again.
        let quote = RawValue::from_string(record.quote).map_err(|e| {
            DbError::Corrupt(format!("usage {} has an unreadable quote: {e}", record.id))
        })?;
        Ok(Self {
            id: record.id,
            account_id: record.account_id,
            request_id: record.request_id,
            service: record.service,
            cost: record.cost,
            quote,
            created_at: rfc3339(record.created_at),
            refunded_at: record.refunded_at.map(rfc3339),
        })
    }
}

/// The auto top-up state in a few words: what a customer short of credits can expect.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AutoTopupSummary {
    /// Paused until the customer pays again or support resumes it, or (for a reached
    /// spend cap) until `until`.
    Paused {
        /// `payment_failed`, `authentication_required`, `disputed`, `refunded` or
        /// `spend_cap_reached`.
        reason: Option<String>,
        decline_code: Option<String>,
        since: Option<String>,
        until: Option<String>,
    },
    /// A top-up is being charged.
    InProgress { topup_id: String },
    /// Auto top-up is off.
    Off,
    /// On; the scheduled scan that would charge it next, if the balance is below the
    /// threshold (null when no scan is scheduled).
    Active { next_top_up_at: Option<String> },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PauseView {
    pub(super) reason: Option<String>,
    pub(super) decline_code: Option<String>,
    pub(super) since: Option<String>,
    /// When the pause lifts by itself: the start of the next month, for a reached spend
    /// cap; null for a pause someone must end.
    pub(super) until: Option<String>,
}

pub(super) fn pause_view(account: &Account) -> Option<PauseView> {
    account.auto_topup.pause.as_ref().map(|pause| PauseView {
        reason: Some(pause.reason.as_str().to_owned()),
        decline_code: pause.code.clone(),
        since: Some(rfc3339(pause.since)),
        until: pause.until.map(rfc3339),
    })
}

/// What a customer short of credits can expect.
pub async fn summary(state: &AppState, account: &Account) -> Result<AutoTopupSummary, DbError> {
    if let Some(pause) = pause_view(account) {
        return Ok(AutoTopupSummary::Paused {
            reason: pause.reason,
            decline_code: pause.decline_code,
            since: pause.since,
            until: pause.until,
        });
    }
    if let Some(open) = state.db.open_attempt_of(&account.id).await? {
        return Ok(AutoTopupSummary::InProgress { topup_id: open.id });
    }
    if !account.auto_topup.enabled {
        return Ok(AutoTopupSummary::Off);
    }
    let now = state.clock.now_ms();
    // Nothing in progress, as just read.
    let decision = decide(&account.standing(false), now);
    let next_top_up_at = decision
        .next_top_up_at(
            now,
            account.auto_topup.window_ends_at,
            &state.config.auto_topup.scan_schedule,
        )
        .map(rfc3339);
    Ok(AutoTopupSummary::Active { next_top_up_at })
}

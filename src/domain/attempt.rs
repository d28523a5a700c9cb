//! The life of one top-up attempt, as a forward-only state machine. Every writer (the
//! charging flow, webhooks, polls, the reconciler) moves an attempt only forward, so
//! duplicated or reordered news can never undo a settled outcome.

use super::{credits::Millicredits, money::Cents};

/// The decline code of a bank that wants the customer to authenticate a payment made
/// without them (Stripe's off-session answer): it pauses like a 3-D Secure request.
pub const AUTHENTICATION_DECLINE: &str = "authentication_required";
use crate::clock::Millis;

/// Where an attempt stands. The non-terminal states before `RequiresAction` are written
/// *before* the provider call they guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptState {
    /// Claimed, which guards the create (no money moves on create): resumed, the create
    /// may have reached the provider.
    Claimed,
    /// About to ask the provider to create the payment, as the release before wrote it
    /// after the claim; still resumed like `Claimed`.
    Creating,
    /// The provider's payment exists and its id is stored.
    Created,
    /// About to ask the provider to confirm, which moves the money.
    Confirming,
    /// The customer must authenticate (3-D Secure) before the payment can complete.
    RequiresAction,
    /// The provider accepted the payment and will report the outcome.
    Processing,
    Succeeded,
    Failed,
    Canceled,
}

impl AttemptState {
    pub const ALL: [Self; 9] = [
        Self::Claimed,
        Self::Creating,
        Self::Created,
        Self::Confirming,
        Self::RequiresAction,
        Self::Processing,
        Self::Succeeded,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Claimed => "claimed",
            Self::Creating => "creating",
            Self::Created => "created",
            Self::Confirming => "confirming",
            Self::RequiresAction => "requires_action",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }

    fn rank(self) -> u8 {
        match self {
            Self::Claimed => 0,
            Self::Creating => 1,
            Self::Created => 2,
            Self::Confirming => 3,
            Self::RequiresAction => 4,
            Self::Processing => 5,
            Self::Succeeded | Self::Failed | Self::Canceled => 6,
        }
    }

    /// Whether the attempt may move from `self` to `next`: strictly forward, and never out
    /// of a terminal state.
    pub fn can_become(self, next: Self) -> bool {
        !self.is_terminal() && next.rank() > self.rank()
    }

    /// The states from which `next` may be reached, for conditional updates.
    pub fn predecessors(next: Self) -> Vec<Self> {
        Self::ALL
            .into_iter()
            .filter(|s| s.can_become(next))
            .collect()
    }

    /// The attempt state that a provider payment status stands for. Payments are always
    /// created with a card, so `requires_payment_method` means a confirmation failed.
    pub fn of_payment(status: &str, failure_code: Option<&str>) -> Option<Self> {
        Some(match status {
            "requires_confirmation" => Self::Created,
            "requires_action" => Self::RequiresAction,
            "processing" | "requires_capture" => Self::Processing,
            "succeeded" => Self::Succeeded,
            // Declined off-session because the bank wants the customer: the same payment
            // waits for them to confirm it on-session.
            "requires_payment_method" if failure_code == Some(AUTHENTICATION_DECLINE) => {
                Self::RequiresAction
            }
            "requires_payment_method" => Self::Failed,
            // A declined payment is cancelled as it fails, so that nothing can take money
            // for it later; it still failed. One cancelled while it waited for the
            // customer was given up.
            "canceled" if failure_code.is_some_and(|code| code != AUTHENTICATION_DECLINE) => {
                Self::Failed
            }
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }
}

impl std::fmt::Display for AttemptState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What started an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptTrigger {
    /// The scheduler found the balance below the threshold.
    Auto,
    /// The customer bought credits.
    Manual,
    /// The customer completed a paused automatic top-up by hand.
    Retry,
}

impl AttemptTrigger {
    pub const ALL: [Self; 3] = [Self::Auto, Self::Manual, Self::Retry];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Manual => "manual",
            Self::Retry => "retry",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// One top-up attempt: what it buys, on which card, and where it stands. Built from the
/// stored row at the database boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: String,
    pub account_id: String,
    /// The account's top-up sequence number, which the idempotency key is made of.
    pub seq: i64,
    pub trigger: AttemptTrigger,
    pub idempotency_key: String,
    /// The caller's Idempotency-Key and a fingerprint of its request, for purchases.
    pub request_key: Option<String>,
    pub request_fingerprint: Option<String>,
    pub credits: Millicredits,
    pub amount: Cents,
    pub currency: String,
    pub payment_method_id: String,
    pub customer_id: String,
    pub state: AttemptState,
    pub provider_payment_id: Option<String>,
    /// Where the customer completes 3-D Secure, when the provider gave a link.
    pub next_action_url: Option<String>,
    pub decline_code: Option<String>,
    pub failure_message: Option<String>,
    pub amount_received: Option<Cents>,
    /// The payment's client secret, which the provider's redirect back carries.
    pub client_secret: Option<String>,
    /// The provider's charge of the payment (its latest), which refunds and disputes name.
    pub provider_charge_id: Option<String>,
    /// How much of the charge the provider has refunded (only ever grows).
    pub refunded: Cents,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub settled_at: Option<Millis>,
    /// Set when the attempt stayed unresolved too long.
    pub flagged_at: Option<Millis>,
    /// When the reconciler next asks the provider about it.
    pub next_check_at: Millis,
    /// How often the reconciler has asked.
    pub check_count: i64,
    /// Why the attempt is failing, while its payment is being cancelled.
    pub failing: Option<Failing>,
}

/// Why an attempt is failing, recorded before its payment is cancelled: the cancelled
/// payment says nothing of why, and its webhook may settle the attempt first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub code: String,
    pub message: Option<String>,
    /// The provider refused our request outright: support must look at it.
    pub flag: bool,
}

/// What the provider said, to record with a settling move.
#[derive(Debug, Clone, Default)]
pub struct ProviderFacts<'a> {
    pub provider_payment_id: Option<&'a str>,
    pub next_action_url: Option<&'a str>,
    pub decline_code: Option<&'a str>,
    pub failure_message: Option<&'a str>,
    pub amount_received: Option<Cents>,
    pub client_secret: Option<&'a str>,
    pub charge_id: Option<&'a str>,
    /// What to credit when the provider received another amount than the attempt asked
    /// for (a payment adopted from an earlier incarnation of the attempt): the credit
    /// always matches the money received.
    pub credits_received: Option<Millicredits>,
    /// The provider refused our request outright: support must look at it.
    pub flag: bool,
}

impl Attempt {
    /// The attempt as a move to `target` at `at` with the provider's `facts` leaves it. A
    /// payment id once stored stays; what the provider says now replaces what it said
    /// before; what it does not say is kept.
    pub fn settled(&self, target: AttemptState, facts: &ProviderFacts<'_>, at: Millis) -> Self {
        let newer = |fact: Option<&str>, held: &Option<String>| {
            fact.map(str::to_owned).or_else(|| held.clone())
        };
        Self {
            state: target,
            updated_at: at,
            settled_at: if target.is_terminal() {
                Some(at)
            } else {
                self.settled_at
            },
            provider_payment_id: self
                .provider_payment_id
                .clone()
                .or_else(|| facts.provider_payment_id.map(str::to_owned)),
            next_action_url: newer(facts.next_action_url, &self.next_action_url),
            decline_code: newer(facts.decline_code, &self.decline_code),
            failure_message: newer(facts.failure_message, &self.failure_message),
            amount_received: facts.amount_received.or(self.amount_received),
            amount: facts.amount_received.unwrap_or(self.amount),
            credits: facts.credits_received.unwrap_or(self.credits),
            client_secret: newer(facts.client_secret, &self.client_secret),
            provider_charge_id: newer(facts.charge_id, &self.provider_charge_id),
            flagged_at: self.flagged_at.or(facts.flag.then_some(at)),
            // A failure is recorded for the cancel that follows it; any move consumes it.
            failing: None,
            ..self.clone()
        }
    }
}

/// An automatic top-up of 5,000 credits for $50.00 waiting at `state`, for tests.
#[cfg(test)]
pub fn sample(state: AttemptState) -> Attempt {
    Attempt {
        id: "tpu_1".into(),
        account_id: "acct_1".into(),
        seq: 1,
        trigger: AttemptTrigger::Auto,
        idempotency_key: "topupd:topup:acct_1:1".into(),
        request_key: None,
        request_fingerprint: None,
        credits: Millicredits(5_000_000),
        amount: Cents(5_000),
        currency: "usd".into(),
        payment_method_id: "pm_1".into(),
        customer_id: "cus_1".into(),
        state,
        provider_payment_id: Some("pi_1".into()),
        next_action_url: None,
        decline_code: None,
        failure_message: None,
        amount_received: None,
        client_secret: None,
        provider_charge_id: None,
        refunded: Cents(0),
        created_at: 0,
        updated_at: 0,
        settled_at: None,
        flagged_at: None,
        next_check_at: 0,
        check_count: 0,
        failing: None,
    }
}

/// The provider idempotency key of an account's top-up with sequence number `seq`: held
/// unique in the database and written before the provider is called, so a restart, a
/// replica or a re-run asks for the same payment again and never for a second one.
pub fn idempotency_key(prefix: &str, account_id: &str, seq: i64) -> String {
    format!("{prefix}:topup:{account_id}:{seq}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_key_per_account_and_sequence() {
        assert_eq!(
            idempotency_key("topupd", "acct_1", 7),
            "topupd:topup:acct_1:7"
        );
        assert_ne!(
            idempotency_key("topupd", "acct_1", 7),
            idempotency_key("topupd", "acct_1", 8)
        );
    }

    #[test]
    fn a_payment_stands_for_the_attempt_state_its_status_and_last_failure_say() {
        use AttemptState::*;
        for (status, failure, state) in [
            ("requires_confirmation", None, Created),
            ("requires_action", None, RequiresAction),
            ("processing", None, Processing),
            ("succeeded", None, Succeeded),
            ("requires_payment_method", Some("card_declined"), Failed),
            // Declined off-session for want of the customer: it waits for them.
            (
                "requires_payment_method",
                Some(AUTHENTICATION_DECLINE),
                RequiresAction,
            ),
            // Declined, then cancelled so that nothing can charge it later: still failed.
            ("canceled", Some("insufficient_funds"), Failed),
            (
                "canceled",
                Some("payment_intent_authentication_failure"),
                Failed,
            ),
            // Given up while it waited for the customer, or never tried.
            ("canceled", Some(AUTHENTICATION_DECLINE), Canceled),
            ("canceled", None, Canceled),
        ] {
            assert_eq!(
                AttemptState::of_payment(status, failure),
                Some(state),
                "{status} {failure:?}"
            );
        }
        assert_eq!(
            AttemptState::of_payment("requires_capture_later", None),
            None
        );
    }

    #[test]
    fn the_normal_paths_are_allowed() {
        use AttemptState::*;
        for path in [
            &[Claimed, Creating, Created, Confirming, Succeeded][..],
            &[
                Claimed,
                Creating,
                Created,
                Confirming,
                RequiresAction,
                Succeeded,
            ],
            &[
                Claimed,
                Creating,
                Created,
                Confirming,
                RequiresAction,
                Failed,
            ],
            &[Claimed, Creating, Created, Confirming, Processing, Failed],
            &[Claimed, Creating, Failed],
        ] {
            for pair in path.windows(2) {
                assert!(
                    pair[0].can_become(pair[1]),
                    "{:?} -> {:?}",
                    pair[0],
                    pair[1]
                );
            }
        }
        assert!(!Processing.can_become(RequiresAction));
        assert!(!Confirming.can_become(Created));
        assert!(!Succeeded.can_become(Failed));
        assert!(!Failed.can_become(Succeeded));
        assert_eq!(AttemptState::predecessors(Claimed), vec![]);
    }

    #[test]
    fn names_round_trip() {
        for state in AttemptState::ALL {
            assert_eq!(AttemptState::parse(state.as_str()), Some(state));
        }
    }

    /// A model of the ledger side: the settle step credits when, and only when, it moves an
    /// attempt into `Succeeded`.
    fn apply(state: &mut AttemptState, credits: &mut u32, next: AttemptState) {
        if state.can_become(next) {
            if next == AttemptState::Succeeded {
                *credits += 1;
            }
            *state = next;
        }
    }

    proptest! {
        #[test]
        fn any_sequence_of_news_moves_forward_absorbs_and_credits_iff_succeeded(
            news in proptest::collection::vec(proptest::sample::select(AttemptState::ALL.to_vec()), 0..40),
        ) {
            let mut state = AttemptState::Claimed;
            let mut credits = 0;
            let mut terminal_seen: Option<AttemptState> = None;
            for next in news {
                let before = state;
                apply(&mut state, &mut credits, next);
                prop_assert!(state == before || before.rank() < state.rank(), "{before:?} -> {state:?}");
                if let Some(terminal) = terminal_seen {
                    prop_assert_eq!(state, terminal, "terminal states absorb");
                }
                if state.is_terminal() {
                    terminal_seen = Some(state);
                }
            }
            prop_assert_eq!(credits == 1, state == AttemptState::Succeeded);
            prop_assert!(credits <= 1);
        }
    }
}

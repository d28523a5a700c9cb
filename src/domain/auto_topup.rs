//! The auto top-up rules: what settings are allowed, when an account is due, how much to
//! charge, and what a settled payment does to a pause. Pure; the scan and the settlement
//! apply them in the database.

use rust_decimal::Decimal;

use super::{
    attempt::{AUTHENTICATION_DECLINE, AttemptState, AttemptTrigger},
    credits::{MILLIS_PER_CREDIT, Millicredits},
    money::Cents,
    validation::FieldErrors,
};
use crate::clock::Millis;

/// Bounds of the settings, in whole credits.
pub const MIN_THRESHOLD: i64 = 100;
pub const MAX_THRESHOLD: i64 = 99_000;
pub const MIN_TARGET: i64 = 1_100;
pub const MAX_TARGET: i64 = 100_000;
/// The target must exceed the threshold by at least this many credits.
pub const MIN_GAP: i64 = 1_000;

/// Why automatic top-ups stopped until someone acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseReason {
    /// A charge was declined (or its authentication failed).
    PaymentFailed,
    /// The bank asks the customer to authenticate (3-D Secure).
    AuthenticationRequired,
    /// A top-up's charge was disputed with the bank: nothing is charged again before
    /// support has looked.
    Disputed,
    /// A top-up's charge was refunded at the provider: charging the card again at once
    /// would undo the refund.
    Refunded,
    /// The next automatic top-up would take this month's past the customer's spend cap:
    /// it lifts by itself when the month ends, or when the customer raises the cap.
    SpendCapReached,
}

impl PauseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentFailed => "payment_failed",
            Self::AuthenticationRequired => "authentication_required",
            Self::Disputed => "disputed",
            Self::Refunded => "refunded",
            Self::SpendCapReached => "spend_cap_reached",
        }
    }

    pub const ALL: [Self; 5] = [
        Self::PaymentFailed,
        Self::AuthenticationRequired,
        Self::Disputed,
        Self::Refunded,
        Self::SpendCapReached,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// How much a pause weighs: a heavier one is never replaced by a lighter one, so a
    /// decline does not turn a dispute's pause into one the customer can pay away.
    fn weight(self) -> u8 {
        match self {
            Self::PaymentFailed | Self::AuthenticationRequired | Self::SpendCapReached => 0,
            Self::Refunded => 1,
            Self::Disputed => 2,
        }
    }

    /// Whether a pause for `self` may replace a pause for `standing`.
    pub fn replaces(self, standing: Self) -> bool {
        self.weight() >= standing.weight()
    }

    /// Whether a payment ends the pause: a charge that goes through answers a decline or
    /// a request for authentication, but only support ends a pause set by money taken
    /// back (a dispute or a refund), and the customer cannot retry it away.
    pub fn ended_by_payment(self) -> bool {
        matches!(self, Self::PaymentFailed | Self::AuthenticationRequired)
    }
}

/// Checks threshold and target (whole credits), naming each bad field.
pub fn validate_bounds(
    threshold: Decimal,
    target: Decimal,
) -> Result<(Millicredits, Millicredits), FieldErrors> {
    let mut errors = FieldErrors::new();
    let whole = |value: Decimal| {
        value
            .fract()
            .is_zero()
            .then(|| i64::try_from(value).ok())
            .flatten()
    };
    let threshold = match whole(threshold) {
        Some(t) if (MIN_THRESHOLD..=MAX_THRESHOLD).contains(&t) => Some(t),
        _ => {
            errors.add(
                "threshold",
                format!(
                    "must be a whole number of credits from {MIN_THRESHOLD} to {MAX_THRESHOLD}"
                ),
            );
            None
        }
    };
    let target = match whole(target) {
        Some(t) if (MIN_TARGET..=MAX_TARGET).contains(&t) => Some(t),
        _ => {
            errors.add(
                "target",
                format!("must be a whole number of credits from {MIN_TARGET} to {MAX_TARGET}"),
            );
            None
        }
    };
    if let (Some(threshold), Some(target)) = (threshold, target)
        && target - threshold < MIN_GAP
    {
        errors.add(
            "target",
            format!("must be at least {MIN_GAP} credits above the threshold ({threshold})"),
        );
    }
    match (threshold, target) {
        (Some(threshold), Some(target)) if errors.is_empty() => Ok((
            Millicredits(threshold * MILLIS_PER_CREDIT),
            Millicredits(target * MILLIS_PER_CREDIT),
        )),
        _ => Err(errors),
    }
}

/// Bounds of the advance notice a customer may ask for before each automatic charge.
pub const MIN_NOTICE_MINUTES: i64 = 5;
pub const MAX_NOTICE_MINUTES: i64 = 1_440;
/// A charge announced this long ago and never made (the balance went back up, say) is
/// announced again rather than made on old figures.
pub const PLAN_STALE_MS: i64 = 24 * 3_600_000;

/// The advance notice asked for, in whole minutes, naming the field when it is not one.
pub fn validate_notice_minutes(minutes: i64) -> Result<i64, FieldErrors> {
    if (MIN_NOTICE_MINUTES..=MAX_NOTICE_MINUTES).contains(&minutes) {
        Ok(minutes)
    } else {
        Err(FieldErrors::single(
            "advance_notice_minutes",
            format!(
                "must be a whole number of minutes from {MIN_NOTICE_MINUTES} to {MAX_NOTICE_MINUTES}, or null for none"
            ),
        ))
    }
}

/// An automatic charge announced to the customer, to be made from `at` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedCharge {
    pub charge: Charge,
    pub at: Millis,
}

/// What the scan does with a due account, given the notice its customer asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeStep {
    /// Charge now: no notice was asked for, or the announced time has come (the
    /// announced charge, not a new figure).
    Charge(Charge),
    /// Announce `charge` for `at`, and charge nothing yet.
    Announce { charge: Charge, at: Millis },
    /// Announced, and its time has not come.
    Wait,
}

/// With no notice asked for, the charge is made now; with one, it is announced first,
/// made once its time has come, and announced again if it went stale.
pub fn notice_step(
    notice_minutes: Option<i64>,
    planned: Option<PlannedCharge>,
    now: Millis,
    charge: Charge,
) -> NoticeStep {
    let Some(minutes) = notice_minutes else {
        return NoticeStep::Charge(charge);
    };
    match planned {
        Some(plan) if plan.at > now => NoticeStep::Wait,
        Some(plan) if now < plan.at.saturating_add(PLAN_STALE_MS) => {
            NoticeStep::Charge(plan.charge)
        }
        _ => NoticeStep::Announce {
            charge,
            at: now.saturating_add(minutes * 60_000),
        },
    }
}

/// The smallest automatic top-up, in whole credits: the balance is below the threshold,
/// which is at least `MIN_GAP` below the target.
pub const SMALLEST_AUTO_CREDITS: i64 = MIN_GAP + 1;

/// What a top-up charges: whole credits, and their price.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    pub credits: i64,
    pub amount: Cents,
}

/// The whole credits that bring `balance` back up to `target`, rounded up, at
/// `credit_price_cents` a credit. `None` when nothing is worth charging: at or above the
/// target, or closer to it than the smallest purchase (`min_cents`) buys.
pub fn charge_to_target(
    balance: Millicredits,
    target: Millicredits,
    credit_price_cents: i64,
    min_cents: i64,
) -> Option<Charge> {
    // A balance below zero (credits taken back by a refund or a dispute) is not made up
    // in one charge: no automatic charge buys more than the target.
    let missing = target.0.saturating_sub(balance.0).clamp(0, target.0);
    let credits = (missing + MILLIS_PER_CREDIT - 1) / MILLIS_PER_CREDIT;
    let amount = Cents::for_credits(credits, credit_price_cents)?;
    (credits > 0 && amount.0 >= min_cents).then_some(Charge { credits, amount })
}

/// The card a claimed top-up charges when one was chosen for it (`None`: the account's
/// default card). Automatic charges use the card set for auto top-up; a retry charges the
/// current default, as a customer who has just replaced a declined card expects.
pub fn card_chosen_for(trigger: AttemptTrigger, auto_topup_card: Option<String>) -> Option<String> {
    match trigger {
        AttemptTrigger::Auto => auto_topup_card,
        AttemptTrigger::Retry | AttemptTrigger::Manual => None,
    }
}

/// Where an account's auto top-up stands, in the words every response, page and command
/// uses: a pause first (someone must act), then a top-up in progress (manual or not),
/// then whether it is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AutoTopupState {
    Paused,
    InProgress,
    Off,
    Active,
}

impl AutoTopupState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paused => "paused",
            Self::InProgress => "in_progress",
            Self::Off => "off",
            Self::Active => "active",
        }
    }
}

/// Everything the rules look at for one account.
#[derive(Debug, Clone, Copy)]
pub struct Standing {
    pub enabled: bool,
    pub paused: Option<PauseReason>,
    pub balance: Millicredits,
    pub threshold: Option<Millicredits>,
    /// The end of the window opened by the last automatic attempt.
    pub window_ends_at: Millis,
    pub attempt_open: bool,
}

/// Why the scan would, or would not, charge an account now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Due,
    NotEnabled,
    Paused(PauseReason),
    /// Due, but charging it would take this month's automatic top-ups (`spent`, counting
    /// those in progress) past the cap: paused until the month ends.
    SpendCapReached {
        spent: Cents,
        charge: Cents,
        cap: Cents,
        until: Millis,
    },
    /// Due, and the customer asked to be told first: `amount` was announced for `at`.
    Announced {
        amount: Cents,
        at: Millis,
    },
    AboveThreshold,
    RateLimited {
        until: Millis,
    },
    InProgress,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Due => "due",
            Self::NotEnabled => "not_enabled",
            Self::Paused(_) => "paused",
            Self::SpendCapReached { .. } => "spend_cap_reached",
            Self::Announced { .. } => "announced",
            Self::AboveThreshold => "above_threshold",
            Self::RateLimited { .. } => "rate_limited",
            Self::InProgress => "in_progress",
        }
    }

    /// What the decision journal says of it: `charged` when the scan's claim made a
    /// top-up, else the rule's answer.
    pub fn journal_label(self, charged: bool) -> &'static str {
        if charged { "charged" } else { self.as_str() }
    }

    /// The decision in words, with the figures it was taken on, as support reads it.
    pub fn reason(
        self,
        balance: Millicredits,
        threshold: Option<Millicredits>,
        target: Option<Millicredits>,
        charged: bool,
    ) -> String {
        let credits = |m: Option<Millicredits>| {
            m.map_or_else(
                || "none".to_owned(),
                |m| format!("{} credits", m.to_display()),
            )
        };
        let (balance, threshold, target) =
            (credits(Some(balance)), credits(threshold), credits(target));
        match self {
            Self::Due if charged => {
                format!(
                    "the balance ({balance}) was below the threshold ({threshold}): charged to bring it to the target ({target})"
                )
            }
            Self::Due => format!("the balance ({balance}) was below the threshold ({threshold})"),
            Self::NotEnabled => "auto top-up was off".to_owned(),
            Self::Paused(reason) => format!("auto top-up was paused ({})", reason.as_str()),
            Self::SpendCapReached {
                spent,
                charge,
                cap,
                until,
            } => format!(
                "the balance ({balance}) was below the threshold ({threshold}), but charging {charge} would bring this month's automatic top-ups from {spent} past the monthly spend cap ({cap}): paused until {}",
                crate::clock::rfc3339(until)
            ),
            Self::Announced { amount, at } => format!(
                "the balance ({balance}) was below the threshold ({threshold}); the customer asked to be told before each automatic charge, so a charge of {amount} was announced for {}",
                crate::clock::rfc3339(at)
            ),
            Self::AboveThreshold => {
                format!("the balance ({balance}) was not below the threshold ({threshold})")
            }
            Self::RateLimited { until } => format!(
                "the balance ({balance}) was below the threshold ({threshold}), but an automatic top-up was already tried in the rate-limit window, which ends at {}",
                crate::clock::rfc3339(until)
            ),
            Self::InProgress => "a top-up of the account was still in progress".to_owned(),
        }
    }

    /// When the account may be charged automatically next, if nothing else changes:
    /// never before the end of the window opened by the last automatic attempt.
    pub fn next_eligible_at(self, now: Millis, window_ends_at: Millis) -> Option<Millis> {
        match self {
            Self::Due | Self::AboveThreshold => Some(now.max(window_ends_at)),
            Self::RateLimited { until }
            | Self::SpendCapReached { until, .. }
            | Self::Announced { at: until, .. } => Some(until),
            Self::NotEnabled | Self::Paused(_) | Self::InProgress => None,
        }
    }

    /// The scheduled scan at which the account would be charged next, if its balance is
    /// (or falls) below the threshold: the first tick of `schedule` at or after the
    /// moment the rule allows it.
    pub fn next_top_up_at(
        self,
        now: Millis,
        window_ends_at: Millis,
        schedule: &str,
    ) -> Option<Millis> {
        self.next_eligible_at(now, window_ends_at)
            .and_then(|at| super::schedule::next_scan(schedule, at))
    }
}

/// The scan's rule, in order: enabled, not paused, no top-up in progress (whatever its
/// outcome, it changes the balance), below the threshold, outside the window of the last
/// automatic attempt.
pub fn decide(standing: &Standing, now: Millis) -> Decision {
    let Some(threshold) = standing.threshold.filter(|_| standing.enabled) else {
        return Decision::NotEnabled;
    };
    if let Some(reason) = standing.paused {
        return Decision::Paused(reason);
    }
    if standing.attempt_open {
        return Decision::InProgress;
    }
    if standing.balance >= threshold {
        return Decision::AboveThreshold;
    }
    if standing.window_ends_at > now {
        return Decision::RateLimited {
            until: standing.window_ends_at,
        };
    }
    Decision::Due
}

/// What settling an attempt does to the account's pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseChange {
    Keep,
    Pause(PauseReason),
    /// Ends the pause, if there is one.
    Resume,
}

/// Automatic charges (and the customer's retry of one) pause on a decline or a request
/// for authentication, and a success ends a pause. Manual purchases leave pauses alone.
pub fn pause_change(
    trigger: AttemptTrigger,
    settled: AttemptState,
    decline_code: Option<&str>,
) -> PauseChange {
    if trigger == AttemptTrigger::Manual {
        return PauseChange::Keep;
    }
    match settled {
        AttemptState::Failed if decline_code == Some(AUTHENTICATION_DECLINE) => {
            PauseChange::Pause(PauseReason::AuthenticationRequired)
        }
        AttemptState::Failed => PauseChange::Pause(PauseReason::PaymentFailed),
        AttemptState::RequiresAction => PauseChange::Pause(PauseReason::AuthenticationRequired),
        AttemptState::Succeeded => PauseChange::Resume,
        _ => PauseChange::Keep,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("decimal")
    }

    #[test]
    fn bounds_follow_the_published_rules() {
        assert!(validate_bounds(dec("100"), dec("1100")).is_ok());
        assert!(validate_bounds(dec("99000"), dec("100000")).is_ok());
        let fields = |t, g| -> Vec<String> {
            validate_bounds(dec(t), dec(g))
                .expect_err("invalid")
                .iter()
                .map(|(f, _)| f.to_owned())
                .collect()
        };
        assert_eq!(fields("99", "5000"), ["threshold"]);
        assert_eq!(fields("99001", "100000"), ["threshold"]);
        assert_eq!(fields("100", "1099"), ["target"]);
        assert_eq!(fields("100", "100001"), ["target"]);
        assert_eq!(
            fields("500", "1499"),
            ["target"],
            "less than 1000 above the threshold"
        );
        assert_eq!(fields("100.5", "5000"), ["threshold"]);
        assert_eq!(fields("50", "50"), ["target", "threshold"]);
    }

    #[test]
    fn the_charge_restores_the_target_in_whole_credits() {
        let charge = |balance, target| {
            charge_to_target(Millicredits(balance), Millicredits(target), 1, 100)
                .map_or(0, |c| c.credits)
        };
        assert_eq!(charge(499_500, 5_000_000), 4501);
        assert_eq!(charge(0, 5_000_000), 5000);
        assert_eq!(charge(6_000_000, 5_000_000), 0);
        assert_eq!(charge(4_900_000, 5_000_000), 100, "exactly the minimum");
        assert_eq!(
            charge(-2_000_000, 5_000_000),
            5000,
            "below zero, never more than the target"
        );
    }

    #[test]
    fn only_support_ends_a_pause_for_money_taken_back() {
        for reason in [
            PauseReason::PaymentFailed,
            PauseReason::AuthenticationRequired,
        ] {
            assert!(reason.ended_by_payment(), "{reason:?}");
        }
        for reason in [PauseReason::Disputed, PauseReason::Refunded] {
            assert!(!reason.ended_by_payment(), "{reason:?}");
            assert_eq!(PauseReason::parse(reason.as_str()), Some(reason));
            assert!(!PauseReason::PaymentFailed.replaces(reason), "{reason:?}");
            assert!(reason.replaces(PauseReason::AuthenticationRequired));
        }
        assert!(PauseReason::Disputed.replaces(PauseReason::Refunded));
        assert!(!PauseReason::Refunded.replaces(PauseReason::Disputed));
    }

    #[test]
    fn only_automatic_charges_use_the_card_set_for_auto_top_up() {
        let set = || Some("pm_set".to_owned());
        assert_eq!(card_chosen_for(AttemptTrigger::Auto, set()), set());
        assert_eq!(card_chosen_for(AttemptTrigger::Auto, None), None);
        assert_eq!(
            card_chosen_for(AttemptTrigger::Retry, set()),
            None,
            "the default"
        );
    }

    #[test]
    fn less_than_the_smallest_purchase_is_not_worth_charging() {
        let charge = |balance, price| {
            charge_to_target(Millicredits(balance), Millicredits(5_000_000), price, 100)
                .map_or(0, |c| c.credits)
        };
        assert_eq!(charge(4_999_999, 1), 0, "one cent");
        assert_eq!(charge(4_901_000, 1), 0, "99 credits for 99 cents");
        assert_eq!(
            charge(4_900_001, 1),
            100,
            "99.001 short rounds up to 100 credits"
        );
        assert_eq!(
            charge(4_999_999, 100),
            1,
            "one credit at a dollar is worth it"
        );
        assert_eq!(
            charge_to_target(Millicredits(999_999), Millicredits(2_000_000), 1, 1001),
            Some(Charge {
                credits: SMALLEST_AUTO_CREDITS,
                amount: Cents(1001)
            }),
            "below a threshold 1,000 under the target, the smallest automatic top-up"
        );
    }

    #[test]
    fn a_charge_the_customer_asked_to_hear_of_is_announced_then_made_as_announced() {
        let (now, minute) = (1_000_000, 60_000);
        let charge = Charge {
            credits: 4_000,
            amount: Cents(4_000),
        };
        let announced = Charge {
            credits: 3_500,
            amount: Cents(3_500),
        };
        let plan = |at| {
            Some(PlannedCharge {
                charge: announced,
                at,
            })
        };
        assert_eq!(
            notice_step(None, None, now, charge),
            NoticeStep::Charge(charge)
        );
        assert_eq!(
            notice_step(Some(30), None, now, charge),
            NoticeStep::Announce {
                charge,
                at: now + 30 * minute
            }
        );
        assert_eq!(
            notice_step(Some(30), plan(now + 1), now, charge),
            NoticeStep::Wait
        );
        assert_eq!(
            notice_step(Some(30), plan(now), now, charge),
            NoticeStep::Charge(announced),
            "what was announced, not today's figure"
        );
        assert_eq!(
            notice_step(Some(30), plan(now - PLAN_STALE_MS), now, charge),
            NoticeStep::Announce {
                charge,
                at: now + 30 * minute
            },
            "stale: announced again"
        );
        for (minutes, ok) in [(4, false), (5, true), (1_440, true), (1_441, false)] {
            assert_eq!(validate_notice_minutes(minutes).is_ok(), ok, "{minutes}");
        }
    }

    #[test]
    fn decisions_explain_why_not() {
        let base = Standing {
            enabled: true,
            paused: None,
            balance: Millicredits(10_000),
            threshold: Some(Millicredits(100_000)),
            window_ends_at: 0,
            attempt_open: false,
        };
        assert_eq!(decide(&base, 1000), Decision::Due);
        assert_eq!(
            decide(
                &Standing {
                    enabled: false,
                    ..base
                },
                1000
            ),
            Decision::NotEnabled
        );
        assert_eq!(
            decide(
                &Standing {
                    paused: Some(PauseReason::PaymentFailed),
                    ..base
                },
                1000
            ),
            Decision::Paused(PauseReason::PaymentFailed)
        );
        assert_eq!(
            decide(
                &Standing {
                    balance: Millicredits(100_000),
                    ..base
                },
                1000
            ),
            Decision::AboveThreshold
        );
        assert_eq!(
            decide(
                &Standing {
                    window_ends_at: 5000,
                    ..base
                },
                1000
            ),
            Decision::RateLimited { until: 5000 }
        );
        assert_eq!(
            decide(
                &Standing {
                    window_ends_at: 1000,
                    ..base
                },
                1000
            ),
            Decision::Due,
            "the window ends exactly then"
        );
        assert_eq!(
            decide(
                &Standing {
                    attempt_open: true,
                    ..base
                },
                1000
            ),
            Decision::InProgress
        );
        assert_eq!(
            decide(
                &Standing {
                    attempt_open: true,
                    window_ends_at: 5000,
                    ..base
                },
                1000
            ),
            Decision::InProgress,
            "an automatic attempt in progress opened the window: it is what holds the account"
        );
        // 2026-01-01T00:01:00Z: the next half hour, not "now".
        let (minute, half_hour) = (1_767_225_660_000, 1_767_227_400_000);
        let every_half_hour = "0 */30 * * * *";
        assert_eq!(
            Decision::Due.next_top_up_at(minute, 0, every_half_hour),
            Some(half_hour)
        );
        assert_eq!(
            Decision::RateLimited {
                until: half_hour + 1
            }
            .next_top_up_at(minute, 0, every_half_hour),
            Some(half_hour + 1_800_000)
        );
        assert_eq!(
            Decision::Due.next_top_up_at(minute, 0, ""),
            None,
            "no scheduled scans"
        );
        assert_eq!(
            Decision::InProgress.next_top_up_at(minute, 0, every_half_hour),
            None
        );
        assert_eq!(
            Decision::AboveThreshold.next_eligible_at(1000, 5000),
            Some(5000),
            "the window still holds"
        );
        assert_eq!(Decision::Due.next_eligible_at(1000, 0), Some(1000));
    }

    #[test]
    fn only_automatic_payments_pause_and_success_resumes() {
        use AttemptState::*;
        use AttemptTrigger::*;
        let pause = |reason| PauseChange::Pause(reason);
        assert_eq!(
            pause_change(Auto, Failed, None),
            pause(PauseReason::PaymentFailed)
        );
        assert_eq!(
            pause_change(Auto, RequiresAction, None),
            pause(PauseReason::AuthenticationRequired)
        );
        assert_eq!(pause_change(Auto, Succeeded, None), PauseChange::Resume);
        assert_eq!(
            pause_change(Auto, Failed, Some(AUTHENTICATION_DECLINE)),
            pause(PauseReason::AuthenticationRequired)
        );
        assert_eq!(
            pause_change(Retry, Failed, None),
            pause(PauseReason::PaymentFailed)
        );
        assert_eq!(pause_change(Retry, Succeeded, None), PauseChange::Resume);
        assert_eq!(pause_change(Manual, Failed, None), PauseChange::Keep);
        assert_eq!(pause_change(Manual, Succeeded, None), PauseChange::Keep);
        assert_eq!(pause_change(Auto, Canceled, None), PauseChange::Keep);
    }
}

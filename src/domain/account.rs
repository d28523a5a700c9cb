//! A customer account as the rules see it: its balance and its auto top-up settings and
//! pause, in domain units. Built from the stored row at the database boundary.

use std::collections::BTreeMap;

use chrono_tz::Tz;

use super::{
    auto_topup::{AutoTopupState, PauseReason, PlannedCharge, Standing},
    credits::Millicredits,
    money::Cents,
};
use crate::clock::Millis;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub name: String,
    pub balance: Millicredits,
    /// The payment provider's customer, once the account has saved a card.
    pub provider_customer_id: Option<String>,
    /// The host's own id of the account, unique.
    pub external_id: Option<String>,
    /// The host's key-value notes about the account.
    pub metadata: BTreeMap<String, String>,
    pub created_at: Millis,
    /// Where the account's calendar months begin and end (its spend cap counts by them).
    pub time_zone: Tz,
    pub auto_topup: AutoTopup,
    /// Set once the account is closed: it is charged no more, by any path.
    pub closed: Option<Closure>,
}

/// When and why an account was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    pub at: Millis,
    pub reason: String,
}

/// The account's auto top-up: what the customer set, and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoTopup {
    pub enabled: bool,
    pub threshold: Option<Millicredits>,
    pub target: Option<Millicredits>,
    /// The card set for auto top-up; `None` charges the default card.
    pub payment_method_id: Option<String>,
    /// The API key that last turned it on, and when.
    pub enabled_by: Option<String>,
    pub enabled_at: Option<Millis>,
    pub pause: Option<Pause>,
    /// The end of the rate-limit window opened by the last automatic attempt.
    pub window_ends_at: Millis,
    /// The most automatic top-ups may charge in a calendar month; `None` is no cap.
    pub monthly_cap: Option<Cents>,
    /// With auto top-up off, the customer is emailed when the balance falls below the
    /// low-balance line (once per crossing).
    pub low_balance_email: bool,
    /// How long before each automatic charge the customer is told of it; `None`: not told
    /// first.
    pub notice_minutes: Option<i64>,
    /// The automatic charge announced and not made yet.
    pub planned: Option<PlannedCharge>,
    /// Saved cards tried in this order when the card charged first is declined.
    pub backup_cards: Vec<String>,
}

/// Why automatic top-ups stopped, with the provider's code and when they stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    pub reason: PauseReason,
    pub code: Option<String>,
    pub since: Millis,
    /// When the pause lifts by itself (the end of the month whose cap it reached).
    pub until: Option<Millis>,
}

impl AutoTopup {
    /// Whether `other` charges on the same terms: on or off, when, how much, on which
    /// card (and backup cards), within which cap and with what notice. A change of any of
    /// these is confirmed to the customer.
    pub fn same_terms(&self, other: &Self) -> bool {
        (
            self.enabled,
            self.threshold,
            self.target,
            &self.payment_method_id,
            &self.backup_cards,
            self.monthly_cap,
            self.notice_minutes,
        ) == (
            other.enabled,
            other.threshold,
            other.target,
            &other.payment_method_id,
            &other.backup_cards,
            other.monthly_cap,
            other.notice_minutes,
        )
    }
}

/// The balance below which a customer is warned: the configured line, or the auto top-up
/// threshold when auto top-up is on and that is higher.
pub fn low_balance_line(
    auto_topup_enabled: bool,
    threshold: Option<Millicredits>,
    configured: Millicredits,
) -> Millicredits {
    match threshold {
        Some(threshold) if auto_topup_enabled => threshold.max(configured),
        _ => configured,
    }
}

impl Account {
    pub fn paused(&self) -> Option<PauseReason> {
        self.auto_topup.pause.as_ref().map(|p| p.reason)
    }

    /// The balance below which the customer is warned: the configured line, or the auto
    /// top-up threshold when auto top-up is on and that is higher.
    pub fn low_balance_line(&self, configured: Millicredits) -> Millicredits {
        low_balance_line(
            self.auto_topup.enabled,
            self.auto_topup.threshold,
            configured,
        )
    }

    /// Whether automatic top-ups run: turned on and not paused.
    pub fn auto_topup_active(&self) -> bool {
        self.auto_topup.enabled && self.auto_topup.pause.is_none()
    }

    /// Where auto top-up stands, given whether a top-up of the account is in progress.
    pub fn auto_topup_state(&self, in_progress: bool) -> AutoTopupState {
        if self.paused().is_some() {
            AutoTopupState::Paused
        } else if in_progress {
            AutoTopupState::InProgress
        } else if self.auto_topup.enabled {
            AutoTopupState::Active
        } else {
            AutoTopupState::Off
        }
    }

    /// What the auto top-up rules look at, given whether an attempt is open.
    pub fn standing(&self, attempt_open: bool) -> Standing {
        Standing {
            enabled: self.auto_topup.enabled,
            paused: self.paused(),
            balance: self.balance,
            threshold: self.auto_topup.threshold,
            window_ends_at: self.auto_topup.window_ends_at,
            attempt_open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_terms_are_what_it_charges_not_where_it_stands() {
        let terms = AutoTopup {
            enabled: true,
            threshold: Some(Millicredits(1_000_000)),
            target: Some(Millicredits(5_000_000)),
            payment_method_id: None,
            enabled_by: Some("key_1".into()),
            enabled_at: Some(1),
            pause: None,
            window_ends_at: 0,
            monthly_cap: None,
            low_balance_email: false,
            notice_minutes: None,
            planned: None,
            backup_cards: Vec::new(),
        };
        let standing_changed = AutoTopup {
            pause: Some(Pause {
                reason: PauseReason::PaymentFailed,
                code: None,
                since: 5,
                until: None,
            }),
            window_ends_at: 9,
            ..terms.clone()
        };
        assert!(terms.same_terms(&standing_changed));
        for changed in [
            AutoTopup {
                enabled: false,
                ..terms.clone()
            },
            AutoTopup {
                target: Some(Millicredits(6_000_000)),
                ..terms.clone()
            },
            AutoTopup {
                payment_method_id: Some("pm_1".into()),
                ..terms.clone()
            },
            AutoTopup {
                monthly_cap: Some(Cents(10_000)),
                ..terms.clone()
            },
            AutoTopup {
                backup_cards: vec!["pm_2".into()],
                ..terms.clone()
            },
        ] {
            assert!(!terms.same_terms(&changed), "{changed:?}");
        }
    }
}

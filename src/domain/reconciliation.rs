//! The provider against the ledger: every successful charge the provider made for a
//! top-up must have credited the account, every credit of a top-up must have a charge,
//! and their amounts must agree. Pure; the check reads both sides and hands them here.

use super::{credits::Millicredits, money::Cents};
use crate::clock::Millis;

/// A successful payment at the provider made for a top-up (it names one in its metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCharge {
    pub payment_id: String,
    /// The top-up attempt the payment's metadata names.
    pub topup_id: String,
    pub amount_received: Cents,
    pub created_at: Millis,
}

/// A top-up as topupd recorded it, with the ledger's credit for it if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedTopup {
    pub topup_id: String,
    pub account_id: String,
    pub payment_id: Option<String>,
    pub amount: Cents,
    pub credits: Millicredits,
    /// What the ledger credited for it; `None` when nothing was.
    pub credited: Option<Millicredits>,
}

/// What does not agree, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mismatch {
    /// The provider took the money, and no credit says so: no top-up is known, the top-up
    /// was never credited, or it was credited for another payment (`paid_by`), which makes
    /// this one a second charge.
    ChargeWithoutCredit {
        charge: ProviderCharge,
        account_id: Option<String>,
        paid_by: Option<String>,
    },
    /// Credits were added for a top-up whose payment the provider does not list as
    /// successful.
    CreditWithoutCharge { topup: RecordedTopup },
    /// Charge and top-up (or top-up and credit) are there, with different amounts.
    AmountMismatch {
        charge: ProviderCharge,
        topup: RecordedTopup,
    },
}

impl Mismatch {
    pub const KINDS: [&'static str; 3] = [
        "charge_without_credit",
        "credit_without_charge",
        "amount_mismatch",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            Self::ChargeWithoutCredit { .. } => Self::KINDS[0],
            Self::CreditWithoutCharge { .. } => Self::KINDS[1],
            Self::AmountMismatch { .. } => Self::KINDS[2],
        }
    }

    /// The top-up it concerns, when topupd knows one.
    pub fn topup_id(&self) -> Option<&str> {
        match self {
            Self::ChargeWithoutCredit { charge, .. } => Some(&charge.topup_id),
            Self::CreditWithoutCharge { topup } | Self::AmountMismatch { topup, .. } => {
                Some(&topup.topup_id)
            }
        }
    }

    /// The mismatch in a line, with its figures, as the command prints it.
    pub fn describe(&self) -> String {
        match self {
            Self::ChargeWithoutCredit {
                charge,
                account_id,
                paid_by,
            } => format!(
                "charge without credit: payment {} received {} for top-up {} ({}), {}",
                charge.payment_id,
                charge.amount_received,
                charge.topup_id,
                account_id.as_deref().map_or_else(
                    || "unknown to topupd".to_owned(),
                    |a| format!("account {a}")
                ),
                paid_by.as_deref().map_or_else(
                    || "and no credit was recorded".to_owned(),
                    |p| format!("which was credited for payment {p}: this one is a second charge")
                )
            ),
            Self::CreditWithoutCharge { topup } => format!(
                "credit without charge: top-up {} of account {} credited {} credits, but the provider lists no successful payment {}",
                topup.topup_id,
                topup.account_id,
                topup.credited.unwrap_or_default().to_display(),
                topup.payment_id.as_deref().unwrap_or("(none recorded)")
            ),
            Self::AmountMismatch { charge, topup } => format!(
                "amount mismatch: top-up {} of account {} was {} for {} credits, credited {} credits; payment {} received {}",
                topup.topup_id,
                topup.account_id,
                topup.amount,
                topup.credits.to_display(),
                topup.credited.unwrap_or_default().to_display(),
                charge.payment_id,
                charge.amount_received
            ),
        }
    }
}

/// Every way the two sides disagree. `charges` are the provider's successful payments
/// for top-ups in the period; `period` the top-ups recorded in it, each of whose credits
/// needs a charge; `earlier` top-ups from before it that some charge names (they only
/// answer for that charge). A top-up is matched by its payment's id, or else by the id
/// the payment's metadata names.
pub fn reconcile(
    charges: &[ProviderCharge],
    period: &[RecordedTopup],
    earlier: &[RecordedTopup],
) -> Vec<Mismatch> {
    let mut mismatches = Vec::new();
    let known = || period.iter().chain(earlier);
    for charge in charges {
        let topup = known().find(|t| pays(charge, t));
        match topup {
            Some(topup) if topup.credited.is_none() => {
                mismatches.push(Mismatch::ChargeWithoutCredit {
                    charge: charge.clone(),
                    account_id: Some(topup.account_id.clone()),
                    paid_by: None,
                });
            }
            Some(topup)
                if topup.amount != charge.amount_received
                    || topup.credited != Some(topup.credits) =>
            {
                mismatches.push(Mismatch::AmountMismatch {
                    charge: charge.clone(),
                    topup: topup.clone(),
                });
            }
            Some(_) => {}
            None => {
                let named = known().find(|t| t.topup_id == charge.topup_id);
                mismatches.push(Mismatch::ChargeWithoutCredit {
                    charge: charge.clone(),
                    account_id: named.map(|t| t.account_id.clone()),
                    paid_by: named.and_then(|t| t.payment_id.clone()),
                });
            }
        }
    }
    for topup in period.iter().filter(|t| t.credited.is_some()) {
        if !charges.iter().any(|c| pays(c, topup)) {
            mismatches.push(Mismatch::CreditWithoutCharge {
                topup: topup.clone(),
            });
        }
    }
    mismatches
}

/// Whether `charge` is the payment of `topup`: its recorded payment, or, when none was
/// recorded, the payment whose metadata names it.
fn pays(charge: &ProviderCharge, topup: &RecordedTopup) -> bool {
    match &topup.payment_id {
        Some(payment) => *payment == charge.payment_id,
        None => topup.topup_id == charge.topup_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(payment: &str, topup: &str, cents: i64) -> ProviderCharge {
        ProviderCharge {
            payment_id: payment.into(),
            topup_id: topup.into(),
            amount_received: Cents(cents),
            created_at: 0,
        }
    }

    fn topup(id: &str, payment: Option<&str>, cents: i64, credited: Option<i64>) -> RecordedTopup {
        RecordedTopup {
            topup_id: id.into(),
            account_id: "acct_1".into(),
            payment_id: payment.map(Into::into),
            amount: Cents(cents),
            credits: Millicredits(cents * 1_000),
            credited: credited.map(Millicredits),
        }
    }

    #[test]
    fn a_charge_and_its_credit_for_the_same_amounts_agree() {
        let charges = [charge("pi_1", "tpu_1", 5_000)];
        let topups = [
            topup("tpu_1", Some("pi_1"), 5_000, Some(5_000_000)),
            // Declined: neither charged nor credited.
            topup("tpu_2", Some("pi_2"), 4_000, None),
        ];
        assert_eq!(reconcile(&charges, &topups, &[]), []);
    }

    #[test]
    fn each_disagreement_is_named_with_its_figures() {
        let charges = [
            charge("pi_1", "tpu_1", 5_000),
            charge("pi_2", "tpu_2", 5_000),
            charge("pi_3", "tpu_3", 4_999),
            charge("pi_9", "tpu_9", 100),
        ];
        let topups = [
            topup("tpu_1", Some("pi_1"), 5_000, None),
            topup("tpu_2", Some("pi_2"), 5_000, Some(4_000_000)),
            topup("tpu_3", Some("pi_3"), 5_000, Some(5_000_000)),
            topup("tpu_4", Some("pi_4"), 5_000, Some(5_000_000)),
        ];
        let found = reconcile(&charges, &topups, &[]);
        let kinds: Vec<_> = found.iter().map(|m| (m.kind(), m.topup_id())).collect();
        assert_eq!(
            kinds,
            [
                ("charge_without_credit", Some("tpu_1")),
                ("amount_mismatch", Some("tpu_2")),
                ("amount_mismatch", Some("tpu_3")),
                ("charge_without_credit", Some("tpu_9")),
                ("credit_without_charge", Some("tpu_4")),
            ]
        );
        let lines: Vec<_> = found.iter().map(Mismatch::describe).collect();
        assert!(lines[0].contains("$50.00"), "{}", lines[0]);
        assert!(
            lines[2].contains("$49.99") && lines[2].contains("$50.00"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("unknown to topupd"), "{}", lines[3]);
        assert!(lines[4].contains("pi_4"), "{}", lines[4]);
    }

    #[test]
    fn a_payment_whose_id_was_never_recorded_matches_its_top_up_by_metadata() {
        let charges = [charge("pi_1", "tpu_1", 5_000)];
        let topups = [topup("tpu_1", None, 5_000, Some(5_000_000))];
        assert_eq!(reconcile(&charges, &topups, &[]), []);
    }

    #[test]
    fn a_second_payment_naming_a_paid_top_up_is_a_charge_without_credit() {
        let charges = [
            charge("pi_1", "tpu_1", 5_000),
            charge("pi_2", "tpu_1", 5_000),
        ];
        let topups = [topup("tpu_1", Some("pi_1"), 5_000, Some(5_000_000))];
        let found = reconcile(&charges, &topups, &[]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].kind(), found[0].topup_id()),
            ("charge_without_credit", Some("tpu_1"))
        );
        let line = found[0].describe();
        assert!(
            line.contains("pi_2") && line.contains("credited for payment pi_1"),
            "{line}"
        );
    }

    #[test]
    fn a_top_up_from_before_the_period_answers_only_for_its_charge() {
        let charges = [charge("pi_1", "tpu_1", 5_000)];
        let earlier = [
            topup("tpu_1", Some("pi_1"), 5_000, Some(5_000_000)),
            topup("tpu_0", Some("pi_0"), 5_000, Some(5_000_000)),
        ];
        assert_eq!(
            reconcile(&charges, &[], &earlier),
            [],
            "tpu_0's charge is outside the period, not missing"
        );
    }
}

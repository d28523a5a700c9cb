//! Money the provider took back from a top-up (a refund, a dispute) as credits: a part of
//! a charge takes back the same part of the credits it bought, and all of it takes back
//! all of them, however the parts were split.

use super::{credits::Millicredits, money::Cents};

/// The credits bought by the first `cents` of a top-up that bought `credits` for
/// `amount`: in proportion, rounded down to the millicredit, never more than `credits`.
pub fn credits_for(credits: Millicredits, amount: Cents, cents: i64) -> Millicredits {
    if amount.0 <= 0 || cents <= 0 {
        return Millicredits(0);
    }
    if cents >= amount.0 {
        return credits;
    }
    let share = i128::from(credits.0) * i128::from(cents) / i128::from(amount.0);
    Millicredits(i64::try_from(share).unwrap_or(credits.0))
}

/// The credits a refund takes back when the charge's refunded total grows from `before`
/// to `now` (both in cents): the refunds of a charge, whatever their sizes, take back
/// exactly the credits it bought once all of it is refunded.
pub fn refund_removes(
    credits: Millicredits,
    amount: Cents,
    before: Cents,
    now: Cents,
) -> Millicredits {
    Millicredits(credits_for(credits, amount, now.0).0 - credits_for(credits, amount, before.0).0)
}

/// The credits a dispute of `disputed` cents holds: its share of what was bought, but
/// never credits a refund already took back.
pub fn dispute_holds(
    credits: Millicredits,
    amount: Cents,
    refunded: Cents,
    disputed: Cents,
) -> Millicredits {
    let left = credits.0 - credits_for(credits, amount, refunded.0).0;
    Millicredits(credits_for(credits, amount, disputed.0).0.min(left))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CREDITS: Millicredits = Millicredits(5_000_000);
    const AMOUNT: Cents = Cents(5_000);

    #[test]
    fn a_part_of_the_charge_takes_back_the_same_part_of_the_credits() {
        assert_eq!(credits_for(CREDITS, AMOUNT, 1_000), Millicredits(1_000_000));
        assert_eq!(credits_for(CREDITS, AMOUNT, 5_000), CREDITS);
        assert_eq!(credits_for(CREDITS, AMOUNT, 9_999), CREDITS, "never more");
        assert_eq!(credits_for(CREDITS, AMOUNT, 0), Millicredits(0));
        // 1,001 credits for $10.01: a third of a cent is not a whole millicredit.
        assert_eq!(
            credits_for(Millicredits(1_001_000), Cents(1_001), 334),
            Millicredits(334_000)
        );
        assert_eq!(
            credits_for(Millicredits(1_000), Cents(3), 1),
            Millicredits(333),
            "rounded down"
        );
    }

    #[test]
    fn a_dispute_holds_its_share_but_not_what_a_refund_took() {
        assert_eq!(dispute_holds(CREDITS, AMOUNT, Cents(0), AMOUNT), CREDITS);
        assert_eq!(
            dispute_holds(CREDITS, AMOUNT, Cents(2_000), AMOUNT),
            Millicredits(3_000_000)
        );
        assert_eq!(
            dispute_holds(CREDITS, AMOUNT, Cents(0), Cents(500)),
            Millicredits(500_000)
        );
    }

    proptest! {
        /// However a charge is refunded in parts, the parts take back exactly the
        /// credits it bought, each part at least zero.
        #[test]
        fn refunds_in_parts_take_back_all_the_credits_exactly(
            credits in 1i64..100_000_000,
            amount in 1i64..1_000_000,
            cuts in proptest::collection::vec(0.0f64..1.0, 0..8),
        ) {
            let (credits, amount) = (Millicredits(credits), Cents(amount));
            let mut points: Vec<i64> = cuts.iter().map(|c| (c * amount.0 as f64) as i64).collect();
            points.push(amount.0);
            points.sort_unstable();
            let mut before = Cents(0);
            let mut removed = 0;
            for now in points {
                let part = refund_removes(credits, amount, before, Cents(now));
                prop_assert!(part.0 >= 0);
                removed += part.0;
                before = Cents(now);
            }
            prop_assert_eq!(removed, credits.0);
        }
    }
}

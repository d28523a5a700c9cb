//! Whether the card auto top-up charges will still work when it is next needed: when the
//! next top-up is likely (from how fast the balance went down since the last one), and
//! whether the card has expired, or will have by then. Pure.

use chrono::NaiveDate;

use super::credits::Millicredits;
use crate::clock::Millis;

/// "Visa ending 4242", as customers know their cards.
pub fn card_name(brand: &str, last4: &str) -> String {
    let brand = match brand {
        "amex" => "American Express".to_owned(),
        "mastercard" => "Mastercard".to_owned(),
        "diners" => "Diners Club".to_owned(),
        "unionpay" => "UnionPay".to_owned(),
        other => {
            let mut chars = other.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_uppercase().chain(chars).collect()
            })
        }
    };
    format!("{brand} ending {last4}")
}

/// The month a card expires in, in words: "January 2026".
pub fn expiry_month(exp_month: i64, exp_year: i64) -> String {
    i32::try_from(exp_year)
        .ok()
        .zip(u32::try_from(exp_month).ok())
        .and_then(|(y, m)| NaiveDate::from_ymd_opt(y, m, 1))
        .map_or_else(
            || format!("{exp_month:02}/{exp_year}"),
            |d| d.format("%B %Y").to_string(),
        )
}

/// The first instant a card is no longer valid: cards work to the end of their expiry
/// month (UTC).
pub fn expires_at(exp_month: i64, exp_year: i64) -> Millis {
    let (year, month) = if exp_month >= 12 {
        (exp_year + 1, 1)
    } else {
        (exp_year, exp_month.max(0) + 1)
    };
    i32::try_from(year)
        .ok()
        .zip(u32::try_from(month).ok())
        .and_then(|(y, m)| NaiveDate::from_ymd_opt(y, m, 1))
        .map_or(Millis::MAX, |first| {
            first
                .and_time(chrono::NaiveTime::MIN)
                .and_utc()
                .timestamp_millis()
        })
}

/// The last automatic top-up: the balance its credit left, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastTopUp {
    pub balance_after: Millicredits,
    pub at: Millis,
}

/// When the next automatic top-up is likely: now (or when the rate-limit window ends)
/// if the balance is below the threshold; else when the balance would reach the
/// threshold at the pace it fell since the last top-up. `None` when nothing says it will:
/// no threshold, no top-up yet to measure from, or no credits used since.
pub fn next_likely_top_up(
    balance: Millicredits,
    threshold: Option<Millicredits>,
    last: Option<LastTopUp>,
    now: Millis,
    window_ends_at: Millis,
) -> Option<Millis> {
    let threshold = threshold?;
    if balance < threshold {
        return Some(now.max(window_ends_at));
    }
    let last = last?;
    let used = last.balance_after.0.checked_sub(balance.0)?;
    let elapsed = now.checked_sub(last.at)?;
    if used <= 0 || elapsed <= 0 {
        return None;
    }
    let left = i128::from(balance.0 - threshold.0);
    let wait = left * i128::from(elapsed) / i128::from(used);
    let at = i128::from(now) + wait;
    Some(
        Millis::try_from(at)
            .unwrap_or(Millis::MAX)
            .max(window_ends_at),
    )
}

/// The state of the card auto top-up charges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Ok,
    /// Past its expiry: the next top-up will be declined.
    Expired,
    /// Valid now, but not when the next top-up is likely.
    ExpiresBeforeNextTopUp,
    /// No card to charge.
    Missing,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Expired => "expired",
            Self::ExpiresBeforeNextTopUp => "expires_before_next_top_up",
            Self::Missing => "missing",
        }
    }
}

/// How the card that expires at `expires_at` (none: no card) stands, now and at the
/// next likely top-up.
pub fn health(expires_at: Option<Millis>, next_top_up: Option<Millis>, now: Millis) -> Health {
    match expires_at {
        None => Health::Missing,
        Some(end) if end <= now => Health::Expired,
        Some(end) if next_top_up.is_some_and(|next| end <= next) => Health::ExpiresBeforeNextTopUp,
        Some(_) => Health::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn ms(rfc3339: &str) -> Millis {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn a_card_works_to_the_end_of_its_expiry_month() {
        assert_eq!(expiry_month(1, 2026), "January 2026");
        assert_eq!(expires_at(12, 2026), ms("2027-01-01T00:00:00Z"));
        assert_eq!(expires_at(2, 2028), ms("2028-03-01T00:00:00Z"));
    }

    #[test]
    fn the_next_top_up_is_when_the_balance_reaches_the_threshold_at_its_pace() {
        let credits = |n: i64| Millicredits(n * 1_000);
        let last = LastTopUp {
            balance_after: credits(5_000),
            at: 0,
        };
        // 2,000 credits used in 10 days: 1,000 more to go takes 5 days.
        assert_eq!(
            next_likely_top_up(
                credits(3_000),
                Some(credits(2_000)),
                Some(last),
                10 * DAY,
                0
            ),
            Some(15 * DAY)
        );
        assert_eq!(
            next_likely_top_up(
                credits(1_000),
                Some(credits(2_000)),
                Some(last),
                10 * DAY,
                11 * DAY
            ),
            Some(11 * DAY),
            "below the threshold: as soon as the window allows"
        );
        assert_eq!(
            next_likely_top_up(
                credits(5_000),
                Some(credits(2_000)),
                Some(last),
                10 * DAY,
                0
            ),
            None,
            "nothing used since"
        );
        assert_eq!(
            next_likely_top_up(credits(3_000), Some(credits(2_000)), None, 10 * DAY, 0),
            None,
            "no top-up to measure from"
        );
        assert_eq!(
            next_likely_top_up(credits(3_000), None, Some(last), 10 * DAY, 0),
            None
        );
    }

    #[test]
    fn a_card_is_at_risk_if_it_is_gone_by_the_next_top_up() {
        assert_eq!(health(None, Some(5), 1), Health::Missing);
        assert_eq!(health(Some(1), None, 1), Health::Expired);
        assert_eq!(
            health(Some(10), Some(10), 1),
            Health::ExpiresBeforeNextTopUp
        );
        assert_eq!(health(Some(10), Some(9), 1), Health::Ok);
        assert_eq!(health(Some(10), None, 1), Health::Ok, "no top-up in sight");
    }
}

//! The customer's monthly spend cap on automatic top-ups: what a cap may be, which
//! calendar month a moment falls in (in the account's time zone), and whether a charge
//! fits under the cap. Pure; the claim applies it in the transaction that charges.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use super::{money::Cents, validation::FieldErrors};
use crate::clock::Millis;

/// The smallest and largest caps, in cents: a dollar, and a million dollars.
pub const MIN_CAP_CENTS: i64 = 100;
pub const MAX_CAP_CENTS: i64 = 100_000_000;

/// The time zone of an account that has not chosen one.
pub const DEFAULT_TIME_ZONE: Tz = Tz::UTC;

/// A cap in dollars, as the customer writes it, in cents: whole cents, from
/// `MIN_CAP_CENTS` to `MAX_CAP_CENTS`.
pub fn validate_cap(dollars: Decimal) -> Result<Cents, FieldErrors> {
    let cents = dollars * Decimal::ONE_HUNDRED;
    cents
        .fract()
        .is_zero()
        .then(|| i64::try_from(cents).ok())
        .flatten()
        .filter(|c| (MIN_CAP_CENTS..=MAX_CAP_CENTS).contains(c))
        .map(Cents)
        .ok_or_else(|| {
            FieldErrors::single(
                "monthly_spend_cap",
                format!(
                    "must be an amount in dollars, in whole cents, from {} to {}",
                    Cents(MIN_CAP_CENTS),
                    Cents(MAX_CAP_CENTS)
                ),
            )
        })
}

/// An IANA time zone name (`Europe/Paris`, `UTC`).
pub fn parse_time_zone(name: &str) -> Result<Tz, FieldErrors> {
    name.parse::<Tz>().map_err(|_| {
        FieldErrors::single(
            "time_zone",
            "must be an IANA time zone name, such as UTC or America/New_York",
        )
    })
}

/// A calendar month of an account, as the instants it starts and ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub starts_at: Millis,
    /// The start of the next month: a cap reached in this month lifts then.
    pub ends_at: Millis,
}

/// The calendar month, in `tz`, that the instant `at` falls in.
pub fn month_of(at: Millis, tz: Tz) -> Month {
    let local = DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .with_timezone(&tz);
    let first =
        |year: i32, month: u32| NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
    let this = first(local.year(), local.month());
    let next = if local.month() == 12 {
        first(local.year() + 1, 1)
    } else {
        first(local.year(), local.month() + 1)
    };
    Month {
        starts_at: start_of_day(this, tz),
        ends_at: start_of_day(next, tz),
    }
}

/// The first instant of `day` in `tz`. Where a clock change skips midnight, the day
/// starts at the first hour that exists; where midnight happens twice, at the first.
fn start_of_day(day: NaiveDate, tz: Tz) -> Millis {
    (0..24)
        .filter_map(|hour| day.and_hms_opt(hour, 0, 0))
        .find_map(|local| tz.from_local_datetime(&local).earliest())
        .map_or(0, |t| t.timestamp_millis())
}

/// Whether charging `charge` keeps this month's automatic top-ups (`spent`, counting
/// those still in progress) within `cap`. No cap allows every charge.
pub fn allows(spent: Cents, charge: Cents, cap: Option<Cents>) -> bool {
    cap.is_none_or(|cap| spent.0.saturating_add(charge.0) <= cap.0)
}

/// Whether a change of the cap ends a pause for reaching the old one: removing the cap or
/// raising it does; lowering it or keeping it does not.
pub fn change_lifts_pause(old: Option<Cents>, new: Option<Cents>) -> bool {
    match (old, new) {
        (_, None) => true,
        (Some(old), Some(new)) => new > old,
        (None, Some(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn ms(rfc3339: &str) -> Millis {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("timestamp")
            .timestamp_millis()
    }

    #[test]
    fn a_cap_is_whole_cents_from_a_dollar_to_a_million() {
        let cap = |s: &str| validate_cap(Decimal::from_str(s).expect("decimal"));
        assert_eq!(cap("250"), Ok(Cents(25_000)));
        assert_eq!(cap("19.99"), Ok(Cents(1_999)));
        assert_eq!(cap("1"), Ok(Cents(MIN_CAP_CENTS)));
        assert_eq!(cap("1000000.00"), Ok(Cents(MAX_CAP_CENTS)));
        for bad in ["0.99", "0", "-5", "10.001", "1000000.01"] {
            let errors = cap(bad).expect_err(bad);
            let fields: Vec<_> = errors.iter().map(|(f, _)| f).collect();
            assert_eq!(fields, ["monthly_spend_cap"], "{bad}");
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert_eq!(parse_time_zone("Europe/Paris"), Ok(Tz::Europe__Paris));
        assert_eq!(parse_time_zone("UTC"), Ok(Tz::UTC));
        for bad in ["", "Mars/Olympus", "+02:00", "europe paris"] {
            assert!(parse_time_zone(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_month_starts_at_local_midnight_on_the_first() {
        assert_eq!(
            month_of(ms("2026-12-07T01:20:00Z"), Tz::UTC),
            Month {
                starts_at: ms("2026-12-01T00:00:00Z"),
                ends_at: ms("2027-01-01T00:00:00Z"),
            },
            "December rolls into the next year"
        );
        // 03:00 UTC on 1 March is still February in New York (UTC-5 in winter), and
        // March ends in summer time (UTC-4).
        let new_york = Tz::America__New_York;
        assert_eq!(
            month_of(ms("2027-03-01T03:00:00Z"), new_york),
            Month {
                starts_at: ms("2027-02-01T05:00:00Z"),
                ends_at: ms("2027-03-01T05:00:00Z"),
            }
        );
        assert_eq!(
            month_of(ms("2027-03-01T05:00:00Z"), new_york),
            Month {
                starts_at: ms("2027-03-01T05:00:00Z"),
                ends_at: ms("2027-04-01T04:00:00Z"),
            },
            "the first instant of the month is in it"
        );
        // Kiritimati is 14 hours ahead: its January starts on 31 December in UTC.
        assert_eq!(
            month_of(ms("2026-12-31T10:00:00Z"), Tz::Pacific__Kiritimati).starts_at,
            ms("2026-12-31T10:00:00Z")
        );
    }

    #[test]
    fn a_month_whose_midnight_is_skipped_starts_at_the_first_hour_that_exists() {
        // Cuba moved its clocks from midnight to 01:00 on 1 April 2012.
        let havana = Tz::America__Havana;
        assert_eq!(
            month_of(ms("2012-04-15T12:00:00Z"), havana).starts_at,
            ms("2012-04-01T05:00:00Z")
        );
    }

    #[test]
    fn a_charge_fits_when_the_month_stays_within_the_cap() {
        let (spent, charge) = (Cents(9_000), Cents(1_000));
        assert!(allows(spent, charge, None));
        assert!(
            allows(spent, charge, Some(Cents(10_000))),
            "exactly the cap"
        );
        assert!(!allows(spent, charge, Some(Cents(9_999))));
        assert!(!allows(Cents(0), Cents(5_000), Some(Cents(4_000))));
    }

    #[test]
    fn only_raising_or_removing_the_cap_lifts_its_pause() {
        let (low, high) = (Some(Cents(5_000)), Some(Cents(9_000)));
        assert!(change_lifts_pause(low, high));
        assert!(change_lifts_pause(low, None));
        assert!(!change_lifts_pause(high, low));
        assert!(!change_lifts_pause(low, low));
        assert!(!change_lifts_pause(None, low));
    }
}

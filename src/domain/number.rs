//! Exact JSON numbers for decimal fields: `12.5` is read digit for digit, and a string
//! such as `"12.5"` is refused like any other wrong type.

use std::str::FromStr;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::{Deserialize, Deserializer, de::Error};

/// Ends the message of a number that is valid JSON but that the field cannot hold: the
/// request is readable but invalid.
pub const OUT_OF_RANGE: &str = "is out of range for this field";

/// A decimal that must be a JSON number, held exactly: a number with more significant
/// digits than a decimal holds (28) is refused, never rounded.
pub fn decimal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    let text = number.as_str();
    let shown = || text.chars().take(40).collect::<String>();
    let parsed = Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| D::Error::custom(format!("{} {OUT_OF_RANGE}", shown())))?;
    if significant(text) != significant(&parsed.to_string()) {
        return Err(D::Error::custom(format!(
            "{}… {OUT_OF_RANGE}: it has more significant digits than it can hold exactly (28)",
            shown()
        )));
    }
    Ok(parsed)
}

/// A JSON number's value as its sign, its significant digits and the power of ten of the
/// last one: equal for two spellings of one value, whatever their zeros or exponent.
fn significant(text: &str) -> (bool, String, i64) {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i64>().unwrap_or(0)),
        None => (unsigned, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let digits = digits.trim_start_matches('0');
    let kept = digits.trim_end_matches('0');
    if kept.is_empty() {
        return (false, String::new(), 0);
    }
    let power = exponent - fraction.len() as i64 + (digits.len() - kept.len()) as i64;
    (negative, kept.to_owned(), power)
}

/// An optional decimal that must be a JSON number when present.
pub fn optional_decimal<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "decimal")] Decimal);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(d)| d))
}

/// A whole number that must be a JSON number. `5.0` is five, as JSON Schema's `integer`
/// has it; `5.5` is refused.
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(deserializer: D) -> Result<T, D::Error> {
    let number = decimal(deserializer)?;
    number
        .fract()
        .is_zero()
        .then(|| number.to_i128())
        .flatten()
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| {
            D::Error::custom(format!("{number} {OUT_OF_RANGE}: it takes a whole number"))
        })
}

/// An optional whole number that must be a JSON number when present.
pub fn optional_whole<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(bound = "")]
    struct Wrapped<T: TryFrom<i128>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<Wrapped<T>>::deserialize(deserializer)?.map(|Wrapped(n)| n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "decimal")]
        credits: Decimal,
        #[serde(default, deserialize_with = "optional_decimal")]
        seconds: Option<Decimal>,
    }

    #[test]
    fn numbers_are_exact_and_strings_are_refused() {
        let body: Body =
            serde_json::from_str(r#"{"credits": 0.1, "seconds": 30}"#).expect("numbers");
        assert_eq!(body.credits, Decimal::from_str("0.1").expect("decimal"));
        assert_eq!(body.seconds, Some(Decimal::from(30)));
        assert!(serde_json::from_str::<Body>(r#"{"credits": "5"}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"credits": 5, "seconds": "30"}"#).is_err());
        assert!(serde_json::from_str::<Body>(r#"{"credits": 1e30}"#).is_err());
        for exact in ["1.50", "-0.001", "12e-1", "0.0e5", "1000000", "1E3"] {
            let body: Body = serde_json::from_str(&format!(r#"{{"credits": {exact}}}"#))
                .unwrap_or_else(|e| panic!("{exact}: {e}"));
            assert_eq!(
                body.credits,
                Decimal::from_scientific(exact)
                    .or_else(|_| Decimal::from_str(exact))
                    .expect("decimal")
            );
        }
        let long_one = format!("1.{}1", "0".repeat(398));
        let tiny = format!("0.{}1", "0".repeat(30));
        let many = "9234567890123456789012345678.9";
        for inexact in [long_one.as_str(), tiny.as_str(), many] {
            let refused = serde_json::from_str::<Body>(&format!(r#"{{"credits": {inexact}}}"#));
            assert!(
                refused
                    .expect_err(inexact)
                    .to_string()
                    .contains(OUT_OF_RANGE),
                "{inexact}"
            );
        }
        let zeros = format!("1.{}", "0".repeat(60));
        let body: Body =
            serde_json::from_str(&format!(r#"{{"credits": {zeros}}}"#)).expect("trailing zeros");
        assert_eq!(body.credits, Decimal::ONE, "zeros lose nothing");
        let none: Body = serde_json::from_str(r#"{"credits": 1}"#).expect("optional");
        assert_eq!(none.seconds, None);
    }

    #[derive(Debug, Deserialize)]
    struct Counts {
        #[serde(deserialize_with = "whole")]
        credits: i64,
        #[serde(default, deserialize_with = "optional_whole")]
        calls: Option<u64>,
    }

    #[test]
    fn whole_numbers_may_be_written_with_a_zero_fraction() {
        let counts: Counts =
            serde_json::from_str(r#"{"credits": 203.0, "calls": 2}"#).expect("whole");
        assert_eq!((counts.credits, counts.calls), (203, Some(2)));
        let none: Counts = serde_json::from_str(r#"{"credits": -1}"#).expect("optional");
        assert_eq!((none.credits, none.calls), (-1, None));
        for refused in [
            r#"{"credits": 1.5}"#,
            r#"{"credits": "1"}"#,
            r#"{"credits": 1, "calls": -1}"#,
            r#"{"credits": 1e30}"#,
        ] {
            assert!(
                serde_json::from_str::<Counts>(refused).is_err(),
                "{refused}"
            );
        }
    }
}

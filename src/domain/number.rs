//! Exact JSON numbers for decimal fields: `12.5` is read digit for digit, and a string
//! such as `"12.5"` is refused like any other wrong type.

use std::str::FromStr;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::{Deserialize, Deserializer, de::Error};

/// Ends the message of a number that is valid JSON but that the field cannot hold: the
/// request is readable but invalid.
pub const OUT_OF_RANGE: &str = "is out of range for this field";

/// A decimal that must be a JSON number.
pub fn decimal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    let text = number.as_str();
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| D::Error::custom(format!("{text} {OUT_OF_RANGE}")))
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

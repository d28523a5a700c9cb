//! Exact JSON numbers for decimal fields: `12.5` is read digit for digit, and a string
//! such as `"12.5"` is refused like any other wrong type.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, de::Error};

/// A decimal that must be a JSON number.
pub fn decimal<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    let text = number.as_str();
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .map_err(|_| D::Error::custom(format!("{text} is out of range")))
}

/// An optional decimal that must be a JSON number when present.
pub fn optional_decimal<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Decimal>, D::Error> {
    #[derive(Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "decimal")] Decimal);
    Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(d)| d))
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
}

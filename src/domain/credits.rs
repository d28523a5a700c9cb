//! Credits, stored as integer millicredits (1 credit = 1000) so that fractional prices
//! such as 0.33 credits are exact. Decimal only appears at the edges.

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Millicredits in one credit.
pub const MILLIS_PER_CREDIT: i64 = 1000;

/// An amount of credits, in millicredits. May be negative when it is a ledger movement.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Millicredits(pub i64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreditsError {
    #[error("must have at most 3 decimal places")]
    TooPrecise,
    #[error("is out of range")]
    OutOfRange,
}

impl Millicredits {
    pub const ZERO: Self = Self(0);

    /// Exact conversion from a credit amount with at most three decimals.
    pub fn from_credits(credits: Decimal) -> Result<Self, CreditsError> {
        let scaled = credits
            .checked_mul(Decimal::from(MILLIS_PER_CREDIT))
            .ok_or(CreditsError::OutOfRange)?;
        if !scaled.fract().is_zero() {
            return Err(CreditsError::TooPrecise);
        }
        scaled.to_i64().map(Self).ok_or(CreditsError::OutOfRange)
    }

    /// Rounds a credit amount up to the next whole millicredit: prices never round down.
    pub fn ceil_from_credits(credits: Decimal) -> Result<Self, CreditsError> {
        let scaled = credits
            .checked_mul(Decimal::from(MILLIS_PER_CREDIT))
            .ok_or(CreditsError::OutOfRange)?;
        scaled
            .ceil()
            .to_i64()
            .map(Self)
            .ok_or(CreditsError::OutOfRange)
    }

    /// `credits` whole credits.
    pub fn whole(credits: i64) -> Self {
        Self(credits.saturating_mul(MILLIS_PER_CREDIT))
    }

    /// What `paid` buys at `credit_price_cents` a credit, rounded down to the millicredit.
    pub fn bought_by(paid: super::money::Cents, credit_price_cents: i64) -> Self {
        Self(paid.0.saturating_mul(MILLIS_PER_CREDIT) / credit_price_cents.max(1))
    }

    /// The amount in credits, without trailing zeros (`1847.5`, not `1847.500`).
    pub fn to_credits(self) -> Decimal {
        Decimal::new(self.0, 3).normalize()
    }

    pub fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(Self)
    }

    pub fn checked_sub(self, other: Self) -> Option<Self> {
        self.0.checked_sub(other.0).map(Self)
    }
}

impl From<i64> for Millicredits {
    fn from(millis: i64) -> Self {
        Self(millis)
    }
}

impl std::fmt::Display for Millicredits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_credits())
    }
}

/// In JSON, credits are plain numbers with at most three decimals (`1847.5`).
impl Millicredits {
    /// For people: `1,847.5`, grouped thousands and no trailing zeros.
    pub fn to_display(self) -> String {
        let credits = self.to_credits();
        let sign = if credits.is_sign_negative() { "-" } else { "" };
        let text = credits.abs().to_string();
        let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
        let whole = whole
            .parse::<u64>()
            .map_or_else(|_| whole.to_owned(), super::money::group_thousands);
        if fraction.is_empty() {
            format!("{sign}{whole}")
        } else {
            format!("{sign}{whole}.{fraction}")
        }
    }
}

impl Serialize for Millicredits {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Serialize::serialize(&self.to_credits(), serializer)
    }
}

impl<'de> Deserialize<'de> for Millicredits {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let credits = <Decimal as Deserialize>::deserialize(deserializer)?;
        Self::from_credits(credits).map_err(serde::de::Error::custom)
    }
}

/// Documented as what it serializes to: an exact JSON number of credits.
impl utoipa::PartialSchema for Millicredits {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Number)
            .description(Some("Credits, with at most three decimals"))
            .examples([serde_json::json!(12.5)])
            .into()
    }
}

impl utoipa::ToSchema for Millicredits {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test literal is a decimal")
    }

    #[test]
    fn exact_conversion_accepts_three_decimals_only() {
        assert_eq!(
            Millicredits::from_credits(dec("0.33")),
            Ok(Millicredits(330))
        );
        assert_eq!(
            Millicredits::from_credits(dec("-12.5")),
            Ok(Millicredits(-12_500))
        );
        assert_eq!(
            Millicredits::from_credits(dec("0.0001")),
            Err(CreditsError::TooPrecise)
        );
        assert_eq!(
            Millicredits::from_credits(dec("1e20")),
            Err(CreditsError::OutOfRange)
        );
    }

    #[test]
    fn ceiling_rounds_up_partial_millicredits() {
        assert_eq!(
            Millicredits::ceil_from_credits(dec("0.0001")),
            Ok(Millicredits(1))
        );
        assert_eq!(
            Millicredits::ceil_from_credits(dec("3.3333")),
            Ok(Millicredits(3334))
        );
        assert_eq!(
            Millicredits::ceil_from_credits(dec("5")),
            Ok(Millicredits(5000))
        );
    }

    #[test]
    fn display_groups_thousands() {
        assert_eq!(Millicredits(1_847_500).to_display(), "1,847.5");
        assert_eq!(Millicredits(100_000_000).to_display(), "100,000");
        assert_eq!(Millicredits(330).to_display(), "0.33");
        assert_eq!(Millicredits(-12_000).to_display(), "-12");
    }

    #[test]
    fn json_is_a_plain_number() {
        let json = serde_json::to_string(&Millicredits(1_847_500)).expect("serializes");
        assert_eq!(json, "1847.5");
        assert_eq!(
            serde_json::to_string(&Millicredits(330)).expect("serializes"),
            "0.33"
        );
        assert_eq!(
            serde_json::to_string(&Millicredits(0)).expect("serializes"),
            "0"
        );
    }
}

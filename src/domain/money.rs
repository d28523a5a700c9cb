//! US dollar amounts, stored as integer cents.

use serde::{Deserialize, Serialize};

/// An amount in US cents.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cents(pub i64);

impl std::fmt::Display for Cents {
    /// `$1,234.56`; negative amounts as `-$5.00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}${}.{:02}", group_thousands(abs / 100), abs % 100)
    }
}

impl Cents {
    /// The price of `credits` whole credits at `credit_price_cents` each; `None` past what
    /// cents can hold.
    pub fn for_credits(credits: i64, credit_price_cents: i64) -> Option<Self> {
        credits.checked_mul(credit_price_cents).map(Self)
    }
}

/// `1234567` as `1,234,567`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_have_two_decimals_and_grouped_thousands() {
        assert_eq!(Cents(2500).to_string(), "$25.00");
        assert_eq!(Cents(5).to_string(), "$0.05");
        assert_eq!(Cents(1_000_000).to_string(), "$10,000.00");
        assert_eq!(Cents(123_456_789).to_string(), "$1,234,567.89");
        assert_eq!(Cents(-500).to_string(), "-$5.00");
    }
}

//! Pure product logic: money units, the pricing catalogue, API keys and roles. No I/O.

pub mod api_key;
pub mod attempt;
pub mod auto_topup;
pub mod backoff;
pub mod credits;
pub mod money;
pub mod number;
pub mod pricing;
pub mod validation;

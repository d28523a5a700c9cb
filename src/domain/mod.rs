//! Pure product logic: money units, the pricing catalogue, API keys and roles. No I/O.

pub mod account;
pub mod api_key;
pub mod attempt;
pub mod auto_topup;
pub mod backoff;
pub mod card_health;
pub mod credits;
pub mod ledger;
pub mod money;
pub mod notice;
pub mod number;
pub mod pricing;
pub mod reconciliation;
pub mod reversal;
pub mod schedule;
pub mod settlement;
pub mod spend_cap;
pub mod validation;
pub mod webhook;

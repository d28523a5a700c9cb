//! The payment provider: a client for the Stripe-compatible subset topupd uses, webhook
//! signatures, and a stub provider that speaks the same subset for tests and first runs.

pub mod client;
pub mod signature;
pub mod stub;
pub mod types;

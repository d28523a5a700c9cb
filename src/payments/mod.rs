//! The payment provider: a client for the Stripe-compatible subset topupd uses, webhook
//! signatures, and a stub provider that speaks the same subset for tests and first runs.

/// The Stripe API version topupd is written against, sent as `Stripe-Version` unless
/// `payments.api_version` says otherwise; the stub answers as this version.
pub const API_VERSION: &str = "2026-09-30.endive";

pub mod budget;
pub mod client;
pub mod signature;
pub mod stub;
pub mod types;

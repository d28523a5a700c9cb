//! topupd: prepaid API credits. A metering core that prices and debits usage against a
//! ledger, served over HTTP, with SQLite or PostgreSQL underneath.

pub mod accounts;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod domain;
pub mod files;
pub mod http;
pub mod jobs;
pub mod metering;
pub mod metrics;
pub mod notices;
pub mod payments;
pub mod portal;
pub mod telemetry;
pub mod topups;

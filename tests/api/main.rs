//! The integration suite: the real server on a random port, a fresh database per test,
//! on SQLite and, when TOPUPD_TEST_POSTGRES_URL is set, on PostgreSQL too.

mod accounts;
mod advance_notice;
mod alerts;
mod auth;
mod auto_topup;
mod backup_cards;
mod billing_page;
mod card_health;
mod cli;
mod console;
mod directory;
mod helpers;
mod host_webhooks;
mod notices;
mod openapi;
mod ops;
mod payments;
mod postgres_url;
mod provider_budget;
mod provider_check;
mod reversals;
mod saving_cards;
mod smtp;
mod spend_cap;
mod stripe_fixtures;
mod stripe_sdk;
mod usage;
mod validation;
mod webhook_events;

//! The customer's billing page, under `/billing`: server-rendered HTML that works without
//! JavaScript, reached through a single-use link a host's backend asks for, or the signed
//! link of a notice. Each page reads and writes through the same services as the API, for
//! the one account of the browser's session.

pub mod chart;
pub(crate) mod form;
pub mod links;
pub(crate) mod pages;
pub mod receipt;
pub(crate) mod render;
pub mod session;

use axum::{
    Router,
    routing::{get, post},
};

pub use render::{Pages, error_pages};

use crate::{clock::Clock, config::Config, db::Db, db::DbError, http::state::AppState};
use links::EmailLinks;
use secrecy::ExposeSecret;

/// The signer of notices' links, with the key every replica shares: the configured one,
/// or else the one the first process to start made and kept in the database.
pub async fn email_links(
    db: &Db,
    config: &Config,
    clock: &dyn Clock,
) -> Result<EmailLinks, DbError> {
    let configured = config.billing_page.link_signing_key.expose_secret();
    let key = if configured.is_empty() {
        db.signing_key(
            links::SIGNING_KEY_NAME,
            &links::random_secret(),
            clock.now_ms(),
        )
        .await?
    } else {
        configured.to_owned()
    };
    Ok(EmailLinks::new(
        &key,
        &config.http.public_url,
        config.billing_page.email_link_ttl_hours,
    ))
}

pub fn router() -> Router<AppState> {
    use pages::{cards, history, overview, purchase, settings, usage};
    Router::new()
        .route(
            links::START_PATH,
            get(session::start).post(session::start_confirmed),
        )
        .route(
            links::EMAIL_LINK_PATH,
            get(session::from_email).post(session::from_email_confirmed),
        )
        .route("/billing/sign-out", post(session::sign_out))
        .route(links::BASE_PATH, get(overview::page))
        .route(
            "/billing/auto-topup",
            get(settings::page).post(settings::save),
        )
        .route(
            "/billing/auto-topup/cancel-announced",
            post(settings::cancel_announced),
        )
        .route("/billing/buy", get(purchase::page).post(purchase::buy))
        .route("/billing/payments/{id}", get(purchase::outcome))
        .route(
            links::COMPLETE_PATH,
            get(purchase::complete_page).post(purchase::complete),
        )
        .route("/billing/payment-methods", get(cards::page))
        .route("/billing/payment-methods/add", post(cards::add))
        .route("/billing/payment-methods/saved", get(cards::saved))
        .route(
            "/billing/payment-methods/{pm}/default",
            post(cards::make_default),
        )
        .route("/billing/payment-methods/{pm}/remove", post(cards::remove))
        .route("/billing/history", get(history::page))
        .route("/billing/receipts/{id}", get(history::receipt))
        .route("/billing/usage", get(usage::page))
        .route("/billing/usage.csv", get(usage::csv))
        .route("/billing/ledger", get(usage::ledger))
}

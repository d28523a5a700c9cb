//! The browser's session: opened by a link, kept in an HttpOnly cookie holding a random
//! id (the database keeps its hash), ended by idleness, age or signing out. The account is
//! the session's, never one the browser names; every form carries the session's token.

use axum::{
    extract::{FromRequestParts, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use minijinja::{Value, context};
use serde::Deserialize;

use super::{
    form::{PageForm, PageQuery},
    links::{self, BASE_PATH},
    render::{PageError, PageResult},
};
use crate::{
    db::{DbError, audit::Actor, portal::PortalSession},
    http::state::AppState,
};

const COOKIE: &str = "topupd_billing";
/// A session's idle expiry is pushed back at most this often, so reading pages is not a
/// write each time.
const TOUCH_EVERY_MS: i64 = 60_000;

/// The signed-in customer of a request.
#[derive(Debug, Clone)]
pub struct Customer {
    pub session: PortalSession,
}

impl Customer {
    pub fn account_id(&self) -> &str {
        &self.session.account_id
    }

    /// Who the audit log says made a change: the customer, on the billing page.
    pub fn actor(&self) -> Actor {
        Actor {
            key_id: format!("billing_page:{}", &self.session.id_hash[..16]),
            role: "customer".to_owned(),
        }
    }

    /// A form's token must be this session's; otherwise nothing is done.
    pub fn check_form(&self, token: &str) -> PageResult<()> {
        if links::same(token, &self.session.csrf_token) {
            Ok(())
        } else {
            Err(PageError::FormExpired)
        }
    }

    /// What every signed-in page shows: its title, the navigation with `active` marked,
    /// the form token and the way back to the product.
    pub fn frame(&self, active: &str, title: &str) -> Value {
        context! {
            title,
            active,
            signed_in => true,
            csrf => self.session.csrf_token.clone(),
            return_url => self.session.return_url.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> PageResult<Self> {
        signed_in_customer(state, &parts.headers)
            .await?
            .ok_or(PageError::SessionEnded)
    }
}

/// The customer whose live session the request's cookie names, if any; their use of it
/// pushes back its idle expiry.
pub async fn signed_in_customer(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Customer>, DbError> {
    let Some(id) = session_cookie(headers) else {
        return Ok(None);
    };
    let now = state.clock.now_ms();
    let idle_ms = millis(state.config.billing_page.idle_timeout_secs);
    let id_hash = links::hash(id);
    let Some(session) = state
        .db
        .portal_session(&id_hash, now, now - idle_ms)
        .await?
    else {
        return Ok(None);
    };
    if now - session.last_seen_at >= TOUCH_EVERY_MS {
        state.db.touch_portal_session(&id_hash, now).await?;
    }
    Ok(Some(Customer { session }))
}

/// The session id in the request's cookies, if any.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE && !value.is_empty()).then_some(value))
}

fn millis(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A new session for `account_id` (the link's account when opened with a portal link),
/// and its cookie's id.
fn new_session(state: &AppState, account_id: &str) -> (PortalSession, String) {
    let now = state.clock.now_ms();
    let id = links::random_secret();
    let max_ms = i64::from(state.config.billing_page.session_max_hours) * 3_600_000;
    let session = PortalSession {
        id_hash: links::hash(&id),
        account_id: account_id.to_owned(),
        csrf_token: links::random_secret(),
        return_url: None,
        created_at: now,
        last_seen_at: now,
        expires_at: now + max_ms,
    };
    (session, id)
}

/// Sets the session's cookie and goes to `to`.
fn signed_in(state: &AppState, id: &str, to: &str) -> Response {
    let max_age = u64::from(state.config.billing_page.session_max_hours) * 3600;
    let secure = if state.pages.secure_cookie {
        "; Secure"
    } else {
        ""
    };
    // Lax, not Strict: the provider's page sends the customer back after 3-D Secure with
    // a top-level GET from its own site, which must find the session.
    let cookie =
        format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    ([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response()
}

#[derive(Debug, Deserialize)]
pub struct StartParams {
    token: Option<String>,
}

/// Opens the single-use link of `POST /v1/portal-sessions`.
pub async fn start(
    State(state): State<AppState>,
    PageQuery(params): PageQuery<StartParams>,
) -> PageResult {
    let (session, id) = new_session(&state, "");
    let opened = match params.token {
        Some(token) => {
            state
                .db
                .open_portal_link(&links::hash(&token), session)
                .await?
        }
        None => None,
    };
    Ok(match opened {
        Some(_) => signed_in(&state, &id, BASE_PATH),
        None => stale_link(&state),
    })
}

#[derive(Debug, Deserialize)]
pub struct EmailLinkParams {
    account: Option<String>,
    next: Option<String>,
    expires: Option<String>,
    signature: Option<String>,
}

/// Opens the signed link of a notice: a session for its account, landing on its page.
pub async fn from_email(
    State(state): State<AppState>,
    PageQuery(params): PageQuery<EmailLinkParams>,
) -> PageResult {
    let now = state.clock.now_ms();
    let (Some(account), Some(next), Some(expires), Some(signature)) = (
        params.account,
        params.next,
        params.expires.and_then(|e| e.parse().ok()),
        params.signature,
    ) else {
        return Ok(stale_link(&state));
    };
    if !state
        .pages
        .links
        .verify(&account, &next, expires, &signature, now)
        || state.db.account(&account).await?.is_none()
    {
        return Ok(stale_link(&state));
    }
    let (session, id) = new_session(&state, &account);
    state.db.create_portal_session(&session).await?;
    Ok(signed_in(&state, &id, &next))
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    pub csrf: String,
}

/// Ends the session; the cookie is cleared.
pub async fn sign_out(
    State(state): State<AppState>,
    customer: Customer,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult {
    customer.check_form(&form.csrf)?;
    state
        .db
        .end_portal_session(&customer.session.id_hash)
        .await?;
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    let page = state.pages.message(
        StatusCode::OK,
        "Signed out",
        "You are signed out of the billing page. Open it again from your account.",
    );
    Ok(([(header::SET_COOKIE, cookie)], page).into_response())
}

/// What an unknown, used or expired link shows: nothing of any account.
fn stale_link(state: &AppState) -> Response {
    state.pages.message(
        StatusCode::GONE,
        "This link has expired",
        "Links to the billing page work once and for a short time. Open the billing page again from your account to get a new one.",
    )
}

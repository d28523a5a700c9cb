//! The browser's session: opened by a link, kept in an HttpOnly cookie holding a random
//! id (the database keeps its hash), ended by idleness, age or signing out. The account is
//! the session's, never one the browser names; every form carries the session's token.
//! A host's link opens every page of its account; a notice's link only the payment it is
//! about, and the customer is asked before either replaces another account's session.

use axum::{
    extract::{FromRequestParts, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use minijinja::{Value, context};
use serde::Deserialize;

use super::{
    form::{PageForm, PageQuery},
    links::{self, BASE_PATH, COMPLETE_PATH, SignedLink},
    render::{PageError, PageResult},
};
use crate::{
    db::{
        DbError,
        audit::Actor,
        portal::{ACCOUNT_SCOPE, LiveSession, PAYMENT_SCOPE, PortalSession, Sessions},
    },
    http::state::AppState,
};

/// The cookie's name on a plain-HTTP public URL. Over HTTPS it is [`HOST_COOKIE`]: the
/// browser then keeps it only if it is `Secure`, for this host alone and every path.
const COOKIE: &str = "topupd_billing";
const HOST_COOKIE: &str = "__Host-topupd_billing";
/// A session's idle expiry is pushed back at most this often, so reading pages is not a
/// write each time.
const TOUCH_EVERY_MS: i64 = 60_000;
/// What a session opened by a notice's link may reach: the payment waiting, the payments'
/// own pages (where the bank's page sends the customer back), the cards to pay with.
const PAYMENT_PATHS: [&str; 4] = [
    COMPLETE_PATH,
    "/billing/payments/",
    "/billing/payment-methods",
    "/billing/sign-out",
];

/// The signed-in customer of a request.
#[derive(Debug, Clone)]
pub struct Customer {
    pub session: PortalSession,
    /// Shown on every page, so the customer sees whose billing it is.
    pub account_email: String,
}

impl Customer {
    pub fn account_id(&self) -> &str {
        &self.session.account_id
    }

    /// Whether the session was opened by a notice's link, for its payment alone.
    pub fn payment_only(&self) -> bool {
        self.session.scope == PAYMENT_SCOPE
    }

    /// Whether the session may open `path`.
    pub fn may_open(&self, path: &str) -> bool {
        !self.payment_only() || PAYMENT_PATHS.iter().any(|p| path.starts_with(p))
    }

    /// Where "back" leads: the overview, or the payment a notice's link is about.
    pub fn home(&self) -> &'static str {
        if self.payment_only() {
            COMPLETE_PATH
        } else {
            BASE_PATH
        }
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

    /// What every signed-in page shows: its title, whose billing it is, the navigation
    /// (of what the session may reach) with `active` marked, the form token and the way
    /// back to the product.
    pub fn frame(&self, active: &str, title: &str) -> Value {
        context! {
            title,
            active,
            signed_in => true,
            payment_only => self.payment_only(),
            home => self.home(),
            account_email => self.account_email.clone(),
            csrf => self.session.csrf_token.clone(),
            return_url => self.session.return_url.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Customer {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> PageResult<Self> {
        let customer = signed_in_customer(state, &parts.headers)
            .await?
            .ok_or(PageError::SessionEnded)?;
        if customer.may_open(parts.uri.path()) {
            Ok(customer)
        } else {
            Err(PageError::OutsideLink)
        }
    }
}

/// The customer whose live session the request's cookie names, if any; their use of it
/// pushes back its idle expiry.
pub async fn signed_in_customer(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Customer>, DbError> {
    let Some(id) = session_cookie(state, headers) else {
        return Ok(None);
    };
    let now = state.clock.now_ms();
    let idle_ms = millis(state.config.billing_page.idle_timeout_secs);
    let id_hash = links::hash(id);
    let Some(LiveSession {
        session,
        account_email,
    }) = state
        .db
        .portal_session(&id_hash, now, now - idle_ms)
        .await?
    else {
        return Ok(None);
    };
    if now - session.last_seen_at >= TOUCH_EVERY_MS {
        state
            .db
            .touch_session(Sessions::Billing, &id_hash, now)
            .await?;
    }
    Ok(Some(Customer {
        session,
        account_email,
    }))
}

fn cookie_name(state: &AppState) -> &'static str {
    if state.pages.secure_cookie {
        HOST_COOKIE
    } else {
        COOKIE
    }
}

/// The session id in the request's cookies, if any.
fn session_cookie<'h>(state: &AppState, headers: &'h HeaderMap) -> Option<&'h str> {
    read_cookie(headers, cookie_name(state))
}

/// The value of the cookie `name` among the request's cookies, if any.
pub(crate) fn read_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(n, value)| (n == name && !value.is_empty()).then_some(value))
}

pub(crate) fn millis(secs: u64) -> i64 {
    i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// A new session for `account_id` reaching `scope`, ending no later than `ends_by`, and
/// its cookie's id.
fn new_session(
    state: &AppState,
    account_id: &str,
    scope: &str,
    ends_by: i64,
) -> (PortalSession, String) {
    let now = state.clock.now_ms();
    let id = links::random_secret();
    let max_ms = i64::from(state.config.billing_page.session_max_hours) * 3_600_000;
    let session = PortalSession {
        id_hash: links::hash(&id),
        account_id: account_id.to_owned(),
        csrf_token: links::random_secret(),
        return_url: None,
        scope: scope.to_owned(),
        created_at: now,
        last_seen_at: now,
        expires_at: (now + max_ms).min(ends_by),
    };
    (session, id)
}

/// The `Set-Cookie` value of a session id kept for `max_age_secs` (0 clears it).
pub(crate) fn cookie(
    name: &str,
    id: &str,
    max_age_secs: i64,
    secure: bool,
    same_site: &str,
) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={id}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age_secs}{secure}")
}

/// Lax, not Strict: the provider's page sends the customer back after 3-D Secure with a
/// top-level GET from its own site, which must find the session.
const SAME_SITE: &str = "Lax";

/// Ends the browser's current session, if any, sets the cookie of `session` and goes to
/// `to`.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    session: &PortalSession,
    id: &str,
    to: &str,
) -> PageResult {
    if let Some(old) = session_cookie(state, headers) {
        state
            .db
            .end_session(Sessions::Billing, &links::hash(old))
            .await?;
    }
    let max_age = (session.expires_at - session.created_at).div_euclid(1000);
    let cookie = cookie(
        cookie_name(state),
        id,
        max_age,
        state.pages.secure_cookie,
        SAME_SITE,
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(to)).into_response())
}

/// A sign-in form must come from the billing page itself: another site cannot sign a
/// browser in to an account of its choosing (the browser says where a form comes from).
pub(crate) fn from_own_page(state: &AppState, headers: &HeaderMap) -> PageResult<()> {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let same_site = header("sec-fetch-site").is_none_or(|site| site == "same-origin");
    let same_origin = header(header::ORIGIN.as_str()).is_none_or(|sent| {
        reqwest::Url::parse(&state.config.http.public_url)
            .is_ok_and(|own| own.origin().ascii_serialization() == sent)
    });
    if same_site && same_origin {
        Ok(())
    } else {
        Err(PageError::FormExpired)
    }
}

/// The page asking the customer to go on into the billing page of `account_email`,
/// posting `fields` back to `action`.
fn continue_page(
    state: &AppState,
    title: &str,
    text: String,
    account_email: &str,
    action: &str,
    fields: Vec<(&'static str, String)>,
) -> Response {
    state.pages.render(
        StatusCode::OK,
        "continue.html",
        context! {
            title,
            text,
            account_email,
            action,
            fields,
            signed_in => false,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct StartParams {
    token: Option<String>,
}

/// Opens the single-use link of `POST /v1/portal-sessions`. A browser signed in to
/// another account is asked first, so a link cannot swap accounts behind its back.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageQuery(params): PageQuery<StartParams>,
) -> PageResult {
    let Some(token) = params.token else {
        return Ok(stale_link(&state));
    };
    let now = state.clock.now_ms();
    let Some((link_account, link_email)) = state
        .db
        .portal_link_account(&links::hash(&token), now)
        .await?
    else {
        return Ok(stale_link(&state));
    };
    match signed_in_customer(&state, &headers).await? {
        Some(current) if current.account_id() != link_account => Ok(continue_page(
            &state,
            "Switch billing account?",
            format!(
                "This browser is signed in to the billing page of {}. The link you followed opens another account's; going on signs this browser out of the first.",
                current.account_email
            ),
            &link_email,
            links::START_PATH,
            vec![("token", token)],
        )),
        _ => open_start_link(&state, &headers, &token).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct StartForm {
    token: String,
}

/// Goes on with a host's link after the customer was asked.
pub async fn start_confirmed(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm<StartForm>,
) -> PageResult {
    from_own_page(&state, &headers)?;
    open_start_link(&state, &headers, &form.token).await
}

async fn open_start_link(state: &AppState, headers: &HeaderMap, token: &str) -> PageResult {
    let (session, id) = new_session(state, "", ACCOUNT_SCOPE, i64::MAX);
    match state
        .db
        .open_portal_link(&links::hash(token), session)
        .await?
    {
        Some(session) => signed_in(state, headers, &session, &id, BASE_PATH).await,
        None => Ok(stale_link(state)),
    }
}

#[derive(Debug, Deserialize)]
pub struct EmailLinkParams {
    account: Option<String>,
    issued: Option<String>,
    next: Option<String>,
    expires: Option<String>,
    signature: Option<String>,
}

impl EmailLinkParams {
    /// The link and its signature, if every part is there and readable.
    fn parts(self) -> Option<(SignedLink, String)> {
        Some((
            SignedLink {
                account: self.account?,
                issued: self.issued?.parse().ok()?,
                next: self.next?,
                expires: self.expires?.parse().ok()?,
            },
            self.signature?,
        ))
    }
}

/// The link of a notice, and the email of its account, if it is still good.
async fn checked_email_link(
    state: &AppState,
    params: EmailLinkParams,
) -> PageResult<Option<(SignedLink, String, String)>> {
    let now = state.clock.now_ms();
    let Some((link, signature)) = params.parts() else {
        return Ok(None);
    };
    if !state.pages.links.verify(&link, &signature, now) {
        return Ok(None);
    }
    let email = state
        .db
        .email_link_account(&link.account, link.issued)
        .await?;
    Ok(email.map(|email| (link, signature, email)))
}

/// A notice's signed link asks before it signs in: following it (as mail scanners do)
/// changes nothing, and the customer sees whose payment it opens.
pub async fn from_email(
    State(state): State<AppState>,
    PageQuery(params): PageQuery<EmailLinkParams>,
) -> PageResult {
    let Some((link, signature, email)) = checked_email_link(&state, params).await? else {
        return Ok(stale_link(&state));
    };
    let fields = vec![
        ("account", link.account.clone()),
        ("issued", link.issued.to_string()),
        ("next", link.next.clone()),
        ("expires", link.expires.to_string()),
        ("signature", signature),
    ];
    Ok(continue_page(
        &state,
        "Your payment",
        format!(
            "This link from your email opens the payment waiting on the billing account of {email}, and the cards to pay it with."
        ),
        &email,
        links::EMAIL_LINK_PATH,
        fields,
    ))
}

/// Opens a session for a notice's payment alone, ending no later than its link.
pub async fn from_email_confirmed(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(params): PageForm<EmailLinkParams>,
) -> PageResult {
    from_own_page(&state, &headers)?;
    let Some((link, _, _)) = checked_email_link(&state, params).await? else {
        return Ok(stale_link(&state));
    };
    let (session, id) = new_session(&state, &link.account, PAYMENT_SCOPE, link.expires_at());
    if !state.db.open_email_link(link.issued, &session).await? {
        return Ok(stale_link(&state));
    }
    signed_in(&state, &headers, &session, &id, &link.next).await
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
        .end_session(Sessions::Billing, &customer.session.id_hash)
        .await?;
    let cookie = cookie(
        cookie_name(&state),
        "",
        0,
        state.pages.secure_cookie,
        SAME_SITE,
    );
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

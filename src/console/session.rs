//! Staff sign-in: a support or admin key typed once into the sign-in form, checked as the
//! API checks it, then a session cookie holding a random id (the database keeps its hash
//! and the key's id, never the key). Revoking the key ends its sessions at once. Every
//! form carries the session's token, and sign-in forms must come from the console itself.

use axum::{
    extract::{FromRequestParts, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use minijinja::{Value, context};
use serde::Deserialize;

use crate::{
    db::{
        DbError,
        audit::Actor,
        console::{NewConsoleSession, StaffSession},
        portal::Sessions,
    },
    domain::api_key::Role,
    http::{auth::verified_key, state::AppState},
    portal::{
        form::PageForm,
        links,
        render::{PageError, PageResult},
        session::{cookie, from_own_page, millis, read_cookie},
    },
};

const COOKIE: &str = "topupd_console";
const HOST_COOKIE: &str = "__Host-topupd_console";
/// Strict: nothing outside the console links into it with a session.
const SAME_SITE: &str = "Strict";
const TOUCH_EVERY_MS: i64 = 60_000;

/// Where the console begins.
pub const HOME: &str = "/console";
pub const SIGN_IN: &str = "/console/sign-in";

/// The signed-in staff member of a request.
#[derive(Debug, Clone)]
pub struct Staff {
    session: StaffSession,
}

impl Staff {
    /// Who the audit log says acted: the staff key signed in with (its label shows there).
    pub fn actor(&self) -> Actor {
        Actor {
            key_id: self.session.key_id.clone(),
            role: self.session.role.clone(),
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

    /// What every console page shows: its title, who is signed in, the navigation with
    /// `active` marked, and the form token.
    pub fn frame(&self, active: &str, title: &str) -> Value {
        context! {
            title,
            active,
            staff => context! {
                label => self.session.key_label.clone(),
                role => self.session.role.clone(),
            },
            csrf => self.session.csrf_token.clone(),
        }
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> PageResult<Self> {
        signed_in_staff(state, &parts.headers)
            .await?
            .ok_or(PageError::SessionEnded)
    }
}

/// The staff member whose live session the request's cookie names, if any.
pub async fn signed_in_staff(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Staff>, DbError> {
    let Some(id) = read_cookie(headers, cookie_name(state)) else {
        return Ok(None);
    };
    let now = state.clock.now_ms();
    let idle_ms = millis(state.config.console.idle_timeout_secs);
    let id_hash = links::hash(id);
    let Some(session) = state
        .db
        .console_session(&id_hash, now, now - idle_ms)
        .await?
    else {
        return Ok(None);
    };
    if now - session.last_seen_at >= TOUCH_EVERY_MS {
        state
            .db
            .touch_session(Sessions::Console, &id_hash, now)
            .await?;
    }
    Ok(Some(Staff { session }))
}

fn cookie_name(state: &AppState) -> &'static str {
    if state.pages.secure_cookie {
        HOST_COOKIE
    } else {
        COOKIE
    }
}

pub async fn sign_in_page(State(state): State<AppState>) -> Response {
    sign_in_form(&state, StatusCode::OK, None)
}

fn sign_in_form(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    state.pages.render(
        status,
        "console/sign_in.html",
        context! { title => "Sign in", error },
    )
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    key: String,
}

/// Opens a session for a live support or admin key; any other key opens nothing.
pub async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm<SignInForm>,
) -> PageResult {
    from_own_page(&state, &headers)?;
    let key = match verified_key(&state, form.key.trim()).await? {
        Ok(key) => key,
        Err(why) => {
            tracing::warn!(reason = why.as_str(), "console sign-in refused");
            crate::metrics::auth_failure(why);
            return Ok(sign_in_form(
                &state,
                StatusCode::UNAUTHORIZED,
                Some("key: not a live API key. Paste the whole key, topupd_…"),
            ));
        }
    };
    if !matches!(Role::parse(&key.role), Some(Role::Support | Role::Admin)) {
        return Ok(sign_in_form(
            &state,
            StatusCode::FORBIDDEN,
            Some("key: only support and admin keys open the console"),
        ));
    }
    let now = state.clock.now_ms();
    let id = links::random_secret();
    let max_ms = i64::from(state.config.console.session_max_hours) * 3_600_000;
    let id_hash = links::hash(&id);
    let csrf = links::random_secret();
    state
        .db
        .create_console_session(&NewConsoleSession {
            id_hash: &id_hash,
            key_id: &key.id,
            csrf_token: &csrf,
            created_at: now,
            expires_at: now + max_ms,
        })
        .await?;
    if let Some(old) = read_cookie(&headers, cookie_name(&state)) {
        state
            .db
            .end_session(Sessions::Console, &links::hash(old))
            .await?;
    }
    let cookie = cookie(
        cookie_name(&state),
        &id,
        max_ms / 1000,
        state.pages.secure_cookie,
        SAME_SITE,
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(HOME)).into_response())
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    pub csrf: String,
}

pub async fn sign_out(
    State(state): State<AppState>,
    staff: Staff,
    PageForm(form): PageForm<TokenForm>,
) -> PageResult {
    staff.check_form(&form.csrf)?;
    state
        .db
        .end_session(Sessions::Console, &staff.session.id_hash)
        .await?;
    let cookie = cookie(
        cookie_name(&state),
        "",
        0,
        state.pages.secure_cookie,
        SAME_SITE,
    );
    Ok(([(header::SET_COOKIE, cookie)], Redirect::to(SIGN_IN)).into_response())
}

//! Links to the billing page for a host's signed-in customer: the host's backend asks for
//! one and sends the customer's browser to it, as with Stripe's Customer Portal.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    auth::Caller,
    error::{ApiError, ApiResult, ErrorBody},
    extract::ApiJson,
    state::AppState,
};
use crate::{
    clock::rfc3339,
    db::portal::NewPortalLink,
    domain::{api_key::Role, validation::FieldErrors},
    portal::links,
};

const MAX_URL_LEN: usize = 2000;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionBody {
    /// The account whose billing page opens.
    account_id: String,
    /// Where the page's "Back to" link leads: your product's page, http(s).
    #[serde(default)]
    return_url: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortalSessionView {
    /// Send the customer's browser here. It works once, until `expires_at`.
    url: String,
    expires_at: String,
}

/// A single-use link that signs the customer in to the billing page of one account.
#[utoipa::path(post, path = "/v1/portal-sessions", operation_id = "create_portal_session", tag = "billing page",
    request_body = PortalSessionBody,
    responses(
        (status = 201, body = PortalSessionView),
        (status = 403, description = "Not a service or admin key", body = ErrorBody),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "A field is invalid; `fields` names it", body = ErrorBody),
    ))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PortalSessionBody>,
) -> ApiResult<(StatusCode, Json<PortalSessionView>)> {
    caller.require(&[Role::Service, Role::Admin])?;
    let return_url = body.return_url.as_deref().map(str::trim);
    if let Some(url) = return_url
        && !is_return_url(url)
    {
        return Err(ApiError::invalid(FieldErrors::single(
            "return_url",
            format!("must be an http:// or https:// URL of at most {MAX_URL_LEN} characters"),
        )));
    }
    let account = state
        .db
        .account(&body.account_id)
        .await?
        .ok_or(ApiError::NotFound("account"))?;
    let now = state.clock.now_ms();
    let ttl_ms = i64::try_from(state.config.billing_page.link_ttl_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX);
    let token = links::random_secret();
    let link = NewPortalLink {
        token_hash: &links::hash(&token),
        account_id: &account.id,
        return_url,
        created_by: &caller.key_id,
        created_at: now,
        expires_at: now.saturating_add(ttl_ms),
    };
    state.db.create_portal_link(&link).await?;
    let url = format!(
        "{}{}?token={token}",
        state.config.http.public_url.trim_end_matches('/'),
        links::START_PATH
    );
    Ok((
        StatusCode::CREATED,
        Json(PortalSessionView {
            url,
            expires_at: rfc3339(link.expires_at),
        }),
    ))
}

fn is_return_url(url: &str) -> bool {
    url.len() <= MAX_URL_LEN
        && (url.starts_with("https://") || url.starts_with("http://"))
        && url.bytes().all(|b| b.is_ascii_graphic())
}

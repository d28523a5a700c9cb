//! The support console, under `/console`: server-rendered pages, in the billing page's
//! look and with its protections, where staff signed in with a support or admin key find
//! accounts, read why each was (not) charged, resume pauses, adjust balances and requeue
//! what failed. Every action goes through the same code as the API and is audited under
//! the staff key. A customer's billing session opens none of it: the two sessions are
//! kept apart, each with its own cookie and table.

mod accounts;
mod queues;
pub mod session;

use axum::{
    Router,
    extract::{Request, State},
    middleware::Next,
    response::Response,
    routing::{get, post},
};
use minijinja::{Value, context};

use crate::{http::state::AppState, portal::render::failure_of};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            session::SIGN_IN,
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route(session::HOME, get(accounts::search))
        .route("/console/accounts/{id}", get(accounts::page))
        .route("/console/accounts/{id}/resume", post(accounts::resume))
        .route("/console/accounts/{id}/adjust", post(accounts::adjust))
        .route("/console/accounts/{id}/close", post(accounts::close))
        .route("/console/paused", get(queues::paused))
        .route("/console/notices", get(queues::notices))
        .route(
            "/console/notices/{id}/requeue",
            post(queues::requeue_notice),
        )
        .route("/console/webhooks", get(queues::webhooks))
        .route(
            "/console/webhooks/{id}/requeue",
            post(queues::requeue_event),
        )
}

/// An API view as the templates read it: numbers (credits are exact decimals) as their
/// text, so a page shows what the API answers.
pub fn shown(view: impl serde::Serialize) -> Value {
    fn convert(value: serde_json::Value) -> Value {
        use serde_json::Value as Json;
        match value {
            Json::Null => Value::from(()),
            Json::Bool(b) => Value::from(b),
            Json::Number(n) => Value::from(n.to_string()),
            Json::String(s) => Value::from(s),
            Json::Array(items) => Value::from(items.into_iter().map(convert).collect::<Vec<_>>()),
            Json::Object(fields) => Value::from(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, convert(v)))
                    .collect::<std::collections::BTreeMap<_, _>>(),
            ),
        }
    }
    convert(serde_json::to_value(view).unwrap_or_default())
}

/// Renders the pages of the console's errors in its look, with the navigation if the
/// browser is signed in.
pub async fn error_pages(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let headers = request.headers().clone();
    let response = next.run(request).await;
    let Some((title, text)) = failure_of(&response) else {
        return response;
    };
    let status = response.status();
    let staff = session::signed_in_staff(&state, &headers)
        .await
        .ok()
        .flatten();
    let ctx = match staff {
        Some(staff) => context! { ..staff.frame("", title), ..context! { text } },
        None => context! { title, text, signed_out => true },
    };
    state.pages.render(status, "console/message.html", ctx)
}

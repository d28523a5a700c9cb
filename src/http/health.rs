//! Liveness and readiness probes.

use axum::{Json, Router, extract::State, routing::get};
use serde_json::{Value, json};

use super::error::{ApiError, ApiResult};
use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The process is up and serving HTTP.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The database answers and every migration this build expects is applied; says which
/// roles this process runs.
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    match state.db.ready().await {
        Ok(true) => Ok(Json(
            json!({ "status": "ready", "roles": state.roles.names() }),
        )),
        Ok(false) => Err(ApiError::Unavailable(
            "database migrations are not applied".into(),
        )),
        Err(error) => {
            tracing::warn!(error = ?error, "readiness check failed");
            Err(ApiError::Unavailable("database is unreachable".into()))
        }
    }
}

//! Liveness and readiness probes.

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthView {
    /// `ok`.
    status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyView {
    /// `ready`.
    status: &'static str,
    /// What this process runs: `api`, `scheduler`, `notices`.
    roles: Vec<&'static str>,
}

/// The process is up and serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, body = HealthView)))]
async fn healthz() -> Json<HealthView> {
    Json(HealthView { status: "ok" })
}

/// The database answers and every migration this build expects is applied; says which
/// roles this process runs.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses(
        (status = 200, body = ReadyView),
        (status = 503, description = "Not ready: the database is unreachable or not migrated", body = ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<ReadyView>> {
    match state.db.ready().await {
        Ok(true) => Ok(Json(ReadyView {
            status: "ready",
            roles: state.roles.names(),
        })),
        Ok(false) => Err(ApiError::Unavailable(
            "database migrations are not applied".into(),
        )),
        Err(error) => {
            tracing::warn!(error = ?error, "readiness check failed");
            Err(ApiError::Unavailable("database is unreachable".into()))
        }
    }
}

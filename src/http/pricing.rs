//! The catalogue and cost estimates; public.

use std::collections::BTreeMap;

use axum::{
    Json, Router,
    extract::State,
    routing::{get, post},
};
use serde::Serialize;

use super::{
    error::{ApiError, ApiResult},
    extract::ApiJson,
};
use crate::{
    app::AppState,
    domain::pricing::{PriceRequest, Quote, Service},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/pricing", get(pricing))
        .route("/v1/estimate", post(estimate))
}

#[derive(Serialize)]
struct PricingView<'a> {
    currency: &'static str,
    credit_price_cents: i64,
    services: &'a BTreeMap<String, Service>,
}

async fn pricing(State(state): State<AppState>) -> Json<serde_json::Value> {
    let view = PricingView {
        currency: "usd",
        credit_price_cents: state.config.credit_price_cents,
        services: &state.catalogue.services,
    };
    Json(serde_json::to_value(view).expect("the catalogue serializes to JSON"))
}

/// The cost of a request, line by line, without debiting anything.
async fn estimate(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<PriceRequest>,
) -> ApiResult<Json<Quote>> {
    state
        .catalogue
        .quote(&request)
        .map(Json)
        .map_err(ApiError::invalid)
}

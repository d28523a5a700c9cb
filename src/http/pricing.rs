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
    domain::{
        money::Cents,
        pricing::{PriceRequest, Quote, Service},
    },
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/pricing", get(pricing))
        .route("/v1/estimate", post(estimate))
}

#[derive(Serialize)]
struct PricingView<'a> {
    currency: &'a str,
    credit_price_cents: i64,
    services: &'a BTreeMap<String, Service>,
    /// Credit packages for `POST /v1/accounts/{id}/topups`.
    packages: Vec<Package>,
    topup_limits: Limits,
}

#[derive(Serialize)]
struct Package {
    credits: i64,
    amount_cents: i64,
    amount_usd: String,
}

#[derive(Serialize)]
struct Limits {
    min_amount_cents: i64,
    max_amount_cents: i64,
}

async fn pricing(State(state): State<AppState>) -> Json<serde_json::Value> {
    let config = &state.config;
    let packages = config
        .payments
        .packages
        .iter()
        .map(|&credits| {
            let cents = Cents(credits * config.credit_price_cents);
            Package {
                credits,
                amount_cents: cents.0,
                amount_usd: cents.to_string(),
            }
        })
        .collect();
    let view = PricingView {
        currency: &config.payments.currency,
        credit_price_cents: config.credit_price_cents,
        services: &state.catalogue.services,
        packages,
        topup_limits: Limits {
            min_amount_cents: config.payments.min_topup_cents,
            max_amount_cents: config.payments.max_topup_cents,
        },
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

//! The catalogue and cost estimates; public.

use std::collections::BTreeMap;

use axum::{Json, extract::State};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use super::{
    error::{ApiError, ApiResult, ErrorBody},
    extract::ApiJson,
    state::AppState,
};
use crate::domain::{
    money::Cents,
    pricing::{PriceRequest, Quote, Service},
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pricing))
        .routes(routes!(estimate))
}

#[derive(Serialize, ToSchema)]
pub struct PricingView {
    currency: String,
    credit_price_cents: i64,
    /// The catalogue: each service by name.
    services: BTreeMap<String, Service>,
    /// Credit packages for `POST /v1/accounts/{id}/topups`.
    packages: Vec<Package>,
    topup_limits: Limits,
}

#[derive(Serialize, ToSchema)]
pub struct Package {
    credits: i64,
    amount_cents: i64,
    amount_usd: String,
}

#[derive(Serialize, ToSchema)]
pub struct Limits {
    min_amount_cents: i64,
    max_amount_cents: i64,
}

/// The catalogue, credit packages and purchase limits.
#[utoipa::path(get, path = "/v1/pricing", operation_id = "get_pricing", tag = "pricing", security(()),
    responses((status = 200, body = PricingView)))]
async fn pricing(State(state): State<AppState>) -> Json<PricingView> {
    let config = &state.config;
    let packages = config
        .payments
        .packages
        .iter()
        .map(|&credits| {
            let cents = Cents::for_credits(credits, config.credit_price_cents)
                .expect("packages are priced at load");
            Package {
                credits,
                amount_cents: cents.0,
                amount_usd: cents.to_string(),
            }
        })
        .collect();
    Json(PricingView {
        currency: config.payments.currency.clone(),
        credit_price_cents: config.credit_price_cents,
        services: state.catalogue.services.clone(),
        packages,
        topup_limits: Limits {
            min_amount_cents: config.payments.min_topup_cents,
            max_amount_cents: config.payments.max_topup_cents,
        },
    })
}

/// The cost of a request, line by line, without debiting anything.
#[utoipa::path(post, path = "/v1/estimate", tag = "pricing", security(()),
    request_body = PriceRequest,
    responses(
        (status = 200, body = Quote),
        (status = 422, description = "Unknown service, variant or add-on, or a missing quantity", body = ErrorBody),
    ))]
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

//! The OpenAPI document of the HTTP API, served at `GET /openapi.json`. It is generated
//! from the handlers' own annotations, through the same router that serves them, so a
//! route cannot be served without being described.

use std::sync::LazyLock;

use axum::http::header;
use utoipa::{
    OpenApi,
    openapi::{
        self, ContentBuilder, Ref, RefOr, ResponseBuilder,
        path::Operation,
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::error::ErrorBody;
use super::state::AppState;

/// The name of the API key scheme in the document.
const API_KEY: &str = "api_key";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "topupd",
        description = "Prepaid API credits: pricing and metering against a ledger, purchases, \
            saved cards and auto top-up. Amounts of credits are exact JSON numbers with at most \
            three decimals; money is in integer cents. Every error answers `ErrorBody`."
    ),
    security(("api_key" = [])),
    components(schemas(ErrorBody)),
    tags(
        (name = "pricing", description = "The catalogue and cost estimates; public"),
        (name = "usage", description = "Debits and refunds, for the platform's service keys"),
        (name = "accounts", description = "Balances and histories, for the account's customer and staff"),
        (name = "payment methods", description = "Saved cards"),
        (name = "top-ups", description = "Buying credits"),
        (name = "billing page", description = "Links that open the customer's billing page, for the host's backend"),
        (name = "auto top-up", description = "Settings, state, decisions, retry and support's resume"),
        (name = "admin", description = "Accounts, keys, adjustments and the audit log, for staff"),
        (name = "notices", description = "The email outbox, for support"),
        (name = "webhooks", description = "The payment provider's events, and support's view of those that failed"),
        (name = "host webhooks", description = "Endpoints of the host's that topupd sends its events to, signed as Standard Webhooks, and their deliveries"),
        (name = "health", description = "Probes"),
    )
)]
pub struct ApiDoc;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "The OpenAPI document of this API", body = Object)))]
async fn openapi_json() -> ([(header::HeaderName, &'static str); 1], &'static str) {
    static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
        document()
            .to_pretty_json()
            .expect("the OpenAPI document serializes to JSON")
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

/// The whole document: the routes' descriptions, the key scheme, and the errors every
/// operation may answer.
pub fn document() -> openapi::OpenApi {
    let mut doc = super::routes().into_openapi();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            API_KEY,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("tpk_<id>_<secret>")
                    .build(),
            ),
        );
    for item in doc.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            add_error_responses(operation);
        }
    }
    doc
}

/// Errors any operation may answer, unless it describes them itself.
fn add_error_responses(operation: &mut Operation) {
    let secured = operation.security.is_none();
    let has_body = operation.request_body.is_some();
    let mut errors = vec![(
        "default",
        "Any other error: 400 (an unreadable request, naming the field), 408, 500, 503",
    )];
    if secured {
        errors.push((
            "401",
            "`unauthorized`: no key, an unknown key or a revoked key",
        ));
        errors.push(("403", "`forbidden`: this key's role may not do this"));
    }
    if has_body {
        errors.push(("413", "The body is larger than the configured limit"));
        errors.push(("415", "The body is not JSON"));
        errors.push(("422", "`invalid_request`: `fields` names each bad field"));
    }
    for (status, description) in errors {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error_response(description));
    }
}

fn error_response(description: &str) -> RefOr<openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

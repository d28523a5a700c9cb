//! The stub's routes for saving cards: SetupIntents, Checkout Sessions in `setup` mode,
//! and Checkout's hosted page, where the customer picks one of Stripe's test cards.

use axum::{
    Form, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde_json::json;

use super::{Stub, world::FaultTarget};
use crate::notices::templates::escape;

const SETUP_PARAMS: &[&str] = &[
    "customer",
    "payment_method",
    "payment_method_types[",
    "usage",
    "confirm",
    "return_url",
    "description",
    "metadata[",
];
const SETUP_CONFIRM_PARAMS: &[&str] = &["payment_method", "return_url"];
const CHECKOUT_PARAMS: &[&str] = &[
    "mode",
    "customer",
    "currency",
    "payment_method_types[",
    "success_url",
    "cancel_url",
    "client_reference_id",
    "locale",
    "metadata[",
    "setup_intent_data[",
];

/// The test cards the hosted page offers.
const CARDS: &[(&str, &str)] = &[
    ("pm_card_visa", "Visa 4242"),
    ("pm_card_mastercard", "Mastercard 4444"),
    (
        "pm_card_authenticationRequired",
        "Visa 3184, 3-D Secure on every payment",
    ),
    (
        "pm_card_chargeCustomerFail",
        "Visa 0341, declined when charged",
    ),
    ("pm_card_chargeDeclined", "Visa 0002, declined"),
    (
        "pm_card_chargeDeclinedInsufficientFunds",
        "Visa 9995, insufficient funds",
    ),
];

pub fn routes() -> Router<Stub> {
    Router::new()
        .route("/v1/setup_intents", post(create_setup_intent))
        .route("/v1/setup_intents/{id}", get(setup_intent))
        .route("/v1/setup_intents/{id}/confirm", post(confirm_setup_intent))
        .route("/v1/checkout/sessions", post(create_checkout_session))
        .route("/v1/checkout/sessions/{id}", get(checkout_session))
        .route(
            "/_stub/checkout/{id}",
            get(checkout_page).post(checkout_chosen),
        )
}

async fn create_setup_intent(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = ("setup_intents".to_owned(), pairs, SETUP_PARAMS);
    stub.post(&headers, request, FaultTarget::All, |w, form, url, now| {
        w.create_setup_intent(form, url, now)
    })
    .await
}

async fn setup_intent(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    stub.read(|w| w.retrieve_setup_intent(&id).answer).await
}

async fn confirm_setup_intent(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (
        format!("setup_intents/{id}/confirm"),
        pairs,
        SETUP_CONFIRM_PARAMS,
    );
    stub.post(
        &headers,
        request,
        FaultTarget::All,
        move |w, form, url, now| w.confirm_setup_intent(&id, form, url, now),
    )
    .await
}

async fn create_checkout_session(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = ("checkout/sessions".to_owned(), pairs, CHECKOUT_PARAMS);
    stub.post(&headers, request, FaultTarget::All, |w, form, url, now| {
        w.create_checkout_session(form, url, now)
    })
    .await
}

async fn checkout_session(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    stub.read(|w| match w.retrieve_checkout_session(&id) {
        Some(session) => (StatusCode::OK, json!(session)),
        None => super::world::error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "resource_missing",
            &format!("No such checkout.session: '{id}'"),
        ),
    })
    .await
}

/// Checkout's hosted page: the customer picks a card to save.
async fn checkout_page(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    let world = stub.inner.world.lock().await;
    let Some(session) = world.retrieve_checkout_session(&id) else {
        return (
            StatusCode::NOT_FOUND,
            Html("<p>No such Checkout Session.</p>"),
        )
            .into_response();
    };
    hosted_page(&id, session.cancel_url.as_deref(), None)
}

fn hosted_page(id: &str, cancel_url: Option<&str>, problem: Option<&str>) -> Response {
    let options: String = CARDS
        .iter()
        .map(|(card, label)| format!("<option value=\"{card}\">{label}</option>"))
        .collect();
    let problem = problem.map_or_else(String::new, |p| {
        format!("<p role=\"alert\">{}</p>", escape(p))
    });
    let cancel = cancel_url.map_or_else(String::new, |url| {
        format!("<p><a href=\"{}\">Cancel</a></p>", escape(url))
    });
    Html(format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Save a card</title></head><body>\
         <h1>Save a card for future payments</h1>{problem}\
         <form method=\"post\" action=\"/_stub/checkout/{id}\"><label for=\"card\">Card</label>\
         <select id=\"card\" name=\"card\">{options}</select><button type=\"submit\">Save card</button></form>{cancel}\
         </body></html>"
    ))
    .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct Chosen {
    card: String,
}

async fn checkout_chosen(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    Form(chosen): Form<Chosen>,
) -> Response {
    let now = stub.now();
    let mut world = stub.inner.world.lock().await;
    let (outcome, events) = world.complete_checkout(&id, &chosen.card, now);
    for event in events {
        stub.emit(&mut world, event);
    }
    let cancel_url = world
        .retrieve_checkout_session(&id)
        .and_then(|s| s.cancel_url.clone());
    drop(world);
    match outcome {
        Ok(success_url) => Redirect::to(&success_url).into_response(),
        Err(problem) => hosted_page(&id, cancel_url.as_deref(), Some(&problem)),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hosted_page_offers_only_cards_the_stub_knows() {
        for (card, _) in super::CARDS {
            assert!(super::super::world::test_card(card).is_some(), "{card}");
        }
    }
}

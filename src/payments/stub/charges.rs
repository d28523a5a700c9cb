//! The stub's routes for what follows a charge: reading charges, refunds, and disputes
//! (read, answered with evidence, or accepted with `close`).

use axum::{
    Form, Router,
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
    routing::{get, post},
};

use super::{Stub, world::FaultTarget};

const REFUND_PARAMS: &[&str] = &[
    "charge",
    "payment_intent",
    "amount",
    "reason",
    "instructions_email",
    "metadata[",
];
const DISPUTE_PARAMS: &[&str] = &["evidence[", "metadata[", "submit"];

pub fn routes() -> Router<Stub> {
    Router::new()
        .route("/v1/charges/{id}", get(charge))
        .route("/v1/refunds", post(create_refund))
        .route("/v1/disputes/{id}", get(dispute).post(update_dispute))
        .route("/v1/disputes/{id}/close", post(close_dispute))
}

async fn charge(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    stub.read(|w| w.retrieve_charge(&id).answer).await
}

async fn dispute(State(stub): State<Stub>, Path(id): Path<String>) -> Response {
    stub.read(|w| w.retrieve_dispute(&id).answer).await
}

async fn create_refund(
    State(stub): State<Stub>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = ("refunds".to_owned(), pairs, REFUND_PARAMS);
    stub.post(&headers, request, FaultTarget::All, |w, form, _, now| {
        w.create_refund(form, now)
    })
    .await
}

async fn update_dispute(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (format!("disputes/{id}"), pairs, DISPUTE_PARAMS);
    stub.post(
        &headers,
        request,
        FaultTarget::All,
        move |w, form, _, now| w.update_dispute(&id, form, now),
    )
    .await
}

async fn close_dispute(
    State(stub): State<Stub>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let request = (format!("disputes/{id}/close"), pairs, &[] as &[&str]);
    stub.post(&headers, request, FaultTarget::All, move |w, _, _, now| {
        w.close_dispute(&id, now)
    })
    .await
}

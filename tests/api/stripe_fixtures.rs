//! Stripe's own fixtures (`tests/fixtures/stripe/`, from Stripe's OpenAPI repository):
//! every object topupd reads parses from its fixture with topupd's types, and the stub
//! provider's objects carry every field of Stripe's.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;
use topupd::payments::types::{
    Charge, CheckoutSession, Customer, Dispute, DisputeStanding, ErrorBody, Event, PaymentIntent,
    PaymentMethod, Refund, SetupIntent,
};

use crate::helpers::{TestApp, backends};

fn fixture(kind: &str) -> Value {
    let all: Value = serde_json::from_str(include_str!("../fixtures/stripe/fixtures3.json"))
        .expect("the fixtures are JSON");
    all["resources"][kind].clone()
}

fn parses<T: DeserializeOwned>(kind: &str) -> T {
    serde_json::from_value(fixture(kind))
        .unwrap_or_else(|e| panic!("topupd cannot read Stripe's {kind}: {e}"))
}

fn keys(object: &Value) -> BTreeSet<String> {
    object
        .as_object()
        .expect("an object")
        .keys()
        .cloned()
        .collect()
}

/// The fields of Stripe's `kind` that `object` (the stub's) lacks.
fn missing_fields(kind: &str, object: &Value) -> Vec<String> {
    keys(&fixture(kind))
        .difference(&keys(object))
        .cloned()
        .collect()
}

#[test]
fn every_object_topupd_reads_parses_from_stripes_fixture() {
    let intent: PaymentIntent = parses("payment_intent");
    assert_eq!(intent.status, "requires_payment_method");
    assert_eq!(intent.amount_received, Some(0));
    assert!(
        intent
            .client_secret
            .as_ref()
            .is_some_and(|s| s.contains("_secret_"))
    );
    // Stripe's fixture error carries only a type: the reason is optional, never a crash.
    let error: &ErrorBody = intent.last_payment_error.as_ref().expect("an error");
    assert_eq!(error.kind.as_deref(), Some("idempotency_error"));
    assert_eq!(intent.failure_code(), None);
    let method: PaymentMethod = parses("payment_method");
    let card = method.card.expect("a card");
    assert_eq!((card.brand.as_str(), card.last4.as_str()), ("visa", "4242"));
    let customer: Customer = parses("customer");
    assert!(customer.id.starts_with("cus_"));
    let event: Event = parses("event");
    assert_eq!(event.kind, "plan.created");
    let setup: SetupIntent = parses("setup_intent");
    assert_eq!(setup.usage.as_deref(), Some("off_session"));
    let session: CheckoutSession = parses("checkout.session");
    assert_eq!(session.status.as_deref(), Some("open"));
    let charge: Charge = parses("charge");
    assert_eq!((charge.amount, charge.amount_refunded), (100, 0));
    let refund: Refund = parses("refund");
    assert_eq!(refund.charge.as_deref(), Some(charge.id.as_str()));
    let dispute: Dispute = parses("dispute");
    assert_eq!(dispute.charge, charge.id);
    assert_eq!(dispute.standing(), DisputeStanding::Open);
}

#[test]
fn a_charge_that_does_not_say_what_was_refunded_is_unreadable_not_unrefunded() {
    let mut charge = fixture("charge");
    charge
        .as_object_mut()
        .expect("object")
        .remove("amount_refunded");
    assert!(serde_json::from_value::<Charge>(charge).is_err());
}

#[tokio::test]
async fn the_stubs_charges_refunds_and_disputes_carry_every_field_of_stripes() {
    let app = TestApp::spawn(backends()[0]).await;
    let (_, customer) = app.stripe("/v1/customers", &[("name", "Ada")], None).await;
    let id = customer["id"].as_str().expect("id").to_owned();
    let mut charges = Vec::new();
    for card in ["pm_card_visa", "pm_card_createDispute"] {
        let (_, saved) = app
            .stripe(
                &format!("/v1/payment_methods/{card}/attach"),
                &[("customer", &id)],
                None,
            )
            .await;
        let pay = [
            ("amount", "1000"),
            ("currency", "usd"),
            ("customer", id.as_str()),
            ("payment_method", saved["id"].as_str().expect("card")),
            ("confirm", "true"),
            ("off_session", "true"),
        ];
        let (status, paid) = app.stripe("/v1/payment_intents", &pay, None).await;
        assert_eq!(
            (status, paid["status"].as_str()),
            (StatusCode::OK, Some("succeeded")),
            "{paid}"
        );
        charges.push(paid["latest_charge"].as_str().expect("a charge").to_owned());
    }
    let (status, refund) = app
        .stripe(
            "/v1/refunds",
            &[("charge", &charges[0]), ("amount", "400")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refund}");
    let refunded = read(&app, &format!("/v1/charges/{}", charges[0])).await;
    assert_eq!(
        (
            refunded["amount_refunded"].as_i64(),
            refunded["refunded"].as_bool()
        ),
        (Some(400), Some(false))
    );
    let disputed = read(&app, &format!("/v1/charges/{}", charges[1])).await;
    assert_eq!(disputed["disputed"], true);
    let (status, twice) = app
        .stripe("/v1/refunds", &[("charge", &charges[1])], None)
        .await;
    assert_eq!(
        (status, twice["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("charge_disputed"))
    );
    let (status, too_much) = app
        .stripe(
            "/v1/refunds",
            &[("charge", &charges[0]), ("amount", "601")],
            None,
        )
        .await;
    assert_eq!(
        (status, too_much["error"]["param"].as_str()),
        (StatusCode::BAD_REQUEST, Some("amount"))
    );
    let deliveries = read(&app, "/_stub/events").await;
    let mut dispute = Value::Null;
    for delivery in deliveries.as_array().expect("deliveries") {
        let event = read(
            &app,
            &format!("/v1/events/{}", delivery["event_id"].as_str().expect("id")),
        )
        .await;
        let object = &event["data"]["object"];
        let kind = object["object"].as_str().expect("an object");
        assert_eq!(
            missing_fields(kind, object),
            Vec::<String>::new(),
            "{event}"
        );
        if event["type"] == "charge.dispute.created" {
            dispute = read(
                &app,
                &format!(
                    "/v1/disputes/{}",
                    event["data"]["object"]["id"].as_str().expect("id")
                ),
            )
            .await;
        }
    }
    assert_eq!(dispute["charge"], charges[1].as_str(), "{dispute}");
    for (kind, object) in [
        ("charge", &refunded),
        ("charge", &disputed),
        ("refund", &refund),
        ("dispute", &dispute),
    ] {
        assert_eq!(
            missing_fields(kind, object),
            Vec::<String>::new(),
            "{kind}: {object}"
        );
        assert_eq!(object["object"], kind);
    }
    app.stop().await;
}

async fn read(app: &TestApp, path: &str) -> Value {
    app.stub_get(path).await
}

#[tokio::test]
async fn the_stubs_objects_carry_every_field_of_stripes() {
    let app = TestApp::spawn(backends()[0]).await;
    let (_, customer) = app.stripe("/v1/customers", &[("name", "Ada")], None).await;
    let id = customer["id"].as_str().expect("id").to_owned();
    let (_, card) = app
        .stripe(
            "/v1/payment_methods/pm_card_authenticationRequired/attach",
            &[("customer", &id)],
            None,
        )
        .await;
    let card_id = card["id"].as_str().expect("card").to_owned();
    let pay = [
        ("amount", "1000"),
        ("currency", "usd"),
        ("customer", id.as_str()),
        ("payment_method", card_id.as_str()),
        ("confirm", "true"),
        ("off_session", "true"),
    ];
    let (status, declined) = app.stripe("/v1/payment_intents", &pay, None).await;
    assert_eq!(status, StatusCode::PAYMENT_REQUIRED);
    let intent = &declined["error"]["payment_intent"];
    let listed = read(&app, &format!("/v1/payment_intents?customer={id}")).await;

    let (_, setup) = app
        .stripe(
            "/v1/setup_intents",
            &[
                ("customer", &id),
                ("payment_method", "pm_card_visa"),
                ("confirm", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(setup["status"], "succeeded", "{setup}");
    let (_, session) = app
        .stripe(
            "/v1/checkout/sessions",
            &[
                ("mode", "setup"),
                ("customer", &id),
                ("currency", "usd"),
                ("success_url", "https://host.example/done"),
            ],
            None,
        )
        .await;
    for (kind, object) in [
        ("setup_intent", &setup),
        ("checkout.session", &session),
        ("customer", &customer),
        (
            "customer",
            &read(&app, &format!("/v1/customers/{id}")).await,
        ),
        ("payment_method", &card),
        ("payment_intent", intent),
        ("payment_intent", &listed["data"][0]),
        (
            "payment_intent",
            &read(
                &app,
                &format!("/v1/payment_intents/{}", intent["id"].as_str().expect("id")),
            )
            .await,
        ),
    ] {
        assert_eq!(
            missing_fields(kind, object),
            Vec::<String>::new(),
            "{kind}: {object}"
        );
        assert_eq!(object["object"], kind);
    }
    let card_fields: BTreeSet<String> = keys(&fixture("payment_method")["card"]);
    let stub_card: BTreeSet<String> = keys(&card["card"]);
    assert!(
        card_fields.is_subset(&stub_card),
        "card: {:?}",
        card_fields.difference(&stub_card)
    );

    // The events the payment caused, as a webhook endpoint or `GET /v1/events/{id}` has them.
    let deliveries = read(&app, "/_stub/events").await;
    let deliveries = deliveries.as_array().expect("deliveries");
    assert!(!deliveries.is_empty());
    for delivery in deliveries {
        let event = read(
            &app,
            &format!("/v1/events/{}", delivery["event_id"].as_str().expect("id")),
        )
        .await;
        assert_eq!(
            missing_fields("event", &event),
            Vec::<String>::new(),
            "{event}"
        );
        assert_eq!(event["api_version"], topupd::payments::API_VERSION);
        let object = &event["data"]["object"];
        let kind = object["object"].as_str().expect("an object");
        assert_eq!(
            missing_fields(kind, object),
            Vec::<String>::new(),
            "{object}"
        );
    }
    app.stop().await;
}

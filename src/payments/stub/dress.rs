//! The stub's objects in Stripe's whole field set. The stub models only the fields topupd
//! and its tests use; every other field of Stripe's object is added at its neutral value
//! (what a fresh test-mode object has: null, false, zero, empty, or Stripe's default), so
//! a client written against Stripe's schema reads the stub's objects as Stripe's.
//! `tests/api/stripe_fixtures.rs` holds these field sets to Stripe's own fixtures.

use std::sync::LazyLock;

use serde_json::{Map, Value, json};

/// The fields each object has besides those the stub models, by id prefix.
static TEMPLATES: LazyLock<[(&str, Value); 4]> = LazyLock::new(|| {
    [
        (
            "pi_",
            json!({
                "object": "payment_intent",
                "amount_capturable": 0,
                "amount_details": {},
                "application": null,
                "application_fee_amount": null,
                "automatic_payment_methods": null,
                "canceled_at": null,
                "cancellation_reason": null,
                "capture_method": "automatic",
                "confirmation_method": "automatic",
                "customer_account": null,
                "description": null,
                "excluded_payment_method_types": null,
                "latest_charge": null,
                "livemode": false,
                "managed_payments": null,
                "on_behalf_of": null,
                "payment_method_configuration_details": null,
                "payment_method_options": {},
                "payment_method_types": ["card"],
                "processing": null,
                "receipt_email": null,
                "review": null,
                "setup_future_usage": null,
                "shipping": null,
                "source": null,
                "statement_descriptor": null,
                "statement_descriptor_suffix": null,
                "transfer_data": null,
                "transfer_group": null,
            }),
        ),
        (
            "pm_",
            json!({
                "object": "payment_method",
                "allow_redisplay": "unspecified",
                "billing_details": {
                    "address": {
                        "city": null, "country": null, "line1": null, "line2": null,
                        "postal_code": null, "state": null,
                    },
                    "email": null, "name": null, "phone": null, "tax_id": null,
                },
                "card": {
                    "checks": {
                        "address_line1_check": null,
                        "address_postal_code_check": null,
                        "cvc_check": null,
                    },
                    "country": "US",
                    "display_brand": null,
                    "fingerprint": null,
                    "funding": "credit",
                    "generated_from": null,
                    "networks": null,
                    "regulated_status": null,
                    "three_d_secure_usage": { "supported": true },
                    "wallet": null,
                },
                "created": 0,
                "customer_account": null,
                "livemode": false,
                "metadata": {},
                "type": "card",
            }),
        ),
        (
            "cus_",
            json!({
                "object": "customer",
                "address": null,
                "balance": 0,
                "created": 0,
                "currency": null,
                "default_source": null,
                "delinquent": false,
                "description": null,
                "discount": null,
                "invoice_prefix": null,
                "invoice_settings": {
                    "custom_fields": null,
                    "default_payment_method": null,
                    "footer": null,
                    "rendering_options": null,
                },
                "livemode": false,
                "next_invoice_sequence": 1,
                "phone": null,
                "preferred_locales": [],
                "shipping": null,
                "tax_exempt": "none",
                "test_clock": null,
            }),
        ),
        (
            "evt_",
            json!({
                "object": "event",
                "livemode": false,
                "pending_webhooks": 1,
                "request": { "id": null, "idempotency_key": null },
            }),
        ),
    ]
});

/// `value` with each of the stub's objects in it (found by their ids' prefixes, nested
/// ones included) given the fields it lacks.
pub fn dress(mut value: Value) -> Value {
    dress_in_place(&mut value);
    value
}

fn dress_in_place(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(dress_in_place),
        Value::Object(fields) => {
            fields.values_mut().for_each(dress_in_place);
            let template = fields
                .get("id")
                .and_then(Value::as_str)
                .and_then(|id| TEMPLATES.iter().find(|(prefix, _)| id.starts_with(prefix)));
            if let Some((_, Value::Object(template))) = template
                && !fields.contains_key("object")
            {
                fill(fields, template);
            }
        }
        _ => {}
    }
}

/// Adds what `fields` lacks of `template`, into nested objects both have.
fn fill(fields: &mut Map<String, Value>, template: &Map<String, Value>) {
    for (key, default) in template {
        match (fields.get_mut(key), default) {
            (None, _) => {
                fields.insert(key.clone(), default.clone());
            }
            (Some(Value::Object(nested)), Value::Object(nested_default)) => {
                fill(nested, nested_default);
            }
            (Some(_), _) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_get_the_fields_they_lack_and_keep_their_own() {
        let dressed = dress(json!({
            "data": [{ "id": "pi_1", "status": "succeeded", "metadata": { "seq": "1" } }],
            "error": { "payment_intent": { "id": "pi_2", "latest_charge": "ch_1" } },
            "card": { "id": "pm_1", "card": { "brand": "visa" } },
            "other": { "id": "xx_1" },
        }));
        let intent = &dressed["data"][0];
        assert_eq!(intent["object"], "payment_intent");
        assert_eq!(intent["status"], "succeeded");
        assert_eq!(intent["metadata"], json!({ "seq": "1" }));
        assert_eq!(intent["capture_method"], "automatic");
        assert_eq!(dressed["error"]["payment_intent"]["latest_charge"], "ch_1");
        assert_eq!(dressed["card"]["card"]["brand"], "visa");
        assert_eq!(dressed["card"]["card"]["funding"], "credit");
        assert_eq!(
            dressed["other"],
            json!({ "id": "xx_1" }),
            "unknown kinds are left"
        );
    }
}

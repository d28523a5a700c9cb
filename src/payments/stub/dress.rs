//! The stub's objects in Stripe's whole field set. The stub models only the fields topupd
//! and its tests use; every other field of Stripe's object is added at its neutral value
//! (what a fresh test-mode object has: null, false, zero, empty, or Stripe's default), so
//! a client written against Stripe's schema reads the stub's objects as Stripe's.
//! `tests/api/stripe_fixtures.rs` holds these field sets to Stripe's own fixtures.

use std::sync::LazyLock;

use serde_json::{Map, Value};

/// The fields each object has besides those the stub models, by the prefix of its id
/// (`templates.json`).
static TEMPLATES: LazyLock<Map<String, Value>> = LazyLock::new(|| {
    serde_json::from_str(include_str!("templates.json")).expect("the templates are JSON")
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
            let template = fields.get("id").and_then(Value::as_str).and_then(|id| {
                TEMPLATES
                    .iter()
                    .find(|(prefix, _)| id.starts_with(prefix.as_str()))
            });
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
    use serde_json::json;

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

//! The OpenAPI document at `/openapi.json` describes exactly what the router serves.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

/// The methods a route may serve (HEAD follows GET in axum).
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];

/// The path templates the router itself holds. axum has no listing API, but its `Debug`
/// output names every path of the path router first.
fn served_paths() -> BTreeSet<String> {
    let (router, _) = topupd::http::routes().split_for_parts();
    let debug = format!("{router:?}");
    let start = debug.find("paths: {").expect("the router lists its paths") + "paths: {".len();
    // Entries read `RouteId(3): "/v1/usage/{id}/refund", ...`.
    let mut paths = BTreeSet::new();
    let mut rest = &debug[start..];
    while let Some(entry) = rest.trim_start_matches([',', ' ']).strip_prefix("RouteId(") {
        let (_, quoted) = entry.split_once(": \"").expect("an entry names its path");
        let (path, after) = quoted.split_once('"').expect("the path is quoted");
        paths.insert(path.to_owned());
        rest = after;
    }
    assert!(
        paths.len() > 20,
        "the router's path list could not be read: {paths:?}"
    );
    paths
}

fn operations(doc: &Value) -> Vec<(String, Method, &Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method.as_str().to_lowercase()) {
                found.push((path.clone(), method, operation));
            }
        }
    }
    found
}

/// Follows every `$ref` in `value` and fails on one the document does not define.
fn assert_refs_resolve(doc: &Value, value: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                let name = target
                    .strip_prefix("#/components/schemas/")
                    .expect("refs point at schemas");
                assert!(
                    doc["components"]["schemas"].get(name).is_some(),
                    "{target} is not defined"
                );
            }
            map.values().for_each(|v| assert_refs_resolve(doc, v));
        }
        Value::Array(items) => items.iter().for_each(|v| assert_refs_resolve(doc, v)),
        _ => {}
    }
}

#[tokio::test]
async fn the_document_describes_every_route_the_router_serves() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let answer = app.request(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let doc = answer.body;

    let documented: BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        served_paths(),
        documented,
        "served paths vs documented paths"
    );

    // Every method of every path: served iff documented.
    for path in &documented {
        let concrete = path
            .replace("{id}", "acc_missing")
            .replace("{pm}", "pm_missing")
            .replace("{topup}", "top_missing");
        for method in METHODS {
            let is_documented = doc["paths"][path]
                .get(method.as_str().to_lowercase())
                .is_some();
            let response = app
                .client
                .request(method.clone(), format!("{}{concrete}", app.base_url))
                .bearer_auth(&app.admin)
                .send()
                .await
                .expect("request is answered");
            let status = response.status();
            let body = response.text().await.expect("a body");
            if is_documented {
                assert_ne!(status, 405, "{method} {path} is documented");
                assert!(
                    !body.contains("route not found"),
                    "{method} {path} is documented: {body}"
                );
            } else {
                assert_eq!(status, 405, "{method} {path} is not documented");
            }
        }
    }

    // Every operation says what it answers, errors included, and who may call it.
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    let public = [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/v1/pricing",
        "/v1/estimate",
        "/v1/payments/return",
        "/v1/payments/confirm/{id}",
        "/v1/payments/card-saved",
        "/v1/webhooks/payments",
    ];
    let ids: BTreeSet<&str> = operations(&doc)
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().expect("an operation id"))
        .collect();
    assert_eq!(
        ids.len(),
        operations(&doc).len(),
        "operation ids are unique"
    );
    for (path, method, operation) in operations(&doc) {
        let responses = operation["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|status| status.starts_with('2')),
            "{method} {path} documents its success"
        );
        assert!(
            responses.contains_key("default"),
            "{method} {path} documents its errors"
        );
        let secured = operation.get("security").is_none();
        assert_eq!(
            secured,
            !public.contains(&path.as_str()),
            "{method} {path} security"
        );
        if secured {
            assert!(responses.contains_key("401") && responses.contains_key("403"));
        }
    }
    assert_refs_resolve(&doc, &doc);
}

/// The kinds of the notices a payment's outcomes queue are the kinds the document lists.
#[tokio::test]
async fn the_notice_kinds_the_api_lists_are_the_ones_the_document_names() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for card in [
        "pm_card_visa",
        "declining:insufficient_funds",
        "pm_card_authenticationRequired",
    ] {
        app.auto_account(card, "0").await;
    }
    app.scan().await;
    let listed = app.get("/v1/admin/notices?limit=200", &app.admin).await;
    let kinds: BTreeSet<String> = listed.body["data"]
        .as_array()
        .expect("notices")
        .iter()
        .map(|n| n["kind"].as_str().expect("kind").to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "authentication_required",
            "auto_topup_changed",
            "payment_failed",
            "topup_receipt"
        ]
        .map(String::from)
        .into(),
    );
    let document = app.get("/openapi.json", &app.admin).await.body;
    let kind = &document["components"]["schemas"]["NoticeView"]["properties"]["kind"];
    let schema = match kind["$ref"].as_str() {
        Some(reference) => {
            let name = reference.rsplit('/').next().expect("a schema name");
            &document["components"]["schemas"][name]
        }
        None => kind,
    };
    let named: BTreeSet<String> = schema["enum"]
        .as_array()
        .unwrap_or_else(|| panic!("the kind lists its values: {schema}"))
        .iter()
        .map(|v| v.as_str().expect("a name").to_owned())
        .collect();
    assert!(kinds.is_subset(&named), "{kinds:?} not all in {named:?}");
    let every_kind: BTreeSet<String> = topupd::domain::notice::NoticeKind::ALL
        .iter()
        .map(|k| k.as_str().to_owned())
        .collect();
    assert_eq!(
        named, every_kind,
        "the document names every kind, and no other"
    );
    app.stop().await;
}

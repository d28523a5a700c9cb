//! Who may reach what.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{TestApp, each_backend};

#[tokio::test]
async fn missing_malformed_wrong_and_revoked_keys_are_401() {
    each_backend(async |app| {
        let account = app.funded_account("0").await;
        let path = format!("/v1/accounts/{account}");
        let no_key = app.request(Method::GET, &path, None, None).await;
        assert_eq!(no_key.status, StatusCode::UNAUTHORIZED);
        assert_eq!(no_key.body["error"], "unauthorized");

        assert_eq!(
            app.get(&path, "not-a-key").await.status,
            StatusCode::UNAUTHORIZED
        );
        let mut wrong_secret = app.admin.clone();
        let last = wrong_secret.pop().expect("non-empty key");
        wrong_secret.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            app.get(&path, &wrong_secret).await.status,
            StatusCode::UNAUTHORIZED
        );

        let (support, support_id) = support_key(app).await;
        assert_eq!(app.get(&path, &support).await.status, StatusCode::OK);
        revoke(app, &support_id).await;
        assert_eq!(
            app.get(&path, &support).await.status,
            StatusCode::UNAUTHORIZED,
            "revocation is immediate"
        );
    })
    .await;
}

#[tokio::test]
async fn a_customer_key_sees_only_its_own_account() {
    each_backend(async |app| {
        let own = app.funded_account("10").await;
        let other = app.funded_account("10").await;
        let customer = app.key("customer", Some(&own)).await;

        assert_eq!(
            app.get(&format!("/v1/accounts/{own}"), &customer)
                .await
                .status,
            StatusCode::OK
        );
        for suffix in ["", "/ledger", "/usage"] {
            let answer = app
                .get(&format!("/v1/accounts/{other}{suffix}"), &customer)
                .await;
            assert_eq!(answer.status, StatusCode::NOT_FOUND, "{suffix}");
            assert_eq!(answer.body["error"], "not_found");
        }
        let debit = app.debit(&customer, &other, "req-1", 30).await;
        assert_eq!(
            debit.status,
            StatusCode::FORBIDDEN,
            "customers cannot debit at all"
        );
    })
    .await;
}

#[tokio::test]
async fn roles_are_enforced_on_every_route() {
    each_backend(async |app| {
        let account = app.funded_account("10").await;
        let customer = app.key("customer", Some(&account)).await;
        let service = app.key("service", None).await;
        let support = app.key("support", None).await;

        for (key, method, path, body) in [
            (&customer, Method::POST, "/v1/admin/accounts".to_owned(), Some(json!({ "email": "a@b.co", "name": "x" }))),
            (&customer, Method::GET, "/v1/admin/audit".to_owned(), None),
            (&customer, Method::POST, format!("/v1/admin/accounts/{account}/adjustments"), Some(json!({ "credits": 5, "reason": "x" }))),
            (&customer, Method::POST, "/v1/admin/api-keys".to_owned(), Some(json!({ "role": "admin" }))),
            (&support, Method::POST, "/v1/admin/api-keys".to_owned(), Some(json!({ "role": "admin" }))),
            (&support, Method::POST, "/v1/admin/accounts".to_owned(), Some(json!({ "email": "a@b.co", "name": "x" }))),
            (&service, Method::GET, format!("/v1/accounts/{account}"), None),
            (&service, Method::GET, "/v1/admin/audit".to_owned(), None),
            (&support, Method::POST, "/v1/usage".to_owned(), Some(json!({ "account_id": account, "request_id": "r", "usage": { "service": "voice_clone" } }))),
        ] {
            let answer = app.request(method.clone(), &path, Some(key), body).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {path}: {}", answer.body);
            assert_eq!(answer.body["error"], "forbidden");
        }
        assert_eq!(app.balance(&account).await, crate::helpers::dec("10"));
    })
    .await;
}

#[tokio::test]
async fn another_customers_key_finds_nothing_and_staff_changes_are_audited() {
    each_backend(async |app| {
        let (account, _) = app.customer_with_card("pm_card_chargeCustomerFail").await;
        let other = app.funded_account("0").await;
        let stranger = app.key("customer", Some(&other)).await;
        let service = app.key("service", None).await;
        for (method, path, body) in [
            (Method::GET, format!("/v1/accounts/{account}/topups"), None),
            (
                Method::POST,
                format!("/v1/accounts/{account}/topups"),
                Some(json!({ "credits": 500 })),
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/auto-topup"),
                None,
            ),
            (
                Method::PUT,
                format!("/v1/accounts/{account}/auto-topup"),
                Some(json!({ "enabled": false })),
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/auto-topup/retry"),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/payment-methods"),
                None,
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/payment-methods"),
                Some(json!({ "payment_method_id": "pm_card_visa" })),
            ),
        ] {
            let answer = app
                .request(method.clone(), &path, Some(&stranger), body.clone())
                .await;
            assert_eq!(
                answer.status,
                StatusCode::NOT_FOUND,
                "stranger {method} {path}: {}",
                answer.body
            );
            let answer = app
                .request(method.clone(), &path, Some(&service), body)
                .await;
            assert_eq!(
                answer.status,
                StatusCode::FORBIDDEN,
                "service {method} {path}: {}",
                answer.body
            );
        }

        let support = app.key("support", None).await;
        let enable = json!({ "enabled": true, "threshold": 1000, "target": 5000 });
        let refused = app
            .request(
                Method::PUT,
                &format!("/v1/accounts/{account}/auto-topup"),
                Some(&support),
                Some(enable),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "only the customer or an admin turns it on"
        );
        let added = app
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                &support,
                json!({ "payment_method_id": "pm_card_visa", "default": true }),
            )
            .await;
        assert_eq!(added.status, StatusCode::CREATED, "{}", added.body);
        let audit = app
            .get(&format!("/v1/admin/audit?account_id={account}"), &support)
            .await;
        assert_eq!(audit.body["data"][0]["action"], "payment_method.add");
        assert_eq!(audit.body["data"][0]["actor_role"], "support");
    })
    .await;
}

/// Key checks that arrive together share one read of the keys: each request still gets
/// its own key's answer, and a key revoked while others are being checked is refused on
/// every request sent after the revocation was answered.
#[tokio::test]
async fn keys_checked_together_keep_their_own_answers_and_revocation_holds_at_once() {
    each_backend(async |app| {
        let account = app.funded_account("0").await;
        let other = app.funded_account("0").await;
        let customer = app.key("customer", Some(&account)).await;
        // The same token with another key id: well formed, naming no key.
        let swapped = if customer.as_bytes()[4] == b'0' {
            '1'
        } else {
            '0'
        };
        let unknown = format!("tpk_{swapped}{}", &customer[5..]);
        let cases = [
            (app.admin.clone(), account.clone(), StatusCode::OK),
            (customer.clone(), account.clone(), StatusCode::OK),
            (customer.clone(), other.clone(), StatusCode::NOT_FOUND),
            (unknown, account.clone(), StatusCode::UNAUTHORIZED),
        ];
        let mut checks = tokio::task::JoinSet::new();
        for round in 0..25 {
            for (case, (key, account, _)) in cases.iter().enumerate() {
                let request = app
                    .client
                    .get(format!("{}/v1/accounts/{account}", app.base_url))
                    .bearer_auth(key);
                checks.spawn(async move {
                    let status = request.send().await.expect("answered").status();
                    (round, case, status)
                });
            }
        }
        for (round, case, status) in checks.join_all().await {
            assert_eq!(status, cases[case].2, "case {case} of round {round}");
        }

        let (support, support_id) = support_key(app).await;
        let revoked_at = std::sync::Arc::new(std::sync::OnceLock::new());
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (client, url, key) = (
                app.client.clone(),
                format!("{}/v1/accounts/{account}", app.base_url),
                support.clone(),
            );
            let revoked_at = revoked_at.clone();
            callers.spawn(async move {
                let (mut seen, mut after) = (Vec::new(), 0);
                while after < 20 {
                    let sent = tokio::time::Instant::now();
                    let status = client
                        .get(&url)
                        .bearer_auth(&key)
                        .send()
                        .await
                        .expect("answered")
                        .status();
                    let late = revoked_at.get().is_some_and(|at| sent > *at);
                    after += usize::from(late);
                    seen.push((late, status));
                }
                seen
            });
        }
        // Let the callers' checks be under way before revoking.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        revoke(app, &support_id).await;
        revoked_at
            .set(tokio::time::Instant::now())
            .expect("revoked once");
        let seen: Vec<_> = callers.join_all().await.into_iter().flatten().collect();
        assert!(
            seen.iter()
                .any(|&(late, status)| !late && status == StatusCode::OK),
            "the key worked before it was revoked"
        );
        for (late, status) in seen {
            if late {
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "sent after the revocation"
                );
            }
        }
    })
    .await;
}

/// A new support key: its token and its id.
async fn support_key(app: &TestApp) -> (String, String) {
    let issued = app
        .post(
            "/v1/admin/api-keys",
            &app.admin,
            json!({ "role": "support" }),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    let field = |name: &str| issued.body[name].as_str().expect(name).to_owned();
    (field("token"), field("id"))
}

async fn revoke(app: &TestApp, key_id: &str) {
    let revoked = app
        .request(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{key_id}"),
            Some(&app.admin),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.body);
    assert!(revoked.body["revoked_at"].is_string());
}

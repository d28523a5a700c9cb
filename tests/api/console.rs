//! The support console over plain HTTP: who may sign in, how the session ends, that a
//! customer's billing session opens none of it, and that what support does there goes
//! through the API's rules and is audited under the staff key's label. The journey
//! through it in a real browser is the `browser` suite's.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::{
    billing_page::{Page, PageSession, browserless, page},
    helpers::{TestApp, dec, each_backend, tamper},
    payments::event,
};

impl TestApp {
    /// A staff key with a label: its token and id.
    pub async fn labelled_key(&self, role: &str, label: &str) -> (String, String) {
        let issued = self
            .post(
                "/v1/admin/api-keys",
                &self.admin,
                json!({ "role": role, "label": label }),
            )
            .await;
        assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
        (
            issued.body["token"].as_str().expect("token").to_owned(),
            issued.body["id"].as_str().expect("id").to_owned(),
        )
    }

    /// Posts the console's sign-in form with `key`: the answer and the cookie it set.
    pub async fn console_sign_in(&self, key: &str) -> (Page, Option<String>) {
        let response = browserless()
            .post(format!("{}/console/sign-in", self.base_url))
            .form(&[("key", key)])
            .send()
            .await
            .expect("answered");
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .map(|c| c.to_str().expect("ascii").to_owned());
        (page(response).await, cookie)
    }

    /// A console session signed in with `key`.
    pub async fn console_session(&self, key: &str) -> PageSession {
        let (signed_in, cookie) = self.console_sign_in(key).await;
        assert_eq!(
            signed_in.status,
            StatusCode::SEE_OTHER,
            "{}",
            signed_in.body
        );
        PageSession {
            client: browserless(),
            base_url: self.base_url.clone(),
            cookie: cookie
                .expect("a cookie")
                .split(';')
                .next()
                .expect("pair")
                .to_owned(),
        }
    }

    async fn audit_of(&self, account: &str) -> Vec<Value> {
        let audit = self
            .get(
                &format!("/v1/admin/audit?account_id={account}"),
                &self.admin,
            )
            .await;
        assert_eq!(audit.status, StatusCode::OK, "{}", audit.body);
        audit.body["data"].as_array().expect("entries").clone()
    }
}

#[tokio::test]
async fn only_a_live_support_or_admin_key_opens_the_console_and_never_stays_in_the_browser() {
    each_backend(async |app| {
        let anonymous = page(
            browserless()
                .get(format!("{}/console", app.base_url))
                .send()
                .await
                .expect("answered"),
        )
        .await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert!(
            anonymous.body.contains("href=\"/console/sign-in\""),
            "{}",
            anonymous.body
        );

        let account = app.funded_account("10").await;
        let customer = app.key("customer", Some(&account)).await;
        let service = app.key("service", None).await;
        for (key, status) in [
            (customer.as_str(), StatusCode::FORBIDDEN),
            (service.as_str(), StatusCode::FORBIDDEN),
            ("topupd_nonsense", StatusCode::UNAUTHORIZED),
            ("", StatusCode::UNAUTHORIZED),
        ] {
            let (refused, cookie) = app.console_sign_in(key).await;
            assert_eq!((refused.status, cookie), (status, None), "{key}");
            assert!(
                refused.body.contains("id=\"key-error\""),
                "{}",
                refused.body
            );
        }

        let (support, support_id) = app.labelled_key("support", "Grace at support").await;
        // Another site cannot sign a browser in, even with a good key.
        let forged = browserless()
            .post(format!("{}/console/sign-in", app.base_url))
            .header("sec-fetch-site", "cross-site")
            .form(&[("key", support.as_str())])
            .send()
            .await
            .expect("answered");
        assert_eq!(forged.status(), StatusCode::FORBIDDEN);
        assert!(forged.headers().get(header::SET_COOKIE).is_none());

        let (signed_in, cookie) = app.console_sign_in(&support).await;
        assert_eq!(signed_in.location.as_deref(), Some("/console"));
        let cookie = cookie.expect("a cookie");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        assert!(!cookie.contains(&support), "the key is not the cookie");
        let session = app.console_session(&support).await;
        let home = session.get("/console").await;
        assert_eq!(home.status, StatusCode::OK);
        assert!(
            home.body
                .contains("Signed in as <strong>Grace at support</strong> (support)")
        );
        assert!(!home.body.contains(&support), "the key is on no page");
        assert_eq!(home.headers[header::CACHE_CONTROL], "no-store");

        // A customer's billing session opens no console page, nor the console's a billing one.
        let billing = app.billing_session(&account).await;
        for path in [
            "/console",
            &format!("/console/accounts/{account}"),
            "/console/notices",
        ] {
            assert_eq!(
                billing.get(path).await.status,
                StatusCode::UNAUTHORIZED,
                "{path}"
            );
        }
        assert_eq!(
            session.get("/billing").await.status,
            StatusCode::UNAUTHORIZED
        );

        // Idle too long: over.
        app.clock.advance_ms(31 * 60_000);
        assert_eq!(
            session.get("/console").await.status,
            StatusCode::UNAUTHORIZED
        );

        // Signing out needs the session's token; revoking the key ends its sessions.
        let session = app.console_session(&support).await;
        let token = session.get("/console").await.csrf();
        let forged = session.post("/console/sign-out", &[("csrf", "nope")]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        assert_eq!(session.get("/console").await.status, StatusCode::OK);
        let out = session.post("/console/sign-out", &[("csrf", &token)]).await;
        assert_eq!(out.status, StatusCode::SEE_OTHER);
        assert_eq!(
            session.get("/console").await.status,
            StatusCode::UNAUTHORIZED
        );
        let session = app.console_session(&support).await;
        let revoked = app
            .request(
                reqwest::Method::DELETE,
                &format!("/v1/admin/api-keys/{support_id}"),
                Some(&app.admin),
                None,
            )
            .await;
        assert!(revoked.status.is_success(), "{}", revoked.body);
        assert_eq!(
            session.get("/console").await.status,
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test]
async fn support_finds_a_paused_account_reads_why_resumes_it_and_adjusts_it_under_their_label() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 1);
        let email = app
            .db
            .account(&account)
            .await
            .expect("read")
            .expect("account")
            .email;
        let (support, _) = app.labelled_key("support", "Grace at support").await;
        let session = app.console_session(&support).await;

        let prefix = &email[..email.find('@').expect("an address")];
        let found = session.get(&format!("/console?q={prefix}")).await;
        assert_eq!(found.status, StatusCode::OK);
        assert!(
            found
                .body
                .contains(&format!("href=\"/console/accounts/{account}\"")),
            "{}",
            found.body
        );
        assert!(
            found.body.contains("paused (payment failed)"),
            "{}",
            found.body
        );
        let none = session.get("/console?q=nobody-at-all@").await;
        assert!(none.body.contains("0 found"), "{}", none.body);
        let paused = session.get("/console/paused").await;
        assert!(paused.body.contains(&email), "{}", paused.body);

        let path = format!("/console/accounts/{account}");
        let shown = session.get(&path).await;
        assert_eq!(shown.status, StatusCode::OK);
        for fact in [
            "payment failed",
            "Scan decisions",
            "generic_decline",
            "did not go through",
        ] {
            assert!(shown.body.contains(fact), "{fact}: {}", shown.body);
        }
        let token = shown.csrf();

        // Without a note, or with a forged token: nothing changes.
        let before = app.snapshot(&account).await;
        let no_note = session
            .post(
                &format!("{path}/resume"),
                &[("csrf", &token), ("note", " ")],
            )
            .await;
        assert_eq!(no_note.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            no_note.body.contains("id=\"note-error\""),
            "{}",
            no_note.body
        );
        let forged = session
            .post(
                &format!("{path}/resume"),
                &[("csrf", "forged"), ("note", "x")],
            )
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        assert_eq!(app.snapshot(&account).await, before);

        // Tried now with the same card: declined again, and the page says so.
        let tried = session
            .post(
                &format!("{path}/resume"),
                &[
                    ("csrf", &token),
                    ("note", "customer says the card works now"),
                    ("try_now", "on"),
                ],
            )
            .await;
        assert_eq!(tried.status, StatusCode::OK, "{}", tried.body);
        assert!(tried.body.contains("banner outcome warn"), "{}", tried.body);
        assert!(tried.body.contains("was declined"), "{}", tried.body);
        assert_eq!(app.auto_topup(&account).await["state"], "paused");

        let resumed = session
            .post(
                &format!("{path}/resume"),
                &[("csrf", &token), ("note", "new card on file")],
            )
            .await;
        assert!(
            resumed.body.contains("banner outcome good"),
            "{}",
            resumed.body
        );
        assert!(
            resumed.body.contains("Resumed; the next scan"),
            "{}",
            resumed.body
        );
        assert_eq!(app.auto_topup(&account).await["state"], "active");
        let again = session
            .post(
                &format!("{path}/resume"),
                &[("csrf", &token), ("note", "again")],
            )
            .await;
        assert_eq!(again.status, StatusCode::CONFLICT);
        assert!(again.body.contains("is not paused"), "{}", again.body);

        let bad = session
            .post(
                &format!("{path}/adjust"),
                &[("csrf", &token), ("credits", "lots"), ("reason", "x")],
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(bad.body.contains("id=\"credits-error\""), "{}", bad.body);
        assert!(bad.body.contains("value=\"lots\""), "what was typed stays");
        let granted = session
            .post(
                &format!("{path}/adjust"),
                &[
                    ("csrf", &token),
                    ("credits", "250"),
                    ("reason", "goodwill for the declines"),
                ],
            )
            .await;
        assert_eq!(granted.status, StatusCode::OK, "{}", granted.body);
        assert!(
            granted.body.contains("Adjusted by 250 credits"),
            "{}",
            granted.body
        );
        assert_eq!(app.balance(&account).await, dec("250"));

        let audit = app.audit_of(&account).await;
        for action in ["auto_topup.resume", "balance.adjust"] {
            let entry = audit
                .iter()
                .find(|e| e["action"] == action)
                .unwrap_or_else(|| panic!("{action} audited: {audit:#?}"));
            assert_eq!(entry["actor_label"], "Grace at support", "{entry}");
            assert_eq!(entry["actor_role"], "support");
        }
        let shown = session.get(&path).await;
        assert!(
            shown.body.contains("Grace at support (support)"),
            "{}",
            shown.body
        );
        assert!(shown.body.contains("new card on file"), "{}", shown.body);

        let unexplained = session
            .post(
                &format!("{path}/close"),
                &[("csrf", &token), ("close_reason", "")],
            )
            .await;
        assert_eq!(unexplained.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            unexplained.body.contains("id=\"close-reason-error\""),
            "{}",
            unexplained.body
        );
        let closed = session
            .post(
                &format!("{path}/close"),
                &[("csrf", &token), ("close_reason", "customer left")],
            )
            .await;
        assert!(
            closed
                .body
                .contains("Closed: nothing is charged from now on"),
            "{}",
            closed.body
        );
        assert!(
            !closed.body.contains("Close the account</button>"),
            "{}",
            closed.body
        );
        let account_now = app
            .get(&format!("/v1/accounts/{account}"), &app.admin)
            .await;
        assert_eq!(account_now.body["closed_reason"], "customer left");
        assert_eq!(app.balance(&account).await, dec("250"));
    })
    .await;
}

#[tokio::test]
async fn failed_notices_and_dead_events_are_requeued_from_the_console() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 1);
        let notice = app
            .db
            .notices_of(&account, 1)
            .await
            .expect("notices")
            .remove(0);
        tamper(
            app,
            "UPDATE notices SET state = 'failed', failed_at = 1, last_error = 'mailbox full' WHERE id = $1",
            &notice.id,
        )
        .await;
        let body = event("evt_console", "payment_intent.succeeded", "pi_unknown");
        let signed = topupd::payments::signature::sign(&app.webhook_secret, app.now_secs(), &body);
        assert_eq!(app.deliver_webhook(&body, Some(signed)).await.status, StatusCode::OK);
        tamper(
            app,
            "UPDATE webhook_events SET dead_at = 1, attempts = 3, last_error = 'stuck' WHERE id = $1",
            "evt_console",
        )
        .await;

        let (admin, _) = app.labelled_key("admin", "Ada the admin").await;
        let session = app.console_session(&admin).await;
        let failed = session.get("/console/notices").await;
        assert!(failed.body.contains("mailbox full"), "{}", failed.body);
        let token = failed.csrf();
        let requeued = session
            .post(&format!("/console/notices/{}/requeue", notice.id), &[("csrf", &token)])
            .await;
        assert!(requeued.body.contains("is queued to be sent again"), "{}", requeued.body);
        assert!(!requeued.body.contains("mailbox full"), "{}", requeued.body);
        let twice = session
            .post(&format!("/console/notices/{}/requeue", notice.id), &[("csrf", &token)])
            .await;
        assert!(twice.body.contains("only failed notices are requeued"), "{}", twice.body);

        let dead = session.get("/console/webhooks").await;
        assert!(dead.body.contains("evt_console"), "{}", dead.body);
        let handled = session
            .post("/console/webhooks/evt_console/requeue", &[("csrf", &token)])
            .await;
        assert!(handled.body.contains("is due to be handled again"), "{}", handled.body);
        let forged = session
            .post("/console/webhooks/evt_console/requeue", &[("csrf", "nope")])
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);

        let audit = app
            .get("/v1/admin/audit", &app.admin)
            .await
            .body["data"]
            .as_array()
            .expect("entries")
            .clone();
        for action in ["notice.requeue", "webhook_event.requeue"] {
            let entry = audit
                .iter()
                .find(|e| e["action"] == action)
                .unwrap_or_else(|| panic!("{action} audited: {audit:#?}"));
            assert_eq!(entry["actor_label"], "Ada the admin", "{entry}");
        }
    })
    .await;
}

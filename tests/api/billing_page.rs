//! The billing page over plain HTTP: how sessions open and end, what a page refuses, and
//! that each page shows only its own account. The journeys through it in a real browser
//! are the `browser` suite's.

use reqwest::{StatusCode, header};
use serde_json::json;
use topupd::{
    db::{PageRequest, notices::NoticeState},
    notices,
};

use crate::helpers::{TestApp, each_backend};

/// A browser's session on the billing page: its cookie, sent by hand, and no redirect
/// followed, so each answer can be looked at.
pub struct PageSession {
    pub client: reqwest::Client,
    pub base_url: String,
    pub cookie: String,
}

/// A page's answer.
pub struct Page {
    pub status: StatusCode,
    pub location: Option<String>,
    pub headers: header::HeaderMap,
    pub body: String,
}

impl Page {
    /// The action and hidden fields of the page's form that goes on into the billing
    /// page, unescaped.
    pub fn continue_form(&self) -> (String, Vec<(String, String)>) {
        let unescape = |v: &str| {
            v.replace("&#x2f;", "/")
                .replace("&quot;", "\"")
                .replace("&#x27;", "'")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        };
        let between = |text: &str, start: &str| -> String {
            let from = text.find(start).expect(start) + start.len();
            unescape(text[from..].split('"').next().expect("a value"))
        };
        let action = between(&self.body, "<form method=\"post\" action=\"");
        let fields = self
            .body
            .split("<input type=\"hidden\" ")
            .skip(1)
            .map(|input| (between(input, "name=\""), between(input, "value=\"")))
            .collect();
        (action, fields)
    }

    /// The form token the page's forms carry.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a token") + marker.len();
        self.body[start..]
            .split('"')
            .next()
            .expect("a value")
            .to_owned()
    }
}

pub fn browserless() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

pub async fn page(response: reqwest::Response) -> Page {
    Page {
        status: response.status(),
        location: response
            .headers()
            .get(header::LOCATION)
            .map(|l| l.to_str().expect("ascii").to_owned()),
        headers: response.headers().clone(),
        body: response.text().await.expect("body"),
    }
}

impl TestApp {
    /// A single-use link to the account's billing page, as a host's backend asks for it.
    pub async fn portal_link(&self, account: &str) -> String {
        let created = self
            .post(
                "/v1/portal-sessions",
                &self.admin,
                json!({ "account_id": account, "return_url": "https://host.example/app" }),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        created.body["url"].as_str().expect("url").to_owned()
    }

    /// Opens `link` without a cookie: the answer, and the session cookie it set, if any.
    pub async fn open_link(&self, link: &str) -> (Page, Option<String>) {
        let response = browserless().get(link).send().await.expect("answered");
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .map(|c| c.to_str().expect("ascii").to_owned());
        (page(response).await, cookie)
    }

    /// Posts the page's form that goes on into the billing page, with `headers`, as the
    /// browser holding `cookie` (if any): the answer, and the session cookie it set.
    pub async fn go_on(
        &self,
        asked: &Page,
        cookie: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (Page, Option<String>) {
        let (action, fields) = asked.continue_form();
        let mut request = browserless()
            .post(format!("{}{action}", self.base_url))
            .form(&fields);
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("answered");
        let cookie = response
            .headers()
            .get(header::SET_COOKIE)
            .map(|c| c.to_str().expect("ascii").to_owned());
        (page(response).await, cookie)
    }

    /// A session on the account's billing page, opened with a fresh link.
    pub async fn billing_session(&self, account: &str) -> PageSession {
        let (opened, cookie) = self.open_link(&self.portal_link(account).await).await;
        assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);
        let cookie = cookie.expect("a session cookie");
        PageSession {
            client: browserless(),
            base_url: self.base_url.clone(),
            cookie: cookie.split(';').next().expect("name=value").to_owned(),
        }
    }
}

impl PageSession {
    pub async fn get(&self, path: &str) -> Page {
        let url = format!("{}{path}", self.base_url);
        page(
            self.client
                .get(url)
                .header(header::COOKIE, &self.cookie)
                .send()
                .await
                .expect("answered"),
        )
        .await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let url = format!("{}{path}", self.base_url);
        page(
            self.client
                .post(url)
                .header(header::COOKIE, &self.cookie)
                .form(form)
                .send()
                .await
                .expect("answered"),
        )
        .await
    }
}

#[tokio::test]
async fn only_service_and_admin_keys_get_links_and_bad_fields_are_named() {
    each_backend(async |app| {
        let account = app.funded_account("0").await;
        let customer = app.key("customer", Some(&account)).await;
        let support = app.key("support", None).await;
        let service = app.key("service", None).await;
        for key in [&customer, &support] {
            let refused = app
                .post("/v1/portal-sessions", key, json!({ "account_id": account }))
                .await;
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
        }
        let unknown = app
            .post(
                "/v1/portal-sessions",
                &service,
                json!({ "account_id": "acct_nope" }),
            )
            .await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        let bad = app
            .post(
                "/v1/portal-sessions",
                &service,
                json!({ "account_id": account, "return_url": "javascript:alert(1)" }),
            )
            .await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(bad.body["fields"]["return_url"].is_string(), "{}", bad.body);
        let made = app
            .post(
                "/v1/portal-sessions",
                &service,
                json!({ "account_id": account }),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
        let url = made.body["url"].as_str().expect("url");
        assert!(url.starts_with(&format!("{}/billing/start?token=", app.base_url)));
        // Five minutes by default, by the engine's clock.
        assert_eq!(made.body["expires_at"], "2026-01-01T00:05:00.000Z");
    })
    .await;
}

#[tokio::test]
async fn a_link_opens_one_session_once_with_a_private_cookie_and_then_never_again() {
    each_backend(async |app| {
        let account = app.funded_account("1234").await;
        let link = app.portal_link(&account).await;
        let (opened, cookie) = app.open_link(&link).await;
        assert_eq!(opened.status, StatusCode::SEE_OTHER);
        assert_eq!(opened.location.as_deref(), Some("/billing"));
        let cookie = cookie.expect("a cookie");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=43200"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        // The test server's public URL is plain HTTP.
        assert!(!cookie.contains("Secure"), "{cookie}");

        let (again, cookie) = app.open_link(&link).await;
        assert_eq!(again.status, StatusCode::GONE);
        assert!(cookie.is_none());
        assert!(again.body.contains("This link has expired"));
        assert!(!again.body.contains("1,234"), "{}", again.body);

        let late = app.portal_link(&account).await;
        app.clock.advance_ms(5 * 60_000);
        let (expired, cookie) = app.open_link(&late).await;
        assert_eq!((expired.status, cookie), (StatusCode::GONE, None));
        let (forged, _) = app
            .open_link(&format!("{}/billing/start?token=abc", app.base_url))
            .await;
        assert_eq!(forged.status, StatusCode::GONE);
    })
    .await;
}

#[tokio::test]
async fn a_link_to_another_account_asks_before_it_replaces_the_browser_s_session() {
    each_backend(async |app| {
        let mine = app.account_with_email("me@example.com", "1111").await;
        let theirs = app.account_with_email("them@example.com", "2222").await;
        let session = app.billing_session(&mine).await;
        let overview = session.get("/billing").await;
        assert!(
            overview
                .body
                .contains("Signed in as <strong>me@example.com</strong>")
        );

        // Another account's link, followed in a browser signed in to mine (as a link an
        // attacker sent would be): nothing changes until the customer says so.
        let link = app.portal_link(&theirs).await;
        let asked = page(
            browserless()
                .get(&link)
                .header(header::COOKIE, &session.cookie)
                .send()
                .await
                .expect("answered"),
        )
        .await;
        assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
        assert!(asked.headers.get(header::SET_COOKIE).is_none());
        assert!(
            asked.body.contains("Switch billing account?"),
            "{}",
            asked.body
        );
        assert!(asked.body.contains("me@example.com"), "{}", asked.body);
        assert!(
            asked.body.contains("Continue as them@example.com"),
            "{}",
            asked.body
        );
        assert!(session.get("/billing").await.body.contains("1,111 credits"));

        // Another site cannot press the button for the customer.
        for forged in [
            [
                ("origin", "https://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            [("origin", "null"), ("sec-fetch-site", "same-origin")],
        ] {
            let (refused, cookie) = app.go_on(&asked, Some(&session.cookie), &forged).await;
            assert_eq!((refused.status, cookie), (StatusCode::FORBIDDEN, None));
        }
        assert!(session.get("/billing").await.body.contains("1,111 credits"));

        let origin = app.base_url.clone();
        let (switched, cookie) = app
            .go_on(
                &asked,
                Some(&session.cookie),
                &[("origin", &origin), ("sec-fetch-site", "same-origin")],
            )
            .await;
        assert_eq!(switched.status, StatusCode::SEE_OTHER, "{}", switched.body);
        let cookie = cookie.expect("their session");
        let theirs_now = page(
            browserless()
                .get(format!("{}/billing", app.base_url))
                .header(header::COOKIE, cookie.split(';').next().expect("pair"))
                .send()
                .await
                .expect("answered"),
        )
        .await;
        assert!(
            theirs_now.body.contains("2,222 credits"),
            "{}",
            theirs_now.body
        );
        assert!(theirs_now.body.contains("them@example.com"));
        // The session it replaced is over.
        assert_eq!(
            session.get("/billing").await.status,
            StatusCode::UNAUTHORIZED
        );
        // The link was used by going on.
        assert_eq!(app.open_link(&link).await.0.status, StatusCode::GONE);
    })
    .await;
}

#[tokio::test]
async fn a_session_shows_its_account_until_idle_or_signed_out() {
    each_backend(async |app| {
        let account = app.funded_account("1234").await;
        let session = app.billing_session(&account).await;
        let overview = session.get("/billing").await;
        assert_eq!(overview.status, StatusCode::OK);
        assert!(overview.body.contains("1,234 credits"), "{}", overview.body);
        // Not cached, not framed, no script.
        assert_eq!(overview.headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(overview.headers[header::X_FRAME_OPTIONS], "DENY");
        let policy = overview.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii");
        assert!(policy.starts_with("default-src 'none';"), "{policy}");
        assert!(!policy.contains("script-src"), "{policy}");
        // The way back to the host's product (the template escapes its slashes).
        assert!(overview.body.contains("host.example"), "{}", overview.body);

        let anonymous = browserless()
            .get(format!("{}/billing", app.base_url))
            .send()
            .await
            .expect("answered");
        let anonymous = page(anonymous).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
        assert!(!anonymous.body.contains("1,234"));

        // Idle for just under the limit: still in, which pushes the limit back.
        app.clock.advance_ms(29 * 60_000);
        assert_eq!(session.get("/billing").await.status, StatusCode::OK);
        app.clock.advance_ms(29 * 60_000);
        assert_eq!(session.get("/billing").await.status, StatusCode::OK);
        app.clock.advance_ms(30 * 60_000);
        assert_eq!(
            session.get("/billing").await.status,
            StatusCode::UNAUTHORIZED
        );

        let session = app.billing_session(&account).await;
        let token = session.get("/billing").await.csrf();
        let forged = session.post("/billing/sign-out", &[("csrf", "nope")]).await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        assert_eq!(session.get("/billing").await.status, StatusCode::OK);
        let out = session.post("/billing/sign-out", &[("csrf", &token)]).await;
        assert_eq!(out.status, StatusCode::OK);
        assert_eq!(
            session.get("/billing").await.status,
            StatusCode::UNAUTHORIZED
        );
    })
    .await;
}

#[tokio::test]
async fn a_form_without_its_token_or_with_bad_fields_changes_nothing_and_names_the_field() {
    each_backend(async |app| {
        let (account, _) = app.customer_with_card("pm_card_visa").await;
        let session = app.billing_session(&account).await;
        let token = session.get("/billing/auto-topup").await.csrf();
        let before = app.snapshot(&account).await;
        let settings = [
            ("enabled", "on"),
            ("consent", "on"),
            ("threshold", "1000"),
            ("target", "5000"),
        ];
        let forged = session
            .post(
                "/billing/auto-topup",
                &[&settings[..], &[("csrf", "forged")]].concat(),
            )
            .await;
        assert_eq!(forged.status, StatusCode::FORBIDDEN);
        // Unreadable forms and addresses: 400, naming what is wrong.
        type Form<'a> = &'a [(&'a str, &'a str)];
        let posts: [(&str, Form<'_>, &str); 4] = [
            ("/billing/auto-topup", &[("x", "y")], "missing field `csrf`"),
            (
                "/billing/buy",
                &[("csrf", &token), ("choice", "2500")],
                "missing field `request_key`",
            ),
            (
                "/billing/complete",
                &[("csrf", &token)],
                "missing field `action`",
            ),
            (
                "/billing/complete",
                &[("csrf", &token), ("action", "pay")],
                "action: must be confirm or retry",
            ),
        ];
        for (path, form, named) in posts {
            let refused = session.post(path, form).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(refused.body.contains(named), "{path}: {}", refused.body);
        }
        for (path, named) in [
            (
                "/billing/usage.csv?from=someday",
                "from: must be a date such as 2026-11-01",
            ),
            ("/billing/payments/%FF", "Nothing was changed"),
        ] {
            let refused = session.get(path).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{path}");
            assert!(refused.body.contains(named), "{path}: {}", refused.body);
        }
        let too_low = session
            .post(
                "/billing/auto-topup",
                &[
                    ("csrf", &token),
                    ("enabled", "on"),
                    ("consent", "on"),
                    ("threshold", "99"),
                    ("target", "5000"),
                ],
            )
            .await;
        assert_eq!(too_low.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            too_low.body.contains("id=\"threshold-error\""),
            "{}",
            too_low.body
        );
        assert!(too_low.body.contains("Nothing was saved"));
        // What was typed stays in the form.
        assert!(too_low.body.contains("value=\"99\""));
        let no_consent = session
            .post(
                "/billing/auto-topup",
                &[
                    ("csrf", &token),
                    ("enabled", "on"),
                    ("threshold", "1000"),
                    ("target", "5000"),
                ],
            )
            .await;
        assert_eq!(no_consent.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(no_consent.body.contains("id=\"consent-error\""));
        let dates = session
            .get("/billing/usage?from=someday&to=2026-01-01")
            .await;
        assert_eq!(dates.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(dates.body.contains("id=\"from-error\""), "{}", dates.body);
        let buy = session.get("/billing/buy").await;
        let bought = session
            .post(
                "/billing/buy",
                &[
                    ("csrf", &buy.csrf()),
                    ("request_key", "k1"),
                    ("choice", "custom"),
                    ("custom", "99"),
                ],
            )
            .await;
        assert_eq!(bought.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            bought.body.contains("id=\"custom-error\""),
            "{}",
            bought.body
        );
        assert_eq!(app.snapshot(&account).await, before);
        let state = app.auto_topup(&account).await;
        assert_eq!(state["enabled"], false, "{state}");

        let saved = session
            .post(
                "/billing/auto-topup",
                &[&settings[..], &[("csrf", &token)]].concat(),
            )
            .await;
        assert_eq!(saved.status, StatusCode::SEE_OTHER, "{}", saved.body);
        let state = app.auto_topup(&account).await;
        assert_eq!(
            (&state["enabled"], &state["threshold"], &state["target"]),
            (&json!(true), &json!(1000), &json!(5000))
        );
        assert_eq!(
            app.audited(&account, "auto_topup.update").await["actor_role"],
            "customer"
        );
    })
    .await;
}

#[tokio::test]
async fn one_account_s_session_shows_nothing_of_another() {
    each_backend(async |app| {
        let (mine, my_key) = app.customer_with_card("pm_card_visa").await;
        let (theirs, their_key) = app.customer_with_card("pm_card_mastercard").await;
        let bought = app.buy(&their_key, &theirs, 500, None).await;
        assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
        let their_topup = bought.body["id"].as_str().expect("id").to_owned();
        let their_cards = app
            .get(
                &format!("/v1/accounts/{theirs}/payment-methods"),
                &their_key,
            )
            .await;
        let their_card = their_cards.body["data"][0]["id"]
            .as_str()
            .expect("card")
            .to_owned();
        assert_eq!(
            app.buy(&my_key, &mine, 500, None).await.status,
            StatusCode::CREATED
        );

        let session = app.billing_session(&mine).await;
        let token = session.get("/billing").await.csrf();
        for path in [
            format!("/billing/payments/{their_topup}"),
            format!("/billing/receipts/{their_topup}.pdf"),
        ] {
            let page = session.get(&path).await;
            assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}");
            assert!(!page.body.contains(&theirs), "{path}");
        }
        let history = session.get("/billing/history").await;
        assert!(!history.body.contains(&their_topup));
        for action in ["default", "remove"] {
            let page = session
                .post(
                    &format!("/billing/payment-methods/{their_card}/{action}"),
                    &[("csrf", &token)],
                )
                .await;
            assert_ne!(page.status, StatusCode::INTERNAL_SERVER_ERROR, "{action}");
        }
        let still = app
            .get(
                &format!("/v1/accounts/{theirs}/payment-methods"),
                &their_key,
            )
            .await;
        assert_eq!(still.body["data"][0]["id"], their_card.as_str());
        assert_eq!(still.body["data"][0]["default"], true);
    })
    .await;
}

#[tokio::test]
async fn a_receipt_is_a_pdf_of_the_paid_purchase() {
    each_backend(async |app| {
        let (account, key) = app.customer_with_card("pm_card_visa").await;
        let bought = app.buy(&key, &account, 2500, None).await;
        assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
        let id = bought.body["id"].as_str().expect("id");
        let session = app.billing_session(&account).await;
        let receipt = session
            .client
            .get(format!("{}/billing/receipts/{id}.pdf", app.base_url))
            .header(header::COOKIE, &session.cookie)
            .send()
            .await
            .expect("answered");
        assert_eq!(receipt.status(), StatusCode::OK);
        assert_eq!(receipt.headers()[header::CONTENT_TYPE], "application/pdf");
        let bytes = receipt.bytes().await.expect("body");
        assert!(bytes.starts_with(b"%PDF-"));
        let text = String::from_utf8_lossy(&bytes);
        for fact in ["$25.00", "2,500 credits", "Visa ending 4242", id] {
            assert!(text.contains(fact), "{fact} is on the receipt");
        }
    })
    .await;
}

#[tokio::test]
async fn a_notice_s_link_asks_then_opens_only_its_payment_until_it_or_the_email_ends() {
    each_backend(async |app| {
        let (account, _) = app.auto_account("pm_card_chargeCustomerFail", "0").await;
        assert_eq!(app.scan().await.failed, 1);
        let pending = app
            .db
            .notices(
                Some(NoticeState::Pending),
                PageRequest {
                    limit: 50,
                    before: None,
                },
            )
            .await
            .expect("notices");
        let failed = pending
            .items
            .iter()
            .find(|n| n.kind == "payment_failed")
            .expect("a decline notice");
        let text = notices::render(failed, &app.letterhead).text;
        let link = text
            .split_whitespace()
            .find(|w| w.contains("/billing/from-email?"))
            .unwrap_or_else(|| panic!("a link to the billing page: {text}"))
            .to_owned();
        assert!(link.starts_with(&app.base_url), "{link}");
        // The same notice always has the same link: a resend is the first send.
        assert_eq!(notices::render(failed, &app.letterhead).text, text);

        // Following the link (as a mail scanner does) signs nobody in; it asks.
        let (asked, cookie) = app.open_link(&link).await;
        assert_eq!(
            (asked.status, cookie),
            (StatusCode::OK, None),
            "{}",
            asked.body
        );
        let email = app
            .db
            .account(&account)
            .await
            .expect("read")
            .expect("the account")
            .email;
        assert!(
            asked.body.contains(&format!("Continue as {email}")),
            "{}",
            asked.body
        );
        let (refused, cookie) = app
            .go_on(&asked, None, &[("sec-fetch-site", "cross-site")])
            .await;
        assert_eq!((refused.status, cookie), (StatusCode::FORBIDDEN, None));

        let (opened, cookie) = app.go_on(&asked, None, &[]).await;
        assert_eq!(opened.status, StatusCode::SEE_OTHER, "{}", opened.body);
        assert_eq!(opened.location.as_deref(), Some("/billing/complete"));
        let cookie = cookie.expect("a session");
        assert!(cookie.contains("Max-Age=43200"), "{cookie}");
        let session = PageSession {
            client: browserless(),
            base_url: app.base_url.clone(),
            cookie: cookie.split(';').next().expect("pair").to_owned(),
        };
        let complete = session.get("/billing/complete").await;
        assert_eq!(complete.status, StatusCode::OK);
        assert!(
            complete.body.contains("your last payment was declined"),
            "{}",
            complete.body
        );
        assert!(
            complete
                .body
                .contains(&format!("Signed in as <strong>{email}</strong>"))
        );
        assert!(
            !complete.body.contains("href=\"/billing/history\""),
            "{}",
            complete.body
        );
        assert_eq!(
            session.get("/billing/payment-methods").await.status,
            StatusCode::OK
        );
        // Nothing else of the account is open to it.
        for path in [
            "/billing",
            "/billing/history",
            "/billing/usage.csv",
            "/billing/ledger",
            "/billing/auto-topup",
            "/billing/buy",
        ] {
            let outside = session.get(path).await;
            assert_eq!(outside.status, StatusCode::FORBIDDEN, "{path}");
            assert!(
                outside.body.contains("Open this from your account"),
                "{path}"
            );
        }

        // A session opened late ends with the link, not twelve hours on.
        app.clock.advance_ms(71 * 3_600_000);
        let (late, cookie) = app.go_on(&asked, None, &[]).await;
        assert_eq!(late.status, StatusCode::SEE_OTHER);
        let cookie = cookie.expect("a session");
        let max_age: i64 = cookie
            .split("Max-Age=")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|age| age.parse().ok())
            .expect("a max age");
        assert!(max_age <= 3600, "{cookie}");

        let tampered = link.replace(&account, "acct_someone_else");
        let (refused, cookie) = app.open_link(&tampered).await;
        assert_eq!((refused.status, cookie), (StatusCode::GONE, None));

        // A new email: the old inbox's link and the sessions it opened are over.
        let changed = app
            .request(
                reqwest::Method::PATCH,
                &format!("/v1/accounts/{account}"),
                Some(&app.admin),
                Some(json!({ "email": "new-inbox@example.com" })),
            )
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
        assert_eq!(
            session.get("/billing/complete").await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(app.open_link(&link).await.0.status, StatusCode::GONE);
        let (void, cookie) = app.go_on(&asked, None, &[]).await;
        assert_eq!((void.status, cookie), (StatusCode::GONE, None));
        app.clock.advance_ms(2 * 3_600_000);
        let (expired, cookie) = app.open_link(&link).await;
        assert_eq!((expired.status, cookie), (StatusCode::GONE, None));
    })
    .await;
}

#[tokio::test]
async fn a_card_page_return_saves_only_the_session_s_own_checkout() {
    each_backend(async |app| {
        let mine = app.funded_account("0").await;
        let theirs = app.funded_account("0").await;
        let their_key = app.key("customer", Some(&theirs)).await;
        let (landed, _) = app
            .save_on_checkout(&theirs, &their_key, "pm_card_visa")
            .await;
        let their_checkout = landed
            .split("session_id=")
            .nth(1)
            .expect("a Checkout Session id")
            .to_owned();
        let session = app.billing_session(&mine).await;
        let back = session
            .get(&format!(
                "/billing/payment-methods/saved?session_id={their_checkout}"
            ))
            .await;
        assert_eq!(back.status, StatusCode::SEE_OTHER);
        assert_eq!(
            back.location.as_deref(),
            Some("/billing/payment-methods?done=saving")
        );
        for bad in ["seti_123", "cs_..%2F..%2Fv1%2Fcharges", "cs_"] {
            let refused = session
                .get(&format!("/billing/payment-methods/saved?session_id={bad}"))
                .await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                refused
                    .body
                    .contains("session_id: must be a Checkout Session"),
                "{}",
                refused.body
            );
        }
        assert!(app.cards(&mine).await.is_empty(), "nothing saved to mine");
    })
    .await;
}

#[tokio::test]
async fn the_ledger_is_newest_first_a_page_at_a_time() {
    each_backend(async |app| {
        let account = app.funded_account("0").await;
        for i in 1..=30 {
            let adjusted = app
                .post(
                    &format!("/v1/admin/accounts/{account}/adjustments"),
                    &app.admin,
                    json!({ "credits": i, "reason": format!("adjustment number {i}") }),
                )
                .await;
            assert_eq!(adjusted.status, StatusCode::CREATED, "{}", adjusted.body);
        }
        let session = app.billing_session(&account).await;
        let first = session.get("/billing/ledger").await;
        assert_eq!(first.status, StatusCode::OK);
        let position = |page: &Page, i: i32| page.body.find(&format!("adjustment number {i}<"));
        assert!(position(&first, 30) < position(&first, 29), "newest first");
        assert!(position(&first, 6).is_some() && position(&first, 5).is_none());
        let marker = "href=\"/billing/ledger?before=";
        let start = first.body.find(marker).expect("a link to older entries") + 6;
        let older = &first.body[start..]
            .split('"')
            .next()
            .expect("href")
            .to_owned();
        let second = session.get(older).await;
        assert!(
            (1..=5).all(|i| position(&second, i).is_some()),
            "{}",
            second.body
        );
        assert!(position(&second, 6).is_none());
        assert!(!second.body.contains(marker), "the last page");
    })
    .await;
}

/// A payment waiting for the customer after an automatic charge is both a pause and a
/// top-up in progress: the overview says "Paused", as the API's `auto_topup.state` does.
#[tokio::test]
async fn the_overview_names_a_pause_waiting_for_the_customer_as_the_api_does() {
    each_backend(async |app| {
        let (account, _) = app
            .auto_account("pm_card_authenticationRequired", "0")
            .await;
        app.scan().await;
        let state = app.auto_topup(&account).await;
        assert_eq!(state["state"], "paused", "{state}");
        assert_eq!(state["last_topup"]["state"], "requires_action", "{state}");
        let overview = app.billing_session(&account).await.get("/billing").await;
        assert_eq!(overview.status, StatusCode::OK);
        assert!(
            overview.body.contains(">Paused</span>"),
            "{}",
            overview.body
        );
        assert!(
            !overview.body.contains(">In progress</span>"),
            "{}",
            overview.body
        );
    })
    .await;
}

//! What customers do on the billing page, end to end in the browser: the server on a
//! random port with its in-process stub provider (whose Checkout and 3-D Secure pages the
//! browser goes through), SQLite, and a real SMTP server for the emails. Every page of
//! topupd's on the way is checked with axe-core.

use std::{path::PathBuf, sync::Arc};

use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use topupd::config::Config;

use crate::{
    browser::{Driver, Tools},
    helpers::{Backend, TestApp, credits, dec, test_config},
    smtp::SmtpSink,
};

/// What every journey gets.
#[derive(Clone)]
pub struct Setting {
    pub driver: Arc<Driver>,
    pub tools: Arc<Tools>,
    /// Where to keep screenshots, when asked for.
    pub shots: Option<PathBuf>,
}

impl TestApp {
    /// A link to the account's billing page, as the host's backend asks for it.
    async fn portal_link(&self, account: &str) -> String {
        let made = self
            .post(
                "/v1/portal-sessions",
                &self.admin,
                json!({ "account_id": account, "return_url": format!("{}/healthz", self.base_url) }),
            )
            .await;
        assert_eq!(made.status, StatusCode::CREATED, "{}", made.body);
        made.body["url"].as_str().expect("url").to_owned()
    }

    async fn topups_of(&self, account: &str) -> Vec<Value> {
        let listed = self
            .get(&format!("/v1/accounts/{account}/topups"), &self.admin)
            .await;
        listed.body["data"].as_array().expect("top-ups").clone()
    }

    async fn auto_topup_of(&self, account: &str) -> Value {
        self.get(&format!("/v1/accounts/{account}/auto-topup"), &self.admin)
            .await
            .body
    }

    /// Saves `card` for the account and turns auto top-up on: threshold 1,000, target
    /// 5,000.
    async fn with_auto_topup(&self, account: &str, card: &str) {
        let saved = self
            .post(
                &format!("/v1/accounts/{account}/payment-methods"),
                &self.admin,
                json!({ "payment_method_id": card }),
            )
            .await;
        assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.body);
        let enabled = self
            .request(
                Method::PUT,
                &format!("/v1/accounts/{account}/auto-topup"),
                Some(&self.admin),
                Some(json!({ "enabled": true, "threshold": 1000, "target": 5000 })),
            )
            .await;
        assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.body);
    }

    /// Sends the queued notices (the confirmation of turning auto top-up on among them)
    /// and returns the link to the billing page carried by the one whose subject holds
    /// `subject`.
    async fn emailed_link(&self, smtp: &SmtpSink, subject: &str) -> String {
        let before = smtp.received().len();
        let sent = self.send_notices().await.sent;
        let received = smtp.wait_for(before + sent).await;
        let mut matching = received[before..]
            .iter()
            .filter(|m| m.subject.contains(subject));
        let email = matching.next().unwrap_or_else(|| {
            panic!(
                "no email about {subject:?} among {:?}",
                received.iter().map(|m| &m.subject).collect::<Vec<_>>()
            )
        });
        assert!(matching.next().is_none(), "one email about {subject:?}");
        email
            .text
            .split_whitespace()
            .find(|w| w.contains("/billing/from-email?"))
            .unwrap_or_else(|| panic!("a link in the email: {}", email.text))
            .to_owned()
    }

    /// Debits in the ledger (usage), in credits, as a positive sum.
    async fn ledger_debits(&self, account: &str) -> Decimal {
        let ledger = self
            .get(
                &format!("/v1/accounts/{account}/ledger?limit=200"),
                &self.admin,
            )
            .await;
        -ledger.body["data"]
            .as_array()
            .expect("entries")
            .iter()
            .filter(|e| e["kind"] == "usage")
            .map(|e| credits(&e["amount"]))
            .sum::<Decimal>()
    }
}

/// A customer opens the host's link, adds a card on the provider's Checkout page, sets
/// auto top-up (a threshold of 99 is refused and nothing saved; 1,000/5,000 is saved),
/// buys credits with a card that asks for 3-D Secure (sending the form three times at
/// once, then reloading), authenticates on the provider's page and lands back with the
/// balance updated, downloads the receipt, sees the usage chart and downloads the CSV.
pub async fn buying_and_budgeting(setting: Setting) {
    let mut config = Config::defaults();
    config.billing_page.seller_name = "Acme Speech Ltd".into();
    config.billing_page.seller_address = "1 Quay Street\nDublin D02 XY45".into();
    config.billing_page.seller_tax_id = "IE1234567T".into();
    let app = TestApp::spawn_with(Backend::Sqlite, config).await;
    let account = app.funded_account("0").await;
    let browser = setting.driver.browser(setting.shots.clone()).await;

    browser.goto(&app.portal_link(&account).await).await;
    assert_eq!(browser.path().await, "/billing");
    assert!(browser.text().await.contains("Your balance is low."));

    // A card, through the provider's page.
    browser.press("Payment methods").await;
    assert!(browser.text().await.contains("You have no saved card yet."));
    browser.press("Add a card").await;
    let checkout = browser.path().await;
    assert!(checkout.starts_with("/_stub/checkout/"), "{checkout}");
    browser
        .select("#card", "pm_card_authenticationRequired")
        .await;
    browser.press("Save card").await;
    assert_eq!(browser.path().await, "/billing/payment-methods?done=saved");
    let text = browser.text().await;
    assert!(text.contains("Your card is saved."), "{text}");
    assert!(text.contains("Visa ending 3184"), "{text}");
    browser.check("payment-methods").await;

    // Auto top-up: a threshold below the bounds is named, and nothing is saved.
    browser.press("Auto top-up").await;
    browser.check("auto-topup-off").await;
    browser.tick("input[name=enabled]", true).await;
    browser.tick("#consent", true).await;
    browser.fill("#threshold", "99").await;
    browser.fill("#target", "5000").await;
    browser.press("Save settings").await;
    let text = browser.text().await;
    assert!(text.contains("Nothing was saved."), "{text}");
    assert!(
        text.contains("Threshold must be a whole number of credits from 100 to 99000"),
        "{text}"
    );
    browser.check("auto-topup-error").await;
    assert_eq!(app.auto_topup_of(&account).await["enabled"], false);
    browser.fill("#threshold", "1000").await;
    browser.fill("#monthly_spend_cap", "0.50").await;
    browser.press("Save settings").await;
    let text = browser.text().await;
    assert!(
        text.contains("Monthly limit must be an amount in dollars, in whole cents, from $1.00"),
        "{text}"
    );
    assert_eq!(app.auto_topup_of(&account).await["enabled"], false);
    browser.fill("#monthly_spend_cap", "$1,250").await;
    browser.press("Save settings").await;
    assert!(browser.text().await.contains("Your settings are saved."));
    let settings = app.auto_topup_of(&account).await;
    assert_eq!(
        (
            &settings["enabled"],
            &settings["threshold"],
            &settings["target"],
            &settings["spend_cap"]["cap_cents"],
        ),
        (&json!(true), &json!(1000), &json!(5000), &json!(125_000)),
        "{settings}"
    );

    // Buying with 3-D Secure: the form reaches the server three times, one charge.
    browser.press("Buy credits").await;
    browser.check("buy").await;
    browser.click("input[name=choice][value='5000']").await;
    browser
        .send_form_repeatedly("form[action='/billing/buy'] button", 2)
        .await;
    assert!(
        browser.path().await.starts_with("/_stub/authenticate/"),
        "to the bank's page: {}",
        browser.path().await
    );
    browser.press("Complete authentication").await;
    let landed = browser.path().await;
    assert!(landed.starts_with("/billing/payments/"), "{landed}");
    let text = browser.text().await;
    assert!(text.contains("Payment complete"), "{text}");
    assert!(text.contains("5,000 credits"), "{text}");
    browser.check("payment").await;
    browser.client.refresh().await.expect("reload");
    assert!(browser.text().await.contains("Payment complete"));
    let topups = app.topups_of(&account).await;
    assert_eq!(topups.len(), 1, "one charge: {topups:#?}");
    assert_eq!(topups[0]["state"], "succeeded");
    assert_eq!(app.balance(&account).await, dec("5000"));

    // The receipt, as a PDF whose text holds the amount and the credits.
    browser.press("Billing history").await;
    browser.check("history").await;
    let receipt = browser.href("a[href$='.pdf']").await;
    let pdf = browser.download(&receipt).await;
    let text = pdf_text(&setting.tools, &pdf);
    assert!(text.contains("$50.00"), "{text}");
    assert!(text.contains("5,000 credits"), "{text}");
    assert!(text.contains("Visa ending 3184"), "{text}");
    for seller in ["Acme Speech Ltd", "Dublin D02 XY45", "Tax ID: IE1234567T"] {
        assert!(text.contains(seller), "{text}");
    }

    // Usage: a chart and a table, and a CSV whose rows sum to the ledger's debits.
    let service = app.key("service", None).await;
    for (request, seconds) in [("r1", 90), ("r2", 30), ("r3", 600)] {
        let debited = app.debit(&service, &account, request, seconds).await;
        assert_eq!(debited.status, StatusCode::CREATED, "{}", debited.body);
    }
    browser.press("Usage").await;
    let bars: Vec<_> = browser
        .client
        .find_all(fantoccini::Locator::Css("svg.chart rect"))
        .await
        .expect("bars");
    assert!(
        !bars.is_empty(),
        "the chart has bars: {}",
        browser.text().await
    );
    browser.check("usage").await;
    let csv = browser
        .download(&browser.href("a[href^='/billing/usage.csv']").await)
        .await;
    let csv = String::from_utf8(csv).expect("UTF-8");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("date,service,requests,credits_used,credits_refunded")
    );
    let used: Decimal = lines
        .map(|line| dec(line.split(',').nth(3).expect("credits_used")))
        .sum();
    assert!(used > Decimal::ZERO);
    assert_eq!(used, app.ledger_debits(&account).await, "{csv}");

    browser.press("Ledger").await;
    browser.check("ledger").await;
    browser.press("Overview").await;
    let text = browser.text().await;
    assert!(
        text.contains(
            "Active When your balance falls below 1,000 credits, we top it up to 5,000 credits."
        ),
        "{text}"
    );
    browser.check("overview").await;

    browser.close().await;
    app.stop().await;
}

/// An automatic top-up is declined; the customer follows the email's link, goes on as
/// themselves (it opens this payment and the cards alone), adds a card that works, makes
/// it the default, removes the declined one, and retries (the form reaching the server
/// three times): paid once, and auto top-up is active again.
pub async fn completing_a_declined_top_up_from_the_email(setting: Setting) {
    let (app, smtp, account) = scanned_with("pm_card_chargeCustomerFail").await;
    let link = app.emailed_link(&smtp, "did not go through").await;

    let browser = setting.driver.browser(setting.shots.clone()).await;
    // Seen from the host's product first: the overview says why top-ups stopped.
    browser.goto(&app.portal_link(&account).await).await;
    let text = browser.text().await;
    assert!(text.contains("Paused Since"), "{text}");
    browser.check("overview-paused").await;

    browser.goto(&link).await;
    browser.check("continue-from-email").await;
    browser.press("Continue as ada@example.com").await;
    assert_eq!(browser.path().await, "/billing/complete");
    let text = browser.text().await;
    assert!(text.contains("your last payment was declined"), "{text}");
    assert!(text.contains("Signed in as ada@example.com"), "{text}");
    browser.check("complete-declined").await;
    // The email's link opens this payment, not the rest of the account.
    browser.goto(&format!("{}/billing", app.base_url)).await;
    let text = browser.text().await;
    assert!(text.contains("Open this from your account"), "{text}");
    assert!(!text.contains("Paused Since"), "{text}");
    browser.check("outside-the-link").await;

    browser.press("Payment methods").await;
    browser.press("Add a card").await;
    browser.select("#card", "pm_card_visa").await;
    browser.press("Save card").await;
    browser.press("Make Visa ending 4242 the default").await;
    let text = browser.text().await;
    assert!(text.contains("Your default card is changed."), "{text}");
    browser.press("Remove Visa ending 0341").await;
    let text = browser.text().await;
    assert!(text.contains("The card is removed."), "{text}");
    assert!(!text.contains("0341"), "{text}");

    browser
        .goto(&format!("{}/billing/complete", app.base_url))
        .await;
    browser
        .send_form_repeatedly("form[action='/billing/complete'] button", 2)
        .await;
    let text = browser.text().await;
    assert!(text.contains("Payment complete"), "{text}");
    let retries: Vec<Value> = app
        .topups_of(&account)
        .await
        .into_iter()
        .filter(|t| t["trigger"] == "retry")
        .collect();
    assert_eq!(retries.len(), 1, "one retry charged: {retries:#?}");
    assert_eq!(retries[0]["state"], "succeeded");
    assert_eq!(app.auto_topup_of(&account).await["state"], "active");

    browser.close().await;
    app.stop().await;
}

/// An automatic top-up the bank would not take without the customer: the email's link
/// lands on the payment to confirm; the customer confirms it (the form reaching the
/// server twice), authenticates on the provider's page and comes back to the paid
/// top-up, and auto top-up is active again.
pub async fn confirming_an_automatic_top_up_from_the_email(setting: Setting) {
    let (app, smtp, account) = scanned_with("pm_card_authenticationRequired").await;
    assert_eq!(app.auto_topup_of(&account).await["state"], "paused");
    let link = app.emailed_link(&smtp, "confirm your").await;

    let browser = setting.driver.browser(setting.shots.clone()).await;
    browser.goto(&link).await;
    browser.press("Continue as ada@example.com").await;
    let text = browser.text().await;
    assert!(
        text.contains("Your bank asks you to confirm the payment of $50.00"),
        "{text}"
    );
    browser.check("complete-confirm").await;
    browser
        .send_form_repeatedly("form[action='/billing/complete'] button", 1)
        .await;
    let bank = browser.path().await;
    assert!(bank.starts_with("/_stub/authenticate/"), "{bank}");
    browser.press("Complete authentication").await;
    let landed = browser.path().await;
    assert!(landed.starts_with("/billing/payments/"), "{landed}");
    let text = browser.text().await;
    assert!(text.contains("Payment complete"), "{text}");
    assert!(text.contains("5,000 credits"), "{text}");
    let topups = app.topups_of(&account).await;
    assert_eq!(topups.len(), 1, "the same payment, confirmed: {topups:#?}");
    assert_eq!(topups[0]["state"], "succeeded");
    assert_eq!(app.balance(&account).await, dec("5000"));
    assert_eq!(app.auto_topup_of(&account).await["state"], "active");

    browser.close().await;
    app.stop().await;
}

/// An app whose notices go to a real SMTP server, and an account with `card` and auto
/// top-up on, after a scan tried to top it up.
pub async fn scanned_with(card: &str) -> (TestApp, SmtpSink, String) {
    let smtp = SmtpSink::started().await;
    let app = TestApp::spawn_with(Backend::Sqlite, test_config(smtp.port)).await;
    let account = app.account_with_email("ada@example.com", "0").await;
    app.with_auto_topup(&account, card).await;
    let scanned = app
        .topups
        .scan(&CancellationToken::new(), None)
        .await
        .expect("scan");
    assert_eq!(scanned.claimed, 1, "{scanned:?}");
    (app, smtp, account)
}

/// A used link, an expired one, a session that has ended and another account's ids show
/// nothing of any account.
pub async fn stale_links_and_other_accounts(setting: Setting) {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mine = app.account_with_email("me@example.com", "1111").await;
    let theirs = app.account_with_email("them@example.com", "0").await;
    let card = app
        .post(
            &format!("/v1/accounts/{theirs}/payment-methods"),
            &app.admin,
            json!({ "payment_method_id": "pm_card_visa" }),
        )
        .await;
    assert_eq!(card.status, StatusCode::CREATED, "{}", card.body);
    let their_key = app.key("customer", Some(&theirs)).await;
    let bought = app
        .post(
            &format!("/v1/accounts/{theirs}/topups"),
            &their_key,
            json!({ "credits": 777 }),
        )
        .await;
    assert_eq!(bought.status, StatusCode::CREATED, "{}", bought.body);
    let their_topup = bought.body["id"].as_str().expect("id").to_owned();

    let browser = setting.driver.browser(setting.shots.clone()).await;
    let link = app.portal_link(&mine).await;
    browser.goto(&link).await;
    assert!(browser.text().await.contains("1,111 credits"));
    for path in [
        format!("/billing/payments/{their_topup}"),
        format!("/billing/receipts/{their_topup}.pdf"),
    ] {
        browser.goto(&format!("{}{path}", app.base_url)).await;
        let text = browser.text().await;
        assert!(text.contains("Not found"), "{path}: {text}");
        assert!(!text.contains("777") && !text.contains("them@"), "{text}");
    }
    browser.check("not-found").await;

    // The same link again, in a browser with no session: it says so, and shows nothing.
    browser.client.delete_all_cookies().await.expect("cookies");
    browser.goto(&link).await;
    let text = browser.text().await;
    assert!(text.contains("This link has expired"), "{text}");
    assert!(!text.contains("1,111"), "{text}");
    browser.check("stale-link").await;
    browser.goto(&format!("{}/billing", app.base_url)).await;
    assert!(browser.text().await.contains("Your session has ended"));
    browser.check("session-ended").await;
    let late = app.portal_link(&mine).await;
    app.clock.advance_ms(6 * 60_000);
    browser.goto(&late).await;
    assert!(browser.text().await.contains("This link has expired"));

    browser.close().await;
    app.stop().await;
}

/// The text of a PDF, as poppler's pdftotext reads it.
fn pdf_text(tools: &Tools, pdf: &[u8]) -> String {
    let folder = tempfile::tempdir().expect("temporary directory");
    let file = folder.path().join("receipt.pdf");
    std::fs::write(&file, pdf).expect("write the PDF");
    let out = std::process::Command::new(&tools.pdftotext)
        .arg(&file)
        .arg("-")
        .output()
        .expect("run pdftotext");
    assert!(out.status.success(), "pdftotext: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8")
}

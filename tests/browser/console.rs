//! What support does in the console, end to end in the browser, checked with axe-core
//! like the billing page. Its screenshots go to `support/` beside the billing page's.

use reqwest::StatusCode;
use serde_json::json;

use crate::journeys::{Setting, scanned_with};

/// A support person signs in with their key, finds the paused account by its email, reads
/// in the decision history why no top-up happened, resumes it with a note (trying a
/// charge at once, which the card declines again, said so; then after the customer's new
/// card, without a try), and the audit names them. The customer's billing session opens
/// no console page.
pub async fn support_resumes_a_paused_account(setting: Setting) {
    let (app, _smtp, account) = scanned_with("pm_card_chargeCustomerFail").await;
    let issued = app
        .post(
            "/v1/admin/api-keys",
            &app.admin,
            json!({ "role": "support", "label": "Grace at support" }),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    let key = issued.body["token"].as_str().expect("token").to_owned();
    let shots = setting
        .shots
        .as_ref()
        .and_then(|billing| billing.parent().map(|docs| docs.join("support")));

    let browser = setting.driver.browser(shots).await;
    browser.goto(&format!("{}/console", app.base_url)).await;
    assert!(browser.text().await.contains("Your session has ended"));
    browser.press("Sign in to the console").await;
    browser.check("sign-in").await;
    browser.fill("#key", &key).await;
    browser.press("Sign in").await;
    assert_eq!(browser.path().await, "/console");
    let text = browser.text().await;
    assert!(text.contains("Signed in as Grace at support"), "{text}");
    assert!(!text.contains(&key), "{text}");

    browser.fill("#q", "ada@example.com").await;
    browser.press("Find").await;
    let text = browser.text().await;
    assert!(text.contains("1 found"), "{text}");
    assert!(text.contains("paused (payment failed)"), "{text}");
    browser.check("search").await;
    browser.press("ada@example.com").await;
    let text = browser.text().await;
    assert!(
        text.contains("the balance (0 credits) was below the threshold (1,000 credits): charged"),
        "{text}"
    );
    assert!(text.contains("generic_decline"), "{text}");

    browser.fill("#note", "customer asked to try again").await;
    browser.tick("input[name=try_now]", true).await;
    browser.press("Resume auto top-up").await;
    let text = browser.text().await;
    assert!(
        text.contains("Resumed, but the charge tried now was declined"),
        "{text}"
    );
    browser.check("resume-declined-again").await;

    let saved = app
        .post(
            &format!("/v1/accounts/{account}/payment-methods"),
            &app.admin,
            json!({ "payment_method_id": "pm_card_visa" }),
        )
        .await;
    assert_eq!(saved.status, StatusCode::CREATED, "{}", saved.body);
    browser.fill("#note", "new card on file").await;
    browser.press("Resume auto top-up").await;
    let text = browser.text().await;
    assert!(text.contains("Resumed; the next scan"), "{text}");
    assert!(
        text.lines()
            .any(|line| line.contains("Grace at support (support)")
                && line.contains("auto_topup.resume")
                && line.contains("new card on file")),
        "the audit names who resumed: {text}"
    );
    browser.check("account").await;
    let state = app
        .get(&format!("/v1/accounts/{account}/auto-topup"), &app.admin)
        .await;
    assert_eq!(state.body["state"], "active", "{}", state.body);

    browser.press("Paused and flagged").await;
    browser.check("paused").await;
    browser.press("Failed notices").await;
    browser.check("notices").await;
    browser.press("Dead webhook events").await;
    browser.check("webhooks").await;

    // The customer, signed in to their billing page in this browser, opens no console page.
    browser.press("Sign out").await;
    let link = app
        .post(
            "/v1/portal-sessions",
            &app.admin,
            json!({ "account_id": account }),
        )
        .await;
    browser
        .goto(link.body["url"].as_str().expect("a link"))
        .await;
    assert_eq!(browser.path().await, "/billing");
    for path in [
        "/console",
        &format!("/console/accounts/{account}"),
        "/console/paused",
    ] {
        browser.goto(&format!("{}{path}", app.base_url)).await;
        let text = browser.text().await;
        assert!(text.contains("Your session has ended"), "{path}: {text}");
        assert!(!text.contains("ada@example.com"), "{path}: {text}");
    }

    browser.close().await;
    app.stop().await;
}

//! The words of each notice, as plain text and HTML. Rendered from the stored facts when
//! the notice is sent: the same facts, name and letterhead give the same message, so a
//! resend is byte-for-byte the first send.

use crate::{
    clock::Millis,
    config::EmailConfig,
    domain::{
        credits::Millicredits,
        notice::{
            Announcement, AuthenticationRequest, CapFacts, CardFacts, CardRisk, ChangedBy,
            DisputeFacts, EndpointFailure, LowBalanceFacts, Notice, PaymentFailure, Receipt,
            RefundFacts, ResumedBy, Resumption, SettingsChange, Trigger,
        },
    },
    portal::links::{COMPLETE_PATH, EmailLinks},
};

/// What every notice says about who sends it and where to act.
#[derive(Debug, Clone)]
pub struct Letterhead {
    pub product_name: String,
    /// Where customers act on a notice; omitted from notices when empty.
    pub billing_url: String,
    pub support_email: String,
    /// Signs each notice's own link to topupd's billing page, when that is where
    /// customers act (`email.billing_url` left empty).
    pub page_links: Option<EmailLinks>,
}

impl Letterhead {
    pub fn new(email: &EmailConfig, page_links: EmailLinks) -> Self {
        Self {
            product_name: email.product_name.clone(),
            billing_url: email.billing_url.clone(),
            support_email: email.support_email.clone(),
            page_links: email.billing_url.is_empty().then_some(page_links),
        }
    }

    /// The letterhead of the notice about `account_id` written at `at`: on topupd's
    /// billing page, its link is the notice's own, signed for that account.
    pub fn for_notice(&self, account_id: &str, at: Millis) -> Self {
        let mut head = self.clone();
        if let Some(links) = &self.page_links {
            head.billing_url = links.link(account_id, COMPLETE_PATH, at);
        }
        head
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// A notice body as paragraphs; each paragraph is text with optional links.
struct Letter {
    subject: String,
    paragraphs: Vec<Paragraph>,
}

enum Paragraph {
    Text(String),
    /// A labelled list of facts, such as a receipt's lines.
    Facts(Vec<(&'static str, String)>),
    /// A call to action with its link.
    Link {
        label: String,
        url: String,
    },
}

pub fn render(notice: &Notice, name: &str, head: &Letterhead) -> Rendered {
    let letter = match notice {
        Notice::TopupReceipt(r) => receipt(r, head),
        Notice::TopupAnnounced(a) => announced(a, head),
        Notice::PaymentFailed(f) => payment_failed(f, head),
        Notice::AuthenticationRequired(a) => authentication_required(a, head),
        Notice::AutoTopupResumed(r) => resumed(r, head),
        Notice::AutoTopupChanged(c) => settings_changed(c, head),
        Notice::CardAtRisk(c) => card_at_risk(c, head),
        Notice::LowBalance(l) => low_balance(l, head),
        Notice::SpendCapReached(c) => spend_cap_reached(c, head),
        Notice::CreditsRefunded(r) => refunded(r, head),
        Notice::DisputeOpened(d) => dispute_opened(d),
        Notice::DisputeClosed(d) => dispute_closed(d),
        Notice::WebhookEndpointDisabled(f) => endpoint_disabled(f),
    };
    Rendered {
        text: text(&letter, name, head),
        html: html(&letter, name, head),
        subject: letter.subject,
    }
}

fn receipt(r: &Receipt, head: &Letterhead) -> Letter {
    let (subject, opening) = match r.trigger {
        Trigger::Automatic => (
            format!("Receipt: your {} balance was topped up automatically", head.product_name),
            "Your balance fell below your auto top-up threshold, so we charged your saved card to bring it back up to your target.".to_owned(),
        ),
        Trigger::Manual => (
            format!("Receipt for your {} credit purchase", head.product_name),
            "Thank you for your purchase. The credits are in your account and ready to use.".to_owned(),
        ),
    };
    Letter {
        subject,
        paragraphs: vec![
            Paragraph::Text(opening),
            Paragraph::Facts(vec![
                ("Credits added", r.credits.to_display()),
                ("Amount charged", r.amount.to_string()),
                (
                    "New balance",
                    format!("{} credits", r.new_balance.to_display()),
                ),
                ("Transaction", r.transaction_id.clone()),
                ("Date", long_date(r.at)),
            ]),
            Paragraph::Text("Keep this email for your records.".to_owned()),
        ],
    }
}

fn payment_failed(f: &PaymentFailure, head: &Letterhead) -> Letter {
    let mut paragraphs = vec![
        Paragraph::Text(format!(
            "We could not charge {} for {} credits on {}.",
            f.amount,
            f.credits.to_display(),
            long_date(f.at)
        )),
        Paragraph::Text(format!("Why: {}", decline_reason(&f.decline_code))),
    ];
    if f.trigger == Trigger::Automatic {
        paragraphs.push(Paragraph::Text(
            "Automatic top-ups are paused so that we do not try the same card again. Your current credits keep working until they run out.".to_owned(),
        ));
    }
    paragraphs.push(Paragraph::Text(format!(
        "To fix it, {} Then retry the payment; automatic top-ups resume as soon as a payment goes through.",
        decline_remedy(&f.decline_code)
    )));
    push_billing_link(&mut paragraphs, head, "Update your payment method");
    Letter {
        subject: format!(
            "Action needed: your {} payment did not go through",
            head.product_name
        ),
        paragraphs,
    }
}

fn authentication_required(a: &AuthenticationRequest, head: &Letterhead) -> Letter {
    let mut paragraphs = vec![Paragraph::Text(format!(
        "Your bank asks you to confirm a payment of {} for {} credits (3-D Secure).",
        a.amount,
        a.credits.to_display()
    ))];
    // topupd's billing page confirms a waiting payment itself; a host's page of its own
    // may not, so the confirmation page's link is given then.
    match a.link.as_ref().filter(|_| head.page_links.is_none()) {
        Some(url) => paragraphs.push(Paragraph::Link {
            label: "Confirm the payment".to_owned(),
            url: url.clone(),
        }),
        // The bank refused to let the payment go through without you: it has to be made
        // again while you are there to confirm it.
        None if a.link.is_some() => {
            paragraphs.push(Paragraph::Text(
                "Confirm it on your billing page; your bank may ask you to approve it there."
                    .to_owned(),
            ));
            push_billing_link(&mut paragraphs, head, "Confirm the payment");
        }
        None => {
            paragraphs.push(Paragraph::Text(
                "To confirm it, retry the payment from your billing settings and follow your bank's steps.".to_owned(),
            ));
            push_billing_link(&mut paragraphs, head, "Retry the payment");
        }
    }
    paragraphs.push(Paragraph::Text(
        "Automatic top-ups are paused until you complete this step. Once the payment is confirmed, the credits are added and automatic top-ups resume.".to_owned(),
    ));
    Letter {
        subject: format!("Action needed: confirm your {} payment", head.product_name),
        paragraphs,
    }
}

fn resumed(r: &Resumption, head: &Letterhead) -> Letter {
    let why = match r.by {
        ResumedBy::Payment => "Your payment went through",
        ResumedBy::Support => "Our support team has resumed them for you",
        ResumedBy::NewMonth => "A new month has begun, so your monthly limit starts again",
    };
    Letter {
        subject: format!(
            "Automatic top-ups are back on for your {} account",
            head.product_name
        ),
        paragraphs: vec![Paragraph::Text(format!(
            "{why}, so automatic top-ups are active again as of {}. When your balance falls below your threshold, we will top it up to your target with your saved card.",
            long_date(r.at)
        ))],
    }
}

fn settings_changed(c: &SettingsChange, head: &Letterhead) -> Letter {
    let who = match c.by {
        ChangedBy::Customer => "You (or someone signed in to your account)",
        ChangedBy::Support => "Our support team",
        ChangedBy::Administrator => "An administrator",
    };
    let credits = |m: Option<Millicredits>| {
        m.map_or_else(
            || "not set".to_owned(),
            |m| format!("{} credits", m.to_display()),
        )
    };
    let (subject, opening) = if c.enabled {
        (
            format!("Auto top-up is on for your {} account", head.product_name),
            format!(
                "{who} set up automatic top-ups on {}: when your balance falls below the threshold, we charge your saved card to bring it back to the target, without asking each time.",
                long_date(c.at)
            ),
        )
    } else {
        (
            format!("Auto top-up is off for your {} account", head.product_name),
            format!(
                "{who} turned automatic top-ups off on {}. We will not charge your card on our own until they are turned on again.",
                long_date(c.at)
            ),
        )
    };
    let mut facts = vec![
        (
            "Auto top-up",
            if c.enabled { "on" } else { "off" }.to_owned(),
        ),
        ("Threshold", credits(c.threshold)),
        ("Target", credits(c.target)),
    ];
    facts.push((
        "Monthly limit",
        c.monthly_cap
            .map_or_else(|| "none".to_owned(), |cap| cap.to_string()),
    ));
    let mut paragraphs = vec![
        Paragraph::Text(opening),
        Paragraph::Facts(facts),
        Paragraph::Text(format!(
            "If you did not expect this change, review your settings and write to {}.",
            head.support_email
        )),
    ];
    push_billing_link(&mut paragraphs, head, "Review your settings");
    Letter {
        subject,
        paragraphs,
    }
}

fn announced(a: &Announcement, head: &Letterhead) -> Letter {
    let mut paragraphs = vec![
        Paragraph::Text(format!(
            "As you asked, here is notice of your next automatic top-up: we will charge your saved card {} for {} credits from {}, at the first check after then.",
            a.amount,
            a.credits.to_display(),
            long_date(a.at)
        )),
        Paragraph::Text(
            "To stop this charge, cancel it on your billing page before then; automatic top-ups stay on, and the next one is announced again.".to_owned(),
        ),
    ];
    push_billing_link(&mut paragraphs, head, "Cancel this charge");
    Letter {
        subject: format!(
            "Your {} balance will be topped up for {}",
            head.product_name, a.amount
        ),
        paragraphs,
    }
}

fn low_balance(l: &LowBalanceFacts, head: &Letterhead) -> Letter {
    let mut paragraphs = vec![
        Paragraph::Text(format!(
            "Your balance fell below {} credits on {}: {} credits are left. Requests that use credits are refused once they run out.",
            l.line.to_display(),
            long_date(l.at),
            l.balance.to_display()
        )),
        Paragraph::Text(
            "Buy credits now, or turn on auto top-up so that your balance is topped up when it runs low. We tell you once each time your balance falls below this line.".to_owned(),
        ),
    ];
    push_billing_link(&mut paragraphs, head, "Buy credits");
    Letter {
        subject: format!("Your {} balance is low", head.product_name),
        paragraphs,
    }
}

fn card_at_risk(c: &CardFacts, head: &Letterhead) -> Letter {
    let card = crate::domain::card_health::card_name(&c.brand, &c.last4);
    let expiry = crate::domain::card_health::expiry_month(c.exp_month, c.exp_year);
    let why = match c.risk {
        CardRisk::Expired => format!("Your {card} expired at the end of {expiry}."),
        CardRisk::ExpiresBeforeNextTopUp => format!(
            "Your {card} expires at the end of {expiry}, before your next automatic top-up is likely{}.",
            c.next_top_up_at
                .map(|at| format!(" (around {})", long_date(at)))
                .unwrap_or_default()
        ),
        CardRisk::Detached => format!(
            "Your {card} was removed at our payment provider: your bank cancelled or replaced it."
        ),
    };
    let mut paragraphs = vec![
        Paragraph::Text(why),
        Paragraph::Text(
            "Automatic top-ups charge this card, so they would be declined and paused. Add a card that works and make it your default, or choose it for auto top-up.".to_owned(),
        ),
    ];
    push_billing_link(&mut paragraphs, head, "Update your payment method");
    Letter {
        subject: format!(
            "Action needed: the card for your {} auto top-up will not work",
            head.product_name
        ),
        paragraphs,
    }
}

fn spend_cap_reached(c: &CapFacts, head: &Letterhead) -> Letter {
    let mut paragraphs = vec![
        Paragraph::Text(format!(
            "Your balance fell below your auto top-up threshold, but the top-up ({}) would take this month's automatic top-ups past the monthly limit you set ({}). So we did not charge your card, and automatic top-ups are paused.",
            c.charge, c.cap
        )),
        Paragraph::Facts(vec![
            ("Monthly limit", c.cap.to_string()),
            ("Charged this month", c.spent.to_string()),
            ("Top-up not made", c.charge.to_string()),
            ("Starts again", local_date(c.until, &c.time_zone)),
        ]),
        Paragraph::Text(
            "Your current credits keep working until they run out. Automatic top-ups start again on their own when the month ends; to start them sooner, raise or remove the limit in your auto top-up settings.".to_owned(),
        ),
    ];
    push_billing_link(&mut paragraphs, head, "Change the limit");
    Letter {
        subject: format!(
            "Automatic top-ups of your {} balance reached your monthly limit",
            head.product_name
        ),
        paragraphs,
    }
}

fn refunded(r: &RefundFacts, head: &Letterhead) -> Letter {
    let mut paragraphs = vec![
        Paragraph::Text(format!(
            "{} of your payment was refunded to your card, so the credits it bought were removed from your balance.",
            r.amount
        )),
        Paragraph::Facts(vec![
            ("Amount refunded", r.amount.to_string()),
            ("Credits removed", r.credits.to_display()),
            (
                "New balance",
                format!("{} credits", r.new_balance.to_display()),
            ),
            ("Transaction", r.transaction_id.clone()),
            ("Date", long_date(r.at)),
        ]),
    ];
    if r.new_balance.0 < 0 {
        paragraphs.push(Paragraph::Text(
            "Your balance is below zero: requests that use credits are refused until you buy credits again.".to_owned(),
        ));
    }
    paragraphs.push(Paragraph::Text(format!(
        "Automatic top-ups are paused so that we do not charge you again for what was refunded. To turn them back on, write to {}.",
        head.support_email
    )));
    push_billing_link(&mut paragraphs, head, "See your billing");
    Letter {
        subject: format!("Your {} payment was refunded", head.product_name),
        paragraphs,
    }
}

/// The facts support needs about a dispute.
fn dispute_facts(d: &DisputeFacts) -> Paragraph {
    Paragraph::Facts(vec![
        ("Account", d.account_id.clone()),
        ("Dispute", d.dispute_id.clone()),
        ("Charge", d.charge_id.clone()),
        ("Amount", d.amount.to_string()),
        ("Status", d.status.clone()),
        (
            "Reason",
            d.reason.clone().unwrap_or_else(|| "not given".into()),
        ),
        ("Credits held", d.credits_held.to_display()),
        (
            "Balance now",
            format!("{} credits", d.new_balance.to_display()),
        ),
        ("Date", long_date(d.at)),
    ])
}

fn dispute_opened(d: &DisputeFacts) -> Letter {
    Letter {
        subject: format!(
            "Dispute opened: account {}, {}",
            d.account_id, d.amount
        ),
        paragraphs: vec![
            Paragraph::Text(
                "The payer disputed a top-up's charge with their bank. Its credits are held (taken from the balance) until the dispute closes, and automatic top-ups of the account are paused until support resumes them.".to_owned(),
            ),
            dispute_facts(d),
            Paragraph::Text(
                "Answer the dispute with evidence at the payment provider before its deadline.".to_owned(),
            ),
        ],
    }
}

fn dispute_closed(d: &DisputeFacts) -> Letter {
    let (subject, outcome) = if d.status == "lost" {
        (
            "lost",
            "The dispute was lost: the held credits stay removed.",
        )
    } else {
        (
            "won",
            "The dispute closed in our favour: the held credits are back in the balance.",
        )
    };
    Letter {
        subject: format!("Dispute {subject}: account {}, {}", d.account_id, d.amount),
        paragraphs: vec![
            Paragraph::Text(format!(
                "{outcome} Automatic top-ups of the account stay paused until support resumes them."
            )),
            dispute_facts(d),
        ],
    }
}

fn endpoint_disabled(f: &EndpointFailure) -> Letter {
    Letter {
        subject: format!("Webhook endpoint disabled: {}", f.url),
        paragraphs: vec![
            Paragraph::Text(format!(
                "The host's webhook endpoint at {} did not accept a delivery after {} tries over more than a day, so it is disabled: it receives no events until it is enabled again (PATCH /v1/admin/webhook-endpoints/{} with \"enabled\": true). Its deliveries still waiting go out once it is; the failed one can be replayed.",
                f.url, f.attempts, f.endpoint_id
            )),
            Paragraph::Facts(vec![
                ("Endpoint", f.endpoint_id.clone()),
                ("Event", f.event_type.clone()),
                ("Message", f.message_id.clone()),
                ("Last error", f.last_error.clone()),
                ("Date", long_date(f.at)),
            ]),
        ],
    }
}

fn push_billing_link(paragraphs: &mut Vec<Paragraph>, head: &Letterhead, label: &str) {
    if !head.billing_url.is_empty() {
        paragraphs.push(Paragraph::Link {
            label: label.to_owned(),
            url: head.billing_url.clone(),
        });
    }
}

/// The decline code in plain words.
pub fn decline_reason(code: &str) -> String {
    let reason = match code {
        "insufficient_funds" => "the card does not have enough funds.",
        "expired_card" => "the card has expired.",
        "fraudulent" | "stolen_card" | "lost_card" | "pickup_card" => {
            "the bank declined the payment as a precaution."
        }
        "incorrect_cvc" | "invalid_cvc" => "the card's security code was not accepted.",
        "card_velocity_exceeded" | "withdrawal_count_limit_exceeded" => {
            "the card has reached a spending limit set by the bank."
        }
        "authentication_failed" | "payment_intent_authentication_failure" => {
            "the payment was not confirmed with your bank (3-D Secure)."
        }
        "no_payment_method" => "there is no saved card on your account.",
        "processing_error" => "the bank could not process the payment.",
        "generic_decline" | "do_not_honor" | "card_declined" => {
            "the bank declined the payment without giving a reason."
        }
        _ => return format!("the bank declined the payment (code {code})."),
    };
    reason.to_owned()
}

/// What the customer can do about it.
fn decline_remedy(code: &str) -> &'static str {
    match code {
        "insufficient_funds" => "add funds to the card or use another card.",
        "expired_card" => "add a card that has not expired and make it your default.",
        "no_payment_method" => "add a card and make it your default.",
        "authentication_failed" | "payment_intent_authentication_failure" => {
            "retry the payment and complete the confirmation your bank asks for, or use another card."
        }
        "incorrect_cvc" | "invalid_cvc" => "re-enter the card details or use another card.",
        _ => "contact your bank or add another card and make it your default.",
    }
}

pub fn long_date(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%-d %B %Y, %H:%M UTC").to_string(),
    )
}

/// A moment in the reader's own time zone (an IANA name), as [`long_date`] writes it in
/// UTC.
fn local_date(ms: Millis, time_zone: &str) -> String {
    match (
        time_zone.parse::<chrono_tz::Tz>(),
        chrono::DateTime::from_timestamp_millis(ms),
    ) {
        (Ok(tz), Some(t)) => t
            .with_timezone(&tz)
            .format(&format!("%-d %B %Y, %H:%M ({time_zone})"))
            .to_string(),
        _ => long_date(ms),
    }
}

fn text(letter: &Letter, name: &str, head: &Letterhead) -> String {
    let mut out = format!("Hello {name},\n\n");
    for paragraph in &letter.paragraphs {
        match paragraph {
            Paragraph::Text(t) => out.push_str(t),
            Paragraph::Facts(facts) => {
                let width = facts.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
                let lines: Vec<String> = facts
                    .iter()
                    .map(|(k, v)| format!("  {k:<width$}  {v}"))
                    .collect();
                out.push_str(&lines.join("\n"));
            }
            Paragraph::Link { label, url } => out.push_str(&format!("{label}: {url}")),
        }
        out.push_str("\n\n");
    }
    out.push_str(&signature(head));
    out.push('\n');
    out
}

fn html(letter: &Letter, name: &str, head: &Letterhead) -> String {
    let mut body = format!("<p>Hello {},</p>\n", escape(name));
    for paragraph in &letter.paragraphs {
        match paragraph {
            Paragraph::Text(t) => body.push_str(&format!("<p>{}</p>\n", escape(t))),
            Paragraph::Facts(facts) => {
                body.push_str("<table cellpadding=\"4\" style=\"border-collapse:collapse\">\n");
                for (k, v) in facts {
                    body.push_str(&format!(
                        "<tr><th align=\"left\">{}</th><td>{}</td></tr>\n",
                        escape(k),
                        escape(v)
                    ));
                }
                body.push_str("</table>\n");
            }
            Paragraph::Link { label, url } => body.push_str(&format!(
                "<p><a href=\"{}\" style=\"font-weight:bold\">{}</a></p>\n",
                escape(url),
                escape(label)
            )),
        }
    }
    body.push_str(&format!(
        "<p>{}</p>\n",
        escape(&signature(head)).replace('\n', "<br>\n")
    ));
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body style=\"font-family:sans-serif;line-height:1.5\">\n{body}</body></html>\n",
        escape(&letter.subject)
    )
}

fn signature(head: &Letterhead) -> String {
    format!(
        "The {} team\nQuestions? Write to {}.",
        head.product_name, head.support_email
    )
}

/// Text safe inside an HTML element or a quoted attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::money::Cents;

    /// 2026-11-21T10:30:00Z
    const AT: Millis = 1_795_257_000_000;

    fn head() -> Letterhead {
        Letterhead {
            product_name: "Acme API".into(),
            billing_url: "https://acme.example/billing".into(),
            support_email: "support@acme.example".into(),
            page_links: None,
        }
    }

    fn both(r: &Rendered) -> [&str; 2] {
        [&r.text, &r.html]
    }

    #[test]
    fn receipts_state_credits_amount_transaction_balance_and_date() {
        for trigger in [Trigger::Automatic, Trigger::Manual] {
            let r = render(
                &Notice::TopupReceipt(Receipt {
                    trigger,
                    credits: Millicredits(9_153_000),
                    amount: Cents(915_300),
                    transaction_id: "pi_3Abc".into(),
                    new_balance: Millicredits(10_000_500),
                    at: AT,
                }),
                "Ada <Lovelace>",
                &head(),
            );
            assert!(r.subject.starts_with("Receipt"));
            for body in both(&r) {
                for fact in [
                    "9,153",
                    "$9,153.00",
                    "pi_3Abc",
                    "10,000.5 credits",
                    "21 November 2026, 10:30 UTC",
                ] {
                    assert!(
                        body.contains(fact),
                        "{trigger:?}: {fact} missing from {body}"
                    );
                }
            }
            assert!(
                r.html.contains("Ada &lt;Lovelace&gt;"),
                "names are escaped in HTML"
            );
            assert!(r.text.contains("Ada <Lovelace>"));
        }
    }

    #[test]
    fn payment_failed_explains_each_decline_and_how_to_fix_it() {
        let cases = [
            ("insufficient_funds", "enough funds"),
            ("expired_card", "expired"),
            ("generic_decline", "without giving a reason"),
            ("fraudulent", "as a precaution"),
            ("no_payment_method", "no saved card"),
            ("authentication_failed", "not confirmed"),
            ("something_new", "code something_new"),
        ];
        for (code, words) in cases {
            let r = render(
                &Notice::PaymentFailed(PaymentFailure {
                    trigger: Trigger::Automatic,
                    decline_code: code.into(),
                    credits: Millicredits(5_000_000),
                    amount: Cents(5_000),
                    at: AT,
                }),
                "Ada",
                &head(),
            );
            for body in both(&r) {
                assert!(body.contains(words), "{code}: {body}");
                assert!(body.contains("$50.00"));
                assert!(body.contains("paused"));
                assert!(body.contains("retry the payment") || body.contains("Then retry"));
                assert!(body.contains("https://acme.example/billing"));
            }
        }
        let manual = render(
            &Notice::PaymentFailed(PaymentFailure {
                trigger: Trigger::Manual,
                decline_code: "expired_card".into(),
                credits: Millicredits(500_000),
                amount: Cents(500),
                at: AT,
            }),
            "Ada",
            &head(),
        );
        assert!(
            !manual.text.contains("paused"),
            "a manual purchase pauses nothing"
        );
    }

    #[test]
    fn authentication_required_carries_the_secure_link_and_says_auto_top_up_is_paused() {
        let link = "https://hooks.stripe.com/3d_secure/abc?x=1&y=2";
        let r = render(
            &Notice::AuthenticationRequired(AuthenticationRequest {
                link: Some(link.into()),
                credits: Millicredits(2_000_000),
                amount: Cents(2_000),
            }),
            "Ada",
            &head(),
        );
        assert!(r.text.contains(link));
        assert!(
            r.html
                .contains("href=\"https://hooks.stripe.com/3d_secure/abc?x=1&amp;y=2\"")
        );
        for body in both(&r) {
            assert!(body.contains("$20.00"));
            assert!(body.contains("paused until you complete"));
        }
    }

    #[test]
    fn resumed_says_why() {
        for (by, words) in [
            (ResumedBy::Payment, "payment went through"),
            (ResumedBy::Support, "support team"),
        ] {
            let r = render(
                &Notice::AutoTopupResumed(Resumption { by, at: AT }),
                "Ada",
                &head(),
            );
            assert!(r.subject.contains("back on"));
            for body in both(&r) {
                assert!(body.contains(words));
                assert!(body.contains("21 November 2026"));
            }
        }
    }

    #[test]
    fn an_announcement_says_how_much_from_when_and_how_to_cancel() {
        let r = render(
            &Notice::TopupAnnounced(Announcement {
                credits: Millicredits(4_000_000),
                amount: Cents(4_000),
                at: AT,
            }),
            "Ada",
            &head(),
        );
        assert!(r.subject.contains("$40.00"), "{}", r.subject);
        for body in both(&r) {
            for fact in [
                "$40.00 for 4,000 credits",
                "21 November 2026",
                "Cancel this charge",
            ] {
                assert!(body.contains(fact), "{fact} in {body}");
            }
        }
    }

    #[test]
    fn a_low_balance_says_what_is_left_below_which_line_and_what_to_do() {
        let r = render(
            &Notice::LowBalance(LowBalanceFacts {
                balance: Millicredits(1_500_000),
                line: Millicredits(2_000_000),
                at: AT,
            }),
            "Ada",
            &head(),
        );
        assert!(r.subject.contains("balance is low"), "{}", r.subject);
        for body in both(&r) {
            for fact in [
                "below 2,000 credits",
                "1,500 credits are left",
                "turn on auto top-up",
                "once each time",
            ] {
                assert!(body.contains(fact), "{fact} in {body}");
            }
        }
    }

    #[test]
    fn a_card_at_risk_says_which_card_why_and_what_to_do() {
        for (risk, words) in [
            (CardRisk::Expired, "expired at the end of December 2026"),
            (
                CardRisk::ExpiresBeforeNextTopUp,
                "before your next automatic top-up is likely (around 21 November 2026",
            ),
            (CardRisk::Detached, "removed at our payment provider"),
        ] {
            let r = render(
                &Notice::CardAtRisk(CardFacts {
                    risk,
                    brand: "visa".into(),
                    last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2026,
                    next_top_up_at: Some(AT),
                }),
                "Ada",
                &head(),
            );
            assert!(r.subject.contains("will not work"), "{}", r.subject);
            for body in both(&r) {
                for fact in ["Visa ending 4242", words, "make it your default"] {
                    assert!(body.contains(fact), "{fact} in {body}");
                }
            }
        }
    }

    #[test]
    fn a_settings_change_says_who_made_it_and_what_now_holds() {
        for (by, enabled, who, words) in [
            (
                ChangedBy::Customer,
                true,
                "You (or someone signed in",
                "is on",
            ),
            (
                ChangedBy::Support,
                false,
                "Our support team turned",
                "is off",
            ),
            (
                ChangedBy::Administrator,
                true,
                "An administrator set up",
                "is on",
            ),
        ] {
            let r = render(
                &Notice::AutoTopupChanged(SettingsChange {
                    by,
                    enabled,
                    threshold: Some(Millicredits(1_000_000)),
                    target: Some(Millicredits(5_000_000)),
                    monthly_cap: Some(Cents(20_000)),
                    at: AT,
                }),
                "Ada",
                &head(),
            );
            assert!(r.subject.contains(words), "{}", r.subject);
            for body in both(&r) {
                for fact in [
                    who,
                    "1,000 credits",
                    "5,000 credits",
                    "$200.00",
                    "21 November 2026",
                ] {
                    assert!(body.contains(fact), "{fact} in {body}");
                }
            }
        }
    }

    #[test]
    fn a_reached_cap_says_what_was_not_charged_and_when_it_starts_again() {
        let r = render(
            &Notice::SpendCapReached(CapFacts {
                cap: Cents(10_000),
                spent: Cents(9_000),
                charge: Cents(2_500),
                // 1 January 2027 at midnight in New York.
                until: 1_798_779_600_000,
                time_zone: "America/New_York".into(),
                at: AT,
            }),
            "Ada",
            &head(),
        );
        assert!(r.subject.contains("monthly limit"), "{}", r.subject);
        for body in both(&r) {
            for fact in [
                "$100.00",
                "$90.00",
                "$25.00",
                "1 January 2027, 00:00 (America/New_York)",
                "raise or remove the limit",
            ] {
                assert!(body.contains(fact), "{fact} in {body}");
            }
        }
    }

    #[test]
    fn html_is_a_complete_document_and_text_has_no_markup() {
        let r = render(
            &Notice::AutoTopupResumed(Resumption {
                by: ResumedBy::Support,
                at: AT,
            }),
            "Ada",
            &head(),
        );
        assert!(r.html.starts_with("<!DOCTYPE html>"));
        assert!(r.html.trim_end().ends_with("</html>"));
        assert!(!r.text.contains('<'));
    }
}

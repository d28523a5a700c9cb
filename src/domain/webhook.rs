//! Webhooks topupd sends to the host, as the Standard Webhooks specification has them: the
//! event types, what each event says, how a message is signed, and when a failed delivery
//! is tried again.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use super::{
    auto_topup::PauseReason,
    credits::Millicredits,
    notice::{Notice, Trigger},
    validation::FieldErrors,
};
use crate::clock::{Millis, rfc3339};

/// What an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
pub enum EventType {
    /// A debit took the balance below the account's low-balance line.
    #[schema(rename = "balance.low")]
    BalanceLow,
    /// A debit was refused for want of credits, the first since the balance last changed.
    #[schema(rename = "balance.depleted")]
    BalanceDepleted,
    #[schema(rename = "topup.succeeded")]
    TopupSucceeded,
    #[schema(rename = "topup.failed")]
    TopupFailed,
    /// The bank asks the customer to authenticate the payment.
    #[schema(rename = "topup.requires_action")]
    TopupRequiresAction,
    #[schema(rename = "auto_topup.paused")]
    AutoTopupPaused,
    #[schema(rename = "auto_topup.resumed")]
    AutoTopupResumed,
    /// Auto top-up was turned on or off, or what it charges changed.
    #[schema(rename = "auto_topup.settings_changed")]
    AutoTopupSettingsChanged,
    /// A top-up's charge was refunded at the provider, so its credits were removed.
    #[schema(rename = "credits.refunded")]
    CreditsRefunded,
    /// A top-up's charge was disputed, or its dispute closed.
    #[schema(rename = "credits.disputed")]
    CreditsDisputed,
}

impl EventType {
    pub const ALL: [Self; 10] = [
        Self::BalanceLow,
        Self::BalanceDepleted,
        Self::TopupSucceeded,
        Self::TopupFailed,
        Self::TopupRequiresAction,
        Self::AutoTopupPaused,
        Self::AutoTopupResumed,
        Self::AutoTopupSettingsChanged,
        Self::CreditsRefunded,
        Self::CreditsDisputed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BalanceLow => "balance.low",
            Self::BalanceDepleted => "balance.depleted",
            Self::TopupSucceeded => "topup.succeeded",
            Self::TopupFailed => "topup.failed",
            Self::TopupRequiresAction => "topup.requires_action",
            Self::AutoTopupPaused => "auto_topup.paused",
            Self::AutoTopupResumed => "auto_topup.resumed",
            Self::AutoTopupSettingsChanged => "auto_topup.settings_changed",
            Self::CreditsRefunded => "credits.refunded",
            Self::CreditsDisputed => "credits.disputed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Subscribes to every event type, those added later included.
pub const ALL_EVENTS: &str = "*";

/// The event types an endpoint receives: `["*"]` for all, or a list of known types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription(Vec<String>);

impl Subscription {
    /// Checks a requested list under `field`: not empty, every entry a known type or `*`.
    pub fn parse(field: &str, events: &[String]) -> Result<Self, FieldErrors> {
        if events.is_empty() {
            return Err(FieldErrors::single(
                field,
                "must list at least one event type, or \"*\" for all",
            ));
        }
        if let Some(unknown) = events
            .iter()
            .find(|e| *e != ALL_EVENTS && EventType::parse(e).is_none())
        {
            return Err(FieldErrors::single(
                field,
                format!(
                    "{unknown:?} is not an event type; they are \"*\" and {}",
                    EventType::ALL.map(EventType::as_str).join(", ")
                ),
            ));
        }
        let mut list = events.to_vec();
        if list.iter().any(|e| e == ALL_EVENTS) {
            list = vec![ALL_EVENTS.to_owned()];
        }
        list.sort();
        list.dedup();
        Ok(Self(list))
    }

    /// A list stored by [`Self::to_json`].
    pub fn from_json(stored: &str) -> Option<Self> {
        serde_json::from_str(stored).ok().map(Self)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).expect("a list of strings serializes")
    }

    pub fn wants(&self, event: EventType) -> bool {
        self.0
            .iter()
            .any(|e| e == ALL_EVENTS || e == event.as_str())
    }

    pub fn types(&self) -> &[String] {
        &self.0
    }
}

/// Where deliveries go: an absolute `http` or `https` URL with a host and no credentials.
pub fn check_url(field: &str, url: &str) -> Result<(), FieldErrors> {
    let problem = match reqwest::Url::parse(url) {
        Err(e) => Some(format!("must be an absolute URL ({e})")),
        Ok(_) if url.len() > 2000 => Some("must be at most 2000 characters".to_owned()),
        Ok(u) if !matches!(u.scheme(), "http" | "https") => {
            Some("must be an http or https URL".to_owned())
        }
        Ok(u) if u.host_str().is_none_or(str::is_empty) => Some("must name a host".to_owned()),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            Some("must not carry credentials; deliveries are signed instead".to_owned())
        }
        Ok(_) => None,
    };
    problem.map_or(Ok(()), |p| Err(FieldErrors::single(field, p)))
}

const SECRET_PREFIX: &str = "whsec_";

/// A new signing secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

/// The `webhook-signature` header: a `v1,` HMAC-SHA256 signature of `id.timestamp.body` by
/// each secret, space-separated (more than one while a rotated secret is still valid).
pub fn signature(secrets: &[&str], id: &str, timestamp_secs: i64, body: &str) -> String {
    secrets
        .iter()
        .map(|secret| {
            let key = STANDARD
                .decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
                .expect("secrets are made by new_secret");
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
            mac.update(format!("{id}.{timestamp_secs}.{body}").as_bytes());
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How many times a delivery is tried before it fails and its endpoint is disabled.
pub const MAX_ATTEMPTS: u32 = 9;

/// How long after its `attempts`-th failed try a delivery is tried again: 30 s, then four
/// times longer each time up to 10 hours, so the nine tries span more than a day
/// (31 h 22 min); `None` once it has had all of them.
pub fn retry_delay(attempts: u32) -> Option<Duration> {
    const FIRST: Duration = Duration::from_secs(30);
    const LONGEST: Duration = Duration::from_secs(10 * 3600);
    if attempts == 0 || attempts >= MAX_ATTEMPTS {
        return None;
    }
    Some(
        FIRST
            .saturating_mul(4u32.saturating_pow(attempts - 1))
            .min(LONGEST),
    )
}

/// The body of a message: its type, when it happened, and what it says, with the account.
pub fn body(event: EventType, account_id: &str, data: Value, at: Millis) -> String {
    let mut data = match data {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    data.insert("account_id".into(), account_id.into());
    json!({ "type": event.as_str(), "timestamp": rfc3339(at), "data": data }).to_string()
}

/// The events a notice reports to the host, each with its data: the notice's facts
/// (credits as numbers of credits, amounts in cents, times in milliseconds), without its
/// kind. Pauses and resumptions are reported where they happen, not here.
pub fn events_of(notice: &Notice) -> Vec<(EventType, Value)> {
    let event = match notice {
        Notice::TopupReceipt(_) => EventType::TopupSucceeded,
        Notice::PaymentFailed(_) => EventType::TopupFailed,
        Notice::AuthenticationRequired(_) => EventType::TopupRequiresAction,
        Notice::AutoTopupChanged(_) => EventType::AutoTopupSettingsChanged,
        Notice::CreditsRefunded(_) => EventType::CreditsRefunded,
        Notice::DisputeOpened(_) | Notice::DisputeClosed(_) => EventType::CreditsDisputed,
        Notice::TopupAnnounced(_)
        | Notice::AutoTopupResumed(_)
        | Notice::CardAtRisk(_)
        | Notice::LowBalance(_)
        | Notice::SpendCapReached(_)
        | Notice::WebhookEndpointDisabled(_) => return Vec::new(),
    };
    let mut data = serde_json::to_value(notice).expect("a notice serializes");
    if let Value::Object(map) = &mut data {
        map.remove("kind");
        if let Notice::DisputeOpened(_) | Notice::DisputeClosed(_) = notice {
            map.remove("account_id");
        }
        if let Notice::AuthenticationRequired(_) = notice {
            // The bank only asks this of automatic charges; the customer pays on-session.
            map.insert("trigger".into(), json!(Trigger::Automatic));
        }
    }
    vec![(event, data)]
}

/// The data of an `auto_topup.paused` event: why, the decline code when a charge was
/// declined, and when it lifts by itself, if it does.
pub fn paused(reason: PauseReason, code: Option<&str>, until: Option<Millis>, at: Millis) -> Value {
    json!({ "reason": reason.as_str(), "decline_code": code, "until": until, "at": at })
}

/// The data of an `auto_topup.resumed` event: what ended the pause (`payment`, `support`,
/// `new_month`, or `customer` for a raised spend cap).
pub fn resumed(by: &str, at: Millis) -> Value {
    json!({ "by": by, "at": at })
}

/// Whether a debit from `before` to `after` took the balance below `line`.
pub fn fell_below(before: Millicredits, after: Millicredits, line: Millicredits) -> bool {
    before >= line && after < line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{money::Cents, notice::Receipt};

    #[test]
    fn signs_as_the_specification_example_does() {
        // The example of the Standard Webhooks specification (and its libraries' tests).
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&[secret], id, 1_614_265_330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_rotated_secret_signs_beside_the_new_one() {
        let (old, new) = (new_secret(), new_secret());
        let both = signature(&[&new, &old], "msg_1", 1, "{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(
            parts,
            [
                signature(&[&new], "msg_1", 1, "{}"),
                signature(&[&old], "msg_1", 1, "{}")
            ]
        );
        assert_ne!(parts[0], parts[1]);
    }

    #[test]
    fn secrets_are_prefixed_base64_of_32_random_bytes() {
        let secret = new_secret();
        let raw = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("prefixed"))
            .expect("base64");
        assert_eq!(raw.len(), 32);
        assert_ne!(secret, new_secret());
    }

    #[test]
    fn retries_grow_fourfold_to_ten_hours_and_span_more_than_a_day() {
        let delays: Vec<Duration> = (1..MAX_ATTEMPTS).filter_map(retry_delay).collect();
        assert_eq!(delays.len() as u32, MAX_ATTEMPTS - 1);
        assert_eq!(delays[0], Duration::from_secs(30));
        assert_eq!(delays[1], Duration::from_secs(120));
        assert!(delays.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(delays.last(), Some(&Duration::from_secs(36_000)));
        let span: Duration = delays.iter().sum();
        assert!(span >= Duration::from_secs(24 * 3600), "{span:?}");
        assert_eq!(retry_delay(MAX_ATTEMPTS), None);
        assert_eq!(retry_delay(0), None);
    }

    #[test]
    fn subscriptions_name_known_types_or_all() {
        let list = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let some = Subscription::parse("events", &list(&["topup.failed", "balance.low"]))
            .expect("known types");
        assert!(some.wants(EventType::BalanceLow));
        assert!(!some.wants(EventType::TopupSucceeded));
        let all = Subscription::parse("events", &list(&["*", "topup.failed"])).expect("all");
        assert_eq!(all.types(), ["*"]);
        assert!(EventType::ALL.iter().all(|&t| all.wants(t)));
        assert_eq!(Subscription::from_json(&some.to_json()), Some(some));
        for bad in [list(&[]), list(&["topup.exploded"])] {
            let error = Subscription::parse("events", &bad).expect_err("refused");
            assert_eq!(error.iter().next().map(|(f, _)| f), Some("events"));
        }
    }

    #[test]
    fn urls_are_absolute_http_without_credentials() {
        for good in ["https://host.example/hooks", "http://127.0.0.1:8080/in"] {
            assert!(check_url("url", good).is_ok(), "{good}");
        }
        for bad in [
            "/relative",
            "ftp://host.example/",
            "https://user:pw@host.example/",
            "not a url",
        ] {
            assert!(check_url("url", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_receipt_is_reported_as_a_successful_top_up() {
        let notice = Notice::TopupReceipt(Receipt {
            trigger: Trigger::Automatic,
            credits: Millicredits::whole(1000),
            amount: Cents(1000),
            transaction_id: "pi_1".into(),
            new_balance: Millicredits::whole(1100),
            at: 5,
        });
        let [(event, data)] = events_of(&notice).try_into().expect("one event");
        assert_eq!(event, EventType::TopupSucceeded);
        let body: Value = serde_json::from_str(&body(event, "acc_1", data, 0)).expect("json");
        assert_eq!(body["type"], "topup.succeeded");
        assert_eq!(body["data"]["account_id"], "acc_1");
        assert_eq!(body["data"]["amount"], 1000);
        assert_eq!(body["data"]["transaction_id"], "pi_1");
        assert!(body["data"].get("kind").is_none());
    }

    #[test]
    fn low_means_crossing_the_line_downwards() {
        let m = Millicredits::whole;
        assert!(fell_below(m(100), m(99), m(100)));
        assert!(!fell_below(m(99), m(50), m(100)));
        assert!(!fell_below(m(200), m(100), m(100)));
    }
}

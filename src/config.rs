//! Runtime configuration: the embedded defaults (which are `deploy/config.example.toml`),
//! then an optional TOML file, then `TOPUPD_*` environment variables. Validated once at
//! start; every error names the key at fault.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use lettre::message::Mailbox;
use rust_decimal::Decimal;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{
    auto_topup::SMALLEST_AUTO_CREDITS, credits::Millicredits, pricing::Catalogue, schedule,
};

const DEFAULTS: &str = include_str!("../deploy/config.example.toml");
const ENV_PREFIX: &str = "TOPUPD_";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Price of one credit in US cents.
    pub credit_price_cents: i64,
    /// Balance below which an account is flagged `low_balance_warning`.
    pub low_balance_warning_credits: Decimal,
    pub http: HttpConfig,
    pub ops: OpsConfig,
    pub database: DatabaseConfig,
    pub pricing: PricingConfig,
    pub payments: PaymentsConfig,
    pub auto_topup: AutoTopupConfig,
    pub email: EmailConfig,
    pub webhooks: WebhooksConfig,
    pub billing_page: BillingPageConfig,
    pub console: ConsoleConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    pub request_timeout_secs: u64,
    pub shutdown_grace_secs: u64,
    pub max_body_bytes: usize,
    /// Requests answered at once; those beyond are refused at once with 503.
    pub max_requests_in_flight: usize,
    /// The origin of the links to topupd's pages.
    pub public_url: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    /// Address of `/metrics` and the probes; empty for none.
    pub listen: String,
}

impl OpsConfig {
    /// The address to listen on, if any; validated at load.
    pub fn address(&self) -> Option<SocketAddr> {
        self.listen.parse().ok()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://...` or `postgres://...`; secret because it may carry a password.
    pub url: SecretString,
    pub max_connections: u32,
    pub busy_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PricingConfig {
    /// Catalogue file; empty for the built-in one.
    pub catalogue: String,
}

impl PricingConfig {
    /// The catalogue file, or the built-in catalogue when none is set.
    pub fn load(&self) -> Result<Catalogue, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            key: "pricing.catalogue",
            problem,
        };
        let text = match self.catalogue.as_str() {
            "" => Catalogue::BUILT_IN.to_owned(),
            path => std::fs::read_to_string(path)
                .map_err(|e| invalid(format!("cannot read {path}: {e}")))?,
        };
        Catalogue::parse(&text).map_err(|e| match self.catalogue.as_str() {
            "" => invalid(format!("the built-in catalogue: {e}")),
            path => invalid(format!("{path}: {e}")),
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    pub provider: ProviderKind,
    pub base_url: String,
    pub secret_key: SecretString,
    pub api_version: String,
    pub webhook_secrets: Vec<SecretString>,
    pub webhook_tolerance_secs: i64,
    pub webhook_max_attempts: u32,
    pub webhook_retry_base_secs: u64,
    pub webhook_retry_max_secs: u64,
    pub event_sweep_interval_secs: u64,
    pub event_sweep_lookback_secs: i64,
    pub currency: String,
    pub idempotency_prefix: String,
    /// Handed to a card form with a SetupIntent's client secret; not a secret.
    pub publishable_key: String,
    pub return_url: String,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub max_requests_per_sec: u32,
    pub max_requests_per_sec_per_endpoint: u32,
    pub min_topup_cents: i64,
    pub max_topup_cents: i64,
    pub packages: Vec<i64>,
    pub stub: StubConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoTopupConfig {
    pub scan_schedule: String,
    pub rate_limit_hours: u32,
    pub scan_batch_size: u32,
    pub charge_concurrency: u32,
    pub reconcile_interval_secs: u64,
    pub reconcile_after_secs: u64,
    pub recheck_after_secs: u64,
    pub flag_after_hours: u32,
    pub authentication_expiry_hours: u32,
    pub decision_retention_days: u32,
}

impl AutoTopupConfig {
    pub fn window_ms(&self) -> i64 {
        i64::from(self.rate_limit_hours) * 3_600_000
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Stub,
    Stripe,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stub => "stub",
            Self::Stripe => "stripe",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StubConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub transport: EmailTransport,
    pub folder: PathBuf,
    pub from: String,
    pub product_name: String,
    pub billing_url: String,
    pub support_email: String,
    pub poll_interval_ms: u64,
    pub batch_size: u32,
    pub lease_secs: u64,
    pub retry_base_secs: u64,
    pub retry_max_secs: u64,
    pub max_attempts: u32,
    pub smtp: SmtpConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailTransport {
    Smtp,
    File,
    Log,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: String,
    pub password: SecretString,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

impl EmailConfig {
    /// The sender as a mailbox; validated at load.
    pub fn from_mailbox(&self) -> Mailbox {
        self.from.parse().expect("email.from was validated at load")
    }

    /// The domain of the sender, which also names Message-IDs.
    pub fn message_id_domain(&self) -> String {
        self.from_mailbox().email.domain().to_owned()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingPageConfig {
    pub link_ttl_secs: u64,
    pub email_link_ttl_hours: u32,
    /// Empty: a key kept in the database.
    pub link_signing_key: SecretString,
    pub idle_timeout_secs: u64,
    pub session_max_hours: u32,
    /// `#rrggbb`; validated at load.
    pub brand_color: String,
    pub seller_name: String,
    pub seller_address: String,
    pub seller_tax_id: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    pub idle_timeout_secs: u64,
    pub session_max_hours: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    pub poll_interval_ms: u64,
    pub batch_size: u32,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Human,
    Json,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(String),
    /// Unreadable values, each named by its key; a secret key's value is never shown.
    #[error("invalid configuration: {0}")]
    Unreadable(String),
    #[error("invalid configuration: {key}: {problem}")]
    Invalid { key: &'static str, problem: String },
}

impl Config {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULTS));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // TOPUPD_CONFIG names the file; TOPUPD_TEST_* belong to the test suite and
        // TOPUPD_BENCH_* to the benchmarks.
        let env = Env::prefixed(ENV_PREFIX).split("__").filter(|key| {
            let key = key.as_str().to_ascii_lowercase();
            key != "config" && !key.starts_with("test_") && !key.starts_with("bench_")
        });
        let mut figment = figment.merge(env);
        // The environment provider reads `0123` as the number 123; a secret is the text
        // as written.
        for key in SECRET_KEYS
            .iter()
            .filter(|key| **key != "payments.webhook_secrets")
        {
            let var = format!("{ENV_PREFIX}{}", key.replace('.', "__"));
            // Names in any case, as the environment provider reads them.
            let raw = std::env::vars().find(|(name, _)| name.eq_ignore_ascii_case(&var));
            if let Some((_, raw)) = raw {
                figment = figment.merge((*key, raw));
            }
        }
        Self::extract(figment)
    }

    /// The embedded defaults alone, ignoring the environment.
    pub fn defaults() -> Self {
        Self::extract(Figment::from(Toml::string(DEFAULTS)))
            .expect("the embedded defaults are a valid configuration")
    }

    fn extract(figment: Figment) -> Result<Self, ConfigError> {
        let config: Self = figment.extract().map_err(unreadable)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if !(1..=100_000).contains(&self.credit_price_cents) {
            return invalid("credit_price_cents", "must be between 1 and 100000");
        }
        if self.low_balance_warning_credits.is_sign_negative()
            || Millicredits::from_credits(self.low_balance_warning_credits).is_err()
        {
            return invalid(
                "low_balance_warning_credits",
                "must be at least 0 with at most 3 decimals",
            );
        }
        if self.http.request_timeout_secs == 0 {
            return invalid("http.request_timeout_secs", "must be at least 1");
        }
        if !self.ops.listen.is_empty() && self.ops.address().is_none() {
            return invalid(
                "ops.listen",
                "must be empty or an address such as 127.0.0.1:9464",
            );
        }
        if self.http.max_body_bytes < 1024 {
            return invalid("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.max_requests_in_flight == 0 {
            return invalid("http.max_requests_in_flight", "must be at least 1");
        }
        if !is_web_url(&self.http.public_url) {
            return invalid(
                "http.public_url",
                "must be an http:// or https:// URL with a host",
            );
        }
        let url = self.database.url.expose_secret();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres://")
            || url.starts_with("postgresql://"))
        {
            return invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            );
        }
        let readable = match url.starts_with("sqlite:") {
            true => url.parse::<sqlx::sqlite::SqliteConnectOptions>().is_ok(),
            false => url.parse::<sqlx::postgres::PgConnectOptions>().is_ok(),
        };
        if !readable {
            return invalid(
                "database.url",
                "cannot be read as a database URL (its value is not shown: it may hold a password)",
            );
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "must be at least 1");
        }
        self.pricing.load()?;
        self.validate_payments()?;
        self.validate_auto_topup()?;
        self.validate_billing_page()?;
        self.validate_console()?;
        self.validate_webhooks()?;
        self.validate_email()
    }

    fn validate_console(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        if !(60..=86_400).contains(&self.console.idle_timeout_secs) {
            return invalid("console.idle_timeout_secs", "must be from 60 to 86400");
        }
        if !(1..=24).contains(&self.console.session_max_hours) {
            return invalid("console.session_max_hours", "must be from 1 to 24");
        }
        Ok(())
    }

    fn validate_billing_page(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let page = &self.billing_page;
        if !(1..=3600).contains(&page.link_ttl_secs) {
            return invalid("billing_page.link_ttl_secs", "must be from 1 to 3600");
        }
        if !(1..=720).contains(&page.email_link_ttl_hours) {
            return invalid("billing_page.email_link_ttl_hours", "must be from 1 to 720");
        }
        let key = page.link_signing_key.expose_secret();
        if !key.is_empty() && key.chars().count() < 32 {
            return invalid(
                "billing_page.link_signing_key",
                "must be empty or at least 32 characters",
            );
        }
        if !(60..=86_400).contains(&page.idle_timeout_secs) {
            return invalid("billing_page.idle_timeout_secs", "must be from 60 to 86400");
        }
        if !(1..=168).contains(&page.session_max_hours) {
            return invalid("billing_page.session_max_hours", "must be from 1 to 168");
        }
        let colour = page.brand_color.strip_prefix('#').unwrap_or_default();
        if colour.len() != 6 || !colour.bytes().all(|b| b.is_ascii_hexdigit()) {
            return invalid(
                "billing_page.brand_color",
                "must be a colour such as #2f4ad0",
            );
        }
        Ok(())
    }

    fn validate_auto_topup(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let auto = &self.auto_topup;
        if let Err(problem) = schedule::parse(&auto.scan_schedule) {
            return invalid(
                "auto_topup.scan_schedule",
                &format!(
                    "must be empty (no scheduled scans) or a cron expression with six fields (seconds first), such as \"0 */30 * * * *\": {problem}"
                ),
            );
        }
        if auto.rate_limit_hours == 0 {
            return invalid("auto_topup.rate_limit_hours", "must be at least 1");
        }
        if !(1..=10_000).contains(&auto.scan_batch_size) {
            return invalid("auto_topup.scan_batch_size", "must be between 1 and 10000");
        }
        if !(1..=256).contains(&auto.charge_concurrency) {
            return invalid("auto_topup.charge_concurrency", "must be between 1 and 256");
        }
        if auto.reconcile_interval_secs == 0 {
            return invalid("auto_topup.reconcile_interval_secs", "must be at least 1");
        }
        if auto.recheck_after_secs == 0 {
            return invalid("auto_topup.recheck_after_secs", "must be at least 1");
        }
        if auto.authentication_expiry_hours == 0 {
            return invalid(
                "auto_topup.authentication_expiry_hours",
                "must be at least 1",
            );
        }
        if auto.decision_retention_days == 0 {
            return invalid("auto_topup.decision_retention_days", "must be at least 1");
        }
        if auto.flag_after_hours == 0 {
            return invalid("auto_topup.flag_after_hours", "must be at least 1");
        }
        Ok(())
    }

    fn validate_payments(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let payments = &self.payments;
        if payments.provider == ProviderKind::Stripe {
            if !is_web_url(&payments.base_url) {
                return invalid(
                    "payments.base_url",
                    "must be an http:// or https:// URL with a host",
                );
            }
            if payments.secret_key.expose_secret().is_empty() {
                return invalid(
                    "payments.secret_key",
                    "is required for provider = \"stripe\"",
                );
            }
            if payments
                .webhook_secrets
                .iter()
                .all(|s| s.expose_secret().is_empty())
            {
                return invalid(
                    "payments.webhook_secrets",
                    "at least one is required for provider = \"stripe\"",
                );
            }
        }
        if !payments.return_url.is_empty() && !is_web_url(&payments.return_url) {
            return invalid(
                "payments.return_url",
                "must be empty (Stripe.js confirms payments) or an http:// or https:// URL with a host",
            );
        }
        if payments.webhook_tolerance_secs <= 0 {
            return invalid("payments.webhook_tolerance_secs", "must be at least 1");
        }
        if !is_api_version(&payments.api_version) {
            return invalid(
                "payments.api_version",
                "must be a Stripe API version such as 2026-09-30.endive",
            );
        }
        if payments.event_sweep_interval_secs == 0 {
            return invalid("payments.event_sweep_interval_secs", "must be at least 1");
        }
        if payments.event_sweep_lookback_secs < 3600 {
            return invalid(
                "payments.event_sweep_lookback_secs",
                "must be at least 3600 (an hour)",
            );
        }
        if payments.webhook_max_attempts == 0 {
            return invalid("payments.webhook_max_attempts", "must be at least 1");
        }
        if payments.webhook_retry_base_secs == 0
            || payments.webhook_retry_base_secs > payments.webhook_retry_max_secs
        {
            return invalid(
                "payments.webhook_retry_base_secs",
                "must be at least 1 and at most payments.webhook_retry_max_secs",
            );
        }
        if payments.currency.len() != 3
            || !payments.currency.bytes().all(|b| b.is_ascii_lowercase())
        {
            return invalid(
                "payments.currency",
                "must be a lowercase ISO currency code such as usd",
            );
        }
        if payments.idempotency_prefix.is_empty()
            || payments.idempotency_prefix.contains(char::is_whitespace)
        {
            return invalid(
                "payments.idempotency_prefix",
                "must be non-empty without spaces",
            );
        }
        if payments.connect_timeout_secs == 0 || payments.request_timeout_secs == 0 {
            return invalid(
                "payments.request_timeout_secs",
                "timeouts must be at least 1 second",
            );
        }
        if payments.retry_base_ms == 0 || payments.retry_max_ms < payments.retry_base_ms {
            return invalid(
                "payments.retry_max_ms",
                "retry_base_ms must be at least 1 and retry_max_ms at least retry_base_ms",
            );
        }
        for (key, rate) in [
            (
                "payments.max_requests_per_sec",
                payments.max_requests_per_sec,
            ),
            (
                "payments.max_requests_per_sec_per_endpoint",
                payments.max_requests_per_sec_per_endpoint,
            ),
        ] {
            if !(1..=10_000).contains(&rate) {
                return invalid(key, "must be between 1 and 10000");
            }
        }
        if payments.min_topup_cents < 1 || payments.max_topup_cents < payments.min_topup_cents {
            return invalid(
                "payments.max_topup_cents",
                "min_topup_cents must be at least 1 and max_topup_cents at least min_topup_cents",
            );
        }
        // Every automatic top-up must be a purchase the minimum allows, or a due account
        // would never be charged.
        let smallest_auto = SMALLEST_AUTO_CREDITS * self.credit_price_cents;
        if payments.min_topup_cents > smallest_auto {
            return invalid(
                "payments.min_topup_cents",
                &format!(
                    "must be at most {smallest_auto}, the price of the smallest automatic top-up ({SMALLEST_AUTO_CREDITS} credits)"
                ),
            );
        }
        let package_cents = |credits: i64| credits.checked_mul(self.credit_price_cents);
        if payments.packages.iter().any(|&credits| {
            credits <= 0
                || package_cents(credits)
                    .is_none_or(|c| c < payments.min_topup_cents || c > payments.max_topup_cents)
        }) {
            return invalid(
                "payments.packages",
                "each package must cost between min_topup_cents and max_topup_cents",
            );
        }
        Ok(())
    }

    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let webhooks = &self.webhooks;
        if webhooks.poll_interval_ms < 10 {
            return invalid("webhooks.poll_interval_ms", "must be at least 10");
        }
        if !(1..=1000).contains(&webhooks.batch_size) {
            return invalid("webhooks.batch_size", "must be between 1 and 1000");
        }
        if !(1..=60).contains(&webhooks.timeout_secs) {
            return invalid("webhooks.timeout_secs", "must be between 1 and 60");
        }
        Ok(())
    }

    fn validate_email(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: &str| {
            Err(ConfigError::Invalid {
                key,
                problem: problem.to_owned(),
            })
        };
        let email = &self.email;
        if email.from.parse::<Mailbox>().is_err() {
            return invalid(
                "email.from",
                "must be an address such as \"Billing <billing@example.com>\"",
            );
        }
        if email.product_name.trim().is_empty() {
            return invalid("email.product_name", "must not be empty");
        }
        if !email.billing_url.is_empty() && !is_web_url(&email.billing_url) {
            return invalid(
                "email.billing_url",
                "must be empty (topupd's billing page) or an http:// or https:// URL with a host",
            );
        }
        if email.support_email.parse::<lettre::Address>().is_err() {
            return invalid("email.support_email", "must be an email address");
        }
        if email.poll_interval_ms < 10 {
            return invalid("email.poll_interval_ms", "must be at least 10");
        }
        if !(1..=1000).contains(&email.batch_size) {
            return invalid("email.batch_size", "must be between 1 and 1000");
        }
        if email.retry_base_secs == 0 || email.retry_max_secs < email.retry_base_secs {
            return invalid(
                "email.retry_max_secs",
                "retry_base_secs must be at least 1 and retry_max_secs at least retry_base_secs",
            );
        }
        if email.max_attempts == 0 {
            return invalid("email.max_attempts", "must be at least 1");
        }
        if email.smtp.timeout_secs == 0 {
            return invalid("email.smtp.timeout_secs", "must be at least 1");
        }
        // A send is several SMTP commands, each bounded by the timeout.
        if email.lease_secs <= email.smtp.timeout_secs * 4 {
            return invalid(
                "email.lease_secs",
                "must be more than 4 times email.smtp.timeout_secs",
            );
        }
        if email.transport == EmailTransport::Smtp && !is_host(&email.smtp.host) {
            return invalid(
                "email.smtp.host",
                "must be a host name or IP address for transport = \"smtp\"",
            );
        }
        if email.transport == EmailTransport::Smtp
            && !email.smtp.username.is_empty()
            && email.smtp.password.expose_secret().is_empty()
        {
            return invalid(
                "email.smtp.password",
                "must be set when email.smtp.username is",
            );
        }
        Ok(())
    }

    /// The low-balance line in millicredits.
    pub fn low_balance_warning(&self) -> Millicredits {
        Millicredits::from_credits(self.low_balance_warning_credits).expect("validated at load")
    }
}

/// Keys whose values are secrets (or, for `database.url`, may hold one).
const SECRET_KEYS: &[&str] = &[
    "database.url",
    "payments.secret_key",
    "payments.webhook_secrets",
    "email.smtp.password",
    "billing_page.link_signing_key",
];

/// figment's errors, each naming its key, with the value of a secret key left out and
/// the lines of a TOML file quoted in a parse error dropped (one may hold a secret).
fn unreadable(errors: figment::Error) -> ConfigError {
    use figment::error::{Actual, Kind};
    let hidden = || Actual::Other("a value (not shown: the key is secret)".to_owned());
    let lines: Vec<String> = errors
        .into_iter()
        .map(|mut error| {
            let key = error.path.join(".").to_ascii_lowercase();
            if SECRET_KEYS
                .iter()
                .any(|secret| key == *secret || key.starts_with(&format!("{secret}.")))
            {
                error.kind = match error.kind {
                    Kind::InvalidType(_, expected) => Kind::InvalidType(hidden(), expected),
                    Kind::InvalidValue(_, expected) => Kind::InvalidValue(hidden(), expected),
                    Kind::Unsupported(_) => Kind::Unsupported(hidden()),
                    Kind::Message(_) => Kind::Message("a value that cannot be used".to_owned()),
                    kind => kind,
                };
            }
            let quoted = |line: &&str| {
                let line = line.trim_start();
                line.starts_with('|')
                    || line.split_once(" |").is_some_and(|(n, _)| {
                        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                    })
            };
            error
                .to_string()
                .lines()
                .filter(|line| !quoted(line))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    ConfigError::Unreadable(lines.join("; "))
}

/// A DNS name or an IP address, as a TLS connection can be opened to.
fn is_host(host: &str) -> bool {
    let label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    host.parse::<std::net::IpAddr>().is_ok()
        || (host.len() <= 253 && host.trim_end_matches('.').split('.').all(label))
}

/// An absolute `http://` or `https://` URL naming a host.
fn is_web_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|url| {
        matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty())
    })
}

/// `YYYY-MM-DD`, optionally followed by `.` and a release name (`2026-09-30.endive`).
fn is_api_version(version: &str) -> bool {
    let (date, name) = version.split_once('.').unwrap_or((version, "a"));
    let digits =
        |part: &str, len: usize| part.len() == len && part.bytes().all(|b| b.is_ascii_digit());
    let mut parts = date.split('-');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(y), Some(m), Some(d), None) if digits(y, 4) && digits(m, 2) && digits(d, 2)
    ) && !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase())
}

#[cfg(test)]
// figment's Jail closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_need_no_file_and_use_sqlite_in_the_working_directory() {
        let config = Config::defaults();
        assert_eq!(config.database.url.expose_secret(), "sqlite://topupd.db");
        assert_eq!(config.credit_price_cents, 1);
        assert_eq!(config.log.format, LogFormat::Human);
    }

    #[test]
    fn api_versions_are_dates_with_an_optional_release_name() {
        for good in ["2026-09-30.endive", "2024-06-20"] {
            assert!(is_api_version(good), "{good}");
        }
        for bad in [
            "",
            "latest",
            "2026-9-30",
            "2026-09-30.",
            "2026-09-30.Endive",
            "2026-09-30-01",
        ] {
            assert!(!is_api_version(bad), "{bad}");
        }
    }

    #[test]
    fn file_then_environment_override_the_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file("topupd.toml", "[http]\nlisten = \"0.0.0.0:9000\"\n")?;
            jail.set_env("TOPUPD_DATABASE__URL", "postgres://u@h/db");
            jail.set_env("TOPUPD_HTTP__LISTEN", "127.0.0.1:9100");
            jail.set_env("TOPUPD_TEST_POSTGRES_URL", "postgres://ignored");
            jail.set_env("TOPUPD_BENCH_POSTGRES_URL", "postgres://ignored");
            let config = Config::load(Some(Path::new("topupd.toml"))).expect("valid");
            assert_eq!(config.http.listen.port(), 9100);
            assert_eq!(config.database.url.expose_secret(), "postgres://u@h/db");
            Ok(())
        });
    }

    #[test]
    fn no_error_shows_the_value_of_a_secret_key() {
        Jail::expect_with(|jail| {
            jail.set_env("TOPUPD_PAYMENTS__WEBHOOK_SECRETS", "whsec_leaked");
            let err = Config::load(None).expect_err("not a list").to_string();
            assert!(
                err.to_lowercase().contains("payments.webhook_secrets"),
                "{err}"
            );
            assert!(!err.contains("whsec_leaked"), "{err}");
            jail.clear_env();
            for (key, value) in [
                ("email.smtp.password", "987654321"),
                ("payments.secret_key", "4242.25"),
                ("database.url", "31337"),
                ("billing_page.link_signing_key", "1234567890123"),
            ] {
                let (table, name) = key.rsplit_once('.').expect("a table");
                jail.create_file("typed.toml", &format!("[{table}]\n{name} = {value}\n"))?;
                let err = Config::load(Some(Path::new("typed.toml")))
                    .expect_err(key)
                    .to_string();
                assert!(err.to_lowercase().contains(key), "{err}");
                assert!(!err.contains(value), "{err}");
            }
            jail.create_file("leaky.toml", "[email.smtp]\npassword = hunter2 unquoted\n")?;
            let err = Config::load(Some(Path::new("leaky.toml")))
                .expect_err("unquoted")
                .to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("leaky.toml"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_password_of_digits_from_the_environment_is_a_password() {
        Jail::expect_with(|jail| {
            jail.set_env("TOPUPD_EMAIL__SMTP__PASSWORD", "012345");
            let config = Config::load(None).expect("digits");
            assert_eq!(config.email.smtp.password.expose_secret(), "012345");
            Ok(())
        });
    }

    /// Loads with `TOPUPD_<key>` set to `value`, which must be refused naming the key.
    fn refused_naming_the_key(jail: &mut Jail, key: &str, value: &str) {
        jail.set_env(format!("TOPUPD_{key}"), value);
        let err = Config::load(None).expect_err(key).to_string();
        assert!(
            err.contains(&key.to_lowercase().replace("__", ".")),
            "{err}"
        );
        jail.clear_env();
    }

    #[test]
    fn what_serve_would_refuse_is_refused_at_load() {
        Jail::expect_with(|jail| {
            for (key, value) in [
                ("AUTO_TOPUP__SCAN_SCHEDULE", "0 */30 * * * blursday"),
                ("AUTO_TOPUP__SCAN_SCHEDULE", "*/30 * * * *"),
                ("PRICING__CATALOGUE", "/nonexistent/pricing.toml"),
                ("EMAIL__BILLING_URL", "example.com/billing"),
                ("PAYMENTS__RETURN_URL", "not a url"),
                ("HTTP__PUBLIC_URL", "https://"),
                ("DATABASE__URL", "postgres://u:p@h:notaport/db"),
            ] {
                refused_naming_the_key(jail, key, value);
            }
            jail.create_file("pricing.toml", "[services.x]\nunit = \"parsec\"\n")?;
            jail.set_env("TOPUPD_PRICING__CATALOGUE", "pricing.toml");
            let err = Config::load(None).expect_err("bad catalogue").to_string();
            assert!(err.contains("pricing.catalogue: pricing.toml"), "{err}");
            jail.clear_env();
            jail.set_env("TOPUPD_EMAIL__TRANSPORT", "smtp");
            jail.set_env("TOPUPD_EMAIL__SMTP__HOST", "mail example.com");
            let err = Config::load(None).expect_err("bad host").to_string();
            assert!(err.contains("email.smtp.host"), "{err}");
            jail.set_env("TOPUPD_EMAIL__SMTP__HOST", "mail.example.com");
            jail.set_env("TOPUPD_EMAIL__SMTP__USERNAME", "topupd");
            let err = Config::load(None).expect_err("no password").to_string();
            assert!(err.contains("email.smtp.password"), "{err}");
            jail.set_env("TOPUPD_EMAIL__SMTP__PASSWORD", "pw");
            Config::load(None).expect("with a password");
            jail.clear_env();
            jail.set_env("TOPUPD_PAYMENTS__RETURN_URL", "");
            jail.set_env("TOPUPD_EMAIL__BILLING_URL", "https://example.com/billing");
            Config::load(None).expect("an empty return URL and a billing URL");
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("TOPUPD_HTTP__LISTEN", "not an address");
            let err = Config::load(None).expect_err("bad address").to_string();
            assert!(err.to_lowercase().contains("http.listen"), "{err}");
            jail.clear_env();

            jail.set_env("TOPUPD_DATABASE__URL", "mysql://x");
            let err = Config::load(None).expect_err("bad url").to_string();
            assert!(err.contains("database.url"), "{err}");
            jail.clear_env();

            jail.set_env("TOPUPD_AUTO_TOPUP__RECHECK_AFTER_SECS", "0");
            let err = Config::load(None).expect_err("no delay").to_string();
            assert!(err.contains("auto_topup.recheck_after_secs"), "{err}");
            jail.clear_env();

            for (key, value) in [
                ("BILLING_PAGE__LINK_TTL_SECS", "18446744073709551615"),
                ("BILLING_PAGE__EMAIL_LINK_TTL_HOURS", "721"),
                ("BILLING_PAGE__LINK_SIGNING_KEY", "too short"),
                ("BILLING_PAGE__SESSION_MAX_HOURS", "169"),
                ("CONSOLE__SESSION_MAX_HOURS", "25"),
                ("CONSOLE__IDLE_TIMEOUT_SECS", "59"),
                ("EMAIL__FROM", "not an address"),
                ("EMAIL__SUPPORT_EMAIL", "support"),
                ("OPS__LISTEN", "everywhere"),
            ] {
                refused_naming_the_key(jail, key, value);
            }

            // With Stripe, its keys must be there: each missing one is named.
            jail.set_env("TOPUPD_PAYMENTS__PROVIDER", "stripe");
            let err = Config::load(None).expect_err("no secret key").to_string();
            assert!(err.contains("payments.secret_key"), "{err}");
            jail.set_env("TOPUPD_PAYMENTS__SECRET_KEY", "sk_test_123");
            let err = Config::load(None)
                .expect_err("no webhook secret")
                .to_string();
            assert!(err.contains("payments.webhook_secrets"), "{err}");
            assert!(!err.contains("sk_test_123"), "{err}");
            jail.clear_env();

            // $10.02 is more than the smallest automatic top-up (1,001 credits) costs.
            jail.set_env("TOPUPD_PAYMENTS__MIN_TOPUP_CENTS", "1002");
            let err = Config::load(None)
                .expect_err("minimum too high")
                .to_string();
            assert!(err.contains("payments.min_topup_cents"), "{err}");
            jail.clear_env();

            jail.create_file("typo.toml", "[http]\nlisten_addr = \"0.0.0.0:1\"\n")?;
            let err = Config::load(Some(Path::new("typo.toml")))
                .expect_err("unknown key")
                .to_string();
            assert!(err.contains("listen_addr"), "{err}");

            let err = Config::load(Some(Path::new("missing.toml")))
                .expect_err("missing file")
                .to_string();
            assert!(err.contains("missing.toml"), "{err}");
            Ok(())
        });
    }
}

//! The `topupd` command line: wiring only.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use topupd::{
    app::{self, App, ProviderAt, Roles},
    cli,
    clock::{Clock, SystemClock},
    config::{Config, ProviderKind},
    db::{Db, DbError, PageRequest, accounts::AccountFilter, audit::Actor},
    domain::{api_key::Role, credits::Millicredits},
    payments::stub::{Stub, WebhookTarget, world::Faults},
    telemetry,
};

#[derive(Parser)]
#[command(
    version,
    about = "Prepaid API credits: metering core and auto top-up scheduler"
)]
struct Cli {
    /// Configuration file (TOML); every key is optional.
    #[arg(long, global = true, env = "TOPUPD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service: migrate, then serve until SIGTERM or SIGINT.
    Serve {
        /// What this process runs (comma-separated): api, scheduler (scans, reconciler,
        /// webhook processing), notices (the email sender). All by default.
        #[arg(long, value_delimiter = ',', value_parser = ["api", "scheduler", "notices"], default_value = "api,scheduler,notices")]
        roles: Vec<String>,
    },
    /// Apply database migrations, say which, and exit.
    Migrate,
    /// Check the configuration as `serve` would, without touching the database; exit 2
    /// naming the key at fault.
    CheckConfig,
    /// Check every account's balance against its ledger; exit 1 on any mismatch.
    Verify,
    /// Compare the provider's successful charges for top-ups with the top-ups and ledger
    /// credits recorded since a date; print each mismatch and exit 1 on any (`serve` runs
    /// the same check daily). Every top-up a mismatch names is flagged for support.
    Reconcile {
        /// The first day (UTC) to check, as 2026-12-01, or an RFC 3339 instant.
        #[arg(long, value_parser = parse_since)]
        since: chrono::DateTime<chrono::Utc>,
        /// JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Run one auto top-up scan now and print what it did (`serve` runs them on schedule).
    Scan {
        /// Required: one scan, then exit.
        #[arg(long)]
        once: bool,
    },
    /// Run the stub payment provider on its own (for tests, demos and fault drills).
    StubProvider {
        #[arg(long, default_value = "127.0.0.1:12111")]
        listen: std::net::SocketAddr,
        /// Where to send signed webhooks, e.g. http://127.0.0.1:8080/v1/webhooks/payments.
        #[arg(long, requires = "webhook_secret")]
        webhook_url: Option<String>,
        /// The secret webhooks are signed with (one of payments.webhook_secrets).
        #[arg(long, env = "TOPUPD_STUB_WEBHOOK_SECRET")]
        webhook_secret: Option<String>,
        /// Faults to inject from the start, as the JSON that POST /_stub/faults takes,
        /// e.g. '{"latency_ms":20}' or '{"seed":7,"fail_before_rate":0.05,"drop_webhook_rate":0.3}'.
        #[arg(long, value_parser = parse_faults, default_value = "{}")]
        faults: Faults,
    },
    /// Manage API keys from the server itself (how the first admin key is made).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Find accounts.
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Act on an account's auto top-up as support does.
    #[command(subcommand, name = "auto-topup")]
    AutoTopup(AutoTopupCommand),
}

#[derive(Subcommand)]
enum AccountsCommand {
    /// Accounts with this email address (any case) or, without an @, this external id.
    Find {
        query: String,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AutoTopupCommand {
    /// End a pause, with a note kept in the audit log.
    Resume {
        account: String,
        #[arg(long)]
        note: String,
        /// Charge now if the balance is below the threshold, even inside the window (with
        /// the stub provider, through the stub `serve` runs, as `scan --once` does).
        #[arg(long)]
        try_now: bool,
        /// JSON instead of a sentence.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create {
        /// customer, service, support or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The account a customer key is bound to.
        #[arg(long)]
        account: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List every key (revoked ones too); secrets are never shown.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke { id: String },
}

fn parse_faults(s: &str) -> Result<Faults, String> {
    let faults: Faults =
        serde_json::from_str(s).map_err(|e| format!("invalid faults JSON: {e}"))?;
    faults.validate()?;
    Ok(faults)
}

fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(day) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|_| "expected a date such as 2026-12-01, or an RFC 3339 instant".to_owned())
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "expected customer, service, support or admin".to_owned())
}

// glibc's allocator spent a fifth of the API's CPU under load, much of it consolidating
// and splitting the chunks of request buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("topupd: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&config.log);
    match run(cli.command, config).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("topupd: {error:#}");
            // A missing or mismatched database is the command's setting, not a failure of
            // the work: the same code as a bad configuration.
            match error.downcast_ref::<DbError>() {
                Some(DbError::NotReady(..)) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve { roles } => {
            let shutdown = app::shutdown_signal();
            let roles = Roles {
                api: roles.iter().any(|r| r == "api"),
                scheduler: roles.iter().any(|r| r == "scheduler"),
                notices: roles.iter().any(|r| r == "notices"),
            };
            let listen = config.http.listen;
            let api = match roles.api {
                true => Some(bind(listen, "http.listen")?),
                false => None,
            };
            let ops = match config.ops.address() {
                Some(address) => Some(bind(address, "ops.listen")?),
                None => None,
            };
            let address = match &api {
                Some(listener) => listener.local_addr()?,
                None => listen,
            };
            let app = App::build_on_database_clock(config, address, ProviderAt::Configured).await?;
            app.log_start(roles);
            if let Some(ops) = &ops {
                tracing::info!(address = %ops.local_addr()?, "operations listener");
            }
            match &api {
                Some(_) => tracing::info!(%address, roles = %roles.names().join(","), "serving"),
                None => tracing::info!(roles = %roles.names().join(","), "running without the API"),
            }
            app.serve(api, ops, roles, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::StubProvider {
            listen,
            webhook_url,
            webhook_secret,
            faults,
        } => {
            let shutdown = app::shutdown_signal();
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listen on {listen}"))?;
            let webhooks = webhook_url
                .zip(webhook_secret)
                .map(|(url, secret)| WebhookTarget { url, secret });
            let cancel = CancellationToken::new();
            let stub = Stub::start(
                listener,
                Arc::new(SystemClock),
                webhooks,
                faults,
                cancel.clone(),
            )
            .await?;
            tracing::info!(address = %stub.base_url(), "stub payment provider serving");
            shutdown.await;
            cancel.cancel();
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan { once } => {
            if !once {
                anyhow::bail!(
                    "use `topupd scan --once`; `topupd serve` runs scans on auto_topup.scan_schedule"
                );
            }
            existing(&config).await?.close().await;
            let provider = match provider_for(&config, "scan --once").await {
                Ok(provider) => provider,
                Err(code) => return Ok(code),
            };
            let listen = config.http.listen;
            let app = App::build_on_database_clock(config, listen, provider).await?;
            let report = app
                .state
                .topups
                .scan(&CancellationToken::new(), None)
                .await?;
            println!("scan: {report}");
            app.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let db = Db::connect(&config.database)
                .await
                .context("connect to the database (database.url)")?;
            let applied = db.migrate().await.context("apply database migrations")?;
            println!(
                "{}",
                cli::migrated(&config.database.location().to_string(), &applied)
            );
            db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig => {
            println!(
                "configuration is valid: database {}, provider {}, scan schedule {:?}",
                config.database.location(),
                config.payments.provider.as_str(),
                config.auto_topup.scan_schedule
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify => {
            let report = existing(&config).await?.verify_ledger().await?;
            for m in &report.mismatches {
                println!(
                    "MISMATCH {}: balance {} but ledger sums to {} (last entry says {})",
                    m.account_id,
                    Millicredits(m.balance),
                    Millicredits(m.ledger_sum),
                    m.last_balance_after
                        .map_or_else(|| "nothing".to_owned(), |b| Millicredits(b).to_string()),
                );
            }
            println!(
                "{}",
                cli::verified(report.accounts_checked, report.mismatches.len())
            );
            Ok(if report.mismatches.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Reconcile { since, json } => {
            existing(&config).await?.close().await;
            let provider = match provider_for(&config, "reconcile").await {
                Ok(provider) => provider,
                Err(code) => return Ok(code),
            };
            let listen = config.http.listen;
            let app = App::build_on_database_clock(config, listen, provider).await?;
            let checked = app
                .state
                .topups
                .check_provider(since.timestamp_millis())
                .await;
            app.close().await;
            let check = checked?;
            let since = since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            println!("{}", cli::provider_checked(&since, &check, json));
            Ok(if check.mismatches.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Keys(KeysCommand::Create {
            role,
            account,
            label,
        }) => {
            if (role == Role::Customer) != account.is_some() {
                anyhow::bail!("--account is required for, and only for, --role customer");
            }
            let db = existing(&config).await?;
            let issued = db
                .issue_api_key(
                    role,
                    account.as_deref(),
                    &label,
                    &Actor::cli(),
                    SystemClock.now_ms(),
                )
                .await?
                .with_context(|| format!("account {} not found", account.unwrap_or_default()))?;
            eprintln!(
                "created {} key {}; it is shown once:",
                role.as_str(),
                issued.key.id
            );
            println!("{}", issued.token);
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::List { json }) => {
            let keys = existing(&config).await?.api_keys().await?;
            println!("{}", cli::keys(&keys, json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys(KeysCommand::Revoke { id }) => {
            let db = existing(&config).await?;
            match db
                .revoke_api_key(&id, &Actor::cli(), SystemClock.now_ms())
                .await?
            {
                Some(key) => {
                    println!("revoked {} key {}", key.role, key.id);
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("topupd: no key {id}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Accounts(AccountsCommand::Find { query, json }) => {
            let query = query.trim().to_owned();
            let filter = if query.contains('@') {
                AccountFilter {
                    email: Some(query),
                    ..AccountFilter::default()
                }
            } else {
                AccountFilter {
                    external_id: Some(query),
                    ..AccountFilter::default()
                }
            };
            let page = PageRequest {
                limit: 200,
                before: None,
            };
            let db = existing(&config).await?;
            let mut found = Vec::new();
            for account in db.find_accounts(&filter, page).await?.items {
                let in_progress = db.open_attempt_of(&account.id).await?.is_some();
                let state = account.auto_topup_state(in_progress);
                found.push((account, state));
            }
            println!("{}", cli::accounts(&found, json));
            Ok(ExitCode::SUCCESS)
        }
        Command::AutoTopup(AutoTopupCommand::Resume {
            account,
            note,
            try_now,
            json,
        }) => {
            let note = note.trim();
            if note.is_empty() {
                anyhow::bail!("--note must say why auto top-up is resumed");
            }
            existing(&config).await?.close().await;
            let provider = match (try_now, config.payments.provider) {
                (true, _) => match provider_for(&config, "auto-topup resume --try-now").await {
                    Ok(provider) => provider,
                    Err(code) => return Ok(code),
                },
                // Nothing is charged: any stub will do, the one `serve` runs if there is
                // one, so that its port is not asked for twice.
                (false, ProviderKind::Stub) => app::lasting_stub(&config)
                    .await
                    .unwrap_or(ProviderAt::Configured),
                (false, ProviderKind::Stripe) => ProviderAt::Configured,
            };
            let listen = config.http.listen;
            let app = App::build_on_database_clock(config, listen, provider).await?;
            if app.state.db.account(&account).await?.is_none() {
                app.close().await;
                eprintln!("topupd: no account {account}");
                return Ok(ExitCode::FAILURE);
            }
            let outcome = app
                .state
                .topups
                .resume(&account, &Actor::cli(), note, try_now)
                .await?;
            println!("{}", cli::resumed(&account, outcome.as_ref(), json));
            app.close().await;
            Ok(if outcome.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Where the payment provider is for a command that may charge: with the stub, the one
/// `serve` runs (exit code 2 when there is none).
async fn provider_for(config: &Config, command: &str) -> Result<ProviderAt, ExitCode> {
    match config.payments.provider {
        ProviderKind::Stripe => Ok(ProviderAt::Configured),
        ProviderKind::Stub => app::lasting_stub(config).await.map_err(|refusal| {
            eprintln!("topupd: {command} refused: {refusal}");
            ExitCode::from(2)
        }),
    }
}

/// Listens with a backlog of 1,024 connections, not the 128 Tokio asks for: at a burst of
/// new connections beyond what the process accepts at once, those waiting are accepted
/// moments later instead of being dropped, which their clients would only retry after a
/// second or more.
fn bind(address: std::net::SocketAddr, key: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listen = || {
        let socket = match address {
            std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        }?;
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(1024)
    };
    listen().with_context(|| format!("listen on {address} ({key})"))
}

/// The database `serve` or `migrate` made, at this build's schema: what every other
/// command works on (a missing one is never created).
async fn existing(config: &Config) -> anyhow::Result<Db> {
    Db::connect_existing(&config.database)
        .await
        .context("connect to the database (database.url)")
}

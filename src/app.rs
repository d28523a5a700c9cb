//! Builds the application and runs the server and the background jobs, owning the
//! shutdown order: stop accepting, let requests and jobs in flight finish (bounded by the
//! grace period), close the pool.

use std::{
    future::{Future, IntoFuture},
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::http::state::Services;
pub use crate::http::state::{AppState, Roles};
use crate::{
    accounts::Accounts,
    clock::{Clock, DatabaseClock, SystemClock},
    config::{Config, ProviderKind},
    db::{Db, group_commit::Writers, key_reads::KeyReads},
    http,
    jobs::{self, notice_sender::NoticeSender, webhook_sender::WebhookSender},
    metering::Metering,
    notices::{mailer::Mailer, outbox::Outbox, templates::Letterhead},
    payments::{
        budget::Budget,
        client::ProviderClient,
        stub::{Stub, WebhookTarget, world::Faults},
    },
    portal::{self, Pages},
    topups::Topups,
};

/// How often database state is sampled into gauges.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
/// How often a database-synced clock measures its offset again.
const CLOCK_SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// The application, built and ready to serve.
pub struct App {
    pub state: AppState,
    /// The in-process stub provider, when the configuration asks for it.
    pub stub: Option<Stub>,
    stub_cancel: CancellationToken,
    /// The group-commit writers (debits, attempts' steps): they finish the writes queued
    /// before the pool is closed.
    writers: Writers,
    /// Set when the app keeps time by the database's clock.
    database_clock: Option<Arc<DatabaseClock>>,
    /// Where the payment provider answers.
    provider_url: String,
    /// This replica's share of the provider's rate, whose lease it gives up on leaving.
    budget: Budget,
}

/// Where the app finds its payment provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderAt {
    /// As configured: the provider's URL, or a stub started in-process on
    /// `payments.stub.listen`, which lives as long as this process.
    Configured,
    /// The stub provider already serving at this URL, for a command that exits before the
    /// payments it makes are settled: they must be kept by a stub that outlives it.
    RunningStub(String),
}

/// Why a command that exits cannot charge through a stub provider.
#[derive(Debug, thiserror::Error)]
pub enum NoLastingStub {
    #[error(
        "payments.stub.listen is port 0, so this command would charge through a stub provider of its own that exits with it: \
         its payments, and the 3-D Secure links it emails, would be gone while the accounts stay credited. \
         Set payments.stub.listen (TOPUPD_PAYMENTS__STUB__LISTEN) to one fixed address, such as 127.0.0.1:12111, \
         for `topupd serve` and for this command, so that it charges through the server's stub; \
         or use a provider that outlives it (payments.provider = \"stripe\" and payments.base_url)"
    )]
    OwnPort,
    #[error(
        "no stub provider answers on {0} (payments.stub.listen); start `topupd serve` with the same \
         payments.stub.listen first (or `topupd stub-provider --listen {0}`)"
    )]
    NotRunning(SocketAddr),
}

/// The stub provider that outlives this command: the one serving on `payments.stub.listen`
/// (usually the server's), never one of its own.
pub async fn lasting_stub(config: &Config) -> Result<ProviderAt, NoLastingStub> {
    let listen = config.payments.stub.listen;
    if listen.port() == 0 {
        return Err(NoLastingStub::OwnPort);
    }
    let address = reachable(listen);
    match tokio::net::TcpStream::connect(address).await {
        Ok(_) => Ok(ProviderAt::RunningStub(format!("http://{address}"))),
        Err(_) => Err(NoLastingStub::NotRunning(listen)),
    }
}

impl App {
    /// Builds the app on the database's clock: what production runs, so that replicas
    /// agree on time whatever their hosts say.
    pub async fn build_on_database_clock(
        config: Config,
        http_addr: SocketAddr,
        provider: ProviderAt,
    ) -> anyhow::Result<Self> {
        let clock = Arc::new(DatabaseClock::default());
        let mut app = Self::build_with(config, clock.clone(), http_addr, provider).await?;
        sync_clock(&clock, &app.state.db)
            .await
            .context("read the database clock")?;
        app.database_clock = Some(clock);
        Ok(app)
    }

    /// Connects and migrates the database, loads the catalogue, and sets up email and the
    /// payment provider. `http_addr` is where this server listens: the in-process stub
    /// sends its webhooks there.
    pub async fn build(
        config: Config,
        clock: Arc<dyn Clock>,
        http_addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        Self::build_with(config, clock, http_addr, ProviderAt::Configured).await
    }

    /// [`App::build`], with the payment provider found as `provider` says.
    pub async fn build_with(
        config: Config,
        clock: Arc<dyn Clock>,
        http_addr: SocketAddr,
        provider: ProviderAt,
    ) -> anyhow::Result<Self> {
        // Installed before anything is counted: counts made before it would be lost.
        crate::metrics::handle();
        let catalogue = config
            .pricing
            .load()
            .context("load the pricing catalogue")?;
        let mailer = Mailer::from_config(&config.email).context("set up email (email.smtp)")?;
        let db = Db::connect(&config.database)
            .await
            .context("connect to the database (database.url)")?;
        db.migrate().await.context("apply database migrations")?;

        let mut webhook_secrets: Vec<String> = config
            .payments
            .webhook_secrets
            .iter()
            .map(|s| s.expose_secret().to_owned())
            .filter(|s| !s.is_empty())
            .collect();
        let stub_cancel = CancellationToken::new();
        let (stub, provider_url) = match (config.payments.provider, provider) {
            (_, ProviderAt::RunningStub(url)) => (None, url),
            (ProviderKind::Stripe, ProviderAt::Configured) => {
                (None, config.payments.base_url.clone())
            }
            (ProviderKind::Stub, ProviderAt::Configured) => {
                if webhook_secrets.is_empty() {
                    webhook_secrets.push(format!("whsec_{}", uuid::Uuid::new_v4().simple()));
                }
                let listener = TcpListener::bind(config.payments.stub.listen)
                    .await
                    .with_context(|| {
                        format!(
                            "listen on {} (payments.stub.listen)",
                            config.payments.stub.listen
                        )
                    })?;
                let target = WebhookTarget {
                    url: format!("http://{}/v1/webhooks/payments", reachable(http_addr)),
                    secret: webhook_secrets[0].clone(),
                };
                let stub = Stub::start(
                    listener,
                    clock.clone(),
                    Some(target),
                    Faults::default(),
                    stub_cancel.clone(),
                )
                .await?;
                tracing::info!(address = %stub.base_url(), "stub payment provider started");
                let url = stub.base_url().to_owned();
                (Some(stub), url)
            }
        };
        let config = Arc::new(config);
        let email_links = portal::email_links(&db, &config, clock.as_ref())
            .await
            .context("read the key that signs links to the billing page")?;
        let budget = Budget::start(Arc::new(db.clone()), &config.payments).await;
        let provider_client = ProviderClient::new(&config.payments, &provider_url)
            .context("set up the payment provider client")?
            .paced_by(budget.clone());
        let writers = Writers::default();
        let topups = Topups::new(
            db.clone(),
            Arc::new(provider_client),
            clock.clone(),
            config.clone(),
            &writers,
        );
        let letterhead = Arc::new(Letterhead::new(&config.email, email_links.clone()));
        let pages = Arc::new(Pages::new(&config, email_links));
        let webhook_permits = Arc::new(tokio::sync::Semaphore::new(
            (config.database.max_connections as usize / 2).max(1),
        ));
        Ok(Self {
            state: AppState::new(Services {
                accounts: Accounts::new(db.clone(), clock.clone(), config.email.clone()),
                metering: Metering::new(
                    db.clone(),
                    clock.clone(),
                    &writers,
                    config.low_balance_warning(),
                ),
                outbox: Outbox::new(db.clone(), clock.clone()),
                keys: KeyReads::start(db.clone()),
                db,
                catalogue: Arc::new(catalogue),
                clock,
                config,
                mailer: Arc::new(mailer),
                topups,
                letterhead,
                pages,
                webhook_secrets: Arc::new(webhook_secrets),
                webhook_permits,
                roles: Roles::ALL,
            }),
            stub,
            stub_cancel,
            writers,
            database_clock: None,
            provider_url,
            budget,
        })
    }

    /// Lets the writers finish what was queued, stops the in-process stub and closes the
    /// pool, for commands that do not serve.
    pub async fn close(self) {
        let grace = Duration::from_secs(self.state.config.http.shutdown_grace_secs);
        self.writers
            .drain(tokio::time::Instant::now() + grace)
            .await;
        self.budget.release().await;
        self.stub_cancel.cancel();
        self.state.db.close().await;
    }

    /// Says what this process runs with: its version, the database (kind and location,
    /// never its credentials), the payment provider, the scan's schedule and the roles.
    pub fn log_start(&self, roles: Roles) {
        let (config, provider_url) = (&self.state.config, self.provider_url.as_str());
        let database = config.database.location();
        let provider = config.payments.provider.as_str();
        let schedule = &config.auto_topup.scan_schedule;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            database = database.kind,
            database_location = %database.location,
            provider,
            provider_url,
            scan_schedule = if schedule.is_empty() { "off" } else { schedule },
            roles = %roles.names().join(","),
            "starting"
        );
    }

    /// Serves the API on `api` (with the `api` role) and `/metrics` and the probes on
    /// `ops`, and runs the background work of the other roles, until `shutdown` completes;
    /// then stops accepting, lets requests and jobs in flight finish within the grace
    /// period, and closes the pool.
    pub async fn serve(
        self,
        api: Option<TcpListener>,
        ops: Option<TcpListener>,
        roles: Roles,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let state = self.state.with_roles(roles);
        let grace = Duration::from_secs(state.config.http.shutdown_grace_secs);
        let db = state.db.clone();
        let cancel = CancellationToken::new();
        let jobs = TaskTracker::new();
        jobs.spawn(jobs::repeat(
            "metrics sampler",
            SAMPLE_INTERVAL,
            cancel.child_token(),
            {
                let (db, clock) = (state.db.clone(), state.clock.clone());
                move || {
                    let (db, now) = (db.clone(), clock.now_ms());
                    async move { db.sample_metrics(now).await.map(|()| false) }
                }
            },
        ));
        if let Some(clock) = self.database_clock.clone() {
            let (db, cancel) = (state.db.clone(), cancel.child_token());
            jobs.spawn(jobs::repeat(
                "clock sync",
                CLOCK_SYNC_INTERVAL,
                cancel,
                move || {
                    let (clock, db) = (clock.clone(), db.clone());
                    async move { sync_clock(&clock, &db).await.map(|()| false) }
                },
            ));
        }
        if roles.notices {
            let sender = NoticeSender::new(
                state.db.clone(),
                state.mailer.clone(),
                state.clock.clone(),
                Arc::new(state.config.email.clone()),
                state.letterhead.as_ref().clone(),
            );
            jobs.spawn(sender.run(cancel.child_token()));
            let webhooks = WebhookSender::new(
                state.db.clone(),
                state.clock.clone(),
                state.config.webhooks.clone(),
                Arc::new(state.config.email.clone()),
            );
            jobs.spawn(webhooks.run(cancel.child_token()));
        }
        let auto = &state.config.auto_topup;
        let mut scheduler = None;
        if roles.scheduler {
            jobs.spawn(jobs::webhook_processor::run(
                state.topups.clone(),
                cancel.child_token(),
            ));
            jobs.spawn(jobs::event_sweeper::run(
                state.topups.clone(),
                Duration::from_secs(state.config.payments.event_sweep_interval_secs),
                cancel.child_token(),
            ));
            jobs.spawn(
                jobs::decision_pruner::DecisionPruner::new(
                    state.db.clone(),
                    state.clock.clone(),
                    auto.decision_retention_days,
                )
                .run(cancel.child_token()),
            );
            jobs.spawn(jobs::reconciler::run(
                state.topups.clone(),
                Duration::from_secs(auto.reconcile_interval_secs),
                cancel.child_token(),
            ));
            jobs.spawn(jobs::provider_checker::run(
                state.topups.clone(),
                cancel.child_token(),
            ));
            jobs.spawn(jobs::card_checker::run(
                state.topups.clone(),
                cancel.child_token(),
            ));
            jobs.spawn(jobs::low_balance_notifier::run(
                state.db.clone(),
                state.clock.clone(),
                state.config.clone(),
                cancel.child_token(),
            ));
            if !auto.scan_schedule.is_empty() {
                scheduler = Some(
                    jobs::scheduler::start(
                        state.topups.clone(),
                        &auto.scan_schedule,
                        cancel.child_token(),
                        jobs.clone(),
                    )
                    .await?,
                );
            }
        }

        let mut servers = JoinSet::new();
        let routers = [
            (api.filter(|_| roles.api), http::router(state.clone())),
            (ops, http::ops_router(state)),
        ];
        for (listener, router) in routers {
            if let Some(listener) = listener {
                servers.spawn(
                    axum::serve(listener, router)
                        .with_graceful_shutdown(cancel.clone().cancelled_owned())
                        .into_future(),
                );
            }
        }
        let stopped_early = tokio::select! {
            () = shutdown => None,
            Some(joined) = servers.join_next() => Some(joined),
        };
        tracing::info!("shutting down: no new work; finishing what is in flight");
        cancel.cancel();
        if let Some(scheduler) = scheduler.as_mut()
            && let Err(error) = scheduler.shutdown().await
        {
            tracing::warn!(?error, "scan schedule did not stop cleanly");
        }
        jobs.close();
        let drain = async {
            let mut served = stopped_early.unwrap_or(Ok(Ok(())));
            while let Some(joined) = servers.join_next().await {
                if served.as_ref().is_ok_and(Result::is_ok) {
                    served = joined;
                }
            }
            jobs.wait().await;
            served
        };
        let deadline = tokio::time::Instant::now() + grace;
        let outcome = tokio::time::timeout_at(deadline, drain).await;
        // The writes the finished work queued are written before the pool closes.
        self.writers.drain(deadline).await;
        self.budget.release().await;
        self.stub_cancel.cancel();
        db.close().await;
        match outcome {
            Ok(joined) => joined
                .context("join an HTTP server")?
                .context("serve HTTP")?,
            Err(_) => tracing::warn!(
                grace_secs = grace.as_secs(),
                "work still in flight after the grace period; exiting"
            ),
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// Measures the database clock's offset from this host's, halfway through the round trip.
async fn sync_clock(clock: &DatabaseClock, db: &Db) -> Result<(), crate::db::DbError> {
    let before = SystemClock.now_ms();
    let database = db.clock_ms().await?;
    let after = SystemClock.now_ms();
    let offset = database - (before + (after - before) / 2);
    if offset.abs() > 1_000 {
        tracing::warn!(
            offset_ms = offset,
            "this host's clock differs from the database's; using the database's"
        );
    }
    clock.set_offset(offset);
    Ok(())
}

/// An address others on this host can reach: a wildcard listen address becomes loopback.
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called, not
/// when it is first awaited, so a signal arriving during start-up is not lost.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind| match signal(kind) {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::error!(?error, "cannot listen for a shutdown signal");
            None
        }
    };
    let (mut terminate, mut interrupt) = (
        listen(SignalKind::terminate()),
        listen(SignalKind::interrupt()),
    );
    async move {
        tokio::select! {
            () = received(terminate.as_mut()) => {}
            () = received(interrupt.as_mut()) => {}
        }
    }
}

/// The next signal on `stream`; never, if there is no stream.
async fn received(stream: Option<&mut tokio::signal::unix::Signal>) {
    match stream {
        Some(stream) => {
            stream.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

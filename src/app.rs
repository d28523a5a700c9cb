//! Builds the application state and runs the server and the background jobs, owning the
//! shutdown order: stop accepting, let requests and jobs in flight finish (bounded by the
//! grace period), close the pool.

use std::{
    future::{Future, IntoFuture},
    path::Path,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    clock::Clock, config::Config, db::Db, domain::pricing::Catalogue, http,
    jobs::notice_sender::NoticeSender, notices::mailer::Mailer,
};

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub catalogue: Arc<Catalogue>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
    pub mailer: Arc<Mailer>,
}

impl AppState {
    /// Connects and migrates the database and loads the pricing catalogue.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let catalogue = load_catalogue(&config.pricing.catalogue)?;
        let mailer = Mailer::from_config(&config.email).context("set up email (email.smtp)")?;
        let db = Db::connect(&config.database)
            .await
            .context("connect to the database (database.url)")?;
        db.migrate().await.context("apply database migrations")?;
        Ok(Self {
            db,
            catalogue: Arc::new(catalogue),
            clock,
            config: Arc::new(config),
            mailer: Arc::new(mailer),
        })
    }
}

/// The configured catalogue file, or the built-in catalogue when none is set.
pub fn load_catalogue(path: &str) -> anyhow::Result<Catalogue> {
    if path.is_empty() {
        return Ok(Catalogue::parse(Catalogue::BUILT_IN)?);
    }
    let text = std::fs::read_to_string(Path::new(path))
        .with_context(|| format!("read the pricing catalogue {path} (pricing.catalogue)"))?;
    Catalogue::parse(&text).with_context(|| format!("load the pricing catalogue {path}"))
}

/// Serves the API on `listener` and runs the background jobs until `shutdown` completes;
/// then stops accepting, lets requests and jobs in flight finish within the grace period,
/// and closes the pool.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(state.config.http.shutdown_grace_secs);
    let db = state.db.clone();
    let cancel = CancellationToken::new();
    let jobs = TaskTracker::new();
    let sender = NoticeSender::new(
        state.db.clone(),
        state.mailer.clone(),
        state.clock.clone(),
        Arc::new(state.config.email.clone()),
    );
    jobs.spawn(sender.run(cancel.child_token()));

    let mut http = tokio::spawn(
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(cancel.clone().cancelled_owned())
            .into_future(),
    );
    let stopped_early = tokio::select! {
        () = shutdown => None,
        joined = &mut http => Some(joined),
    };
    tracing::info!("shutting down: no new work; finishing what is in flight");
    cancel.cancel();
    jobs.close();
    let drain = async {
        let served = match stopped_early {
            Some(joined) => joined,
            None => http.await,
        };
        jobs.wait().await;
        served
    };
    let outcome = tokio::time::timeout(grace, drain).await;
    db.close().await;
    match outcome {
        Ok(joined) => joined
            .context("join the HTTP server")?
            .context("serve HTTP")?,
        Err(_) => tracing::warn!(
            ?grace,
            "work still in flight after the grace period; exiting"
        ),
    }
    tracing::info!("stopped");
    Ok(())
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(?error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(?error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

//! Builds the application state and runs the server, owning the shutdown order: stop
//! accepting, let requests in flight finish (bounded by the grace period), close the pool.

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{clock::Clock, config::Config, db::Db, domain::pricing::Catalogue, http};

/// What every request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub catalogue: Arc<Catalogue>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
}

impl AppState {
    /// Connects and migrates the database and loads the pricing catalogue.
    pub async fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let catalogue = load_catalogue(&config.pricing.catalogue)?;
        let db = Db::connect(&config.database)
            .await
            .context("connect to the database (database.url)")?;
        db.migrate().await.context("apply database migrations")?;
        Ok(Self {
            db,
            catalogue: Arc::new(catalogue),
            clock,
            config: Arc::new(config),
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

/// Serves the API on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let grace = Duration::from_secs(state.config.http.shutdown_grace_secs);
    let db = state.db.clone();
    let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections, finishing requests in flight");
        let _ = stopping_tx.send(true);
    };
    let server = axum::serve(listener, http::router(state)).with_graceful_shutdown(signal);
    let drain_deadline = async move {
        let mut stopping = stopping_rx;
        let _ = stopping.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.context("serve HTTP")?,
        () = drain_deadline => tracing::warn!(?grace, "requests still in flight after the grace period; exiting"),
    }
    db.close().await;
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

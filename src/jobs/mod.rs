//! Background work. Each job exposes `run_once`, which does one round and reports what
//! it did (tests call it directly); [`repeat`] is the loop that `serve` runs it in.

pub mod card_checker;
pub mod decision_pruner;
pub mod event_sweeper;
pub mod low_balance_notifier;
pub mod notice_sender;
pub mod provider_checker;
pub mod reconciler;
pub mod scheduler;
pub mod webhook_processor;
pub mod webhook_sender;

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::db::DbError;

/// Runs `round` every `interval` until `cancel` fires. A round that reports more work
/// waiting (`Ok(true)`) is followed at once by the next.
pub async fn repeat<F, Fut>(
    name: &'static str,
    interval: Duration,
    cancel: CancellationToken,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, DbError>>,
{
    loop {
        let more = match round().await {
            Ok(more) => more,
            Err(error) => {
                tracing::error!(job = name, ?error, "round failed");
                false
            }
        };
        if cancel.is_cancelled() {
            break;
        }
        if !more {
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
    tracing::info!(job = name, "stopped");
}

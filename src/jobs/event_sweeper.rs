//! Sweeps the provider's events for those whose webhooks never arrived (see
//! [`Topups::sweep_events`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::topups::{Topups, events::SweepError};

pub async fn run(topups: Topups, interval: Duration, cancel: CancellationToken) {
    super::repeat("event sweeper", interval, cancel, || async {
        match topups.sweep_events().await {
            Ok(0) => {}
            Ok(found) => tracing::warn!(found, "handled events whose webhooks never arrived"),
            Err(SweepError::Db(error)) => return Err(error),
            Err(SweepError::Provider(error)) => {
                tracing::warn!(%error, "could not list the provider's events; the next sweep tries again");
            }
        }
        Ok(false)
    })
    .await;
}

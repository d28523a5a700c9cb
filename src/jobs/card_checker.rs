//! Warns customers once a day, ahead of time, of a card auto top-up charges that has
//! expired or will have by the next likely top-up (see [`Topups::warn_of_expiring_cards`]).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::topups::Topups;

pub const INTERVAL: Duration = Duration::from_secs(86_400);

pub async fn run(topups: Topups, cancel: CancellationToken) {
    super::repeat("card check", INTERVAL, cancel, || async {
        let told = topups.warn_of_expiring_cards().await?;
        if told > 0 {
            tracing::info!(
                told,
                "warned customers of cards that will not work for their next top-up"
            );
        }
        Ok(false)
    })
    .await;
}

//! Resumes top-up attempts left open by a crash or an unknown answer, at start-up and then
//! regularly (more often than the scan), flags those open too long, and brings provider
//! customers up to date with their accounts' details.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::topups::Topups;

pub async fn run(topups: Topups, interval: Duration, cancel: CancellationToken) {
    super::repeat("reconciler", interval, cancel.clone(), || async {
        let report = topups.reconcile(&cancel).await?;
        let synced = topups.sync_customers().await?;
        if synced > 0 {
            tracing::info!(
                synced,
                "provider customers given their accounts' new details"
            );
        }
        if report.examined > 0 {
            tracing::info!(
                examined = report.examined,
                settled = report.settled,
                "reconciled open top-ups"
            );
        }
        Ok(false)
    })
    .await;
}

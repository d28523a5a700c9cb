//! Resumes top-up attempts left open by a crash or an unknown answer, at start-up and then
//! regularly (more often than the scan), and flags those open too long.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::topups::Topups;

pub async fn run(topups: Topups, interval: Duration, cancel: CancellationToken) {
    super::repeat("reconciler", interval, cancel.clone(), || async {
        let report = topups.reconcile(&cancel).await?;
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

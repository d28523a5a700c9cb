//! The cron schedule of the scan (tokio-cron-scheduler only decides *when*). A tick that
//! finds the previous scan still running is skipped, so scans never overlap in a process;
//! across processes the claims keep them from charging twice.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::Mutex;
use tokio_cron_scheduler::{Job, JobScheduler};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::topups::Topups;

/// Starts the schedule; scans run on `tracker`, so shutdown can wait for one in flight.
pub async fn start(
    topups: Topups,
    schedule: &str,
    cancel: CancellationToken,
    tracker: TaskTracker,
) -> anyhow::Result<JobScheduler> {
    let running = Arc::new(Mutex::new(()));
    let job = Job::new_async(schedule, move |_id, _scheduler| {
        let (topups, cancel, tracker, running) = (
            topups.clone(),
            cancel.clone(),
            tracker.clone(),
            running.clone(),
        );
        Box::pin(async move {
            let Ok(guard) = running.try_lock_owned() else {
                tracing::warn!("previous scan still running; skipping this tick");
                return;
            };
            if cancel.is_cancelled() {
                return;
            }
            tracker.spawn(async move {
                let _guard = guard;
                if let Err(error) = topups.scan(&cancel).await {
                    tracing::error!(?error, "scan failed");
                }
            });
        })
    })
    .with_context(|| format!("auto_topup.scan_schedule {schedule:?} is not a valid schedule"))?;
    let scheduler = JobScheduler::new().await?;
    scheduler.add(job).await?;
    scheduler.start().await?;
    crate::metrics::scans_scheduled();
    Ok(scheduler)
}

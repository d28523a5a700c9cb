//! The cron schedule of the scan (tokio-cron-scheduler only decides *when*). A scan claims
//! nothing from the next tick on; a tick that finds the previous scan still finishing its
//! charges starts once it is done, so scans never overlap in a process and the next tick
//! always goes on with what the last one left. Across processes the claims keep them from
//! charging twice.

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
            let guard = match running.clone().try_lock_owned() {
                Ok(guard) => guard,
                Err(_) => {
                    tracing::info!("previous scan still finishing its charges; this tick starts when it is done");
                    running.lock_owned().await
                }
            };
            if cancel.is_cancelled() {
                return;
            }
            let next_tick = topups.next_tick();
            tracker.spawn(async move {
                let _guard = guard;
                if let Err(error) = topups.scan(&cancel, next_tick).await {
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

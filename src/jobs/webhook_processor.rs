//! Handles stored webhook events that were not handled when they arrived (the provider
//! could not be asked, or the process stopped in between), each when its next try is due.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::{db::DbError, topups::Topups};

/// Events handled per round.
const BATCH_SIZE: u32 = 50;
/// How often stored events are looked at.
pub const INTERVAL: Duration = Duration::from_secs(5);

/// One round: the number of events handled.
pub async fn run_once(topups: &Topups, cancel: &CancellationToken) -> Result<usize, DbError> {
    let mut handled = 0;
    let now = topups.now_ms();
    for event in &topups.db().due_events(now, BATCH_SIZE).await? {
        if cancel.is_cancelled() {
            break;
        }
        handled += usize::from(topups.process_event(event).await?);
    }
    Ok(handled)
}

pub async fn run(topups: Topups, cancel: CancellationToken) {
    let full = BATCH_SIZE as usize;
    super::repeat("webhook processor", INTERVAL, cancel.clone(), || async {
        Ok(run_once(&topups, &cancel).await? == full)
    })
    .await;
}

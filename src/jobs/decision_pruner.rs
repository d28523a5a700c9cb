//! Forgets the scan's decisions once they are older than
//! `auto_topup.decision_retention_days`, a batch at a time so no delete holds locks long.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    clock::Clock,
    db::{Db, DbError},
};

/// Decisions deleted per statement.
const BATCH: u32 = 5_000;
/// How often the pruner looks, when the last round found nothing more to do.
pub const INTERVAL: Duration = Duration::from_secs(3_600);

pub struct DecisionPruner {
    db: Db,
    clock: Arc<dyn Clock>,
    retention_days: u32,
}

impl DecisionPruner {
    pub fn new(db: Db, clock: Arc<dyn Clock>, retention_days: u32) -> Self {
        Self {
            db,
            clock,
            retention_days,
        }
    }

    /// One batch: how many decisions were forgotten.
    pub async fn run_once(&self) -> Result<u64, DbError> {
        let retention_ms = i64::from(self.retention_days) * 86_400_000;
        let before = self.clock.now_ms().saturating_sub(retention_ms);
        self.db.prune_decisions(before, BATCH).await
    }

    pub async fn run(self, cancel: CancellationToken) {
        super::repeat("decision pruner", INTERVAL, cancel, || async {
            let pruned = self.run_once().await?;
            if pruned > 0 {
                tracing::info!(pruned, "forgot scan decisions past their retention");
            }
            Ok(pruned == u64::from(BATCH))
        })
        .await;
    }
}

//! Emails the customers who asked for it, with auto top-up off, when their balance falls
//! below the low-balance line, once per crossing (see [`Db::warn_low_balances`]).

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{clock::Clock, config::Config, db::Db};

/// How often balances are looked at: a crossing is told within this.
pub const INTERVAL: Duration = Duration::from_secs(60);

pub async fn run(db: Db, clock: Arc<dyn Clock>, config: Arc<Config>, cancel: CancellationToken) {
    super::repeat("low-balance notices", INTERVAL, cancel, || async {
        let told = db
            .warn_low_balances(config.low_balance_warning(), &config.email, clock.now_ms())
            .await?;
        crate::metrics::notices_queued(
            crate::domain::notice::NoticeKind::LowBalance.as_str(),
            told,
        );
        Ok(false)
    })
    .await;
}

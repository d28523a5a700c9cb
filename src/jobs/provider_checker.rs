//! Checks the provider against the ledger once a day (see [`Topups::check_provider`]),
//! over the last [`DAYS_CHECKED`] days, so a day a check missed (a restart, the provider
//! down) is covered by the next.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::topups::{Topups, provider_check::CheckError};

pub const INTERVAL: Duration = Duration::from_secs(86_400);
pub const DAYS_CHECKED: i64 = 2;

pub async fn run(topups: Topups, cancel: CancellationToken) {
    super::repeat("provider check", INTERVAL, cancel, || async {
        let since = topups.now_ms() - DAYS_CHECKED * 86_400_000;
        match topups.check_provider(since).await {
            Ok(check) if check.mismatches.is_empty() => tracing::info!(
                charges = check.charges,
                topups = check.topups,
                settling = check.settling,
                "the provider's charges agree with the ledger"
            ),
            Ok(check) => tracing::error!(
                mismatches = check.mismatches.len(),
                "the provider's charges disagree with the ledger; the top-ups are flagged for support"
            ),
            Err(CheckError::Db(error)) => return Err(error),
            Err(CheckError::Provider(error)) => {
                tracing::warn!(%error, "could not list the provider's payments; the next check tries again");
            }
        }
        Ok(false)
    })
    .await;
}

//! The provider against the ledger: the provider's successful payments for top-ups of a
//! period, paged through its list API, matched to the top-ups and ledger credits recorded
//! for them ([`reconciliation::reconcile`]). Every recorded top-up a mismatch names is
//! flagged for support (`GET /v1/admin/auto-topups` lists them) until a check finds it
//! agreeing.

use std::collections::HashSet;

use super::Topups;
use crate::{
    clock::Millis,
    db::DbError,
    domain::{
        money::Cents,
        reconciliation::{self, Mismatch, ProviderCharge},
    },
    payments::client::ProviderError,
};

/// A payment younger than this may still be settling (its webhook on the way): it, and
/// the top-up it pays, are left to the next check.
pub const SETTLING_MS: i64 = 15 * 60_000;

/// What a check found.
#[derive(Debug, Default)]
pub struct ProviderCheck {
    /// The provider's successful payments for top-ups that were compared.
    pub charges: usize,
    /// The top-ups of the period that were compared.
    pub topups: usize,
    /// Payments too recent to judge.
    pub settling: usize,
    pub mismatches: Vec<Mismatch>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the provider's list of payments: {0}")]
    Provider(#[from] ProviderError),
}

impl Topups {
    /// Compares the provider's successful payments for top-ups created from `since` on
    /// with the top-ups and credits recorded from then on, and flags for support every
    /// top-up a mismatch names.
    pub async fn check_provider(&self, since: Millis) -> Result<ProviderCheck, CheckError> {
        let now = self.clock.now_ms();
        // The provider counts in seconds: a payment created in the same second as `since`
        // is listed, and matched to its top-up wherever that falls.
        let since_secs = since.div_euclid(1_000);
        let mut charges = Vec::new();
        let mut settling = HashSet::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .provider
                .list_payment_intents(None, since_secs, after.as_deref())
                .await?;
            for pi in &page.data {
                // Payments the host made for anything else are not top-ups.
                let (Some(topup_id), "succeeded") =
                    (pi.metadata.get("topup_attempt_id"), pi.status.as_str())
                else {
                    continue;
                };
                let created_at = pi.created.saturating_mul(1_000);
                if created_at > now - SETTLING_MS {
                    settling.insert(pi.id.clone());
                    continue;
                }
                charges.push(ProviderCharge {
                    payment_id: pi.id.clone(),
                    topup_id: topup_id.clone(),
                    amount_received: Cents(pi.amount_received.unwrap_or_default()),
                    created_at,
                });
            }
            match page.data.last() {
                Some(last) if page.has_more => after = Some(last.id.clone()),
                _ => break,
            }
        }
        let period: Vec<_> = self
            .db
            .recorded_topups_since(since)
            .await?
            .into_iter()
            .filter(|t| t.payment_id.as_ref().is_none_or(|p| !settling.contains(p)))
            .collect();
        let mut earlier = Vec::new();
        for charge in &charges {
            let recorded = period.iter().any(|t| {
                t.topup_id == charge.topup_id || t.payment_id.as_ref() == Some(&charge.payment_id)
            });
            if !recorded && let Some(topup) = self.db.recorded_topup(&charge.topup_id).await? {
                earlier.push(topup);
            }
        }
        let mismatches = reconciliation::reconcile(&charges, &period, &earlier);
        let mut flagged = Vec::new();
        for mismatch in &mismatches {
            tracing::error!(kind = mismatch.kind(), "{}", mismatch.describe());
            // A payment naming a top-up topupd never recorded has no row to flag: the log,
            // the metric and the command's output name it.
            let recorded = |id: &&str| period.iter().chain(&earlier).any(|t| t.topup_id == *id);
            if let Some(topup_id) = mismatch.topup_id().filter(recorded) {
                flagged.push((topup_id, mismatch.describe()));
            }
        }
        self.db
            .record_provider_mismatches(since, &flagged, now)
            .await?;
        crate::metrics::provider_mismatches(&mismatches);
        Ok(ProviderCheck {
            charges: charges.len(),
            topups: period.len(),
            settling: settling.len(),
            mismatches,
        })
    }
}

//! Metering: debiting priced usage (debits that arrive together share one commit) and
//! refunding usage that failed on the platform's side, once.

use std::sync::Arc;

use crate::{
    clock::Clock,
    db::{
        Db, DbError,
        audit::Actor,
        group_commit::{GroupCommit, Writers},
        usage::{DebitOutcome, NewUsage, RefundOutcome},
    },
    domain::{
        credits::Millicredits,
        pricing::{PriceRequest, Quote},
    },
    metrics::UsageOutcome,
};

#[derive(Clone)]
pub struct Metering {
    db: Db,
    /// Debits, committed together when they arrive together.
    debits: GroupCommit<NewUsage>,
    clock: Arc<dyn Clock>,
    /// The configured low-balance line, below which a debit tells the host.
    low_line: Millicredits,
}

impl Metering {
    /// Starts the debit writers on `writers`, so it must run inside the runtime.
    pub fn new(db: Db, clock: Arc<dyn Clock>, writers: &Writers, low_line: Millicredits) -> Self {
        Self {
            debits: GroupCommit::start(db.clone(), writers),
            db,
            clock,
            low_line,
        }
    }

    /// Debits `usage`, priced as `quote`, under the caller's `request_id`: a repeat is
    /// answered with the earlier record, and a short balance changes nothing.
    pub async fn debit(
        &self,
        account_id: &str,
        request_id: &str,
        usage: &PriceRequest,
        quote: &Quote,
    ) -> Result<DebitOutcome, DbError> {
        let fingerprint = usage.fingerprint();
        let outcome = self
            .debits
            .write(NewUsage {
                account_id: account_id.to_owned(),
                request_id: request_id.to_owned(),
                fingerprint: fingerprint.clone(),
                service: quote.service.clone(),
                quote: serde_json::to_string(quote).expect("a quote serializes to JSON"),
                cost: quote.total,
                at: self.clock.now_ms(),
                low_line: self.low_line,
            })
            .await?;
        crate::metrics::usage(match &outcome {
            DebitOutcome::Debited(_) => UsageOutcome::Debited,
            DebitOutcome::Existing(record) if record.fingerprint == fingerprint => {
                UsageOutcome::Replayed
            }
            DebitOutcome::Existing(_) => UsageOutcome::Conflict,
            DebitOutcome::Insufficient { .. } => UsageOutcome::Insufficient,
            DebitOutcome::AccountNotFound => UsageOutcome::AccountNotFound,
        });
        Ok(outcome)
    }

    /// Restores the credits of a usage record, once. Staff refunds are audited as
    /// `audited_as`; the platform's are not.
    pub async fn refund(
        &self,
        usage_id: &str,
        audited_as: Option<&Actor>,
    ) -> Result<RefundOutcome, DbError> {
        self.db
            .refund_usage(usage_id, self.clock.now_ms(), audited_as)
            .await
    }
}

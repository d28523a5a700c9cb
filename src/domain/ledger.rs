//! Why a balance moves: each ledger entry has one kind.

/// Why the balance moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Usage,
    Refund,
    AutoTopup,
    ManualTopup,
    Adjustment,
    /// Credits of a top-up taken back because the provider refunded its charge.
    PaymentRefund,
    /// Credits of a disputed top-up held until the dispute closes.
    DisputeHold,
    /// Held credits given back: the dispute was won.
    DisputeRelease,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::Refund => "refund",
            Self::AutoTopup => "auto_topup",
            Self::ManualTopup => "manual_topup",
            Self::Adjustment => "adjustment",
            Self::PaymentRefund => "payment_refund",
            Self::DisputeHold => "dispute_hold",
            Self::DisputeRelease => "dispute_release",
        }
    }

    /// Whether the entry takes credits back whatever the balance: money the provider
    /// returned to the payer is gone even if its credits were spent, so the balance may go
    /// below zero. Every other debit needs the credits.
    pub fn may_overdraw(self) -> bool {
        matches!(self, Self::PaymentRefund | Self::DisputeHold)
    }
}

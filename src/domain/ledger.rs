//! Why a balance moves: each ledger entry has one kind.

/// Why the balance moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Usage,
    Refund,
    AutoTopup,
    ManualTopup,
    Adjustment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usage => "usage",
            Self::Refund => "refund",
            Self::AutoTopup => "auto_topup",
            Self::ManualTopup => "manual_topup",
            Self::Adjustment => "adjustment",
        }
    }
}

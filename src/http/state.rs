//! What every handler can reach, and what this process runs.

use std::{ops::Deref, sync::Arc};

use crate::{
    accounts::Accounts,
    clock::Clock,
    config::Config,
    db::{Db, key_reads::KeyReads},
    domain::pricing::Catalogue,
    metering::Metering,
    notices::{mailer::Mailer, outbox::Outbox, templates::Letterhead},
    portal::Pages,
    topups::Topups,
};

/// What every request handler can reach, behind one pointer: every request clones it
/// (in each extractor and middleware that takes it), and a pointer is all that copies.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }

    /// The same services, for a process that runs `roles`.
    pub fn with_roles(self, roles: Roles) -> Self {
        let mut services = Arc::unwrap_or_clone(self.0);
        services.roles = roles;
        Self::new(services)
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// The services every write goes through, and the database for reads.
#[derive(Clone)]
pub struct Services {
    pub db: Db,
    /// Where each request's API key is read, shared with the checks that arrive with it.
    pub keys: KeyReads,
    pub accounts: Accounts,
    pub metering: Metering,
    pub outbox: Outbox,
    pub catalogue: Arc<Catalogue>,
    pub clock: Arc<dyn Clock>,
    pub config: Arc<Config>,
    pub mailer: Arc<Mailer>,
    pub topups: Topups,
    /// Who notices come from, and how their links to the billing page are signed.
    pub letterhead: Arc<Letterhead>,
    /// The billing page's templates and the key of its links.
    pub pages: Arc<Pages>,
    /// Secrets that may sign the provider's webhooks.
    pub webhook_secrets: Arc<Vec<String>>,
    /// Webhooks handled at once. The provider sends a burst of events after a scan; held
    /// to half the pool, they leave the other half to the API's debits.
    pub webhook_permits: Arc<tokio::sync::Semaphore>,
    /// What this process runs, as readiness reports it.
    pub roles: Roles,
}

/// What one process runs; all of it by default. Replicas can split the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Roles {
    /// The HTTP API.
    pub api: bool,
    /// The scan schedule, the reconciler and the webhook processor.
    pub scheduler: bool,
    /// The notice sender and the webhook sender.
    pub notices: bool,
}

impl Roles {
    pub const ALL: Self = Self {
        api: true,
        scheduler: true,
        notices: true,
    };

    /// The names of the roles this process runs.
    pub fn names(self) -> Vec<&'static str> {
        [
            ("api", self.api),
            ("scheduler", self.scheduler),
            ("notices", self.notices),
        ]
        .into_iter()
        .filter_map(|(name, on)| on.then_some(name))
        .collect()
    }
}

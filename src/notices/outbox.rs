//! Support's hand on the outbox: sending a failed notice again.

use std::sync::Arc;

use crate::{
    clock::Clock,
    db::{Db, DbError, audit::Actor, notices::RequeueOutcome},
};

#[derive(Clone)]
pub struct Outbox {
    db: Db,
    clock: Arc<dyn Clock>,
}

impl Outbox {
    pub fn new(db: Db, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    /// Queues a failed notice again, from a fresh attempt count; audited.
    pub async fn requeue(&self, id: &str, actor: &Actor) -> Result<RequeueOutcome, DbError> {
        self.db.requeue_notice(id, actor, self.clock.now_ms()).await
    }
}

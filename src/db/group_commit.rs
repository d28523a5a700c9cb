//! Group commit for debits: debits that arrive together share one durable commit instead
//! of paying for one each. Each keeps its own outcome, all or nothing, and is answered
//! only once the commit is durable, so a caller sees nothing different but the rate.
//!
//! A batch holds at most one debit per account, taken in account order. A debit locks its
//! usage key, then its account, so two batches (or a batch and any one-account
//! transaction, such as a refund) can never wait on each other in a cycle; a second debit
//! of the same account waits for the next batch.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    Db, DbError,
    usage::{DebitOutcome, NewUsage},
};

/// The most debits one commit carries.
const MAX_BATCH: usize = 128;

type Reply = oneshot::Sender<Result<DebitOutcome, DbError>>;
type Queued = (NewUsage, Reply);

/// Where the HTTP API sends its debits.
#[derive(Clone)]
pub struct DebitQueue {
    sender: mpsc::Sender<Queued>,
}

/// What the writers take their batches from.
struct Inbox {
    receiver: mpsc::Receiver<Queued>,
    /// Debits taken from the channel but not yet written, oldest first: those of an
    /// account that already had one in the last batch, and any beyond a full batch.
    deferred: VecDeque<Queued>,
}

impl DebitQueue {
    /// Starts the writers. SQLite writes one transaction at a time, so one writer; on
    /// PostgreSQL all but two of the pool's connections (kept for reads, such as the
    /// API key check, and for the jobs), so batches are written side by side while the
    /// next ones gather. They stop once every `DebitQueue` is dropped and the queue is
    /// drained.
    pub fn start(db: Db) -> Self {
        let writers = match &db {
            Db::Sqlite(_) => 1,
            Db::Postgres(pool) => pool
                .options()
                .get_max_connections()
                .saturating_sub(2)
                .max(1),
        };
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        let inbox = Arc::new(Mutex::new(Inbox {
            receiver,
            deferred: VecDeque::new(),
        }));
        for _ in 0..writers {
            tokio::spawn(write(db.clone(), Arc::clone(&inbox)));
        }
        Self { sender }
    }

    /// Debits `usage` once per `(account_id, request_id)` (see [`Db::debit_usages`]),
    /// sharing its commit with whatever arrived meanwhile.
    pub async fn debit(&self, usage: NewUsage) -> Result<DebitOutcome, DbError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((usage, reply))
            .await
            .map_err(|_| DbError::WriterStopped)?;
        answer.await.map_err(|_| DbError::WriterStopped)?
    }
}

async fn write(db: Db, inbox: Arc<Mutex<Inbox>>) {
    while let Some(mut batch) = gather(&inbox).await {
        // A caller that has gone (timed out, hung up) is not debited.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        batch.sort_by(|(a, _), (b, _)| a.account_id.cmp(&b.account_id));
        let usages: Vec<&NewUsage> = batch.iter().map(|(usage, _)| usage).collect();
        match db.debit_usages(&usages).await {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    // The caller may have gone meanwhile; the debit stands either way.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                // Nothing of the batch was written (or, if the commit itself was lost,
                // a retry with the same request id finds what was): each caller gets the
                // error and may retry.
                tracing::error!(?error, size = batch.len(), "debit batch failed");
                let message = error.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(DbError::BatchFailed(message.clone())));
                }
            }
        }
    }
}

/// The next batch: the oldest waiting debits, one per account. `None` once the queue is
/// closed and drained.
async fn gather(inbox: &Mutex<Inbox>) -> Option<Vec<Queued>> {
    let mut inbox = inbox.lock().await;
    if inbox.deferred.is_empty() {
        let first = inbox.receiver.recv().await?;
        inbox.deferred.push_back(first);
    }
    while let Ok(next) = inbox.receiver.try_recv() {
        inbox.deferred.push_back(next);
    }
    let mut accounts = HashSet::new();
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    for next in inbox.deferred.drain(..) {
        if batch.len() < MAX_BATCH && accounts.insert(next.0.account_id.clone()) {
            batch.push(next);
        } else {
            later.push_back(next);
        }
    }
    inbox.deferred = later;
    Some(batch)
}

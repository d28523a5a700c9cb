//! Group commit for debits: debits that arrive together share one durable commit instead
//! of paying for one each. Each keeps its own outcome, all or nothing, and is answered
//! only once the commit is durable, so a caller sees nothing different but the rate.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::{
    Db, DbError,
    usage::{DebitOutcome, NewUsage},
};

/// The most debits one commit carries.
const MAX_BATCH: usize = 128;

type Reply = oneshot::Sender<Result<DebitOutcome, DbError>>;

/// Where the HTTP API sends its debits.
#[derive(Clone)]
pub struct DebitQueue {
    sender: mpsc::Sender<(NewUsage, Reply)>,
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
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..writers {
            tokio::spawn(write(db.clone(), Arc::clone(&receiver)));
        }
        Self { sender }
    }

    /// Debits `usage` as [`Db::debit_usage`] does, sharing its commit with whatever
    /// arrived meanwhile.
    pub async fn debit(&self, usage: NewUsage) -> Result<DebitOutcome, DbError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((usage, reply))
            .await
            .map_err(|_| DbError::WriterStopped)?;
        answer.await.map_err(|_| DbError::WriterStopped)?
    }
}

async fn write(db: Db, receiver: Arc<Mutex<mpsc::Receiver<(NewUsage, Reply)>>>) {
    while let Some(mut batch) = gather(&receiver).await {
        if let [(usage, _)] = batch.as_slice() {
            let outcome = db.debit_usage(usage).await;
            let (_, reply) = batch.remove(0);
            // The caller may have gone; the debit stands either way.
            let _ = reply.send(outcome);
            continue;
        }
        // Accounts in ascending order: writers that overlap lock them in the same order.
        batch.sort_by(|(a, _), (b, _)| a.account_id.cmp(&b.account_id));
        let usages: Vec<&NewUsage> = batch.iter().map(|(usage, _)| usage).collect();
        match db.debit_usages(&usages).await {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                // Nothing of the batch was written; each goes alone, so one bad debit
                // fails only itself.
                tracing::warn!(
                    ?error,
                    size = batch.len(),
                    "debit batch failed; debiting one by one"
                );
                for (usage, reply) in batch {
                    let _ = reply.send(db.debit_usage(&usage).await);
                }
            }
        }
    }
}

/// The next batch: waits for one debit, then takes what else is already queued.
async fn gather(
    receiver: &Mutex<mpsc::Receiver<(NewUsage, Reply)>>,
) -> Option<Vec<(NewUsage, Reply)>> {
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

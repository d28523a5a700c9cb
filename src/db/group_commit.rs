//! Group commit: writes that arrive together share one durable commit (and, on
//! PostgreSQL, one statement) instead of paying for one each. Each keeps its own outcome,
//! all or nothing, and is answered only once the commit is durable, so a caller sees
//! nothing different but the rate. Debits, the steps of top-up attempts and their
//! settlements go through it.
//!
//! A batch holds at most one write per key (an account for debits and settlements, an
//! attempt for its steps); a second write with the same key goes into a later batch. On
//! PostgreSQL,
//! where several batches are written at once, each batch first locks its rows in key
//! order (`lock_in_key_order`), so two batches, or a batch and a transaction that locks
//! one of its rows, never wait on each other in a cycle.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{Db, DbError};

/// The most writes one commit carries.
pub const MAX_BATCH: usize = 128;

/// A write that can share its commit with others of its kind.
pub trait Batched: Send + Sync + 'static {
    type Outcome: Send + 'static;

    /// The queue's name in metrics.
    const QUEUE: &'static str;

    /// What two writes of one batch must not share.
    fn key(&self) -> &str;

    /// How many writers the queue of this kind has on `db`.
    fn writer_count(db: &Db) -> u32 {
        writer_count(db)
    }

    /// Whether a batch that fails is written again one write at a time, so that only the
    /// write that failed it fails. Only for compare-and-set writes: one the failed batch
    /// did write (its commit lost on the way back) must be found written, not redone.
    const EACH_ALONE_IF_THE_BATCH_FAILS: bool = false;

    /// Writes `batch` (distinct keys) under one durable commit: an outcome
    /// per write, in order, or an error and nothing written.
    fn write_batch(
        db: &Db,
        batch: &[&Self],
    ) -> impl Future<Output = Result<Vec<Self::Outcome>, DbError>> + Send;
}

/// How many writers each of the two busy queues (debits and steps) has on `db` (see
/// [`GroupCommit::start`]).
pub fn writer_count(db: &Db) -> u32 {
    match db {
        Db::Sqlite(_) => 1,
        Db::Postgres(pool) => (pool.options().get_max_connections().saturating_sub(3) / 2).max(1),
    }
}

/// Whether no two writes of `batch` share a key, as in every batch the writers take.
pub(crate) fn distinct_keys<W: Batched>(batch: &[&W]) -> bool {
    batch.iter().map(|w| w.key()).collect::<HashSet<_>>().len() == batch.len()
}

/// Locks the rows of `table` whose `id` is in `ids`, in id order, so that every batch
/// written to PostgreSQL waits for rows in one order. Like the batch statements, it is
/// planned at each call rather than prepared once: a plan cached by a connection while the
/// table was nearly empty would go on scanning the whole table as it grows, until the
/// table is next analysed (seen in the top-up bench: 0.35 to 0.9 ms a step, 0.1 ms
/// planned per call).
pub(crate) async fn lock_in_key_order(
    tx: &mut sqlx::PgConnection,
    table: &str,
    ids: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "SELECT 1 FROM {table} WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    ))
    .bind(ids)
    .persistent(false)
    .execute(tx)
    .await?;
    Ok(())
}

/// Where the writers of every queue run, and what tells them to finish.
#[derive(Debug, Clone, Default)]
pub struct Writers {
    pub tasks: TaskTracker,
    pub stop: CancellationToken,
}

impl Writers {
    /// Lets the writers write what is queued and stop; waits for that until `deadline`.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout_at(deadline, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                writers = self.tasks.len(),
                "writes still queued after the grace period"
            );
        }
    }
}

type Reply<W> = oneshot::Sender<Result<<W as Batched>::Outcome, DbError>>;
type Queued<W> = (W, Reply<W>);

/// Where writes of one kind are handed to their writers.
pub struct GroupCommit<W: Batched> {
    sender: mpsc::Sender<Queued<W>>,
}

impl<W: Batched> Clone for GroupCommit<W> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
        }
    }
}

/// What the writers take their batches from.
struct Inbox<W: Batched> {
    receiver: mpsc::Receiver<Queued<W>>,
    /// Writes taken from the channel but not yet written, oldest first: those whose key
    /// was already in the last batch, and any beyond a full batch.
    deferred: VecDeque<Queued<W>>,
}

impl<W: Batched> GroupCommit<W> {
    /// Starts the writers. SQLite writes one transaction at a time, so one writer; on
    /// PostgreSQL the two busy queues (debits and steps) have half of the pool's
    /// connections less three each, and settlements one, so that together they leave two
    /// for reads, such as the API key check, and for the jobs; batches are written side
    /// by side while the next ones gather. The writers run
    /// on `writers.tasks`, and stop once the queue is drained after `writers.stop` (or
    /// after every handle is dropped); a write handed in later fails with `WriterStopped`.
    pub fn start(db: Db, writers: &Writers) -> Self {
        let count = W::writer_count(&db);
        let (sender, receiver) = mpsc::channel(MAX_BATCH * 4);
        let inbox = Arc::new(Mutex::new(Inbox {
            receiver,
            deferred: VecDeque::new(),
        }));
        for _ in 0..count {
            let stop = writers.stop.clone();
            writers
                .tasks
                .spawn(write(db.clone(), Arc::clone(&inbox), stop));
        }
        Self { sender }
    }

    /// Writes `item`, sharing its commit with whatever arrived meanwhile.
    pub async fn write(&self, item: W) -> Result<W::Outcome, DbError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((item, reply))
            .await
            .map_err(|_| DbError::WriterStopped)?;
        answer.await.map_err(|_| DbError::WriterStopped)?
    }
}

async fn write<W: Batched>(db: Db, inbox: Arc<Mutex<Inbox<W>>>, stop: CancellationToken) {
    while let Some(mut batch) = gather(&inbox, &stop).await {
        // A caller that has gone (timed out, hung up) is not written for.
        batch.retain(|(_, reply)| !reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        crate::metrics::batch_written(W::QUEUE, batch.len());
        let items: Vec<&W> = batch.iter().map(|(item, _)| item).collect();
        match W::write_batch(&db, &items).await {
            Ok(outcomes) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    // The caller may have gone meanwhile; the write stands either way.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error)
                if W::EACH_ALONE_IF_THE_BATCH_FAILS
                    && batch.len() > 1
                    && !error.is_unavailable() =>
            {
                tracing::warn!(%error, size = batch.len(), "batch write failed; writing its writes one by one");
                for (item, reply) in batch {
                    let alone = W::write_batch(&db, &[&item]).await;
                    let _ = reply.send(alone.map(|mut one| one.remove(0)));
                }
            }
            Err(error) => {
                // Nothing of the batch was written (or, if the commit itself was lost,
                // a retry finds what was): each caller gets the error and may retry.
                let message = error.with_cause();
                tracing::error!(error = %message, size = batch.len(), "batch write failed");
                for (_, reply) in batch {
                    let _ = reply.send(Err(DbError::BatchFailed(message.clone())));
                }
            }
        }
    }
}

/// The next batch: the oldest waiting writes, one per key. `None` once the queue is
/// drained after `stop`, or closed and drained.
async fn gather<W: Batched>(
    inbox: &Mutex<Inbox<W>>,
    stop: &CancellationToken,
) -> Option<Vec<Queued<W>>> {
    let mut inbox = inbox.lock().await;
    if inbox.deferred.is_empty() {
        let first = tokio::select! {
            biased;
            next = inbox.receiver.recv() => next?,
            () = stop.cancelled() => inbox.receiver.try_recv().ok()?,
        };
        inbox.deferred.push_back(first);
    }
    while let Ok(next) = inbox.receiver.try_recv() {
        inbox.deferred.push_back(next);
    }
    let mut keys = HashSet::new();
    let mut batch = Vec::new();
    let mut later = VecDeque::new();
    for next in inbox.deferred.drain(..) {
        if batch.len() < MAX_BATCH && keys.insert(next.0.key().to_owned()) {
            batch.push(next);
        } else {
            later.push_back(next);
        }
    }
    inbox.deferred = later;
    Some(batch)
}

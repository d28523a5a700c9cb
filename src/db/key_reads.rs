//! API key checks that arrive together share one read. Every request's key is read from
//! the database after the request arrived, so a key revoked a moment before is refused
//! on every replica; but one read per request cost a round trip and the database's work
//! for each, a third of the API's rate on PostgreSQL. A check waits for the next read to
//! start (never joins one already under way, which could predate a revocation), and that
//! read fetches every key the waiting checks name in one statement.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::{Db, DbError, keys::StoredKey};

/// The most checks one read answers; more wait for the next.
const MAX_CHECKS: usize = 1024;

type Answer = Result<Option<StoredKey>, DbError>;
type Check = (String, oneshot::Sender<Answer>);

/// Where key checks are handed to the reader.
#[derive(Clone)]
pub struct KeyReads {
    sender: mpsc::Sender<Check>,
}

impl KeyReads {
    /// Starts the reader; it stops once every handle is dropped.
    pub fn start(db: Db) -> Self {
        let (sender, receiver) = mpsc::channel(MAX_CHECKS);
        tokio::spawn(read(db, receiver));
        Self { sender }
    }

    /// The key `id` as the database holds it now, revoked or not; `None` if unknown.
    pub async fn read(&self, id: &str) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send((id.to_owned(), reply))
            .await
            .map_err(|_| DbError::ReaderStopped)?;
        answer.await.map_err(|_| DbError::ReaderStopped)?
    }
}

async fn read(db: Db, mut receiver: mpsc::Receiver<Check>) {
    let mut checks = Vec::with_capacity(MAX_CHECKS);
    while receiver.recv_many(&mut checks, MAX_CHECKS).await > 0 {
        // A caller that has gone (timed out, hung up) needs no answer.
        checks.retain(|(_, reply)| !reply.is_closed());
        if checks.is_empty() {
            continue;
        }
        let mut ids: Vec<&str> = checks.iter().map(|(id, _)| id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let found = db.api_keys_named(&ids).await.map(|keys| {
            keys.into_iter()
                .map(|key| (key.id.clone(), key))
                .collect::<HashMap<_, _>>()
        });
        for (id, reply) in checks.drain(..) {
            let answer = match &found {
                Ok(keys) => Ok(keys.get(&id).cloned()),
                Err(error) => Err(DbError::SharedReadFailed(error.with_cause())),
            };
            let _ = reply.send(answer);
        }
    }
}

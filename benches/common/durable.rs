//! Baselines: what the database does with the service's own pool and durability settings
//! (SQLite WAL with synchronous=FULL and BEGIN IMMEDIATE; PostgreSQL as configured) when
//! each transaction is the smallest write that must reach the disk. And the runner that
//! drives an operation from concurrent tasks for a fixed time.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::task::JoinSet;
use topupd::db::Db;

/// Runs `op(task, n)` from `concurrency` tasks until `duration` has passed; operations
/// completed per second.
pub async fn sustained_rate<F, Fut>(concurrency: usize, duration: Duration, op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = JoinSet::new();
    for task in 0..concurrency {
        let op = op.clone();
        tasks.spawn(async move {
            let mut n = 0;
            while Instant::now() < deadline {
                op(task, n).await;
                n += 1;
            }
            n
        });
    }
    let mut total = 0;
    while let Some(done) = tasks.join_next().await {
        total += done.expect("a bench task panicked");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// A table outside the schema for the single-row insert baseline.
pub async fn create_commit_table(db: &Db) {
    const SQL: &str =
        "CREATE TABLE IF NOT EXISTS bench_commits (task BIGINT NOT NULL, n BIGINT NOT NULL)";
    let created = match db {
        Db::Sqlite(pool) => sqlx::query(SQL).execute(pool).await.map(drop),
        Db::Postgres(pool) => sqlx::query(SQL).execute(pool).await.map(drop),
    };
    created.expect("create the baseline table");
}

/// Runs `$body` in a write transaction opened as the service opens its own (`BEGIN
/// IMMEDIATE` on SQLite), bound to `$tx`, then commits it.
macro_rules! durably {
    ($db:expr, |$tx:ident| $body:expr) => {
        match $db {
            Db::Sqlite(pool) => {
                let mut $tx = pool
                    .begin_with("BEGIN IMMEDIATE")
                    .await
                    .expect("begin a write");
                $body;
                $tx.commit().await.expect("commit");
            }
            Db::Postgres(pool) => {
                let mut $tx = pool.begin().await.expect("begin a write");
                $body;
                $tx.commit().await.expect("commit");
            }
        }
    };
}

/// One durable transaction that inserts one row.
pub async fn insert_one(db: &Db, task: usize, n: u64) {
    const SQL: &str = "INSERT INTO bench_commits (task, n) VALUES ($1, $2)";
    let (task, n) = (task as i64, n as i64);
    durably!(db, |tx| sqlx::query(SQL)
        .bind(task)
        .bind(n)
        .execute(&mut *tx)
        .await
        .expect("insert one row"));
}

/// One durable transaction with one conditional update of a balance, as a debit makes.
pub async fn debit_one(db: &Db, account_id: &str, amount: i64) {
    const SQL: &str = "UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1";
    durably!(db, |tx| {
        let done = sqlx::query(SQL)
            .bind(amount)
            .bind(account_id)
            .execute(&mut *tx)
            .await
            .expect("update one balance");
        assert_eq!(done.rows_affected(), 1, "the bench accounts are funded");
    });
}

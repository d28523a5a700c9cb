//! Storage: the only place with SQL. One [`Db`] over a SQLite or PostgreSQL pool, chosen by
//! URL; each query is written once and [`with_pool!`] expands it for both drivers, so both
//! are type-checked. Timestamps are integer Unix milliseconds (UTC), credits integer
//! millicredits, on both backends.

pub mod accounts;
pub mod attempts;
pub mod audit;
pub mod auto_topup;
pub mod console;
pub mod group_commit;
pub mod keys;
pub mod ledger;
pub mod notices;
pub mod payment_methods;
pub mod portal;
pub mod reversals;
pub mod sampling;
pub mod usage;
pub mod webhooks;

use std::{path::Path, str::FromStr, time::Duration};

use secrecy::ExposeSecret;
use sqlx::{
    PgPool, Postgres, Sqlite, SqlitePool, Transaction,
    migrate::Migrator,
    postgres::{PgPoolOptions, PgRow},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};

pub use self::sampling::StateSample;
use crate::config::DatabaseConfig;

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How long a request waits for a pooled connection before failing.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection pool to one of the two supported databases.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error")]
    Sqlx(#[from] sqlx::Error),
    #[error("database migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored data is inconsistent: {0}")]
    Corrupt(String),
    #[error("the batch writer has stopped")]
    WriterStopped,
    /// A batch of writes sharing one commit failed; this one was in it.
    #[error("batch write failed: {0}")]
    BatchFailed(String),
}

/// Expands `$body` once per backend with `$pool` bound to the concrete pool.
macro_rules! with_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Implements a trait of in-transaction operations for both drivers' connections, so
/// multi-step writes compose inside one transaction with each statement written once.
macro_rules! impl_for_connections {
    ($trait:path { $($body:tt)* }) => {
        impl $trait for sqlx::SqliteConnection { $($body)* }
        impl $trait for sqlx::PgConnection { $($body)* }
    };
}
pub(crate) use impl_for_connections;

/// Starting a transaction that will write.
pub(crate) trait BeginWrite {
    type Database: sqlx::Database;
    async fn begin_write(&self) -> Result<Transaction<'static, Self::Database>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Database = Sqlite;
    /// Takes the write lock up front: a deferred transaction that reads and then writes
    /// fails with SQLITE_BUSY when another writer committed in between.
    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Database = Postgres;
    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// A page of a newest-first listing: at most `limit` rows with ids below `before`.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u32,
    pub before: Option<i64>,
}

impl PageRequest {
    /// Upper bound for the id (exclusive).
    fn before(&self) -> i64 {
        self.before.unwrap_or(i64::MAX)
    }

    /// One more row than asked for, to learn whether another page follows.
    fn fetch_limit(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// Cuts the extra row and returns the cursor of the next page, if any.
    fn finish<T: Paged>(&self, mut rows: Vec<T>) -> Page<T> {
        let limit = self.limit as usize;
        let next_before = (rows.len() > limit).then(|| {
            rows.truncate(limit);
            rows.last().map(Paged::page_key)
        });
        Page {
            items: rows,
            next_before: next_before.flatten(),
        }
    }
}

/// A row of a paged listing, ordered by an integer key.
pub(crate) trait Paged:
    Send + Unpin + for<'r> sqlx::FromRow<'r, SqliteRow> + for<'r> sqlx::FromRow<'r, PgRow>
{
    fn page_key(&self) -> i64;
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `before` to get the next (older) page.
    pub next_before: Option<i64>,
}

impl<T> Page<T> {
    /// The same page with each row converted, failing on the first that does not.
    pub(crate) fn try_map<U, E>(self, f: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            items: self.items.into_iter().map(f).collect::<Result<_, _>>()?,
            next_before: self.next_before,
        })
    }
}

/// Applies SQLite's migrations on a connection of their own with foreign keys off, as
/// SQLite's procedure for rebuilding a table asks (a constraint can only change by
/// rebuilding its table, and other tables refer to it), then checks every foreign key
/// before the connection is closed.
async fn migrate_sqlite(pool: &SqlitePool) -> Result<(), DbError> {
    use sqlx::Connection;
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("PRAGMA foreign_keys = OFF")
        .execute(&mut conn)
        .await?;
    let migrated = SQLITE_MIGRATOR.run(&mut conn).await;
    let broken = sqlx::query("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await?
        .len();
    conn.close().await?;
    migrated?;
    if broken > 0 {
        return Err(DbError::Corrupt(format!(
            "{broken} rows break a foreign key after migrating"
        )));
    }
    Ok(())
}

impl Db {
    /// One page of a newest-first listing. `sql` binds the filter as `$1` (may be NULL),
    /// the exclusive upper key as `$2` and the row limit as `$3`.
    pub(crate) async fn page<T: Paged>(
        &self,
        sql: &str,
        filter: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<T>, DbError> {
        let rows: Vec<T> = with_pool!(self, |pool| {
            sqlx::query_as(sql)
                .bind(filter)
                .bind(page.before())
                .bind(page.fetch_limit())
                .fetch_all(pool)
                .await?
        });
        Ok(page.finish(rows))
    }

    pub async fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        let url = config.database_url();
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // sqlx leaves synchronous unset; NORMAL could lose the last commits on
                // power loss, and a lost claim or debit is money.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_millis(config.busy_timeout_ms))
                .foreign_keys(true);
            // SQLite gives its -wal and -shm files the database file's permissions.
            let file = options.get_filename();
            if !url.contains("mode=memory") && file != Path::new(":memory:") {
                crate::files::create_private_file(file).map_err(sqlx::Error::Io)?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await?;
            Ok(Self::Sqlite(pool))
        } else {
            let pool = PgPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect(url)
                .await?;
            Ok(Self::Postgres(pool))
        }
    }

    /// Applies every migration not yet applied.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Self::Sqlite(pool) => migrate_sqlite(pool).await?,
            Self::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// True when the database answers and every migration this build knows is applied.
    pub async fn ready(&self) -> Result<bool, DbError> {
        const SQL: &str =
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM _sqlx_migrations WHERE success";
        let (applied, expected): (i64, i64) = with_pool!(self, |pool| (
            sqlx::query_scalar(SQL).fetch_one(pool).await?,
            self.migrator().iter().map(|m| m.version).max().unwrap_or(0),
        ));
        Ok(applied >= expected)
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Sqlite(_) => &SQLITE_MIGRATOR,
            Self::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    /// The database's own clock, in Unix milliseconds.
    pub async fn clock_ms(&self) -> Result<i64, DbError> {
        let sql = match self {
            Self::Sqlite(_) => {
                "SELECT CAST(ROUND((julianday('now') - 2440587.5) * 86400000.0) AS INTEGER)"
            }
            Self::Postgres(_) => {
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
            }
        };
        Ok(with_pool!(self, |pool| sqlx::query_scalar(sql)
            .fetch_one(pool)
            .await?))
    }

    pub async fn close(&self) {
        with_pool!(self, |pool| pool.close().await)
    }
}

/// Which database a configuration names, for the logs: never its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseLocation {
    /// `sqlite` or `postgres`.
    pub kind: &'static str,
    /// The SQLite file, or the PostgreSQL server and database as `host:port/database`.
    pub location: String,
}

impl DatabaseConfig {
    fn database_url(&self) -> &str {
        self.url.expose_secret()
    }

    pub fn location(&self) -> DatabaseLocation {
        let url = self.database_url();
        if url.starts_with("sqlite:") {
            let location = SqliteConnectOptions::from_str(url).map_or_else(
                |_| "(unreadable url)".to_owned(),
                |options| options.get_filename().display().to_string(),
            );
            return DatabaseLocation {
                kind: "sqlite",
                location,
            };
        }
        // `postgres://user:password@host:port/database?options`: everything up to the
        // last `@` is taken for credentials, so that no password shows, even one that is
        // not percent-encoded (an `@` in the options garbles the location instead).
        let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
        let rest = rest.rfind('@').map_or(rest, |at| &rest[at + 1..]);
        let (server, rest) = rest.split_once('/').unwrap_or((rest, ""));
        let (database, options) = rest.split_once('?').unwrap_or((rest, ""));
        // A Unix socket's directory comes as `?host=/run/postgresql`.
        let socket = options.split('&').find_map(|o| o.strip_prefix("host="));
        let server = socket
            .or(Some(server).filter(|s| !s.is_empty()))
            .unwrap_or("localhost");
        DatabaseLocation {
            kind: "postgres",
            location: format!("{server}/{database}"),
        }
    }
}

/// A new time-ordered public id such as `acct_0190...`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A unique or primary-key constraint refused the row: someone else got there first.
pub(crate) fn is_unique_violation(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(e) if e.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_location_names_the_file_or_server_and_never_the_credentials() {
        let location = |url: &str| {
            DatabaseConfig {
                url: url.to_owned().into(),
                ..crate::config::Config::defaults().database
            }
            .location()
        };
        assert_eq!(
            location("sqlite:///var/lib/topupd/topupd.db?mode=rwc"),
            DatabaseLocation {
                kind: "sqlite",
                location: "/var/lib/topupd/topupd.db".to_owned()
            }
        );
        assert_eq!(
            location("postgres://topupd:s3cret@db.internal:6432/billing?sslmode=require"),
            DatabaseLocation {
                kind: "postgres",
                location: "db.internal:6432/billing".to_owned()
            }
        );
        assert_eq!(
            location("postgresql://topupd:s3cret@/billing?host=/run/postgresql").location,
            "/run/postgresql/billing"
        );
        assert_eq!(
            location("postgres://topupd:pa/ss@w?rd@db/billing").location,
            "db/billing"
        );
    }

    #[test]
    fn both_backends_have_the_same_migration_versions_and_names() {
        let describe = |m: &Migrator| -> Vec<(i64, String)> {
            m.iter()
                .map(|m| (m.version, m.description.to_string()))
                .collect()
        };
        let sqlite = describe(&SQLITE_MIGRATOR);
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, describe(&POSTGRES_MIGRATOR));
    }

    /// Migration 10 rebuilds `accounts` and `ledger_entries` on SQLite: every row, the
    /// ledger's id sequence and every foreign key survive, and balances may go below zero.
    #[tokio::test]
    async fn rebuilding_sqlite_tables_keeps_rows_sequences_and_foreign_keys() {
        let dir = tempfile::tempdir().expect("dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("upgrade.db"))
            .create_if_missing(true)
            .foreign_keys(true);
        let pool = SqlitePool::connect_with(options).await.expect("pool");
        let before = Migrator {
            migrations: std::borrow::Cow::Owned(SQLITE_MIGRATOR.migrations[..9].to_vec()),
            ..Migrator::DEFAULT
        };
        before.run(&pool).await.expect("migrations 1 to 9");
        for sql in [
            "INSERT INTO accounts (id, email, name, balance, created_at, auto_topup_enabled) \
             VALUES ('acct_1', 'ada@example.com', 'Ada', 5000, 1, TRUE)",
            "INSERT INTO ledger_entries (account_id, kind, reference, amount, balance_after, \
             description, created_at) VALUES ('acct_1', 'adjustment', 'adj_1', 5000, 5000, 'gift', 1)",
            "INSERT INTO api_keys (id, secret_hash, role, account_id, label, created_at) \
             VALUES ('key_1', 'h', 'customer', 'acct_1', 'app', 1)",
        ] {
            sqlx::query(sql).execute(&pool).await.expect(sql);
        }
        migrate_sqlite(&pool).await.expect("migration 10");

        let kept: (i64, bool) =
            sqlx::query_as("SELECT balance, auto_topup_enabled FROM accounts WHERE id = 'acct_1'")
                .fetch_one(&pool)
                .await
                .expect("the account");
        assert_eq!(kept, (5000, true));
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO ledger_entries (account_id, kind, reference, amount, balance_after, \
             description, created_at) VALUES ('acct_1', 'payment_refund', 'tpu_1:1', -6000, -1000, 'refund', 2) \
             RETURNING id",
        )
        .fetch_one(&pool)
        .await
        .expect("an entry below zero");
        assert_eq!(next, 2, "the ledger's ids go on from where they were");
        sqlx::query("UPDATE accounts SET balance = -1000 WHERE id = 'acct_1'")
            .execute(&pool)
            .await
            .expect("a balance below zero");
        let orphan = sqlx::query(
            "INSERT INTO api_keys (id, secret_hash, role, account_id, label, created_at) \
             VALUES ('key_2', 'h', 'customer', 'acct_nobody', 'app', 1)",
        )
        .execute(&pool)
        .await;
        assert!(orphan.is_err(), "foreign keys hold on the rebuilt table");
        let deleted = sqlx::query("DELETE FROM ledger_entries")
            .execute(&pool)
            .await;
        assert!(deleted.is_err(), "the ledger is still append-only");
    }
}

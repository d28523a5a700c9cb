//! Storage: the only place with SQL. One [`Db`] over a SQLite or PostgreSQL pool, chosen by
//! URL; each query is written once and [`with_pool!`] expands it for both drivers, so both
//! are type-checked. Timestamps are integer Unix milliseconds (UTC), credits integer
//! millicredits, on both backends.

pub mod accounts;
pub mod attempts;
pub mod audit;
pub mod auto_topup;
pub mod card_health;
pub mod console;
pub mod group_commit;
pub mod key_reads;
pub mod keys;
pub mod ledger;
pub mod notices;
pub mod payment_methods;
pub mod portal;
pub mod provider_budget;
pub mod reconciliation;
pub mod reversals;
pub mod sampling;
mod schema;
pub mod usage;
pub mod webhook_endpoints;
pub mod webhook_outbox;
pub mod webhooks;

use std::{path::Path, str::FromStr, time::Duration};

use secrecy::ExposeSecret;
use sqlx::{
    PgPool, Postgres, Sqlite, SqlitePool, Transaction,
    postgres::{PgPoolOptions, PgRow},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
    },
};

pub use self::sampling::StateSample;
pub use self::schema::Schema;
use self::schema::not_ready;
use crate::config::DatabaseConfig;

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
    /// The database is missing, or its schema is not this build's.
    #[error("{}", not_ready(.0, .1))]
    NotReady(String, Schema),
    #[error("the batch writer has stopped")]
    WriterStopped,
    /// A batch of writes sharing one commit failed; this one was in it.
    #[error("batch write failed: {0}")]
    BatchFailed(String),
    #[error("the key reader has stopped")]
    ReaderStopped,
    /// A read answering several callers at once failed; this one was among them.
    #[error("shared read failed: {0}")]
    SharedReadFailed(String),
}

impl DbError {
    /// The error with its cause, for the several callers a shared statement failed.
    pub(crate) fn with_cause(&self) -> String {
        match std::error::Error::source(self) {
            Some(cause) => format!("{self}: {cause}"),
            None => self.to_string(),
        }
    }

    /// The database could not be reached (no connection in time, or a broken one), as
    /// opposed to a statement it refused.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Sqlx(sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
        )
    }
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

    /// Connects, creating the SQLite file if there is none: for `serve` and `migrate`.
    /// A database a newer release migrated is refused: this one cannot know what its
    /// newer tables mean for money.
    pub async fn connect(config: &DatabaseConfig) -> Result<Self, DbError> {
        let db = Self::open(config, true).await?;
        match db.schema().await? {
            schema @ Schema::Ahead { .. } => {
                db.close().await;
                Err(DbError::NotReady(config.location().to_string(), schema))
            }
            _ => Ok(db),
        }
    }

    /// Connects to a database `serve` or `migrate` made, whose schema is this build's:
    /// for every other command, so that one run from the wrong directory, or with the
    /// wrong environment, fails instead of working on an empty database of its own.
    pub async fn connect_existing(config: &DatabaseConfig) -> Result<Self, DbError> {
        let db = Self::open(config, false).await?;
        match db.schema().await? {
            Schema::Current => Ok(db),
            schema => {
                db.close().await;
                Err(DbError::NotReady(config.location().to_string(), schema))
            }
        }
    }

    async fn open(config: &DatabaseConfig, create: bool) -> Result<Self, DbError> {
        let url = config.database_url();
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                // sqlx leaves synchronous unset; NORMAL could lose the last commits on
                // power loss, and a lost claim or debit is money.
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_millis(config.busy_timeout_ms))
                .foreign_keys(true);
            // SQLite gives its -wal and -shm files the database file's permissions.
            let file = options.get_filename();
            let in_memory = url.contains("mode=memory") || file == Path::new(":memory:");
            if !create && !in_memory && !file.exists() {
                return Err(DbError::NotReady(
                    config.location().to_string(),
                    Schema::Empty,
                ));
            }
            if create && !in_memory {
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
                .await
                .map_err(|error| match &error {
                    // invalid_catalog_name: no database of that name on the server.
                    sqlx::Error::Database(e) if e.code().as_deref() == Some("3D000") => {
                        DbError::NotReady(config.location().to_string(), Schema::Empty)
                    }
                    _ => DbError::Sqlx(error),
                })?;
            Ok(Self::Postgres(pool))
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

/// Which database a configuration names, for the logs and errors: never its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseLocation {
    /// `sqlite` or `postgres`.
    pub kind: &'static str,
    /// The SQLite file, or the PostgreSQL server and database as `host:port/database`.
    pub location: String,
}

impl std::fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind, self.location)
    }
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
                |options| {
                    let file = options.get_filename();
                    let full = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
                    full.display().to_string()
                },
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
}

//! The schema: applying this build's migrations, and where a database stands against
//! them (missing, behind, current, or ahead, which an older release meets after a newer
//! one migrated it).

use sqlx::{SqlitePool, migrate::Migrator};

use super::{Db, DbError, with_pool};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Where a database's schema stands against the migrations this build knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// No database, or one no topupd has migrated.
    Empty,
    Behind {
        applied: i64,
        known: i64,
    },
    Current,
    /// Migrated by a newer release: this one does not know every table it may find.
    Ahead {
        applied: i64,
        known: i64,
    },
}

/// What a command that needs a ready database says when it finds another.
pub(super) fn not_ready(location: &str, schema: &Schema) -> String {
    let database = format!("the database at {location}");
    match schema {
        Schema::Empty if location.starts_with("postgres") => format!(
            "no topupd database at {location}; check database.url where the service runs, or \
             create the database on the server and run `topupd migrate`"
        ),
        Schema::Empty => format!(
            "no topupd database at {location}; run this where the service runs, with its \
             configuration and environment (a relative sqlite path is relative to the working \
             directory), or create the database with `topupd migrate`"
        ),
        Schema::Behind { applied, known } => format!(
            "{database} is at migration {applied}, this topupd needs {known}: \
             run `topupd migrate` first"
        ),
        Schema::Ahead { applied, known } => format!(
            "{database} is at migration {applied}, newer than this topupd \
             knows ({known}): run the release that migrated it, or restore the backup taken \
             before the upgrade (docs/operations.md, \"Upgrade and roll back\")"
        ),
        Schema::Current => format!("{database} is ready"),
    }
}

impl Db {
    fn migrator(&self) -> &'static Migrator {
        match self {
            Self::Sqlite(_) => &SQLITE_MIGRATOR,
            Self::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    /// The migrations applied so far, oldest first.
    async fn applied(&self) -> Result<Vec<i64>, DbError> {
        let exists_sql = match self {
            Self::Sqlite(_) => {
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
            Self::Postgres(_) => "SELECT to_regclass('_sqlx_migrations') IS NOT NULL",
        };
        const APPLIED: &str = "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version";
        with_pool!(self, |pool| {
            let exists: bool = sqlx::query_scalar(exists_sql).fetch_one(pool).await?;
            if !exists {
                return Ok(Vec::new());
            }
            Ok(sqlx::query_scalar(APPLIED).fetch_all(pool).await?)
        })
    }

    /// Where the schema stands against this build's migrations, version by version: one
    /// it does not know is a newer release's, and one it knows but finds missing is to be
    /// applied.
    pub async fn schema(&self) -> Result<Schema, DbError> {
        let applied = self.applied().await?;
        let known: Vec<i64> = self.migrator().iter().map(|m| m.version).collect();
        let (Some(&newest), Some(&known_newest)) = (applied.iter().max(), known.iter().max())
        else {
            return Ok(Schema::Empty);
        };
        Ok(if applied.iter().any(|v| !known.contains(v)) {
            Schema::Ahead {
                applied: newest,
                known: known_newest,
            }
        } else if known.iter().any(|v| !applied.contains(v)) {
            Schema::Behind {
                applied: newest,
                known: known_newest,
            }
        } else {
            Schema::Current
        })
    }

    /// Applies every migration not yet applied, and answers which, with their names.
    pub async fn migrate(&self) -> Result<Vec<(i64, String)>, DbError> {
        let before = self.applied().await?;
        match self {
            Self::Sqlite(pool) => migrate_sqlite(pool).await?,
            Self::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        Ok(self
            .migrator()
            .iter()
            .filter(|m| !before.contains(&m.version))
            .map(|m| (m.version, m.description.to_string()))
            .collect())
    }

    /// True when the database answers and every migration this build knows is applied.
    pub async fn ready(&self) -> Result<bool, DbError> {
        Ok(matches!(
            self.schema().await?,
            Schema::Current | Schema::Ahead { .. }
        ))
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

#[cfg(test)]
mod tests {
    use sqlx::sqlite::SqliteConnectOptions;

    use super::*;

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

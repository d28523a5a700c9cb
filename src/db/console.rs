//! The support console's sessions: one per staff sign-in, standing for the API key signed
//! in with, and over as soon as that key is revoked.

use super::{BeginWrite, Db, DbError, with_pool};
use crate::clock::Millis;

/// A staff session as it is stored.
#[derive(Debug, Clone)]
pub struct NewConsoleSession<'a> {
    pub id_hash: &'a str,
    pub key_id: &'a str,
    pub csrf_token: &'a str,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// A live staff session, with the key it stands for.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StaffSession {
    pub id_hash: String,
    pub key_id: String,
    pub key_label: String,
    pub role: String,
    pub csrf_token: String,
    pub last_seen_at: Millis,
}

impl Db {
    /// Starts a staff session; sessions long expired are swept out on the way.
    pub async fn create_console_session(
        &self,
        session: &NewConsoleSession<'_>,
    ) -> Result<(), DbError> {
        const SWEEP: &str = "DELETE FROM console_sessions WHERE expires_at < $1";
        const INSERT: &str = "INSERT INTO console_sessions \
             (id_hash, key_id, csrf_token, created_at, last_seen_at, expires_at) \
             VALUES ($1, $2, $3, $4, $4, $5)";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(SWEEP)
                .bind(session.created_at - 86_400_000)
                .execute(&mut *tx)
                .await?;
            sqlx::query(INSERT)
                .bind(session.id_hash)
                .bind(session.key_id)
                .bind(session.csrf_token)
                .bind(session.created_at)
                .bind(session.expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// The session with this id hash, if it has neither expired nor been idle since
    /// `idle_since`, and its key is not revoked.
    pub async fn console_session(
        &self,
        id_hash: &str,
        now: Millis,
        idle_since: Millis,
    ) -> Result<Option<StaffSession>, DbError> {
        const SQL: &str = "SELECT s.id_hash, s.key_id, k.label AS key_label, k.role, \
             s.csrf_token, s.last_seen_at \
             FROM console_sessions s JOIN api_keys k ON k.id = s.key_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3 \
             AND k.revoked_at IS NULL";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(id_hash)
                .bind(now)
                .bind(idle_since)
                .fetch_optional(pool)
                .await?
        }))
    }
}

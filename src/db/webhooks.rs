//! The provider's webhook events: stored once per id, then processed.

use super::{Db, DbError, with_pool};
use crate::clock::Millis;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredEvent {
    pub id: String,
    #[sqlx(rename = "type")]
    pub kind: String,
    pub object_id: Option<String>,
    pub payload: String,
    pub received_at: Millis,
    pub processed_at: Option<Millis>,
    pub last_error: Option<String>,
}

const COLUMNS: &str = "id, type, object_id, payload, received_at, processed_at, last_error";

impl Db {
    /// Stores an authentic event unless its id was seen before; true if new.
    pub async fn store_event(
        &self,
        id: &str,
        kind: &str,
        object_id: Option<&str>,
        payload: &str,
        at: Millis,
    ) -> Result<bool, DbError> {
        const SQL: &str = "INSERT INTO webhook_events (id, type, object_id, payload, received_at) \
                           VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING";
        let inserted = with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(id)
                .bind(kind)
                .bind(object_id)
                .bind(payload)
                .bind(at)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(inserted == 1)
    }

    /// Records that the event was handled, or why handling it failed (it stays due).
    pub async fn finish_event(
        &self,
        id: &str,
        at: Millis,
        error: Option<&str>,
    ) -> Result<(), DbError> {
        const SQL: &str = "UPDATE webhook_events SET processed_at = CASE WHEN $1 IS NULL THEN $2 END, \
                           last_error = $1 WHERE id = $3";
        with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(error)
                .bind(at)
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Events not yet handled, oldest first.
    pub async fn unprocessed_events(&self, limit: u32) -> Result<Vec<StoredEvent>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_events WHERE processed_at IS NULL \
             ORDER BY received_at, id LIMIT $1"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    pub async fn event(&self, id: &str) -> Result<Option<StoredEvent>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_events WHERE id = $1");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        }))
    }
}

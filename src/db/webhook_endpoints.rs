//! The host's webhook endpoints: where events go, which ones, and the secrets that sign
//! them. Every change is audited in its transaction.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    audit::{Actor, AuditWrites},
    new_id, with_pool,
};
use crate::{
    clock::Millis,
    domain::webhook::{self, Subscription},
};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub seq: i64,
    pub id: String,
    pub url: String,
    pub description: String,
    pub events: String,
    pub secret: String,
    pub previous_secret_until: Option<Millis>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

impl Paged for EndpointRow {
    fn page_key(&self) -> i64 {
        self.seq
    }
}

impl EndpointRow {
    /// The event types it receives; none if the stored list cannot be read (then it
    /// receives none either, as [`super::webhook_outbox::EventWrites`] reads it).
    pub fn event_types(&self) -> Vec<String> {
        Subscription::from_json(&self.events)
            .map(|s| s.types().to_vec())
            .unwrap_or_default()
    }
}

/// An endpoint to add.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: String,
    pub description: String,
    pub events: Subscription,
}

/// Changes to an endpoint; `None` keeps a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointChange {
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<Subscription>,
    /// Turning an endpoint back on clears why it was turned off.
    pub enabled: Option<bool>,
}

const COLUMNS: &str = "seq, id, url, description, events, secret, previous_secret_until, \
     enabled, disabled_reason, created_at, updated_at";

/// How long a rotated secret keeps signing beside the new one.
pub const ROTATION_OVERLAP_MS: Millis = 24 * 3600 * 1000;

impl Db {
    pub async fn create_webhook_endpoint(
        &self,
        new: &NewEndpoint,
        actor: &Actor,
        at: Millis,
    ) -> Result<EndpointRow, DbError> {
        let insert = format!(
            "INSERT INTO webhook_endpoints (id, url, description, events, secret, enabled, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, TRUE, $6, $6) RETURNING {COLUMNS}"
        );
        let id = new_id("we");
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let row: EndpointRow = sqlx::query_as(&insert)
                .bind(&id)
                .bind(&new.url)
                .bind(&new.description)
                .bind(new.events.to_json())
                .bind(webhook::new_secret())
                .bind(at)
                .fetch_one(&mut *tx)
                .await?;
            let detail = json!({ "endpoint_id": id, "url": new.url, "events": new.events.types() });
            tx.audit(actor, "webhook_endpoint.create", None, detail, at)
                .await?;
            tx.commit().await?;
            Ok(row)
        })
    }

    pub async fn webhook_endpoint(&self, id: &str) -> Result<Option<EndpointRow>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_endpoints WHERE id = $1");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        }))
    }

    /// Endpoints, newest first.
    pub async fn webhook_endpoints(&self, page: PageRequest) -> Result<Page<EndpointRow>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_endpoints WHERE ($1 IS NULL OR id = $1) AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        );
        self.page(&sql, None, page).await
    }

    /// Applies `change`; `None` if there is no such endpoint.
    pub async fn change_webhook_endpoint(
        &self,
        id: &str,
        change: &EndpointChange,
        actor: &Actor,
        at: Millis,
    ) -> Result<Option<EndpointRow>, DbError> {
        let update = format!(
            "UPDATE webhook_endpoints SET url = COALESCE($1, url), \
             description = COALESCE($2, description), events = COALESCE($3, events), \
             enabled = COALESCE($4, enabled), \
             disabled_reason = CASE WHEN $4 THEN NULL ELSE disabled_reason END, \
             updated_at = $5 WHERE id = $6 RETURNING {COLUMNS}"
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let row: Option<EndpointRow> = sqlx::query_as(&update)
                .bind(&change.url)
                .bind(&change.description)
                .bind(change.events.as_ref().map(Subscription::to_json))
                .bind(change.enabled)
                .bind(at)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_some() {
                let detail = json!({
                    "endpoint_id": id,
                    "url": change.url,
                    "events": change.events.as_ref().map(Subscription::types),
                    "enabled": change.enabled,
                });
                tx.audit(actor, "webhook_endpoint.change", None, detail, at)
                    .await?;
            }
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Gives the endpoint a new secret; the previous one signs beside it for
    /// [`ROTATION_OVERLAP_MS`]. `None` if there is no such endpoint.
    pub async fn rotate_webhook_secret(
        &self,
        id: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<Option<EndpointRow>, DbError> {
        let rotate = format!(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_secret_until = $1, \
             secret = $2, updated_at = $3 WHERE id = $4 RETURNING {COLUMNS}"
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let row: Option<EndpointRow> = sqlx::query_as(&rotate)
                .bind(at.saturating_add(ROTATION_OVERLAP_MS))
                .bind(webhook::new_secret())
                .bind(at)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_some() {
                tx.audit(
                    actor,
                    "webhook_endpoint.rotate_secret",
                    None,
                    json!({ "endpoint_id": id }),
                    at,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(row)
        })
    }

    /// Removes the endpoint and its deliveries; false if there was none.
    pub async fn delete_webhook_endpoint(
        &self,
        id: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let deleted = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                == 1;
            if deleted {
                tx.audit(
                    actor,
                    "webhook_endpoint.delete",
                    None,
                    json!({ "endpoint_id": id }),
                    at,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(deleted)
        })
    }
}

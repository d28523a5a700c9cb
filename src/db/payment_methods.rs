//! Saved cards: the provider's payment method ids with what the provider says of them.

use serde_json::json;

use super::{
    BeginWrite, Db, DbError,
    audit::{Actor, AuditWrites},
    notices::{NewNotice, NoticeWrites, QueueWhen},
    with_pool,
};
use crate::clock::Millis;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SavedCard {
    /// The provider's payment method id.
    pub id: String,
    pub account_id: String,
    pub brand: String,
    pub last4: String,
    pub exp_month: i64,
    pub exp_year: i64,
    pub is_default: bool,
    pub created_at: Millis,
}

#[derive(Debug)]
pub enum Removal {
    Removed(SavedCard),
    /// An open top-up attempt is charging it.
    InUse,
    NotFound,
}

const COLUMNS: &str = "id, account_id, brand, last4, exp_month, exp_year, is_default, created_at";

impl Db {
    /// The account's cards, the default first, then newest first.
    pub async fn saved_cards(&self, account_id: &str) -> Result<Vec<SavedCard>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM payment_methods WHERE account_id = $1 \
             ORDER BY is_default DESC, created_at DESC, id"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(account_id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// The account that saved the card, if any.
    pub async fn card_owner(&self, id: &str) -> Result<Option<String>, DbError> {
        const SQL: &str = "SELECT account_id FROM payment_methods WHERE id = $1";
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(SQL)
                .bind(id)
                .fetch_optional(pool)
                .await?
        }))
    }

    pub async fn default_card(&self, account_id: &str) -> Result<Option<SavedCard>, DbError> {
        let sql =
            format!("SELECT {COLUMNS} FROM payment_methods WHERE account_id = $1 AND is_default");
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(account_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Saves a card; it becomes the default when asked or when it is the account's first.
    /// Saving the same card again only updates what is known of it.
    /// Staff changes name their `actor` and are audited in the same transaction.
    pub async fn save_card(
        &self,
        card: &SavedCard,
        make_default: bool,
        actor: Option<&Actor>,
    ) -> Result<SavedCard, DbError> {
        let upsert = format!(
            "INSERT INTO payment_methods (id, account_id, brand, last4, exp_month, exp_year, is_default, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, FALSE, $7) \
             ON CONFLICT (id) DO UPDATE SET brand = $3, last4 = $4, exp_month = $5, exp_year = $6 \
             WHERE payment_methods.account_id = $2 RETURNING {COLUMNS}"
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let saved: Option<SavedCard> = sqlx::query_as(&upsert)
                .bind(&card.id)
                .bind(&card.account_id)
                .bind(&card.brand)
                .bind(&card.last4)
                .bind(card.exp_month)
                .bind(card.exp_year)
                .bind(card.created_at)
                .fetch_optional(&mut *tx)
                .await?;
            let saved = saved.ok_or_else(|| {
                DbError::Corrupt(format!(
                    "payment method {} belongs to another account",
                    card.id
                ))
            })?;
            let has_default: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM payment_methods WHERE account_id = $1 AND is_default",
            )
            .bind(&card.account_id)
            .fetch_optional(&mut *tx)
            .await?;
            let saved = if make_default || has_default.is_none() {
                tx.make_default(&card.account_id, &card.id)
                    .await?
                    .unwrap_or(saved)
            } else {
                saved
            };
            if let Some(actor) = actor {
                let detail = json!({ "payment_method_id": saved.id, "default": saved.is_default });
                tx.audit(
                    actor,
                    "payment_method.add",
                    Some(&card.account_id),
                    detail,
                    card.created_at,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(saved)
        })
    }

    /// Makes the card the account's default; `None` if the account has no such card.
    pub async fn set_default_card(
        &self,
        account_id: &str,
        id: &str,
        actor: Option<&Actor>,
        at: Millis,
    ) -> Result<Option<SavedCard>, DbError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let card = tx.make_default(account_id, id).await?;
            if let (Some(actor), Some(_)) = (actor, &card) {
                let detail = json!({ "payment_method_id": id });
                tx.audit(
                    actor,
                    "payment_method.default",
                    Some(account_id),
                    detail,
                    at,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(card)
        })
    }

    /// Refreshes what is stored of a card the account still has (brand, last 4 digits,
    /// expiry), audited as `actor`'s doing; a card removed meanwhile is not brought back.
    pub async fn refresh_card(
        &self,
        card: &SavedCard,
        actor: &Actor,
        at: Millis,
    ) -> Result<(), DbError> {
        const SQL: &str = "UPDATE payment_methods SET brand = $1, last4 = $2, exp_month = $3, \
                           exp_year = $4 WHERE id = $5 AND account_id = $6";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let updated = sqlx::query(SQL)
                .bind(&card.brand)
                .bind(&card.last4)
                .bind(card.exp_month)
                .bind(card.exp_year)
                .bind(&card.id)
                .bind(&card.account_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated > 0 {
                let detail = json!({ "payment_method_id": card.id, "last4": card.last4,
                    "exp_month": card.exp_month, "exp_year": card.exp_year });
                tx.audit(
                    actor,
                    "payment_method.refresh",
                    Some(&card.account_id),
                    detail,
                    at,
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Forgets a card unless an open attempt is charging it, queuing `notice` with it if
    /// auto top-up is then active. Removing the default makes the most recently saved of
    /// the others the default, if there is one.
    pub async fn remove_card(
        &self,
        account_id: &str,
        id: &str,
        (actor, notice): (Option<&Actor>, Option<&NewNotice>),
        at: Millis,
    ) -> Result<Removal, DbError> {
        const IN_USE: &str = "SELECT 1 FROM topup_attempts WHERE account_id = $1 AND payment_method_id = $2 \
                              AND state NOT IN ('succeeded', 'failed', 'canceled')";
        let delete = format!(
            "DELETE FROM payment_methods WHERE account_id = $1 AND id = $2 RETURNING {COLUMNS}"
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let in_use: Option<i32> = sqlx::query_scalar(IN_USE)
                .bind(account_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if in_use.is_some() {
                return Ok(Removal::InUse);
            }
            let removed: Option<SavedCard> = sqlx::query_as(&delete)
                .bind(account_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            if removed.as_ref().is_some_and(|card| card.is_default) {
                let newest: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM payment_methods WHERE account_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT 1",
                )
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
                if let Some(newest) = newest {
                    tx.make_default(account_id, &newest).await?;
                }
            }
            // Auto top-up falls back to the default card rather than one that is gone.
            sqlx::query(
                "UPDATE accounts SET auto_topup_payment_method_id = NULL \
                 WHERE id = $1 AND auto_topup_payment_method_id = $2",
            )
            .bind(account_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if let (Some(actor), Some(_)) = (actor, &removed) {
                let detail = json!({ "payment_method_id": id });
                tx.audit(actor, "payment_method.remove", Some(account_id), detail, at)
                    .await?;
            }
            if let (Some(notice), Some(_)) = (notice, &removed) {
                tx.queue_notice(notice, QueueWhen::AutoTopupActive).await?;
            }
            tx.commit().await?;
            Ok(removed.map_or(Removal::NotFound, Removal::Removed))
        })
    }
}

/// Moving the default flag inside the caller's transaction.
pub(crate) trait DefaultCard {
    async fn make_default(
        &mut self,
        account_id: &str,
        id: &str,
    ) -> Result<Option<SavedCard>, sqlx::Error>;
}

super::impl_for_connections!(DefaultCard {
    async fn make_default(&mut self, account_id: &str, id: &str) -> Result<Option<SavedCard>, sqlx::Error> {
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM payment_methods WHERE account_id = $1 AND id = $2")
            .bind(account_id)
            .bind(id)
            .fetch_optional(&mut *self)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        // Clear first: the partial unique index allows one default per account.
        sqlx::query("UPDATE payment_methods SET is_default = FALSE WHERE account_id = $1 AND is_default AND id <> $2")
            .bind(account_id)
            .bind(id)
            .execute(&mut *self)
            .await?;
        sqlx::query_as(&format!("UPDATE payment_methods SET is_default = TRUE WHERE id = $1 RETURNING {COLUMNS}"))
            .bind(id)
            .fetch_optional(&mut *self)
            .await
    }
});

//! The billing page's storage: the single-use links that open it, the browser sessions
//! they start, the keys that sign the links in emails, and the usage summed by day.

use super::{BeginWrite, Db, DbError, impl_for_connections, with_pool};
use crate::clock::Millis;

/// A link the host's backend asked for, before it is opened.
#[derive(Debug)]
pub struct NewPortalLink<'a> {
    pub token_hash: &'a str,
    pub account_id: &'a str,
    pub return_url: Option<&'a str>,
    /// The API key that asked for it.
    pub created_by: &'a str,
    pub created_at: Millis,
    pub expires_at: Millis,
}

/// A browser's session on the billing page.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PortalSession {
    pub id_hash: String,
    pub account_id: String,
    pub csrf_token: String,
    /// Where "back to the product" leads.
    pub return_url: Option<String>,
    /// What the session may reach: [`ACCOUNT_SCOPE`] or [`PAYMENT_SCOPE`].
    pub scope: String,
    pub created_at: Millis,
    pub last_seen_at: Millis,
    pub expires_at: Millis,
}

/// A session opened by the host's link: every page of its account.
pub const ACCOUNT_SCOPE: &str = "account";
/// A session opened by a notice's link: the payment waiting and the cards to pay it with.
pub const PAYMENT_SCOPE: &str = "payment";

/// Where a browser session is kept: a customer's on the billing page, or staff's on the
/// console. Both are touched and ended the same way.
#[derive(Debug, Clone, Copy)]
pub enum Sessions {
    Billing,
    Console,
}

impl Sessions {
    fn name(self) -> &'static str {
        match self {
            Self::Billing => "portal_sessions",
            Self::Console => "console_sessions",
        }
    }
}

/// A live session, with the email of its account (every page shows whose it is).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LiveSession {
    #[sqlx(flatten)]
    pub session: PortalSession,
    pub account_email: String,
}

/// The usage of one service on one day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UsageDay {
    /// Days since 1970-01-01.
    pub day: i64,
    pub service: String,
    pub requests: i64,
    /// Millicredits debited.
    pub used: i64,
    /// Millicredits of those given back since (failed work).
    pub refunded: i64,
}

const DAY_MS: i64 = 86_400_000;

/// The account's email if a notice about account $1 written at $2 may still open the
/// billing page.
const EMAIL_LINK_VALID: &str = "SELECT email FROM accounts WHERE id = $1 \
     AND (email_links_revoked_at IS NULL OR email_links_revoked_at < $2)";

impl Db {
    /// Stores a link; links and sessions long expired are swept out on the way.
    pub async fn create_portal_link(&self, link: &NewPortalLink<'_>) -> Result<(), DbError> {
        const INSERT: &str = "INSERT INTO portal_links \
             (token_hash, account_id, return_url, created_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)";
        const SWEEP_LINKS: &str = "DELETE FROM portal_links WHERE expires_at < $1";
        const SWEEP_SESSIONS: &str = "DELETE FROM portal_sessions WHERE expires_at < $1";
        let long_ago = link.created_at - DAY_MS;
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(SWEEP_LINKS)
                .bind(long_ago)
                .execute(&mut *tx)
                .await?;
            sqlx::query(SWEEP_SESSIONS)
                .bind(long_ago)
                .execute(&mut *tx)
                .await?;
            sqlx::query(INSERT)
                .bind(link.token_hash)
                .bind(link.account_id)
                .bind(link.return_url)
                .bind(link.created_by)
                .bind(link.created_at)
                .bind(link.expires_at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Opens `session` with the link whose token hashes to `token_hash`, in one
    /// transaction: the link is used up, so a second opening (or a race of two) finds
    /// nothing. `None` for an unknown, used or expired link. The session takes the
    /// link's account and return URL.
    pub async fn open_portal_link(
        &self,
        token_hash: &str,
        mut session: PortalSession,
    ) -> Result<Option<PortalSession>, DbError> {
        const USE: &str = "UPDATE portal_links SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
             RETURNING account_id, return_url";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let used: Option<(String, Option<String>)> = sqlx::query_as(USE)
                .bind(token_hash)
                .bind(session.created_at)
                .fetch_optional(&mut *tx)
                .await?;
            let Some((account_id, return_url)) = used else {
                return Ok(None);
            };
            session.account_id = account_id;
            session.return_url = return_url;
            tx.insert_session(&session).await?;
            tx.commit().await?;
        });
        Ok(Some(session))
    }

    /// The account (id and email) a host's link opens, if it is unused and unexpired at
    /// `now`. It is not used up here; [`Db::open_portal_link`] does that.
    pub async fn portal_link_account(
        &self,
        token_hash: &str,
        now: Millis,
    ) -> Result<Option<(String, String)>, DbError> {
        const SQL: &str = "SELECT a.id, a.email FROM portal_links l \
             JOIN accounts a ON a.id = l.account_id \
             WHERE l.token_hash = $1 AND l.used_at IS NULL AND l.expires_at > $2";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(token_hash)
                .bind(now)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The email of the account a notice written at `issued` is about, if the notice's link
    /// may still open the billing page: the account exists and its email has not changed
    /// since.
    pub async fn email_link_account(
        &self,
        account_id: &str,
        issued: Millis,
    ) -> Result<Option<String>, DbError> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar(EMAIL_LINK_VALID)
                .bind(account_id)
                .bind(issued)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Starts `session` with a notice's link written at `issued`, if it is still valid
    /// (checked in the same transaction, so an email change cannot slip in between).
    pub async fn open_email_link(
        &self,
        issued: Millis,
        session: &PortalSession,
    ) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let valid = sqlx::query_scalar::<_, String>(EMAIL_LINK_VALID)
                .bind(&session.account_id)
                .bind(issued)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            if !valid {
                return Ok(false);
            }
            tx.insert_session(session).await?;
            tx.commit().await?;
        });
        Ok(true)
    }

    /// The session with this id hash, if it has neither expired nor been idle since
    /// `idle_since`.
    pub async fn portal_session(
        &self,
        id_hash: &str,
        now: Millis,
        idle_since: Millis,
    ) -> Result<Option<LiveSession>, DbError> {
        const SQL: &str = "SELECT s.id_hash, s.account_id, s.csrf_token, s.return_url, s.scope, \
             s.created_at, s.last_seen_at, s.expires_at, a.email AS account_email \
             FROM portal_sessions s JOIN accounts a ON a.id = s.account_id \
             WHERE s.id_hash = $1 AND s.expires_at > $2 AND s.last_seen_at > $3";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(id_hash)
                .bind(now)
                .bind(idle_since)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Marks the session as in use at `now`, which pushes back its idle expiry.
    pub async fn touch_session(
        &self,
        table: Sessions,
        id_hash: &str,
        now: Millis,
    ) -> Result<(), DbError> {
        let sql = format!(
            "UPDATE {} SET last_seen_at = $2 WHERE id_hash = $1",
            table.name()
        );
        with_pool!(self, |pool| {
            sqlx::query(&sql)
                .bind(id_hash)
                .bind(now)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn end_session(&self, table: Sessions, id_hash: &str) -> Result<(), DbError> {
        let sql = format!("DELETE FROM {} WHERE id_hash = $1", table.name());
        with_pool!(self, |pool| {
            sqlx::query(&sql).bind(id_hash).execute(pool).await?;
        });
        Ok(())
    }

    /// The key named `name`: `candidate` if none was kept yet (it is kept then), else the
    /// one kept first, so every replica signs with the same key.
    pub async fn signing_key(
        &self,
        name: &str,
        candidate: &str,
        at: Millis,
    ) -> Result<String, DbError> {
        const INSERT: &str = "INSERT INTO signing_keys (name, secret, created_at) \
             VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING";
        const SELECT: &str = "SELECT secret FROM signing_keys WHERE name = $1";
        Ok(with_pool!(self, |pool| {
            sqlx::query(INSERT)
                .bind(name)
                .bind(candidate)
                .bind(at)
                .execute(pool)
                .await?;
            sqlx::query_scalar(SELECT)
                .bind(name)
                .fetch_one(pool)
                .await?
        }))
    }

    /// The account's usage from `from` (inclusive) to `to` (exclusive), by day and
    /// service, oldest day first.
    pub async fn usage_by_day(
        &self,
        account_id: &str,
        from: Millis,
        to: Millis,
    ) -> Result<Vec<UsageDay>, DbError> {
        const SQL: &str = "SELECT CAST(created_at / 86400000 AS BIGINT) AS day, service, \
             CAST(COUNT(*) AS BIGINT) AS requests, CAST(SUM(cost) AS BIGINT) AS used, \
             CAST(SUM(CASE WHEN refunded_at IS NULL THEN 0 ELSE cost END) AS BIGINT) AS refunded \
             FROM usage_events WHERE account_id = $1 AND created_at >= $2 AND created_at < $3 \
             GROUP BY CAST(created_at / 86400000 AS BIGINT), service \
             ORDER BY day, service";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(account_id)
                .bind(from)
                .bind(to)
                .fetch_all(pool)
                .await?
        }))
    }
}

trait SessionWrites {
    async fn insert_session(&mut self, session: &PortalSession) -> Result<(), sqlx::Error>;
}

impl_for_connections!(SessionWrites {
    async fn insert_session(&mut self, session: &PortalSession) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO portal_sessions \
             (id_hash, account_id, csrf_token, return_url, scope, created_at, last_seen_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&session.id_hash)
        .bind(&session.account_id)
        .bind(&session.csrf_token)
        .bind(&session.return_url)
        .bind(&session.scope)
        .bind(session.created_at)
        .bind(session.last_seen_at)
        .bind(session.expires_at)
        .execute(&mut *self)
        .await?;
        Ok(())
    }
});

//! Customer accounts.

use std::collections::BTreeMap;

use serde_json::json;

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    audit::{Actor, AuditWrites},
    impl_for_connections, is_unique_violation, new_id,
    notices::{Envelope, NewNotice, NoticeWrites, QueueWhen},
    webhook_outbox::EventWrites,
    with_pool,
};
use crate::{
    clock::Millis,
    config::EmailConfig,
    domain::{
        account::{Account, AutoTopup, Closure, Pause},
        auto_topup::{Charge, PauseChange, PauseReason, PlannedCharge},
        credits::Millicredits,
        money::Cents,
        notice::{LowBalanceFacts, Notice, ResumedBy},
        spend_cap::parse_time_zone,
        webhook::{self, EventType},
    },
};

/// Starting, changing and ending an account's pause, in the caller's transaction.
pub(crate) trait PauseWrites {
    /// True when the change ended a pause.
    async fn change_pause(
        &mut self,
        account_id: &str,
        change: &PauseChange,
        code: Option<&str>,
        at: Millis,
    ) -> Result<bool, sqlx::Error>;
}

impl_for_connections!(PauseWrites {
    async fn change_pause(
        &mut self,
        account_id: &str,
        change: &PauseChange,
        code: Option<&str>,
        at: Millis,
    ) -> Result<bool, sqlx::Error> {
        let (sql, reason) = match change {
            PauseChange::Keep => return Ok(false),
            // A pause keeps the time it began while its reason changes, and never gives
            // way to a lighter one.
            PauseChange::Pause(reason) => (
                format!(
                    "UPDATE accounts SET auto_topup_paused_reason = $2, auto_topup_paused_code = $3, \
                     auto_topup_paused_at = COALESCE(auto_topup_paused_at, $4), \
                     auto_topup_paused_until = NULL WHERE id = $1 \
                     AND (auto_topup_paused_reason IS NULL OR auto_topup_paused_reason IN ({}))",
                    reasons_where(|standing| reason.replaces(standing))
                ),
                Some(reason),
            ),
            PauseChange::Resume => (
                format!(
                    "UPDATE accounts SET auto_topup_paused_reason = NULL, auto_topup_paused_code = NULL, \
                     auto_topup_paused_at = NULL, auto_topup_paused_until = NULL WHERE id = $1 AND auto_topup_paused_reason IN ({})",
                    reasons_where(PauseReason::ended_by_payment)
                ),
                None,
            ),
        };
        let mut query = sqlx::query(&sql).bind(account_id);
        if let Some(reason) = reason {
            query = query.bind(reason.as_str()).bind(code).bind(at);
        }
        let changed = query.execute(&mut *self).await?.rows_affected() == 1;
        if changed {
            let event = match reason {
                Some(&reason) => (EventType::AutoTopupPaused, webhook::paused(reason, code, None, at)),
                None => (EventType::AutoTopupResumed, webhook::resumed(ResumedBy::Payment.as_str(), at)),
            };
            self.emit_event(event.0, account_id, event.1, at).await?;
        }
        Ok(changed && *change == PauseChange::Resume)
    }
});

/// The pause reasons `keep` holds for, as an SQL list of literals.
fn reasons_where(keep: impl Fn(PauseReason) -> bool) -> String {
    PauseReason::ALL
        .into_iter()
        .filter(|&reason| keep(reason))
        .map(|reason| format!("'{}'", reason.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// An account's details as its provider customer should carry them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomerSync {
    pub account_id: String,
    pub customer_id: String,
    pub email: String,
    pub name: String,
    /// The version of the details, to record once the provider has them.
    pub version: i64,
}

/// An account as stored; [`Account`] is what leaves this module.
#[derive(sqlx::FromRow)]
pub(crate) struct AccountRow {
    id: String,
    email: String,
    name: String,
    balance: i64,
    provider_customer_id: Option<String>,
    external_id: Option<String>,
    metadata: String,
    created_at: Millis,
    auto_topup_enabled: bool,
    auto_topup_threshold: Option<i64>,
    auto_topup_target: Option<i64>,
    auto_topup_payment_method_id: Option<String>,
    auto_topup_enabled_by: Option<String>,
    auto_topup_enabled_at: Option<Millis>,
    auto_topup_paused_reason: Option<String>,
    auto_topup_paused_code: Option<String>,
    auto_topup_paused_at: Option<Millis>,
    auto_topup_window_ends_at: Millis,
    auto_topup_monthly_cap_cents: Option<i64>,
    auto_topup_paused_until: Option<Millis>,
    low_balance_email: bool,
    auto_topup_notice_minutes: Option<i64>,
    auto_topup_planned_at: Option<Millis>,
    auto_topup_planned_credits: Option<i64>,
    auto_topup_planned_cents: Option<i64>,
    auto_topup_backup_cards: Option<String>,
    time_zone: String,
    closed_at: Option<Millis>,
    closed_reason: Option<String>,
}

impl TryFrom<AccountRow> for Account {
    type Error = DbError;

    fn try_from(row: AccountRow) -> Result<Self, DbError> {
        let backup_cards = row
            .auto_topup_backup_cards
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| DbError::Corrupt(format!("backup cards of {}: {e}", row.id)))?
            .unwrap_or_default();
        let pause = match (row.auto_topup_paused_reason, row.auto_topup_paused_at) {
            (None, _) => None,
            (Some(reason), Some(since)) => Some(Pause {
                reason: PauseReason::parse(&reason).ok_or_else(|| {
                    DbError::Corrupt(format!("account {} has unknown pause {reason}", row.id))
                })?,
                code: row.auto_topup_paused_code,
                since,
                until: row.auto_topup_paused_until,
            }),
            (Some(_), None) => {
                return Err(DbError::Corrupt(format!(
                    "account {} is paused without a time",
                    row.id
                )));
            }
        };
        let time_zone = parse_time_zone(&row.time_zone).map_err(|_| {
            DbError::Corrupt(format!(
                "account {} has unknown time zone {}",
                row.id, row.time_zone
            ))
        })?;
        let metadata = serde_json::from_str(&row.metadata).map_err(|e| {
            DbError::Corrupt(format!("account {} has unreadable metadata: {e}", row.id))
        })?;
        Ok(Self {
            id: row.id,
            email: row.email,
            name: row.name,
            balance: Millicredits(row.balance),
            provider_customer_id: row.provider_customer_id,
            external_id: row.external_id,
            metadata,
            created_at: row.created_at,
            time_zone,
            auto_topup: AutoTopup {
                enabled: row.auto_topup_enabled,
                threshold: row.auto_topup_threshold.map(Millicredits),
                target: row.auto_topup_target.map(Millicredits),
                payment_method_id: row.auto_topup_payment_method_id,
                enabled_by: row.auto_topup_enabled_by,
                enabled_at: row.auto_topup_enabled_at,
                pause,
                window_ends_at: row.auto_topup_window_ends_at,
                monthly_cap: row.auto_topup_monthly_cap_cents.map(Cents),
                low_balance_email: row.low_balance_email,
                notice_minutes: row.auto_topup_notice_minutes,
                backup_cards,
                planned: match (
                    row.auto_topup_planned_at,
                    row.auto_topup_planned_credits,
                    row.auto_topup_planned_cents,
                ) {
                    (Some(at), Some(credits), Some(cents)) => Some(PlannedCharge {
                        charge: Charge {
                            credits,
                            amount: Cents(cents),
                        },
                        at,
                    }),
                    _ => None,
                },
            },
            closed: row.closed_at.map(|at| Closure {
                at,
                reason: row.closed_reason.unwrap_or_default(),
            }),
        })
    }
}

/// Which accounts a directory search finds; every filter given must match.
#[derive(Debug, Clone, Default)]
pub struct AccountFilter {
    /// The whole address, in any case.
    pub email: Option<String>,
    /// The address starts with this, in any case.
    pub email_prefix: Option<String>,
    pub external_id: Option<String>,
    /// `active`, `paused` or `off`.
    pub state: Option<String>,
    pub paused_reason: Option<String>,
    pub balance_below: Option<Millicredits>,
}

#[derive(sqlx::FromRow)]
struct ListedAccount {
    #[sqlx(flatten)]
    account: AccountRow,
    seq: i64,
}

impl Paged for ListedAccount {
    fn page_key(&self) -> i64 {
        self.seq
    }
}

pub(crate) const COLUMNS: &str = "id, email, name, balance, provider_customer_id, external_id, \
    metadata, created_at, \
    auto_topup_enabled, auto_topup_threshold, auto_topup_target, auto_topup_payment_method_id, \
    auto_topup_enabled_by, auto_topup_enabled_at, auto_topup_paused_reason, auto_topup_paused_code, \
    auto_topup_paused_at, auto_topup_window_ends_at, auto_topup_monthly_cap_cents, \
    auto_topup_paused_until, low_balance_email, auto_topup_notice_minutes, auto_topup_planned_at, \
    auto_topup_planned_credits, auto_topup_planned_cents, auto_topup_backup_cards, time_zone, \
    closed_at, closed_reason";

/// An account to open.
#[derive(Debug, Clone, Copy)]
pub struct NewAccount<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub external_id: Option<&'a str>,
    pub metadata: &'a BTreeMap<String, String>,
}

impl<'a> NewAccount<'a> {
    /// An account known by its email and name only.
    pub fn named(email: &'a str, name: &'a str) -> Self {
        static NONE: BTreeMap<String, String> = BTreeMap::new();
        Self {
            email,
            name,
            external_id: None,
            metadata: &NONE,
        }
    }
}

#[derive(Debug)]
pub enum Opened {
    Created(Account),
    /// An account with the same `external_id` was there already; nothing was written.
    Existing(Account),
}

impl Db {
    /// Creates an account with a zero balance and audits who created it, unless one with
    /// the same `external_id` exists (also when another request created it a moment
    /// before): that one is answered.
    pub async fn create_account(
        &self,
        new: &NewAccount<'_>,
        actor: &Actor,
        at: Millis,
    ) -> Result<Opened, DbError> {
        let insert = format!(
            "INSERT INTO accounts (id, email, name, balance, external_id, metadata, created_at) \
             VALUES ($1, $2, $3, 0, $4, $5, $6) RETURNING {COLUMNS}"
        );
        let metadata = serde_json::to_string(new.metadata)
            .map_err(|e| DbError::Corrupt(format!("metadata does not serialize: {e}")))?;
        if let Some(existing) = self.account_by_external_id(new.external_id).await? {
            return Ok(Opened::Existing(existing));
        }
        let id = new_id("acct");
        let created = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let inserted = sqlx::query_as::<_, AccountRow>(&insert)
                .bind(&id)
                .bind(new.email)
                .bind(new.name)
                .bind(new.external_id)
                .bind(&metadata)
                .bind(at)
                .fetch_one(&mut *tx)
                .await;
            let account = match inserted {
                Err(e) if is_unique_violation(&e) => None,
                other => Some(other?),
            };
            if account.is_some() {
                let detail = json!({
                    "email": new.email, "name": new.name, "external_id": new.external_id,
                });
                tx.audit(actor, "account.create", Some(&id), detail, at)
                    .await?;
                tx.commit().await?;
            }
            account
        });
        match created {
            Some(row) => Ok(Opened::Created(row.try_into()?)),
            None => self
                .account_by_external_id(new.external_id)
                .await?
                .map(Opened::Existing)
                .ok_or_else(|| DbError::Corrupt("an account id collided".into())),
        }
    }

    /// The account the host knows as `external_id`.
    pub async fn account_by_external_id(
        &self,
        external_id: Option<&str>,
    ) -> Result<Option<Account>, DbError> {
        let Some(external_id) = external_id else {
            return Ok(None);
        };
        let sql = format!("SELECT {COLUMNS} FROM accounts WHERE external_id = $1");
        let row: Option<AccountRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(external_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(Account::try_from).transpose()
    }

    /// Accounts matching `filter`, newest first.
    pub async fn find_accounts(
        &self,
        filter: &AccountFilter,
        page: PageRequest,
    ) -> Result<Page<Account>, DbError> {
        let sql = format!(
            "SELECT {COLUMNS}, seq FROM accounts WHERE seq < $1 \
             AND ($2 IS NULL OR lower(email) = lower($2)) \
             AND ($3 IS NULL OR lower(email) LIKE $3 ESCAPE '\\') \
             AND ($4 IS NULL OR external_id = $4) \
             AND ($5 IS NULL \
                  OR ($5 = 'paused' AND auto_topup_paused_reason IS NOT NULL) \
                  OR ($5 <> 'paused' AND auto_topup_paused_reason IS NULL \
                      AND (EXISTS (SELECT 1 FROM topup_attempts t WHERE t.account_id = accounts.id \
                                   AND t.state NOT IN ('succeeded', 'failed', 'canceled'))) \
                          = ($5 = 'in_progress') \
                      AND ($5 = 'in_progress' OR auto_topup_enabled = ($5 = 'active')))) \
             AND ($6 IS NULL OR auto_topup_paused_reason = $6) \
             AND ($7 IS NULL OR balance < $7) \
             ORDER BY seq DESC LIMIT $8"
        );
        let prefix = filter.email_prefix.as_deref().map(|p| {
            let escaped: String = p
                .to_lowercase()
                .chars()
                .flat_map(|c| match c {
                    '%' | '_' | '\\' => vec!['\\', c],
                    c => vec![c],
                })
                .collect();
            format!("{escaped}%")
        });
        let rows: Vec<ListedAccount> = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(page.before())
                .bind(filter.email.as_deref())
                .bind(prefix.as_deref())
                .bind(filter.external_id.as_deref())
                .bind(filter.state.as_deref())
                .bind(filter.paused_reason.as_deref())
                .bind(filter.balance_below.map(|b| b.0))
                .bind(page.fetch_limit())
                .fetch_all(pool)
                .await?
        });
        page.finish(rows)
            .try_map(|listed| listed.account.try_into())
    }

    /// Records the provider's customer for the account unless one is recorded already;
    /// returns the one that stands.
    pub async fn set_provider_customer(
        &self,
        id: &str,
        customer_id: &str,
    ) -> Result<String, DbError> {
        const SET: &str = "UPDATE accounts SET provider_customer_id = $1 \
                           WHERE id = $2 AND provider_customer_id IS NULL";
        const GET: &str = "SELECT provider_customer_id FROM accounts WHERE id = $1";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(SET)
                .bind(customer_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let stored: Option<String> =
                sqlx::query_scalar(GET).bind(id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            stored.ok_or_else(|| DbError::Corrupt(format!("account {id} has no provider customer")))
        })
    }

    /// Changes the account's email and name (each if given), audited with what they were,
    /// and marks its provider customer due for the new details. A new email voids the
    /// links of the notices sent before and ends the sessions they opened. `None` if there
    /// is no such account; the account unchanged if nothing differs.
    pub async fn update_account_details(
        &self,
        id: &str,
        email: Option<&str>,
        name: Option<&str>,
        actor: &Actor,
        at: Millis,
    ) -> Result<Option<Account>, DbError> {
        const REVOKE_EMAIL_LINKS: &str =
            "UPDATE accounts SET email_links_revoked_at = $1 WHERE id = $2";
        const END_EMAIL_SESSIONS: &str =
            "DELETE FROM portal_sessions WHERE account_id = $1 AND scope = 'payment'";
        let read = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
        let write = format!(
            "UPDATE accounts SET email = $1, name = $2, details_version = details_version + 1 \
             WHERE id = $3 RETURNING {COLUMNS}"
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let Some(before) = sqlx::query_as::<_, AccountRow>(&read)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .map(Account::try_from)
                .transpose()?
            else {
                return Ok(None);
            };
            let (new_email, new_name) =
                (email.unwrap_or(&before.email), name.unwrap_or(&before.name));
            if (new_email, new_name) == (before.email.as_str(), before.name.as_str()) {
                return Ok(Some(before));
            }
            let after: AccountRow = sqlx::query_as(&write)
                .bind(new_email)
                .bind(new_name)
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
            let detail = json!({
                "before": { "email": before.email, "name": before.name },
                "after": { "email": new_email, "name": new_name },
            });
            tx.audit(actor, "account.update", Some(id), detail, at)
                .await?;
            if new_email != before.email {
                // The old inbox's links and the sessions they opened end with it.
                sqlx::query(REVOKE_EMAIL_LINKS)
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(END_EMAIL_SESSIONS)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            after.try_into().map(Some)
        })
    }

    /// Closes the account for `reason`: auto top-up off and any pause ended (nothing is
    /// waiting to be paid any more), its billing sessions over, audited, in one
    /// transaction. Every way of charging refuses a closed account from then on; the
    /// balance and history stay. `None` if there is no such account; an account already
    /// closed is answered as it is.
    pub async fn close_account(
        &self,
        id: &str,
        reason: &str,
        actor: &Actor,
        at: Millis,
    ) -> Result<Option<Account>, DbError> {
        let close = format!(
            "UPDATE accounts SET closed_at = $1, closed_reason = $2, auto_topup_enabled = FALSE, \
             auto_topup_paused_reason = NULL, auto_topup_paused_code = NULL, \
             auto_topup_paused_at = NULL, auto_topup_paused_until = NULL WHERE id = $3 AND closed_at IS NULL RETURNING {COLUMNS}"
        );
        let read = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
        const END_SESSIONS: &str = "DELETE FROM portal_sessions WHERE account_id = $1";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let closed: Option<AccountRow> = sqlx::query_as(&close)
                .bind(at)
                .bind(reason)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            let Some(closed) = closed else {
                let existing: Option<AccountRow> = sqlx::query_as(&read)
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
                return existing.map(Account::try_from).transpose();
            };
            let account = Account::try_from(closed)?;
            sqlx::query(END_SESSIONS).bind(id).execute(&mut *tx).await?;
            let detail = json!({ "reason": reason, "balance": account.balance });
            tx.audit(actor, "account.close", Some(id), detail, at)
                .await?;
            tx.commit().await?;
            Ok(Some(account))
        })
    }

    /// Accounts whose provider customer lacks their latest email and name.
    pub async fn customers_to_sync(&self, limit: u32) -> Result<Vec<CustomerSync>, DbError> {
        const SQL: &str = "SELECT id AS account_id, provider_customer_id AS customer_id, email, name, \
             details_version AS version FROM accounts \
             WHERE provider_customer_id IS NOT NULL AND details_version > customer_synced_version \
             ORDER BY id LIMIT $1";
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Records that the provider's customer carries the details of `version`.
    pub async fn customer_synced(&self, account_id: &str, version: i64) -> Result<(), DbError> {
        const SQL: &str = "UPDATE accounts SET customer_synced_version = $1 \
                           WHERE id = $2 AND customer_synced_version < $1";
        with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(version)
                .bind(account_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn account(&self, id: &str) -> Result<Option<Account>, DbError> {
        let sql = format!("SELECT {COLUMNS} FROM accounts WHERE id = $1");
        let row: Option<AccountRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        row.map(Account::try_from).transpose()
    }
}

impl Db {
    /// Tells each account that asked for it, with auto top-up off, that its balance fell
    /// below `line`, once per crossing: accounts back at or above the line are ready to
    /// be told again, and each one told is marked, with its notice queued, in the same
    /// transaction. How many were told.
    pub async fn warn_low_balances(
        &self,
        line: Millicredits,
        email: &EmailConfig,
        now: Millis,
    ) -> Result<usize, DbError> {
        const READY: &str = "UPDATE accounts SET low_balance_told = FALSE \
             WHERE low_balance_email AND low_balance_told AND balance >= $1";
        const TELL: &str = "UPDATE accounts SET low_balance_told = TRUE \
             WHERE low_balance_email AND NOT low_balance_told AND NOT auto_topup_enabled \
             AND closed_at IS NULL AND balance < $1 RETURNING id, balance";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(READY).bind(line.0).execute(&mut *tx).await?;
            let fell: Vec<(String, i64)> = sqlx::query_as(TELL)
                .bind(line.0)
                .fetch_all(&mut *tx)
                .await?;
            for (account_id, balance) in &fell {
                let notice = NewNotice {
                    envelope: Envelope::to_owner(
                        // Each crossing is its own cause, however close in time.
                        format!("low_balance:{account_id}:{}:low_balance", new_id("lbl")),
                        account_id,
                        email,
                        now,
                    ),
                    notice: Notice::LowBalance(LowBalanceFacts {
                        balance: Millicredits(*balance),
                        line,
                        at: now,
                    }),
                };
                tx.queue_notice(&notice, QueueWhen::Always).await?;
            }
            tx.commit().await?;
            Ok(fell.len())
        })
    }
}

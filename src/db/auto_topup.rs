//! Auto top-up: settings and pauses on the account row, the scan's due set and claims,
//! and the decision journal.

use chrono_tz::Tz;
use serde_json::json;

use super::{
    BeginWrite, Db, DbError, Page, PageRequest, Paged,
    accounts::{self, AccountRow},
    attempts::{self, AttemptReads, AttemptRow},
    audit::{Actor, AuditWrites},
    impl_for_connections, is_unique_violation,
    notices::{Envelope, NewNotice, NoticeWrites, QueueWhen},
    webhook_outbox::EventWrites,
    with_pool,
};
use crate::{
    clock::Millis,
    config::EmailConfig,
    domain::{
        account::Account,
        attempt::{Attempt, AttemptTrigger, idempotency_key},
        auto_topup::{
            Charge, Decision, NoticeStep, PauseReason, card_chosen_for, charge_to_target, decide,
            notice_step,
        },
        credits::Millicredits,
        money::Cents,
        notice::{
            Announcement, CapFacts, ChangedBy, Notice, NoticeKind, ResumedBy, Resumption,
            SettingsChange,
        },
        spend_cap,
        webhook::{self, EventType},
    },
};

/// New settings from the customer or staff.
#[derive(Debug, Clone)]
pub struct SettingsUpdate {
    pub enabled: bool,
    /// `None` keeps the current bound (turning auto top-up off needs none).
    pub threshold: Option<Millicredits>,
    pub target: Option<Millicredits>,
    pub payment_method_id: Option<String>,
    /// `None` keeps the cap; `Some(None)` removes it.
    pub monthly_cap: Option<Option<Cents>>,
    /// `None` keeps the time zone.
    pub time_zone: Option<Tz>,
    /// `None` keeps the choice.
    pub low_balance_email: Option<bool>,
    /// `None` keeps the notice; `Some(None)` asks for none.
    pub notice_minutes: Option<Option<i64>>,
    /// `None` keeps the backup cards.
    pub backup_cards: Option<Vec<String>>,
}

/// What every claim is made on: the window it opens, what a credit costs, the smallest
/// purchase, and the moment of the claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTerms<'a> {
    pub window_ms: i64,
    pub credit_price_cents: i64,
    /// The smallest purchase: less missing than this buys is nothing worth charging.
    pub min_amount_cents: i64,
    pub currency: &'a str,
    pub key_prefix: &'a str,
    /// Where a notice of a reached spend cap is addressed from.
    pub email: &'a EmailConfig,
    pub at: Millis,
}

impl ClaimTerms<'_> {
    /// What a claim of `account` charges on these terms, if anything is worth charging.
    fn charge_for(&self, account: &Account) -> Option<Charge> {
        charge_to_target(
            account.balance,
            account.auto_topup.target.unwrap_or_default(),
            self.credit_price_cents,
            self.min_amount_cents,
        )
    }
}

/// A claim of an automatic attempt (or of the customer's retry of a paused one) for one
/// account.
#[derive(Debug, Clone)]
pub struct AutoClaim<'a> {
    pub account_id: &'a str,
    pub trigger: AttemptTrigger,
    /// False when support asked to try now, inside the window.
    pub respect_window: bool,
    pub terms: ClaimTerms<'a>,
    /// Staff claiming on the customer's behalf, audited with the claim.
    pub staff: Option<&'a Actor>,
}

/// A page of the due set a scan claimed in one transaction.
#[derive(Debug)]
pub struct ClaimedPage {
    /// The attempts claimed, one per account, to be charged.
    pub attempts: Vec<Attempt>,
    /// Due accounts left as they are: a top-up of theirs is open, or the balance is
    /// within the smallest purchase of the target.
    pub skipped: usize,
    /// Due accounts paused instead: charging them would go past their monthly spend cap.
    /// Each is told by a notice queued with the pause.
    pub capped: usize,
    /// Due accounts whose customer asked to be told first: their charge was announced,
    /// to be made by a scan once its time has come.
    pub announced: usize,
    /// Where the next page starts; `None` once the due set is read to its end.
    pub next: Option<DueCursor>,
}

/// The account a claim updated, with the top-up sequence number it took.
#[derive(sqlx::FromRow)]
struct ClaimedAccount {
    #[sqlx(flatten)]
    account: AccountRow,
    topup_seq: i64,
}

#[derive(Debug)]
pub enum AutoClaimOutcome {
    Claimed(Attempt),
    /// The rules say no, and why.
    NotDue(Decision),
    Busy(Attempt),
    /// The balance is at the target, or closer to it than the smallest purchase buys.
    NothingToCharge,
}

/// The scan's latest decision about an account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRow {
    pub account_id: String,
    pub decision: String,
    pub balance: i64,
    pub threshold: Option<i64>,
    pub target: Option<i64>,
    pub next_eligible_at: Option<Millis>,
    pub attempt_id: Option<String>,
    pub decided_at: Millis,
    /// The decision in words, with its figures.
    pub reason: String,
}

/// One decision of the scan's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoggedDecision {
    pub id: i64,
    #[sqlx(flatten)]
    pub decision: DecisionRow,
}

impl Paged for LoggedDecision {
    fn page_key(&self) -> i64 {
        self.id
    }
}

/// Where a page of the due set ends.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DueCursor {
    pub auto_topup_window_ends_at: Millis,
    pub id: String,
}

pub(crate) trait DecisionWrites {
    /// Keeps the decision in the history, and as the account's latest unless a charge
    /// owns that entry: a decision not to charge, made inside the window a charge opened
    /// (a claim that lost the race to it, seeing its open attempt or its window), does
    /// not replace that charge's entry.
    async fn record_decision(&mut self, row: &DecisionRow) -> Result<(), sqlx::Error>;
}

/// The stored decision, in this release's words: releases before it wrote `attempt_open`
/// for a top-up in progress, and may still, while a rollout runs.
macro_rules! decision_read_as {
    () => {
        "CASE decision WHEN 'attempt_open' THEN 'in_progress' ELSE decision END AS decision"
    };
}

/// The account's latest decision: the row [`DecisionWrites::record_decision`] replaces.
const LATEST_DECISION: &str = "INSERT INTO auto_topup_decisions (account_id, decision, balance, \
     threshold, target, next_eligible_at, attempt_id, decided_at, reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (account_id) DO UPDATE SET decision = excluded.decision, \
     balance = excluded.balance, threshold = excluded.threshold, target = excluded.target, \
     next_eligible_at = excluded.next_eligible_at, attempt_id = excluded.attempt_id, \
     decided_at = excluded.decided_at, reason = excluded.reason \
     WHERE excluded.attempt_id IS NOT NULL OR auto_topup_decisions.attempt_id IS NULL \
     OR excluded.decided_at >= COALESCE(auto_topup_decisions.next_eligible_at, 0)";
/// The history, kept until `auto_topup.decision_retention_days`.
const LOGGED_DECISION: &str = "INSERT INTO auto_topup_decision_log (account_id, decision, \
     balance, threshold, target, next_eligible_at, attempt_id, decided_at, reason) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

impl_for_connections!(DecisionWrites {
    async fn record_decision(&mut self, row: &DecisionRow) -> Result<(), sqlx::Error> {
        for sql in [LATEST_DECISION, LOGGED_DECISION] {
            sqlx::query(sql)
                .bind(&row.account_id)
                .bind(&row.decision)
                .bind(row.balance)
                .bind(row.threshold)
                .bind(row.target)
                .bind(row.next_eligible_at)
                .bind(&row.attempt_id)
                .bind(row.decided_at)
                .bind(&row.reason)
                .execute(&mut *self)
                .await?;
        }
        Ok(())
    }
});

/// The due set after a cursor: `$1` now, `$2, $3` the cursor, `$4` the page size.
const DUE_PAGE: &str = "FROM accounts \
     WHERE auto_topup_enabled AND auto_topup_paused_reason IS NULL \
     AND below_threshold AND auto_topup_window_ends_at <= $1 \
     AND (auto_topup_window_ends_at, id) > ($2, $3) \
     ORDER BY auto_topup_window_ends_at, id LIMIT $4";

/// The binds of [`DUE_PAGE`]'s cursor: before every account when there is none.
fn cursor_binds(after: Option<&DueCursor>) -> (Millis, &str) {
    after.map_or((i64::MIN, ""), |c| {
        (c.auto_topup_window_ends_at, c.id.as_str())
    })
}

/// The rules of an automatic claim, as one conditional update: whoever updates the row
/// owns the claim, and opens the window. `$1` the window's end, `$2` the account, `$3`
/// whether the window binds, `$4` now.
fn auto_cas() -> String {
    format!(
        "UPDATE accounts SET topup_seq = topup_seq + 1, auto_topup_window_ends_at = $1, \
         auto_topup_planned_at = NULL, auto_topup_planned_credits = NULL, \
         auto_topup_planned_cents = NULL \
         WHERE id = $2 AND auto_topup_enabled AND auto_topup_paused_reason IS NULL \
         AND closed_at IS NULL \
         AND balance < auto_topup_threshold AND ($3 = FALSE OR auto_topup_window_ends_at <= $4) \
         RETURNING {}, topup_seq",
        accounts::COLUMNS
    )
}

/// This month's automatic top-ups of an account: those of the scan and the customer's
/// retries of them, in progress or paid, from `$2` on. Declined and cancelled payments
/// charged nothing; a refund later does not give the month's room back.
const SPENT_SINCE: &str = "SELECT CAST(COALESCE(SUM(amount_cents), 0) AS BIGINT) \
     FROM topup_attempts WHERE account_id = $1 AND created_at >= $2 \
     AND trigger IN ('auto', 'retry') AND state NOT IN ('failed', 'canceled')";

trait SpendCapWrites {
    /// When charging `charge` would take the account's month past its spend cap: the
    /// decision, with the account paused until the month ends, the decision recorded and
    /// the customer told, in this transaction. `None` when the charge fits (or there is
    /// no cap). The account's row must be locked by this transaction, so that no other
    /// claim adds to the month between the sum and the charge.
    async fn pause_if_capped(
        &mut self,
        account: &Account,
        charge: Cents,
        terms: &ClaimTerms<'_>,
    ) -> Result<Option<Decision>, DbError>;
}

impl_for_connections!(SpendCapWrites {
    async fn pause_if_capped(
        &mut self,
        account: &Account,
        charge: Cents,
        terms: &ClaimTerms<'_>,
    ) -> Result<Option<Decision>, DbError> {
        let Some(cap) = account.auto_topup.monthly_cap else {
            return Ok(None);
        };
        let month = spend_cap::month_of(terms.at, account.time_zone);
        let spent: i64 = sqlx::query_scalar(SPENT_SINCE)
            .bind(&account.id)
            .bind(month.starts_at)
            .fetch_one(&mut *self)
            .await?;
        let spent = Cents(spent);
        if spend_cap::allows(spent, charge, Some(cap)) {
            return Ok(None);
        }
        let decision = Decision::SpendCapReached {
            spent,
            charge,
            cap,
            until: month.ends_at,
        };
        let paused = sqlx::query(
            "UPDATE accounts SET auto_topup_paused_reason = $2, auto_topup_paused_code = NULL, \
             auto_topup_paused_at = $3, auto_topup_paused_until = $4 \
             WHERE id = $1 AND auto_topup_paused_reason IS NULL",
        )
        .bind(&account.id)
        .bind(PauseReason::SpendCapReached.as_str())
        .bind(terms.at)
        .bind(month.ends_at)
        .execute(&mut *self)
        .await?
        .rows_affected()
            == 1;
        if paused {
            let data = webhook::paused(
            PauseReason::SpendCapReached,
            None,
            Some(month.ends_at),
                terms.at,
            );
            self.emit_event(EventType::AutoTopupPaused, &account.id, data, terms.at)
                .await?;
        }
        let notice = Notice::SpendCapReached(CapFacts {
            cap,
            spent,
            charge,
            until: month.ends_at,
            time_zone: account.time_zone.name().to_owned(),
            at: terms.at,
        });
        self.decide_and_tell(account, decision, notice, terms).await?;
        Ok(Some(decision))
    }
});

trait AnnounceWrites {
    /// Announces `charge` for `at` to the account's customer, with the decision, in this
    /// transaction.
    async fn announce(
        &mut self,
        account: &Account,
        charge: Charge,
        at: Millis,
        terms: &ClaimTerms<'_>,
    ) -> Result<(), DbError>;
}

impl_for_connections!(AnnounceWrites {
    async fn announce(
        &mut self,
        account: &Account,
        charge: Charge,
        at: Millis,
        terms: &ClaimTerms<'_>,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE accounts SET auto_topup_planned_at = $2, auto_topup_planned_credits = $3, \
             auto_topup_planned_cents = $4 WHERE id = $1",
        )
        .bind(&account.id)
        .bind(at)
        .bind(charge.credits)
        .bind(charge.amount.0)
        .execute(&mut *self)
        .await?;
        let decision = Decision::Announced {
            amount: charge.amount,
            at,
        };
        let notice = Notice::TopupAnnounced(Announcement {
            credits: Millicredits::whole(charge.credits),
            amount: charge.amount,
            at,
        });
        self.decide_and_tell(account, decision, notice, terms).await
    }
});

trait DecisionNotices {
    /// Records a scan's decision not to charge now, and tells the customer why, in this
    /// transaction. The decision's moment names the notice's cause: one a claim.
    async fn decide_and_tell(
        &mut self,
        account: &Account,
        decision: Decision,
        notice: Notice,
        terms: &ClaimTerms<'_>,
    ) -> Result<(), DbError>;
}

impl_for_connections!(DecisionNotices {
    async fn decide_and_tell(
        &mut self,
        account: &Account,
        decision: Decision,
        notice: Notice,
        terms: &ClaimTerms<'_>,
    ) -> Result<(), DbError> {
        self.record_decision(&decision_row(account, decision, None, terms.at))
            .await?;
        let notice = NewNotice {
            envelope: Envelope::to_owner(
                format!("decision:{}:{}:{}", account.id, terms.at, notice.kind()),
                &account.id,
                terms.email,
                terms.at,
            ),
            notice,
        };
        self.queue_notice(&notice, QueueWhen::Always).await?;
        Ok(())
    }
});

trait ClaimWrites {
    /// Opens the attempt of a claim whose account row this transaction updated (taking
    /// sequence number `seq`), with its audit entry and its decision.
    async fn open_claimed(
        &mut self,
        claim: &AutoClaim<'_>,
        account: &Account,
        seq: i64,
        charge: Charge,
    ) -> Result<Attempt, DbError>;
}

impl_for_connections!(ClaimWrites {
    async fn open_claimed(
        &mut self,
        claim: &AutoClaim<'_>,
        account: &Account,
        seq: i64,
        charge: Charge,
    ) -> Result<Attempt, DbError> {
        let terms = &claim.terms;
        let chosen = card_chosen_for(claim.trigger, account.auto_topup.payment_method_id.clone());
        let card: Option<String> = match chosen {
            Some(card) => Some(card),
            None => {
                sqlx::query_scalar(
                    "SELECT id FROM payment_methods WHERE account_id = $1 AND is_default",
                )
                .bind(claim.account_id)
                .fetch_optional(&mut *self)
                .await?
            }
        };
        let id = super::new_id("tpu");
        // Without a card the attempt is claimed all the same and fails at once: it is
        // a decline like any other, and holds the window.
        let attempt: AttemptRow = sqlx::query_as(&attempts::insert_sql())
            .bind(&id)
            .bind(claim.account_id)
            .bind(seq)
            .bind(claim.trigger.as_str())
            .bind(idempotency_key(terms.key_prefix, claim.account_id, seq))
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(Millicredits::whole(charge.credits).0)
            .bind(charge.amount.0)
            .bind(terms.currency)
            .bind(card.unwrap_or_default())
            .bind(account.provider_customer_id.clone().unwrap_or_default())
            .bind(terms.at)
            .fetch_one(&mut *self)
            .await?;
        if let Some(staff) = claim.staff {
            let detail = json!({ "topup_id": &id, "trigger": claim.trigger.as_str() });
            self.audit(staff, "auto_topup.retry", Some(claim.account_id), detail, terms.at)
                .await?;
        }
        if claim.trigger == AttemptTrigger::Auto {
            self.record_decision(&decision_row(account, Decision::Due, Some(id), terms.at))
                .await?;
        }
        attempt.try_into()
    }
});

fn decision_row(
    account: &Account,
    decision: Decision,
    attempt_id: Option<String>,
    at: Millis,
) -> DecisionRow {
    DecisionRow {
        account_id: account.id.clone(),
        decision: decision.journal_label(attempt_id.is_some()).to_owned(),
        balance: account.balance.0,
        threshold: account.auto_topup.threshold.map(|t| t.0),
        target: account.auto_topup.target.map(|t| t.0),
        next_eligible_at: decision.next_eligible_at(at, account.auto_topup.window_ends_at),
        reason: decision.reason(
            account.balance,
            account.auto_topup.threshold,
            account.auto_topup.target,
            attempt_id.is_some(),
        ),
        attempt_id,
        decided_at: at,
    }
}

/// The account's row, read for update: locked on PostgreSQL; on SQLite the write
/// transaction holds the lock already.
fn locked_account(db: &Db) -> String {
    let read = format!("SELECT {} FROM accounts WHERE id = $1", accounts::COLUMNS);
    match db {
        Db::Postgres(_) => format!("{read} FOR UPDATE"),
        Db::Sqlite(_) => read,
    }
}

trait LockedReads {
    /// The account, read with `sql` (from [`locked_account`]).
    async fn read_locked(
        &mut self,
        sql: &str,
        account_id: &str,
    ) -> Result<Option<Account>, DbError>;
}

impl_for_connections!(LockedReads {
    async fn read_locked(
        &mut self,
        sql: &str,
        account_id: &str,
    ) -> Result<Option<Account>, DbError> {
        let row: Option<AccountRow> = sqlx::query_as(sql)
            .bind(account_id)
            .fetch_optional(&mut *self)
            .await?;
        row.map(Account::try_from).transpose()
    }
});

/// The customer's confirmation that `actor` changed what auto top-up charges, from
/// `before` to `after`; `None` when the terms are the same.
fn change_notice(
    before: &Account,
    after: &Account,
    actor: &Actor,
    email: &EmailConfig,
    at: Millis,
) -> Option<NewNotice> {
    let (old, new) = (&before.auto_topup, &after.auto_topup);
    if old.same_terms(new) {
        return None;
    }
    Some(NewNotice {
        envelope: Envelope::to_owner(
            // Each change is its own cause: nothing replays a change of settings, and two
            // in the same millisecond are two changes.
            format!(
                "settings:{}:{}:auto_topup_changed",
                after.id,
                super::new_id("chg")
            ),
            &after.id,
            email,
            at,
        ),
        notice: Notice::AutoTopupChanged(SettingsChange {
            by: ChangedBy::of_role(&actor.role),
            enabled: new.enabled,
            threshold: new.threshold,
            target: new.target,
            monthly_cap: new.monthly_cap,
            at,
        }),
    })
}

impl Db {
    /// Saves the settings. Turning it on records who and when; a pause survives both
    /// turning it off and on again, but raising or removing the spend cap ends a pause
    /// for reaching it. `None` if the account does not exist.
    pub async fn update_auto_topup(
        &self,
        account_id: &str,
        update: &SettingsUpdate,
        actor: &Actor,
        (email, at): (&EmailConfig, Millis),
    ) -> Result<Option<Account>, DbError> {
        let read = locked_account(self);
        const LIFT: &str = "UPDATE accounts SET auto_topup_paused_reason = NULL, \
             auto_topup_paused_code = NULL, auto_topup_paused_at = NULL, \
             auto_topup_paused_until = NULL WHERE id = $1 AND auto_topup_paused_reason = $2";
        let sql = format!(
            "UPDATE accounts SET \
             auto_topup_enabled_by = CASE WHEN $1 AND NOT auto_topup_enabled THEN $2 ELSE auto_topup_enabled_by END, \
             auto_topup_enabled_at = CASE WHEN $1 AND NOT auto_topup_enabled THEN $3 ELSE auto_topup_enabled_at END, \
             auto_topup_enabled = ($1 AND closed_at IS NULL), \
             auto_topup_threshold = COALESCE($4, auto_topup_threshold), \
             auto_topup_target = COALESCE($5, auto_topup_target), \
             auto_topup_payment_method_id = $6, auto_topup_monthly_cap_cents = $7, \
             time_zone = $8, low_balance_email = COALESCE($10, low_balance_email), \
             auto_topup_notice_minutes = $11, \
             auto_topup_backup_cards = COALESCE($12, auto_topup_backup_cards) WHERE id = $9 RETURNING {}",
            accounts::COLUMNS
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let Some(current) = tx.read_locked(&read, account_id).await? else {
                return Ok(None);
            };
            let cap = update.monthly_cap.unwrap_or(current.auto_topup.monthly_cap);
            let time_zone = update.time_zone.unwrap_or(current.time_zone);
            let notice_minutes = update
                .notice_minutes
                .unwrap_or(current.auto_topup.notice_minutes);
            let lifts = current.paused() == Some(PauseReason::SpendCapReached)
                && spend_cap::change_lifts_pause(current.auto_topup.monthly_cap, cap);
            if lifts {
                sqlx::query(LIFT)
                    .bind(account_id)
                    .bind(PauseReason::SpendCapReached.as_str())
                    .execute(&mut *tx)
                    .await?;
                let resumed = webhook::resumed("customer", at);
                tx.emit_event(EventType::AutoTopupResumed, account_id, resumed, at)
                    .await?;
            }
            let account: AccountRow = sqlx::query_as(&sql)
                .bind(update.enabled)
                .bind(&actor.key_id)
                .bind(at)
                .bind(update.threshold.map(|t| t.0))
                .bind(update.target.map(|t| t.0))
                .bind(&update.payment_method_id)
                .bind(cap.map(|c| c.0))
                .bind(time_zone.name())
                .bind(account_id)
                .bind(update.low_balance_email)
                .bind(notice_minutes)
                .bind(
                    update
                        .backup_cards
                        .as_ref()
                        .map(|cards| serde_json::json!(cards).to_string()),
                )
                .fetch_one(&mut *tx)
                .await?;
            let detail = json!({
                "enabled": update.enabled,
                "threshold": update.threshold,
                "target": update.target,
                "payment_method_id": update.payment_method_id,
                "monthly_spend_cap_cents": cap.map(|c| c.0),
                "time_zone": time_zone.name(),
                "low_balance_email": update.low_balance_email,
                "advance_notice_minutes": notice_minutes,
                "backup_payment_method_ids": update.backup_cards,
                "ended_spend_cap_pause": lifts,
            });
            tx.audit(actor, "auto_topup.update", Some(account_id), detail, at)
                .await?;
            let account = Account::try_from(account)?;
            let told = match change_notice(&current, &account, actor, email, at) {
                Some(notice) => tx.queue_notice(&notice, QueueWhen::Always).await?,
                None => false,
            };
            tx.commit().await?;
            crate::metrics::notices_queued(
                NoticeKind::AutoTopupChanged.as_str(),
                usize::from(told),
            );
            Ok(Some(account))
        })
    }

    /// Turns auto top-up off and nothing else: the bounds and the card stay for when the
    /// customer turns it on again. `None` if the account does not exist.
    pub async fn disable_auto_topup(
        &self,
        account_id: &str,
        actor: &Actor,
        (email, at): (&EmailConfig, Millis),
    ) -> Result<Option<Account>, DbError> {
        let read = locked_account(self);
        let sql = format!(
            "UPDATE accounts SET auto_topup_enabled = FALSE WHERE id = $1 RETURNING {}",
            accounts::COLUMNS
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let Some(current) = tx.read_locked(&read, account_id).await? else {
                return Ok(None);
            };
            let account: AccountRow = sqlx::query_as(&sql)
                .bind(account_id)
                .fetch_one(&mut *tx)
                .await?;
            tx.audit(
                actor,
                "auto_topup.update",
                Some(account_id),
                json!({ "enabled": false }),
                at,
            )
            .await?;
            let account = Account::try_from(account)?;
            let told = match change_notice(&current, &account, actor, email, at) {
                Some(notice) => tx.queue_notice(&notice, QueueWhen::Always).await?,
                None => false,
            };
            tx.commit().await?;
            crate::metrics::notices_queued(
                NoticeKind::AutoTopupChanged.as_str(),
                usize::from(told),
            );
            Ok(Some(account))
        })
    }

    /// The due set as a scan reads it, in window order, after `after`, without claiming
    /// it: the query [`Db::claim_due_page`] locks. The partial index holds only accounts
    /// below their threshold, and the keyset is one row-value comparison, which both
    /// databases seek in that index: each page costs its own rows, not the pages before it.
    pub async fn due_accounts(
        &self,
        now: Millis,
        after: Option<&DueCursor>,
        limit: u32,
    ) -> Result<Vec<DueCursor>, DbError> {
        let sql = format!("SELECT auto_topup_window_ends_at, id {DUE_PAGE}");
        let (window, id) = cursor_binds(after);
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(now)
                .bind(window)
                .bind(id)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        }))
    }

    /// Claims the next page of the due set, up to `limit` accounts, in one transaction.
    /// On PostgreSQL the page is locked with `SKIP LOCKED`, so scans running at once in
    /// several replicas take pages apart instead of racing for the same accounts; on
    /// SQLite the write lock taken at the start makes one claim at a time. Either way an
    /// account claimed by another scan is out of the due set (its window moved) before
    /// this page is read, so no claim is lost and no losing decision is written.
    pub async fn claim_due_page(
        &self,
        terms: &ClaimTerms<'_>,
        after: Option<&DueCursor>,
        limit: u32,
    ) -> Result<ClaimedPage, DbError> {
        let lock = match self {
            Db::Postgres(_) => " FOR UPDATE SKIP LOCKED",
            Db::Sqlite(_) => "",
        };
        let sql = format!("SELECT {} {DUE_PAGE}{lock}", accounts::COLUMNS);
        let (window, id) = cursor_binds(after);
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let due: Vec<AccountRow> = sqlx::query_as(&sql)
                .bind(terms.at)
                .bind(window)
                .bind(id)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            let mut page = ClaimedPage {
                attempts: Vec::with_capacity(due.len()),
                skipped: 0,
                capped: 0,
                announced: 0,
                next: None,
            };
            for row in due {
                let account = Account::try_from(row)?;
                page.next = Some(DueCursor {
                    auto_topup_window_ends_at: account.auto_topup.window_ends_at,
                    id: account.id.clone(),
                });
                let claim = AutoClaim {
                    account_id: &account.id,
                    trigger: AttemptTrigger::Auto,
                    respect_window: true,
                    terms: *terms,
                    staff: None,
                };
                // The row is locked and due: an open top-up or nothing worth charging are
                // the only reasons left not to charge it.
                let charge = terms.charge_for(&account);
                let (false, Some(charge)) = (tx.open_attempt(&account.id).await?.is_some(), charge)
                else {
                    page.skipped += 1;
                    continue;
                };
                let step = notice_step(
                    account.auto_topup.notice_minutes,
                    account.auto_topup.planned,
                    terms.at,
                    charge,
                );
                let (charge, announce_at) = match step {
                    NoticeStep::Wait => {
                        page.skipped += 1;
                        continue;
                    }
                    NoticeStep::Charge(charge) => (charge, None),
                    NoticeStep::Announce { charge, at } => (charge, Some(at)),
                };
                if tx
                    .pause_if_capped(&account, charge.amount, terms)
                    .await?
                    .is_some()
                {
                    page.capped += 1;
                    continue;
                }
                if let Some(at) = announce_at {
                    tx.announce(&account, charge, at, terms).await?;
                    page.announced += 1;
                    continue;
                }
                let claimed: ClaimedAccount = sqlx::query_as(&auto_cas())
                    .bind(terms.at.saturating_add(terms.window_ms))
                    .bind(&account.id)
                    .bind(true)
                    .bind(terms.at)
                    .fetch_one(&mut *tx)
                    .await?;
                let account = Account::try_from(claimed.account)?;
                page.attempts.push(
                    tx.open_claimed(&claim, &account, claimed.topup_seq, charge)
                        .await?,
                );
            }
            tx.commit().await?;
            Ok(page)
        })
    }

    /// Claims an automatic attempt (or a retry) if the rules allow it now: a conditional
    /// update of the account and the attempt row, in one transaction, with the decision.
    pub async fn claim_auto_attempt(
        &self,
        claim: &AutoClaim<'_>,
    ) -> Result<AutoClaimOutcome, DbError> {
        match self.try_claim_auto_attempt(claim).await {
            // Another claim of the account committed first (PostgreSQL).
            Err(DbError::Sqlx(e)) if is_unique_violation(&e) => with_pool!(self, |pool| {
                let mut conn = pool.acquire().await?;
                match conn.open_attempt(claim.account_id).await? {
                    Some(open) => Ok(AutoClaimOutcome::Busy(open)),
                    None => Err(DbError::Sqlx(e)),
                }
            }),
            other => other,
        }
    }

    async fn try_claim_auto_attempt(
        &self,
        claim: &AutoClaim<'_>,
    ) -> Result<AutoClaimOutcome, DbError> {
        // The customer's retry of a paused top-up is not bound by the window and leaves
        // it as it is.
        let retry_cas = format!(
            "UPDATE accounts SET topup_seq = topup_seq + 1 \
             WHERE id = $1 AND auto_topup_paused_reason IS NOT NULL AND closed_at IS NULL \
             RETURNING {}, topup_seq",
            accounts::COLUMNS
        );
        if claim.trigger == AttemptTrigger::Manual {
            return Err(DbError::Corrupt(
                "manual purchases are not auto claims".into(),
            ));
        }
        let read = format!("SELECT {} FROM accounts WHERE id = $1", accounts::COLUMNS);
        let locked_read = locked_account(self);
        let terms = &claim.terms;
        let window_end = terms.at.saturating_add(terms.window_ms);
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // An automatic claim of an account with a spend cap first reads it locked, so
            // the month's sum holds until the charge is written or the pause is.
            if claim.trigger == AttemptTrigger::Auto
                && let Some(account) = tx.read_locked(&locked_read, claim.account_id).await?
                && account.auto_topup.monthly_cap.is_some()
            {
                let open = tx.open_attempt(claim.account_id).await?.is_some();
                let claimable = match decide(&account.standing(open), terms.at) {
                    Decision::Due => true,
                    Decision::RateLimited { .. } => !claim.respect_window,
                    _ => false,
                };
                if let Some(charge) = claimable.then(|| terms.charge_for(&account)).flatten()
                    && let Some(capped) = tx.pause_if_capped(&account, charge.amount, terms).await?
                {
                    tx.commit().await?;
                    crate::metrics::notices_queued(NoticeKind::SpendCapReached.as_str(), 1);
                    return Ok(AutoClaimOutcome::NotDue(capped));
                }
            }
            let claimed: Option<ClaimedAccount> = if claim.trigger == AttemptTrigger::Auto {
                sqlx::query_as(&auto_cas())
                    .bind(window_end)
                    .bind(claim.account_id)
                    .bind(claim.respect_window)
                    .bind(terms.at)
                    .fetch_optional(&mut *tx)
                    .await?
            } else {
                sqlx::query_as(&retry_cas)
                    .bind(claim.account_id)
                    .fetch_optional(&mut *tx)
                    .await?
            };
            let open = tx.open_attempt(claim.account_id).await?;
            let Some(ClaimedAccount {
                account,
                topup_seq: seq,
            }) = claimed
            else {
                let Some(account): Option<AccountRow> = sqlx::query_as(&read)
                    .bind(claim.account_id)
                    .fetch_optional(&mut *tx)
                    .await?
                else {
                    return Ok(AutoClaimOutcome::NotDue(Decision::NotEnabled));
                };
                let account = Account::try_from(account)?;
                let decision = decide(&account.standing(open.is_some()), terms.at);
                if claim.trigger == AttemptTrigger::Auto {
                    tx.record_decision(&decision_row(&account, decision, None, terms.at))
                        .await?;
                    tx.commit().await?;
                }
                return Ok(AutoClaimOutcome::NotDue(decision));
            };
            // Dropping the transaction undoes the update.
            if let Some(open) = open {
                return Ok(AutoClaimOutcome::Busy(open));
            }
            let account = Account::try_from(account)?;
            let Some(charge) = terms.charge_for(&account) else {
                return Ok(AutoClaimOutcome::NothingToCharge);
            };
            let attempt = tx.open_claimed(claim, &account, seq, charge).await?;
            tx.commit().await?;
            Ok(AutoClaimOutcome::Claimed(attempt))
        })
    }

    /// The scan's latest decision about the account.
    pub async fn decision(&self, account_id: &str) -> Result<Option<DecisionRow>, DbError> {
        const SQL: &str = concat!(
            "SELECT account_id, ",
            decision_read_as!(),
            ", balance, threshold, target, next_eligible_at, \
             attempt_id, decided_at, reason FROM auto_topup_decisions WHERE account_id = $1"
        );
        Ok(with_pool!(self, |pool| {
            sqlx::query_as(SQL)
                .bind(account_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// The account's decisions, newest first.
    pub async fn decisions(
        &self,
        account_id: &str,
        page: PageRequest,
    ) -> Result<Page<LoggedDecision>, DbError> {
        const SQL: &str = concat!(
            "SELECT id, account_id, ",
            decision_read_as!(),
            ", balance, threshold, target, \
             next_eligible_at, attempt_id, decided_at, reason FROM auto_topup_decision_log \
             WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
        );
        self.page(SQL, Some(account_id), page).await
    }

    /// Forgets decisions taken before `before`, at most `limit` of them; how many went.
    pub async fn prune_decisions(&self, before: Millis, limit: u32) -> Result<u64, DbError> {
        const SQL: &str = "DELETE FROM auto_topup_decision_log WHERE id IN \
             (SELECT id FROM auto_topup_decision_log WHERE decided_at < $1 ORDER BY id LIMIT $2)";
        Ok(with_pool!(self, |pool| {
            sqlx::query(SQL)
                .bind(before)
                .bind(i64::from(limit))
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// The customer cancels the automatic charge announced to them: nothing is charged
    /// for it, and the rate-limit window opens as if it had been tried, so the next one
    /// is announced no sooner than a charge would have come. Audited. `None` if the
    /// account does not exist; else whether a charge was announced.
    pub async fn cancel_announced(
        &self,
        account_id: &str,
        actor: &Actor,
        at: Millis,
        window_ms: i64,
    ) -> Result<Option<bool>, DbError> {
        let read = locked_account(self);
        const CANCEL: &str = "UPDATE accounts SET auto_topup_planned_at = NULL, \
             auto_topup_planned_credits = NULL, auto_topup_planned_cents = NULL, \
             auto_topup_window_ends_at = CASE WHEN auto_topup_window_ends_at > $2 \
             THEN auto_topup_window_ends_at ELSE $2 END WHERE id = $1";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let Some(account) = tx.read_locked(&read, account_id).await? else {
                return Ok(None);
            };
            let Some(planned) = account.auto_topup.planned else {
                return Ok(Some(false));
            };
            sqlx::query(CANCEL)
                .bind(account_id)
                .bind(at.saturating_add(window_ms))
                .execute(&mut *tx)
                .await?;
            let detail = json!({
                "amount_cents": planned.charge.amount.0,
                "credits": planned.charge.credits,
                "announced_for": planned.at,
            });
            tx.audit(
                actor,
                "auto_topup.cancel_announced",
                Some(account_id),
                detail,
                at,
            )
            .await?;
            tx.commit().await?;
            Ok(Some(true))
        })
    }

    /// What the account's automatic top-ups charged (or are charging) from `since` on,
    /// as the spend cap counts it.
    pub async fn auto_spend_since(
        &self,
        account_id: &str,
        since: Millis,
    ) -> Result<Cents, DbError> {
        let spent: i64 = with_pool!(self, |pool| {
            sqlx::query_scalar(SPENT_SINCE)
                .bind(account_id)
                .bind(since)
                .fetch_one(pool)
                .await?
        });
        Ok(Cents(spent))
    }

    /// Ends the pauses whose time is up (spend caps reached in a month now over), audited,
    /// and tells each account whose auto top-up is then on that it is back on, in one
    /// transaction. One statement picks and ends them, so scans in several replicas
    /// end each pause once. How many pauses ended, and how many notices were queued.
    pub async fn lift_ended_pauses(
        &self,
        now: Millis,
        email: &EmailConfig,
    ) -> Result<(usize, usize), DbError> {
        const LIFT: &str = "UPDATE accounts SET auto_topup_paused_reason = NULL, \
             auto_topup_paused_code = NULL, auto_topup_paused_at = NULL, \
             auto_topup_paused_until = NULL \
             WHERE auto_topup_paused_until IS NOT NULL AND auto_topup_paused_until <= $1 \
             RETURNING id";
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let lifted: Vec<String> = sqlx::query_scalar(LIFT)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
            let mut queued = 0;
            for account_id in &lifted {
                let resumed = webhook::resumed(ResumedBy::NewMonth.as_str(), now);
                tx.emit_event(EventType::AutoTopupResumed, account_id, resumed, now)
                    .await?;
                let detail = json!({ "paused_reason": PauseReason::SpendCapReached.as_str(), "note": "a new month began" });
                tx.audit(
                    &Actor::schedule(),
                    "auto_topup.resume",
                    Some(account_id),
                    detail,
                    now,
                )
                .await?;
                let notice = NewNotice {
                    envelope: Envelope::to_owner(
                        format!("resume:{account_id}:{now}:auto_topup_resumed"),
                        account_id,
                        email,
                        now,
                    ),
                    notice: Notice::AutoTopupResumed(Resumption {
                        by: ResumedBy::NewMonth,
                        at: now,
                    }),
                };
                if tx.queue_notice(&notice, QueueWhen::AutoTopupActive).await? {
                    queued += 1;
                }
            }
            tx.commit().await?;
            Ok((lifted.len(), queued))
        })
    }

    /// Support ends a pause, with a note, audited, and queues `notice` if auto top-up is
    /// then on. `None` if the account is not paused (or does not exist); else whether the
    /// notice was queued.
    pub async fn resume_auto_topup(
        &self,
        account_id: &str,
        actor: &Actor,
        note: &str,
        at: Millis,
        notice: Option<&NewNotice>,
    ) -> Result<Option<bool>, DbError> {
        let read = format!(
            "SELECT {} FROM accounts WHERE id = $1 AND auto_topup_paused_reason IS NOT NULL \
             AND auto_topup_paused_reason <> $2",
            accounts::COLUMNS
        );
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            // A reached spend cap is the customer's to raise; resumed by hand, the next
            // scan would find it reached again.
            let paused: Option<AccountRow> = sqlx::query_as(&read)
                .bind(account_id)
                .bind(PauseReason::SpendCapReached.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let Some(pause) = paused
                .map(Account::try_from)
                .transpose()?
                .and_then(|a| a.auto_topup.pause)
            else {
                return Ok(None);
            };
            // Only the pause that was read: a decline that re-paused the account meanwhile
            // is not cleared by a resume that never saw it.
            let cleared = sqlx::query(
                "UPDATE accounts SET auto_topup_paused_reason = NULL, auto_topup_paused_code = NULL, \
                 auto_topup_paused_at = NULL, auto_topup_paused_until = NULL \
                 WHERE id = $1 AND auto_topup_paused_reason = $2 AND auto_topup_paused_at = $3",
            )
            .bind(account_id)
            .bind(pause.reason.as_str())
            .bind(pause.since)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if cleared == 0 {
                return Ok(None);
            }
            let resumed = webhook::resumed(ResumedBy::Support.as_str(), at);
            tx.emit_event(EventType::AutoTopupResumed, account_id, resumed, at)
                .await?;
            let detail = json!({
                "note": note,
                "paused_reason": pause.reason.as_str(),
                "paused_code": pause.code,
            });
            tx.audit(actor, "auto_topup.resume", Some(account_id), detail, at)
                .await?;
            let queued = match notice {
                Some(notice) => tx.queue_notice(notice, QueueWhen::AutoTopupActive).await?,
                None => false,
            };
            tx.commit().await?;
            Ok(Some(queued))
        })
    }

    /// Queues `notice` if the account's auto top-up is on and not paused now. True if
    /// queued.
    pub async fn queue_notice_if_active(&self, notice: &NewNotice) -> Result<bool, DbError> {
        with_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            conn.queue_notice(notice, QueueWhen::AutoTopupActive).await
        })
    }

    /// Paused accounts, longest paused first.
    pub async fn paused_accounts(&self, limit: u32) -> Result<Vec<Account>, DbError> {
        let sql = format!(
            "SELECT {} FROM accounts WHERE auto_topup_paused_reason IS NOT NULL \
             ORDER BY auto_topup_paused_at, id LIMIT $1",
            accounts::COLUMNS
        );
        let rows: Vec<AccountRow> = with_pool!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Account::try_from).collect()
    }
}

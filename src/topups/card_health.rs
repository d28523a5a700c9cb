//! Whether the card auto top-up charges will work when it is next needed, for the auto
//! top-up response and the billing page, and the daily check that warns customers ahead
//! of time, once for each card at risk.

use super::Topups;
use crate::{
    clock::Millis,
    db::{DbError, notices::Envelope, notices::NewNotice, payment_methods::SavedCard},
    domain::{
        account::Account,
        card_health::{self, Health},
        notice::{CardFacts, CardRisk, Notice, NoticeKind},
    },
};

/// The card auto top-up charges, and how it stands now and at the next likely top-up.
#[derive(Debug, Clone)]
pub struct CardReport {
    pub card: Option<SavedCard>,
    pub health: Health,
    pub next_top_up_at: Option<Millis>,
}

/// Cards are looked at this many months ahead of their expiry.
const MONTHS_AHEAD: i64 = 6;
/// Accounts read per page of the daily check.
const PAGE: u32 = 500;

impl Topups {
    /// The card the account's automatic top-ups charge (the one set for them, or else
    /// the default) and whether it will work at the next likely top-up.
    pub async fn card_report(&self, account: &Account) -> Result<CardReport, DbError> {
        let cards = self.db.saved_cards(&account.id).await?;
        let charged = match &account.auto_topup.payment_method_id {
            Some(id) => cards.into_iter().find(|c| &c.id == id),
            None => cards.into_iter().find(|c| c.is_default),
        };
        let now = self.clock.now_ms();
        let last = self.db.last_auto_top_up(&account.id).await?;
        let next_top_up_at = card_health::next_likely_top_up(
            account.balance,
            account
                .auto_topup
                .threshold
                .filter(|_| account.auto_topup.enabled),
            last,
            now,
            account.auto_topup.window_ends_at,
        );
        let expires_at = charged
            .as_ref()
            .map(|c| card_health::expires_at(c.exp_month, c.exp_year));
        Ok(CardReport {
            health: card_health::health(expires_at, next_top_up_at, now),
            card: charged,
            next_top_up_at,
        })
    }

    /// One round of the daily check: each account with auto top-up on whose card expires
    /// within the next months is told, once for that card, if the card has expired or
    /// will have by the next likely top-up. How many were told.
    pub async fn warn_of_expiring_cards(&self) -> Result<usize, DbError> {
        let now = chrono::DateTime::from_timestamp_millis(self.clock.now_ms()).unwrap_or_default();
        let through = i64::from(chrono::Datelike::year(&now)) * 12
            + i64::from(chrono::Datelike::month(&now))
            + MONTHS_AHEAD;
        let mut after = String::new();
        let mut told = 0;
        loop {
            let ids = self
                .db
                .accounts_with_cards_expiring(through, &after, PAGE)
                .await?;
            for id in &ids {
                if let Some(account) = self.db.account(id).await?
                    && let Some(notice) = self.card_notice(&account).await?
                    && self.db.queue_notice_if_active(&notice).await?
                {
                    told += 1;
                }
            }
            match ids.last() {
                Some(last) if ids.len() == PAGE as usize => after = last.clone(),
                _ => break,
            }
        }
        crate::metrics::notices_queued(NoticeKind::CardAtRisk.as_str(), told);
        Ok(told)
    }

    /// The warning the account's card deserves now, if any; its cause names the card and
    /// the risk, so each is told once.
    async fn card_notice(&self, account: &Account) -> Result<Option<NewNotice>, DbError> {
        let report = self.card_report(account).await?;
        let (Some(card), risk) = (report.card, report.health) else {
            return Ok(None);
        };
        let risk = match risk {
            Health::Expired => CardRisk::Expired,
            Health::ExpiresBeforeNextTopUp => CardRisk::ExpiresBeforeNextTopUp,
            Health::Ok | Health::Missing => return Ok(None),
        };
        Ok(Some(card_at_risk(
            &account.id,
            &card,
            risk,
            report.next_top_up_at,
            self.clock.now_ms(),
            &self.config.email,
        )))
    }
}

/// The customer's warning that `card` will not work for auto top-up, keyed by the card
/// and the risk.
pub fn card_at_risk(
    account_id: &str,
    card: &SavedCard,
    risk: CardRisk,
    next_top_up_at: Option<Millis>,
    at: Millis,
    email: &crate::config::EmailConfig,
) -> NewNotice {
    let risk_name = match risk {
        CardRisk::Expired => "expired",
        CardRisk::ExpiresBeforeNextTopUp => "expiring",
        CardRisk::Detached => "detached",
    };
    NewNotice {
        envelope: Envelope::to_owner(
            format!("card:{}:{risk_name}:card_at_risk", card.id),
            account_id,
            email,
            at,
        ),
        notice: Notice::CardAtRisk(CardFacts {
            risk,
            brand: card.brand.clone(),
            last4: card.last4.clone(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            next_top_up_at,
        }),
    }
}

//! What follows when a top-up attempt settles: the credit and its receipt, the pause, and
//! the notices. Pure: the service decides it from the attempt as the move leaves it, and
//! the settling transaction writes it.

use super::{
    attempt::{AUTHENTICATION_DECLINE, Attempt, AttemptState, AttemptTrigger},
    auto_topup::{PauseChange, pause_change},
    credits::Millicredits,
    ledger::EntryKind,
    money::Cents,
    notice::{
        AuthenticationRequest, Notice, PaymentFailure, Receipt, ResumedBy, Resumption, Trigger,
    },
};
use crate::clock::Millis;

/// Everything a settlement writes besides the attempt itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// Posted when the payment succeeded.
    pub credit: Option<Credit>,
    pub pause: PauseChange,
    /// Queued with the move.
    pub notices: Vec<Notice>,
    /// Queued only if the settlement ended a pause.
    pub notices_if_resumed: Vec<Notice>,
}

/// The credits a succeeded payment bought, and what its receipt says.
#[derive(Debug, Clone, PartialEq)]
pub struct Credit {
    pub kind: EntryKind,
    pub amount: Millicredits,
    pub description: String,
    trigger: Trigger,
    amount_paid: Cents,
    transaction_id: String,
    at: Millis,
}

impl Credit {
    /// The receipt of this credit, once it is posted and has left `balance_after`.
    pub fn receipt(&self, balance_after: Millicredits) -> Notice {
        Notice::TopupReceipt(Receipt {
            trigger: self.trigger,
            credits: self.amount,
            amount: self.amount_paid,
            transaction_id: self.transaction_id.clone(),
            new_balance: balance_after,
            at: self.at,
        })
    }
}

/// What settling `attempt` (as the move to its state left it) at `at` writes. Automatic
/// charges (and the customer's retry of one) pause on a decline or a request for
/// authentication and resume on success; the customer gets a receipt, a decline, or a
/// request to authenticate.
pub fn settlement(attempt: &Attempt, at: Millis) -> Settlement {
    let decline = attempt.decline_code.as_deref();
    let pause = pause_change(attempt.trigger, attempt.state, decline);
    let trigger = match attempt.trigger {
        AttemptTrigger::Auto => Trigger::Automatic,
        AttemptTrigger::Manual | AttemptTrigger::Retry => Trigger::Manual,
    };
    let automatic = attempt.trigger == AttemptTrigger::Auto;
    let (credits, amount) = (attempt.credits, attempt.amount);
    let authenticate = |link: Option<String>| {
        Notice::AuthenticationRequired(AuthenticationRequest {
            link,
            credits,
            amount,
        })
    };
    let mut credit = None;
    let mut notices = Vec::new();
    let mut notices_if_resumed = Vec::new();
    match attempt.state {
        AttemptState::Succeeded => {
            credit = Some(Credit {
                kind: match attempt.trigger {
                    AttemptTrigger::Manual => EntryKind::ManualTopup,
                    AttemptTrigger::Auto | AttemptTrigger::Retry => EntryKind::AutoTopup,
                },
                amount: credits,
                description: format!("top-up of {} credits for {amount}", credits.to_display()),
                trigger,
                amount_paid: amount,
                transaction_id: attempt.provider_payment_id.clone().unwrap_or_default(),
                at,
            });
            if pause == PauseChange::Resume {
                notices_if_resumed.push(Notice::AutoTopupResumed(Resumption {
                    by: ResumedBy::Payment,
                    at,
                }));
            }
        }
        // The bank wants the customer there to confirm: ask them to, rather than report a
        // decline they can do nothing about with another card.
        AttemptState::Failed if decline == Some(AUTHENTICATION_DECLINE) && automatic => {
            notices.push(authenticate(None));
        }
        AttemptState::Failed => notices.push(Notice::PaymentFailed(PaymentFailure {
            trigger,
            decline_code: decline.unwrap_or("card_declined").to_owned(),
            credits,
            amount,
            at,
        })),
        // The customer at hand got the link in the answer; an absent one gets it by mail
        // (for a payment declined off-session, the link to topupd's page where they
        // confirm it).
        AttemptState::RequiresAction if automatic => {
            notices.push(authenticate(attempt.next_action_url.clone()));
        }
        _ => {}
    }
    Settlement {
        credit,
        pause,
        notices,
        notices_if_resumed,
    }
}

/// Whether a settled attempt lets a backup card be tried within the same top-up: an
/// automatic charge the bank declined. A request to authenticate is the customer's to
/// answer, and nothing ambiguous is ever settled as failed, so a card that may have been
/// charged is never followed by another.
pub fn backup_may_follow(attempt: &Attempt) -> bool {
    attempt.trigger == AttemptTrigger::Auto
        && attempt.state == AttemptState::Failed
        && attempt.decline_code.as_deref() != Some(AUTHENTICATION_DECLINE)
}

/// The next of the account's backup cards (in the customer's order) that this top-up has
/// not tried yet; `tried` holds every card it tried, the first included.
pub fn next_backup<'a>(backups: &'a [String], tried: &[String]) -> Option<&'a str> {
    backups
        .iter()
        .find(|card| !tried.contains(card))
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::auto_topup::PauseReason;

    fn attempt(trigger: AttemptTrigger, state: AttemptState, decline: Option<&str>) -> Attempt {
        Attempt {
            trigger,
            next_action_url: Some("https://bank.example/3ds".into()),
            decline_code: decline.map(str::to_owned),
            ..crate::domain::attempt::sample(state)
        }
    }

    fn kinds(notices: &[Notice]) -> Vec<&'static str> {
        notices.iter().map(Notice::kind).collect()
    }

    #[test]
    fn only_a_declined_automatic_charge_is_followed_by_a_backup_card() {
        use AttemptState::*;
        use AttemptTrigger::*;
        assert!(backup_may_follow(&attempt(
            Auto,
            Failed,
            Some("card_declined")
        )));
        assert!(backup_may_follow(&attempt(
            Auto,
            Failed,
            Some("expired_card")
        )));
        for (trigger, state, decline) in [
            (Auto, Failed, Some(AUTHENTICATION_DECLINE)),
            (Auto, RequiresAction, None),
            (Auto, Processing, None),
            (Auto, Confirming, None),
            (Auto, Succeeded, None),
            (Retry, Failed, Some("card_declined")),
            (Manual, Failed, Some("card_declined")),
        ] {
            assert!(
                !backup_may_follow(&attempt(trigger, state, decline)),
                "{trigger:?} {state:?} {decline:?}"
            );
        }
    }

    #[test]
    fn backups_are_tried_in_order_each_once() {
        let cards = |xs: &[&str]| xs.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let backups = cards(&["pm_b", "pm_c"]);
        assert_eq!(next_backup(&backups, &cards(&["pm_a"])), Some("pm_b"));
        assert_eq!(
            next_backup(&backups, &cards(&["pm_a", "pm_b"])),
            Some("pm_c")
        );
        assert_eq!(
            next_backup(&backups, &cards(&["pm_a", "pm_b", "pm_c"])),
            None
        );
        // A backup that is also the card charged first is not charged twice.
        assert_eq!(
            next_backup(&cards(&["pm_a", "pm_c"]), &cards(&["pm_a"])),
            Some("pm_c")
        );
        assert_eq!(next_backup(&[], &cards(&["pm_a"])), None);
    }

    #[test]
    fn a_success_credits_what_was_bought_and_its_receipt_tells_the_balance_it_left() {
        use AttemptTrigger::*;
        for (trigger, kind) in [
            (Auto, EntryKind::AutoTopup),
            (Retry, EntryKind::AutoTopup),
            (Manual, EntryKind::ManualTopup),
        ] {
            let settled = settlement(&attempt(trigger, AttemptState::Succeeded, None), 7);
            let credit = settled.credit.expect("credited");
            assert_eq!(credit.kind, kind);
            assert_eq!(credit.amount, Millicredits(5_000_000));
            assert_eq!(credit.description, "top-up of 5,000 credits for $50.00");
            assert!(settled.notices.is_empty(), "the receipt follows the credit");
            let Notice::TopupReceipt(receipt) = credit.receipt(Millicredits(5_000_250)) else {
                panic!("a receipt");
            };
            assert_eq!(receipt.new_balance, Millicredits(5_000_250));
            assert_eq!(receipt.transaction_id, "pi_1");
            assert_eq!(receipt.amount, Cents(5_000));
            assert_eq!(receipt.at, 7);
        }
    }

    #[test]
    fn a_charge_of_auto_top_up_that_succeeds_resumes_and_says_so_only_if_it_was_paused() {
        for trigger in [AttemptTrigger::Auto, AttemptTrigger::Retry] {
            let settled = settlement(&attempt(trigger, AttemptState::Succeeded, None), 7);
            assert_eq!(settled.pause, PauseChange::Resume);
            assert_eq!(kinds(&settled.notices_if_resumed), ["auto_topup_resumed"]);
        }
        let manual = settlement(
            &attempt(AttemptTrigger::Manual, AttemptState::Succeeded, None),
            7,
        );
        assert_eq!(manual.pause, PauseChange::Keep);
        assert!(manual.notices_if_resumed.is_empty());
    }

    #[test]
    fn a_decline_pauses_automatic_charges_and_tells_the_customer_why() {
        let settled = settlement(
            &attempt(
                AttemptTrigger::Auto,
                AttemptState::Failed,
                Some("insufficient_funds"),
            ),
            7,
        );
        assert_eq!(settled.credit, None);
        assert_eq!(
            settled.pause,
            PauseChange::Pause(PauseReason::PaymentFailed)
        );
        let [Notice::PaymentFailed(failure)] = settled.notices.as_slice() else {
            panic!("one decline notice: {:?}", settled.notices);
        };
        assert_eq!(failure.decline_code, "insufficient_funds");
        assert_eq!(failure.trigger, Trigger::Automatic);

        let manual = settlement(
            &attempt(AttemptTrigger::Manual, AttemptState::Failed, None),
            7,
        );
        assert_eq!(manual.pause, PauseChange::Keep);
        let [Notice::PaymentFailed(failure)] = manual.notices.as_slice() else {
            panic!("one decline notice");
        };
        assert_eq!(failure.decline_code, "card_declined");
        assert_eq!(failure.trigger, Trigger::Manual);
    }

    #[test]
    fn an_absent_customer_asked_to_authenticate_gets_the_link_or_is_asked_to_pay_again() {
        let waiting = settlement(
            &attempt(AttemptTrigger::Auto, AttemptState::RequiresAction, None),
            7,
        );
        assert_eq!(
            waiting.pause,
            PauseChange::Pause(PauseReason::AuthenticationRequired)
        );
        let [Notice::AuthenticationRequired(request)] = waiting.notices.as_slice() else {
            panic!("one request to authenticate");
        };
        assert_eq!(request.link.as_deref(), Some("https://bank.example/3ds"));

        let refused = settlement(
            &attempt(
                AttemptTrigger::Auto,
                AttemptState::Failed,
                Some(AUTHENTICATION_DECLINE),
            ),
            7,
        );
        assert_eq!(
            refused.pause,
            PauseChange::Pause(PauseReason::AuthenticationRequired)
        );
        let [Notice::AuthenticationRequired(request)] = refused.notices.as_slice() else {
            panic!("one request to authenticate");
        };
        assert_eq!(request.link, None);
    }

    #[test]
    fn a_customer_at_hand_gets_no_mail_while_authenticating_and_a_cancel_says_nothing() {
        let at_hand = settlement(
            &attempt(AttemptTrigger::Manual, AttemptState::RequiresAction, None),
            7,
        );
        assert!(at_hand.notices.is_empty());
        assert_eq!(at_hand.pause, PauseChange::Keep);
        let canceled = settlement(
            &attempt(AttemptTrigger::Auto, AttemptState::Canceled, None),
            7,
        );
        assert_eq!(
            canceled,
            Settlement {
                credit: None,
                pause: PauseChange::Keep,
                notices: vec![],
                notices_if_resumed: vec![],
            }
        );
    }

    #[test]
    fn a_move_keeps_what_the_provider_does_not_say_and_credits_what_it_received() {
        let before = attempt(AttemptTrigger::Auto, AttemptState::Confirming, None);
        let facts = crate::domain::attempt::ProviderFacts {
            provider_payment_id: Some("pi_other"),
            amount_received: Some(Cents(2_500)),
            credits_received: Some(Millicredits(2_500_000)),
            ..Default::default()
        };
        let after = before.settled(AttemptState::Succeeded, &facts, 9);
        assert_eq!(after.state, AttemptState::Succeeded);
        assert_eq!(after.settled_at, Some(9));
        assert_eq!(after.provider_payment_id.as_deref(), Some("pi_1"), "kept");
        assert_eq!(
            after.next_action_url.as_deref(),
            Some("https://bank.example/3ds")
        );
        assert_eq!(after.amount, Cents(2_500));
        assert_eq!(after.credits, Millicredits(2_500_000));
        let waiting = before.settled(AttemptState::RequiresAction, &Default::default(), 9);
        assert_eq!(waiting.settled_at, None, "not settled until terminal");
    }
}

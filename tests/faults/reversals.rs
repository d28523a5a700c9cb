//! Money taken back while the drill runs, as the merchant and the payers' banks do it at
//! the provider: some captured charges are refunded (whole or in part) from the
//! dashboard, and every dispute the disputing test card opens is answered, won or lost.
//! Each is decided once per charge or dispute, from the drill's seed, and tried again
//! under a new idempotency key while the provider has not done it.

use std::collections::{HashMap, HashSet};

use rand::{Rng, rngs::StdRng};
use reqwest::StatusCode;

use crate::cluster::Stub;

/// Share of captured charges refunded.
const REFUND_RATE: f64 = 0.2;
/// Share of disputes won.
const WIN_RATE: f64 = 0.5;

/// What the drill asked the provider to do, and how many tries each has taken.
#[derive(Default)]
pub struct Reverser {
    /// Charges decided, with the refund asked (cents), if one was.
    refunds: HashMap<String, Option<i64>>,
    /// Disputes decided: won or lost.
    disputes: HashMap<String, bool>,
    done: HashSet<String>,
    tries: HashMap<String, u32>,
    pub refunded: usize,
    pub disputes_won: usize,
    pub disputes_lost: usize,
}

impl Reverser {
    /// Decides the charges and disputes not decided yet, and asks again for what the
    /// provider has not done yet.
    pub async fn act(&mut self, stub: &Stub, rng: &mut StdRng) {
        let mut charges = stub.charges().await;
        // The stub lists by payment id; decide in that order so a seed replays.
        charges.sort_by(|a, b| a.payment_intent.cmp(&b.payment_intent));
        for charge in &charges {
            let Some(charge_id) = &charge.charge_id else {
                continue;
            };
            for dispute in &charge.disputes {
                let won = *self
                    .disputes
                    .entry(dispute.id.clone())
                    .or_insert_with(|| rng.random_bool(WIN_RATE));
                if dispute.status != "needs_response" {
                    if self.finish(&dispute.id) {
                        if won {
                            self.disputes_won += 1;
                        } else {
                            self.disputes_lost += 1;
                        }
                    }
                    continue;
                }
                let key = self.next_key(&dispute.id);
                if won {
                    let path = format!("/v1/disputes/{}", dispute.id);
                    let evidence = [("evidence[uncategorized_text]", "winning_evidence")];
                    stub.stripe(&path, &evidence, &key).await;
                } else {
                    let path = format!("/v1/disputes/{}/close", dispute.id);
                    stub.stripe(&path, &[], &key).await;
                }
            }
            if !charge.disputes.is_empty() {
                continue;
            }
            let asked = *self.refunds.entry(charge_id.clone()).or_insert_with(|| {
                rng.random_bool(REFUND_RATE).then(|| {
                    if rng.random_bool(0.5) {
                        charge.amount_received
                    } else {
                        (charge.amount_received / 2).max(1)
                    }
                })
            });
            let Some(amount) = asked else { continue };
            if charge.amount_refunded > 0 {
                if self.finish(charge_id) {
                    self.refunded += 1;
                }
                continue;
            }
            let key = self.next_key(charge_id);
            let amount = amount.to_string();
            let refund = [("charge", charge_id.as_str()), ("amount", amount.as_str())];
            if stub.stripe("/v1/refunds", &refund, &key).await == Some(StatusCode::OK)
                && self.finish(charge_id)
            {
                self.refunded += 1;
            }
        }
    }

    /// A new idempotency key for the next try at `what`: a try the provider answered
    /// with an error is replayed under its key, so only a new one tries again.
    fn next_key(&mut self, what: &str) -> String {
        let tries = self.tries.entry(what.to_owned()).or_default();
        *tries += 1;
        format!("drill-{what}-{tries}")
    }

    /// Marks `what` done: true the first time.
    fn finish(&mut self, what: &str) -> bool {
        self.done.insert(what.to_owned())
    }
}

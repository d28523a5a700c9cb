//! The link that asks a customer to confirm, with them there, a payment their bank would
//! not take without them (Stripe's off-session `authentication_required`). It opens
//! topupd's own page, is signed with that payment's client secret, so it is good for that
//! attempt only, and expires when the waiting payment is given up.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::{clock::Millis, domain::attempt::Attempt};

/// The path of the confirmation page of attempt `id`.
pub fn path(id: &str) -> String {
    format!("/v1/payments/confirm/{id}")
}

/// The page's link for `attempt`, under `public_url`, good until the payment waiting for
/// the customer is cancelled (`expiry_hours` after the attempt began). `None` when the
/// provider gave the payment no client secret.
pub fn link(attempt: &Attempt, public_url: &str, expiry_hours: u32) -> Option<String> {
    let expires = expires_at(attempt, expiry_hours);
    let signature = signature(attempt, expires)?;
    Some(format!(
        "{}{}?expires={expires}&signature={signature}",
        public_url.trim_end_matches('/'),
        path(&attempt.id)
    ))
}

/// Whether a link's `expires` and `signature` are the ones made for `attempt`, and it has
/// not expired at `now`.
pub fn is_valid(attempt: &Attempt, expires: i64, signature: &str, now: Millis) -> bool {
    let Some(expected) = self::signature(attempt, expires) else {
        return false;
    };
    now.div_euclid(1000) < expires && bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
}

/// Unix seconds at which the attempt's waiting payment is cancelled.
fn expires_at(attempt: &Attempt, expiry_hours: u32) -> i64 {
    attempt.created_at.div_euclid(1000) + i64::from(expiry_hours) * 3600
}

fn signature(attempt: &Attempt, expires: i64) -> Option<String> {
    let secret = attempt.client_secret.as_deref()?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(format!("confirm:{}:{expires}", attempt.id).as_bytes());
    Some(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::attempt::{AttemptState, sample};

    fn attempt(id: &str, secret: Option<&str>) -> Attempt {
        Attempt {
            id: id.into(),
            client_secret: secret.map(str::to_owned),
            created_at: 1_000_000_000_000,
            ..sample(AttemptState::RequiresAction)
        }
    }

    fn parts(link: &str) -> (i64, String) {
        let query = link.split_once('?').expect("a query").1;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).expect("pairs");
        (pairs[0].1.parse().expect("expires"), pairs[1].1.clone())
    }

    #[test]
    fn a_link_opens_its_own_attempt_until_it_expires_and_nothing_else() {
        let waiting = attempt("tpu_1", Some("pi_1_secret_a"));
        let link = link(&waiting, "https://billing.example/", 72).expect("a link");
        assert!(link.starts_with("https://billing.example/v1/payments/confirm/tpu_1?expires="));
        let (expires, signature) = parts(&link);
        assert_eq!(expires, 1_000_000_000 + 72 * 3600);
        let before = (expires - 1) * 1000;
        assert!(is_valid(&waiting, expires, &signature, before));
        assert!(
            !is_valid(&waiting, expires, &signature, expires * 1000),
            "expired"
        );
        assert!(
            !is_valid(&waiting, expires + 3600, &signature, before),
            "a later expiry is not signed"
        );
        let other = attempt("tpu_2", Some("pi_1_secret_a"));
        assert!(
            !is_valid(&other, expires, &signature, before),
            "another attempt"
        );
        let other_secret = attempt("tpu_1", Some("pi_1_secret_b"));
        assert!(!is_valid(&other_secret, expires, &signature, before));
        let no_secret = attempt("tpu_1", None);
        assert!(link_is_none(&no_secret));
        assert!(!is_valid(&no_secret, expires, &signature, before));
    }

    fn link_is_none(attempt: &Attempt) -> bool {
        link(attempt, "https://billing.example", 72).is_none()
    }
}

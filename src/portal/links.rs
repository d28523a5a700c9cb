//! The ways into the billing page: the single-use link a host's backend asks for (a random
//! token, kept only as a hash), the session id its cookie holds (the same), and the
//! signed link each notice carries, which opens a session for its account until it
//! expires, however often it is followed (mail scanners follow links too).

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clock::Millis;

/// Where the billing page lives under `http.public_url`.
pub const BASE_PATH: &str = "/billing";
/// The page a notice's link lands on: it completes what waits for the customer.
pub const COMPLETE_PATH: &str = "/billing/complete";
/// Where a notice's signed link is checked.
pub const EMAIL_LINK_PATH: &str = "/billing/from-email";
/// Where a host's single-use link is opened.
pub const START_PATH: &str = "/billing/start";

/// The page of one payment of the session's account.
pub fn payment_path(id: &str) -> String {
    format!("/billing/payments/{id}")
}

/// The name under which the key that signs notices' links is kept in the database.
pub const SIGNING_KEY_NAME: &str = "billing_page_links";

const TOKEN_BYTES: usize = 32;

/// A fresh random secret (a link's token, a session id, a CSRF token), as hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What is stored in place of a token or session id.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Equal secrets, compared in constant time.
pub fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Signs and checks the links in notices.
#[derive(Clone)]
pub struct EmailLinks {
    key: Vec<u8>,
    public_url: String,
    ttl_hours: u32,
}

impl std::fmt::Debug for EmailLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailLinks")
            .field("public_url", &self.public_url)
            .field("ttl_hours", &self.ttl_hours)
            .finish_non_exhaustive()
    }
}

impl EmailLinks {
    pub fn new(key: &str, public_url: &str, ttl_hours: u32) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            ttl_hours,
        }
    }

    /// The link of a notice about `account_id` written at `issued_at`, landing on `next`.
    /// The same notice always gets the same link, so a resend is the first send.
    pub fn link(&self, account_id: &str, next: &str, issued_at: Millis) -> String {
        let expires = issued_at.div_euclid(1000) + i64::from(self.ttl_hours) * 3600;
        let query = serde_urlencoded::to_string([
            ("account", account_id),
            ("next", next),
            ("expires", &expires.to_string()),
            ("signature", &self.signature(account_id, next, expires)),
        ])
        .expect("strings always encode");
        format!("{}{EMAIL_LINK_PATH}?{query}", self.public_url)
    }

    /// Whether the link's parts are ones this key signed, unexpired at `now`, landing on
    /// a page of the billing page (never elsewhere).
    pub fn verify(
        &self,
        account_id: &str,
        next: &str,
        expires: i64,
        signature: &str,
        now: Millis,
    ) -> bool {
        is_own_page(next)
            && now.div_euclid(1000) < expires
            && same(&self.signature(account_id, next, expires), signature)
    }

    fn signature(&self, account_id: &str, next: &str, expires: i64) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(format!("billing:{account_id}:{next}:{expires}").as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A path of the billing page: where links may land.
pub fn is_own_page(path: &str) -> bool {
    (path == BASE_PATH || path.starts_with("/billing/"))
        && !path.contains("//")
        && !path.contains('\\')
        && path.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-21T10:30:00Z
    const AT: Millis = 1_795_257_000_000;

    fn links() -> EmailLinks {
        EmailLinks::new("k3y", "https://pay.example/", 72)
    }

    fn parts(link: &str) -> (String, String, i64, String) {
        let query = link.split_once('?').expect("a query").1;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).expect("pairs");
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .expect("present")
        };
        (
            get("account"),
            get("next"),
            get("expires").parse().expect("number"),
            get("signature"),
        )
    }

    #[test]
    fn a_link_verifies_until_it_expires_and_is_the_same_each_time() {
        let links = links();
        let link = links.link("acct_1", COMPLETE_PATH, AT);
        assert!(link.starts_with("https://pay.example/billing/from-email?account=acct_1&"));
        assert_eq!(link, links.link("acct_1", COMPLETE_PATH, AT));
        let (account, next, expires, signature) = parts(&link);
        assert_eq!(expires, AT / 1000 + 72 * 3600);
        assert!(links.verify(&account, &next, expires, &signature, AT));
        let last_ms = expires * 1000 - 1;
        assert!(links.verify(&account, &next, expires, &signature, last_ms));
        assert!(!links.verify(&account, &next, expires, &signature, expires * 1000));
    }

    #[test]
    fn any_changed_part_or_another_key_fails() {
        let links = links();
        let (account, next, expires, signature) = parts(&links.link("acct_1", COMPLETE_PATH, AT));
        assert!(!links.verify("acct_2", &next, expires, &signature, AT));
        assert!(!links.verify(&account, BASE_PATH, expires, &signature, AT));
        assert!(!links.verify(&account, &next, expires + 1, &signature, AT));
        let other = EmailLinks::new("other", "https://pay.example", 72);
        assert!(!other.verify(&account, &next, expires, &signature, AT));
    }

    #[test]
    fn links_land_only_on_the_billing_page() {
        for good in [
            "/billing",
            "/billing/complete",
            "/billing/usage?from=2026-11-01",
        ] {
            assert!(is_own_page(good), "{good}");
        }
        for bad in [
            "https://evil.example/billing",
            "//evil.example",
            "/billing//evil",
            "/billingx",
            "/v1/accounts",
            "/billing/\\evil",
            "/billing/ x",
        ] {
            assert!(!is_own_page(bad), "{bad}");
        }
    }

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), a);
        assert!(same(&a, &a) && !same(&a, &b));
    }
}

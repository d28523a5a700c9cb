//! The ways into the billing page: the single-use link a host's backend asks for (a random
//! token, kept only as a hash), the session id its cookie holds (the same), and the
//! signed link each notice carries. That one can be followed again until it expires (mail
//! scanners follow links too), opens only the payment the notice is about, and dies with
//! the account's email.

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

/// What a notice's link says: whose it is, when its notice was written (a link written
/// before the account's email changed is void), where it lands and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SignedLink {
    pub account: String,
    pub issued: Millis,
    pub next: String,
    /// Seconds since the epoch.
    pub expires: i64,
}

impl SignedLink {
    /// When the link stops working, in milliseconds.
    pub fn expires_at(&self) -> Millis {
        self.expires.saturating_mul(1000)
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

    /// The link of a notice about `account_id` written at `issued`, landing on `next`.
    /// The same notice always gets the same link, so a resend is the first send.
    pub fn link(&self, account_id: &str, next: &str, issued: Millis) -> String {
        let link = SignedLink {
            account: account_id.to_owned(),
            issued,
            next: next.to_owned(),
            expires: issued.div_euclid(1000) + i64::from(self.ttl_hours) * 3600,
        };
        format!("{}{EMAIL_LINK_PATH}?{}", self.public_url, self.query(&link))
    }

    /// The link's parts with their signature, as a query string.
    pub fn query(&self, link: &SignedLink) -> String {
        let signature = self.signature(link);
        serde_urlencoded::to_string([
            ("account", link.account.as_str()),
            ("issued", &link.issued.to_string()),
            ("next", &link.next),
            ("expires", &link.expires.to_string()),
            ("signature", &signature),
        ])
        .expect("strings always encode")
    }

    /// Whether `link` is one this key signed, unexpired at `now`, landing on a page of the
    /// billing page (never elsewhere).
    pub fn verify(&self, link: &SignedLink, signature: &str, now: Millis) -> bool {
        is_own_page(&link.next) && now < link.expires_at() && same(&self.signature(link), signature)
    }

    fn signature(&self, link: &SignedLink) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key");
        let SignedLink {
            account,
            issued,
            next,
            expires,
        } = link;
        mac.update(format!("billing:{account}:{issued}:{next}:{expires}").as_bytes());
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

    fn parts(link: &str) -> (SignedLink, String) {
        let query = link.split_once('?').expect("a query").1;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).expect("pairs");
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .expect("present")
        };
        let link = SignedLink {
            account: get("account"),
            issued: get("issued").parse().expect("number"),
            next: get("next"),
            expires: get("expires").parse().expect("number"),
        };
        (link, get("signature"))
    }

    #[test]
    fn a_link_verifies_until_it_expires_and_is_the_same_each_time() {
        let links = links();
        let link = links.link("acct_1", COMPLETE_PATH, AT);
        assert!(link.starts_with("https://pay.example/billing/from-email?account=acct_1&"));
        assert_eq!(link, links.link("acct_1", COMPLETE_PATH, AT));
        let (parts, signature) = parts(&link);
        assert_eq!(parts.issued, AT);
        assert_eq!(parts.expires, AT / 1000 + 72 * 3600);
        assert!(links.verify(&parts, &signature, AT));
        assert!(links.verify(&parts, &signature, parts.expires_at() - 1));
        assert!(!links.verify(&parts, &signature, parts.expires_at()));
    }

    #[test]
    fn any_changed_part_or_another_key_fails() {
        let links = links();
        let (good, signature) = parts(&links.link("acct_1", COMPLETE_PATH, AT));
        assert!(links.verify(&good, &signature, AT));
        let changed = [
            SignedLink {
                account: "acct_2".into(),
                ..good.clone()
            },
            SignedLink {
                issued: AT + 1,
                ..good.clone()
            },
            SignedLink {
                next: BASE_PATH.into(),
                ..good.clone()
            },
            SignedLink {
                expires: good.expires + 1,
                ..good.clone()
            },
        ];
        for link in changed {
            assert!(!links.verify(&link, &signature, AT), "{link:?}");
        }
        let other = EmailLinks::new("other", "https://pay.example", 72);
        assert!(!other.verify(&good, &signature, AT));
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

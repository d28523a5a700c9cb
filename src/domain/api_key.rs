//! API keys and roles. A key is shown once at creation; only the SHA-256 of its secret part
//! is stored, and presented secrets are compared to it in constant time.

use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a key may do. Customers are bound to one account; the others are staff or platform.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Service,
    Support,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Service => "service",
            Self::Support => "support",
            Self::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "customer" => Some(Self::Customer),
            "service" => Some(Self::Service),
            "support" => Some(Self::Support),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

const TOKEN_PREFIX: &str = "tpk_";
const KEY_ID_PREFIX: &str = "key_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;

/// A freshly generated key: the id to store and the token to hand out once.
pub struct GeneratedKey {
    pub id: String,
    pub secret_hash: String,
    pub token: String,
}

/// Generates a key: `tpk_<id>_<secret>`, where the id half names the stored row.
pub fn generate() -> GeneratedKey {
    let mut rng = rand::rng();
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let (id, secret) = (hex::encode(id), hex::encode(secret));
    GeneratedKey {
        id: format!("{KEY_ID_PREFIX}{id}"),
        secret_hash: hash_secret(&secret),
        token: format!("{TOKEN_PREFIX}{id}_{secret}"),
    }
}

/// Splits a presented token into the stored key id and its secret part.
pub fn parse_token(token: &str) -> Option<(String, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = id.len() == ID_BYTES * 2
        && secret.len() == SECRET_BYTES * 2
        && id
            .bytes()
            .chain(secret.bytes())
            .all(|b| b.is_ascii_hexdigit());
    well_formed.then(|| (format!("{KEY_ID_PREFIX}{id}"), secret))
}

pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time comparison of a presented secret with the stored hash.
pub fn secret_matches(stored_hash: &str, secret: &str) -> bool {
    hash_secret(secret)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_token_parses_back_to_its_id_and_matches_its_hash() {
        let key = generate();
        let (id, secret) = parse_token(&key.token).expect("generated tokens parse");
        assert_eq!(id, key.id);
        assert!(secret_matches(&key.secret_hash, secret));
        assert!(!secret_matches(
            &key.secret_hash,
            &"0".repeat(SECRET_BYTES * 2)
        ));
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        for token in [
            "",
            "tpk_",
            "tpk_abc_def",
            "Bearer x",
            "key_0011223344556677",
        ] {
            assert!(parse_token(token).is_none(), "{token:?} should not parse");
        }
        let key = generate();
        let truncated = &key.token[..key.token.len() - 1];
        assert!(parse_token(truncated).is_none());
    }
}

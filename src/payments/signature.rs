//! Webhook signatures, Stripe's scheme: `Stripe-Signature: t=<unix seconds>,v1=<hex>`
//! where the hex is HMAC-SHA256 of `"<t>.<raw body>"` under the endpoint secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Stripe-Signature header")]
    Missing,
    #[error("malformed Stripe-Signature header")]
    Malformed,
    #[error("signature timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// The header value signing `body` at `timestamp` (seconds) with `secret`.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The longest `Stripe-Signature` header read: a timestamp and a few signatures (one per
/// secret in a rotation) fit many times over.
pub const MAX_HEADER_LEN: usize = 2048;
/// The most `v1` values read from one header.
pub const MAX_SIGNATURES: usize = 8;

/// Checks `header` against the raw `body`: the timestamp within `tolerance_secs` of `now`
/// (seconds), and some `v1` value matching some secret (several during a rotation). Each
/// secret's signature is computed once, whatever the header holds, and compared with each
/// value in constant time; a header past the bounds above is refused unread.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[String],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => {
                timestamp = Some(t.parse::<i64>().map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", hex_sig)) if signatures.len() < MAX_SIGNATURES => {
                signatures.push(hex::decode(hex_sig).map_err(|_| SignatureError::Malformed)?)
            }
            Some(("v1", _)) => return Err(SignatureError::Malformed),
            Some(_) => {}
            None => return Err(SignatureError::Malformed),
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > tolerance_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let matched = secrets.iter().any(|secret| {
        let expected = mac(secret, timestamp, body).finalize().into_bytes();
        signatures
            .iter()
            .any(|sig| bool::from(expected.as_slice().ct_eq(sig.as_slice())))
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_795_257_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    fn secrets() -> Vec<String> {
        vec!["whsec_old".into(), "whsec_new".into()]
    }

    #[test]
    fn a_signed_body_verifies_with_either_secret_of_a_rotation() {
        for secret in ["whsec_old", "whsec_new"] {
            let header = sign(secret, NOW, BODY);
            assert_eq!(
                verify(Some(&header), BODY, &secrets(), NOW + 10, 300),
                Ok(())
            );
        }
    }

    #[test]
    fn several_v1_values_are_accepted_when_one_matches() {
        let good = sign("whsec_new", NOW, BODY);
        let v1 = good.split("v1=").nth(1).expect("v1");
        let header = format!("t={NOW},v1={},v1={v1}", "00".repeat(32));
        assert_eq!(verify(Some(&header), BODY, &secrets(), NOW, 300), Ok(()));
    }

    #[test]
    fn a_header_past_its_bounds_is_refused_unread() {
        let good = sign("whsec_new", NOW, BODY);
        let v1 = good.split("v1=").nth(1).expect("v1");
        let wrong = format!(",v1={}", "00".repeat(32));
        let at_most = format!("t={NOW}{},v1={v1}", wrong.repeat(MAX_SIGNATURES - 1));
        assert_eq!(verify(Some(&at_most), BODY, &secrets(), NOW, 300), Ok(()));
        let too_many = format!("t={NOW}{},v1={v1}", wrong.repeat(MAX_SIGNATURES));
        assert!(too_many.len() < MAX_HEADER_LEN);
        assert_eq!(
            verify(Some(&too_many), BODY, &secrets(), NOW, 300),
            Err(SignatureError::Malformed)
        );
        let flood = format!("t={NOW},v1={v1}{}", wrong.repeat(5_000));
        assert_eq!(
            verify(Some(&flood), BODY, &secrets(), NOW, 300),
            Err(SignatureError::Malformed)
        );
        let padded = format!("{good},{}", "x=y,".repeat(MAX_HEADER_LEN / 4));
        assert_eq!(
            verify(Some(&padded), BODY, &secrets(), NOW, 300),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn forged_stale_and_malformed_signatures_are_refused() {
        let header = sign("whsec_new", NOW, BODY);
        assert_eq!(
            verify(None, BODY, &secrets(), NOW, 300),
            Err(SignatureError::Missing)
        );
        assert_eq!(
            verify(
                Some(&sign("whsec_other", NOW, BODY)),
                BODY,
                &secrets(),
                NOW,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        let mut altered = BODY.to_vec();
        altered[5] ^= 1;
        assert_eq!(
            verify(Some(&header), &altered, &secrets(), NOW, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&header), BODY, &secrets(), NOW + 301, 300),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(Some(&header), BODY, &secrets(), NOW - 301, 300),
            Err(SignatureError::Stale)
        );
        for bad in [
            "",
            "t=abc,v1=00",
            "v1=00",
            &format!("t={NOW}"),
            &format!("t={NOW},v1=zz"),
            "garbage",
        ] {
            assert_eq!(
                verify(Some(bad), BODY, &secrets(), NOW, 300),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        let v0_only = header.replace("v1=", "v0=");
        assert_eq!(
            verify(Some(&v0_only), BODY, &secrets(), NOW, 300),
            Err(SignatureError::Malformed)
        );
    }
}

//! CloudPayments signs each notification: `Content-HMAC` = base64(HMAC-SHA256(API
//! secret, raw body)).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

#[derive(Debug, PartialEq, Eq)]
pub enum HmacRejection {
    Missing,
    BadSignature,
}

impl HmacRejection {
    /// The `reason` label of `webhooks_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            HmacRejection::Missing => "missing_signature",
            HmacRejection::BadSignature => "bad_signature",
        }
    }
}

/// Verifies over the exact bytes received, in constant time (`verify_slice`).
pub fn verify_content_hmac(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), HmacRejection> {
    let header = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(HmacRejection::Missing)?;
    let sig = base64::engine::general_purpose::STANDARD
        .decode(header)
        .map_err(|_| HmacRejection::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| HmacRejection::BadSignature)
}

/// Signs like CloudPayments (for the fake, `billing replay` and tests).
pub fn sign_content_hmac(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hmac_is_checked_over_the_raw_body() {
        let body = b"TransactionId=1&Amount=299.00";
        let sig = sign_content_hmac(b"secret", body);
        assert_eq!(verify_content_hmac(b"secret", Some(&sig), body), Ok(()));
        assert_eq!(
            verify_content_hmac(b"other", Some(&sig), body),
            Err(HmacRejection::BadSignature)
        );
        assert_eq!(
            verify_content_hmac(b"secret", Some(&sig), b"TransactionId=1&Amount=1.00"),
            Err(HmacRejection::BadSignature)
        );
        assert_eq!(
            verify_content_hmac(b"secret", Some("not base64!"), body),
            Err(HmacRejection::BadSignature)
        );
        assert_eq!(
            verify_content_hmac(b"secret", None, body),
            Err(HmacRejection::Missing)
        );
    }
}

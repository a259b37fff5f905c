//! Authenticating notifications before anything is parsed: the sender's IP for
//! YooKassa (which signs nothing), Standard Webhooks signatures for ops replays.

use std::net::IpAddr;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use ipnet::IpNet;
use sha2::Sha256;

/// The client: the peer, or (when the peer is a trusted proxy) the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy.
pub fn client_ip(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(header) = forwarded_for else {
        return Some(peer);
    };
    let mut last = peer;
    for entry in header.rsplit(',') {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            // A malformed hop: stop believing the chain.
            return Some(last);
        };
        let ip = ip.to_canonical();
        if !is_trusted(&ip) {
            return Some(ip);
        }
        last = ip;
    }
    Some(last)
}

/// Every `X-Forwarded-For` line, in order, as one list: a proxy that appends its own
/// line puts the hop it saw last, so reading only the first line would believe the
/// sender's forged one. A line that is not text becomes a hop that parses as nothing.
pub fn forwarded_for(headers: &warp::http::HeaderMap) -> Option<String> {
    let lines: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    (!lines.is_empty()).then(|| lines.join(","))
}

pub fn allowed(ip: Option<IpAddr>, allow: &[IpNet]) -> bool {
    ip.is_some_and(|ip| allow.iter().any(|n| n.contains(&ip)))
}

#[derive(Debug, PartialEq, Eq)]
pub enum OpsRejection {
    Missing,
    Stale,
    BadSignature,
}

/// Standard Webhooks: HMAC-SHA256 over `{id}.{timestamp}.{body}`, any `v1,<b64>`
/// of the space-separated list may match, timestamps within 5 minutes either way.
pub fn verify_ops(
    key: &[u8],
    id: Option<&str>,
    timestamp: Option<&str>,
    signatures: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), OpsRejection> {
    let (Some(id), Some(ts), Some(sigs)) = (id, timestamp, signatures) else {
        return Err(OpsRejection::Missing);
    };
    if id.is_empty() || id.len() > 255 {
        return Err(OpsRejection::Missing);
    }
    let ts_num: i64 = ts.trim().parse().map_err(|_| OpsRejection::Stale)?;
    if (now - ts_num).abs() > 300 {
        return Err(OpsRejection::Stale);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let b64 = base64::engine::general_purpose::STANDARD;
    let ok = sigs
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .filter_map(|s| b64.decode(s).ok())
        .any(|sig| mac.clone().verify_slice(&sig).is_ok());
    if ok {
        Ok(())
    } else {
        Err(OpsRejection::BadSignature)
    }
}

/// Signs like a Standard Webhooks sender (for `billing replay` and tests).
pub fn sign_ops(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// CloudPayments: `Content-HMAC` = base64(HMAC-SHA256(API secret, raw body)).
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

    fn nets(s: &str) -> Vec<IpNet> {
        crate::config::parse_cidrs(s).unwrap()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted = nets("10.0.0.0/8");
        let peer = Some("10.0.0.5".parse().unwrap());
        let got = client_ip(peer, Some("1.2.3.4, 185.71.76.10, 10.0.0.7"), &trusted);
        assert_eq!(
            got,
            Some("185.71.76.10".parse().unwrap()),
            "rightmost untrusted"
        );
        let outsider = Some("8.8.8.8".parse().unwrap());
        assert_eq!(
            client_ip(outsider, Some("185.71.76.10"), &trusted),
            outsider,
            "an untrusted peer's header is ignored"
        );
        assert_eq!(client_ip(peer, Some("garbage"), &trusted), peer);
    }

    #[test]
    fn every_forwarded_for_line_counts_in_order() {
        let mut headers = warp::http::HeaderMap::new();
        assert_eq!(forwarded_for(&headers), None);
        headers.append("x-forwarded-for", "185.71.76.5".parse().unwrap());
        headers.append("x-forwarded-for", "8.8.8.8, 10.0.0.7".parse().unwrap());
        let joined = forwarded_for(&headers).unwrap();
        assert_eq!(joined, "185.71.76.5,8.8.8.8, 10.0.0.7");
        let trusted = nets("10.0.0.0/8");
        let peer = Some("10.0.0.5".parse().unwrap());
        assert_eq!(
            client_ip(peer, Some(&joined), &trusted),
            Some("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_is_unmapped() {
        let mapped: IpAddr = "::ffff:185.71.76.1".parse().unwrap();
        let ip = client_ip(Some(mapped), None, &[]);
        assert!(allowed(ip, &nets("185.71.76.0/27")));
    }

    #[test]
    fn ops_signatures_verify_rotate_and_expire() {
        let key = b"0123456789abcdef0123";
        let body = br#"{"a":1}"#;
        let now = 1_800_000_000;
        let good = sign_ops(key, "msg_1", now, body);
        let ts = now.to_string();
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&good), body, now),
            Ok(())
        );
        let rotated = format!("v1,AAAA {good}");
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&rotated), body, now),
            Ok(())
        );
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&good), b"{}", now),
            Err(OpsRejection::BadSignature)
        );
        assert_eq!(
            verify_ops(key, Some("msg_2"), Some(&ts), Some(&good), body, now),
            Err(OpsRejection::BadSignature)
        );
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&good), body, now + 301),
            Err(OpsRejection::Stale)
        );
        assert_eq!(
            verify_ops(key, Some("msg_1"), Some(&ts), Some(&good), body, now - 301),
            Err(OpsRejection::Stale)
        );
        assert_eq!(
            verify_ops(key, None, Some(&ts), Some(&good), body, now),
            Err(OpsRejection::Missing)
        );
    }

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

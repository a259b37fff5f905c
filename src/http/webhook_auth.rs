//! Who sent a notification: the peer, or the client a trusted proxy forwarded for.
//! The checks themselves live with their owners (`providers::yookassa::webhook`:
//! the IP allow-list, `providers::cloudpayments::signature`: Content-HMAC,
//! `service::webhooks::ops`: ops replays); they are re-exported here for the tools
//! and tests that sign notifications.

use std::net::IpAddr;

use ipnet::IpNet;

pub use crate::providers::cloudpayments::signature::{
    sign_content_hmac, verify_content_hmac, HmacRejection,
};
pub use crate::providers::yookassa::webhook::allowed;
pub use crate::service::webhooks::ops::{sign_ops, verify_ops, OpsRejection};

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
}

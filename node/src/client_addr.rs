//! The address a request comes from: the connection's peer, or, when that
//! peer is a configured trusted proxy (`[http] trusted_proxies`), the
//! address it forwarded in `X-Forwarded-For`. Rate limits key on it.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// Most `X-Forwarded-For` entries looked at: a longer chain is cut, not
/// parsed (each hop appends one).
const HOPS_MAX: usize = 16;

/// True when `address` is in one of the `trusted` proxies' networks.
pub fn is_trusted(trusted: &[IpNet], address: &IpAddr) -> bool {
    trusted.iter().any(|net| net.contains(address))
}

/// The client's address. Walks `X-Forwarded-For` from the right (the entry
/// the nearest proxy appended) past trusted proxies; an entry a client
/// wrote itself, left of the first untrusted hop, is never believed.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |address: &IpAddr| is_trusted(trusted, address);
    let mut client = peer.ip().to_canonical();
    if !is_trusted(&client) {
        return client;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in hops.iter().rev().take(HOPS_MAX) {
        let Ok(address) = hop.trim().parse::<IpAddr>() else {
            break;
        };
        client = address.to_canonical();
        if !is_trusted(&client) {
            break;
        }
    }
    client
}

/// Parses `[http] trusted_proxies` entries: addresses or networks in CIDR
/// notation.
pub fn parse_trusted(entries: &[String]) -> Result<Vec<IpNet>, String> {
    entries
        .iter()
        .map(|entry| {
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("[http] trusted_proxies: {entry:?} is not an address or a network (CIDR)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(forwarded: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", forwarded.parse().unwrap());
        headers
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let trusted = parse_trusted(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        let proxy: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let stranger: SocketAddr = "203.0.113.5:5000".parse().unwrap();
        // A stranger's own header is ignored.
        assert_eq!(client_ip(stranger, &headers("1.2.3.4"), &trusted), stranger.ip());
        // Behind the proxy: the rightmost untrusted hop.
        assert_eq!(
            client_ip(proxy, &headers("6.6.6.6, 198.51.100.7, 10.1.2.3"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // A garbled entry stops the walk at the last good one.
        assert_eq!(
            client_ip(proxy, &headers("junk, 10.1.2.3"), &trusted),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
        // No proxies configured: the peer.
        assert_eq!(client_ip(proxy, &headers("1.2.3.4"), &[]), proxy.ip());
        assert!(parse_trusted(&["not-an-address".into()]).is_err());
    }
}

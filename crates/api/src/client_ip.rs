//! Who the client is: the socket's peer, or what a trusted proxy says it forwarded for.
//!
//! `X-Forwarded-For` is written by whoever sends the request, so it is believed only as far as
//! it was appended by proxies we trust: walking it from the right, each hop is taken while the
//! address that handed it to us is in [`TrustedProxies`]. With no trusted proxies (the default)
//! the header is ignored and the client is the socket's peer.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The client address of a request, as request data for the resolvers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Networks of the reverse proxies whose `X-Forwarded-For` we believe (`TRUSTED_PROXIES`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

/// `TRUSTED_PROXIES` was not a list of addresses or networks.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not an IP address or a network (e.g. 10.0.0.7 or 10.0.0.0/8)")]
pub struct TrustedProxiesError(String);

impl FromStr for TrustedProxies {
    type Err = TrustedProxiesError;

    /// Comma-separated addresses (`10.0.0.7`) or networks (`10.0.0.0/8`, `fd00::/8`); empty
    /// for none.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| TrustedProxiesError(item.to_owned()))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&address))
    }

    /// The client of a request that arrived from `peer` with these headers.
    pub fn client_of(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientIp {
        let mut client = peer.ip();
        if !self.trusts(client) {
            return ClientIp(client);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for hop in hops.iter().rev() {
            if !self.trusts(client) {
                break;
            }
            match hop.parse::<IpAddr>() {
                Ok(address) => client = address,
                // A garbled hop: stop at the last address a trusted proxy vouched for.
                Err(_) => break,
            }
        }
        ClientIp(client)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(forwarded_for: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded_for {
            headers.append("x-forwarded-for", HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let proxies = TrustedProxies::default();
        let client = proxies.client_of(peer("192.0.2.10"), &headers(&["203.0.113.5"]));
        assert_eq!(client, ClientIp("192.0.2.10".parse().unwrap()));
    }

    #[test]
    fn a_trusted_proxy_is_believed_and_a_spoofed_left_part_is_not() {
        // Arrange: the client forged "1.1.1.1"; our proxy appended the real address
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();

        // Act
        let client = proxies.client_of(peer("10.0.0.2"), &headers(&["1.1.1.1, 198.51.100.9"]));

        // Assert
        assert_eq!(client, ClientIp("198.51.100.9".parse().unwrap()));
    }

    #[test]
    fn chains_of_trusted_proxies_and_several_headers_are_walked_from_the_right() {
        let proxies: TrustedProxies = "10.0.0.2, 10.0.0.3".parse().unwrap();
        let client = proxies.client_of(peer("10.0.0.3"), &headers(&["198.51.100.9", "10.0.0.2"]));
        assert_eq!(client, ClientIp("198.51.100.9".parse().unwrap()));
    }

    #[test]
    fn a_garbled_hop_stops_the_walk_at_the_last_trusted_address() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let client = proxies.client_of(peer("10.0.0.2"), &headers(&["198.51.100.9, not-an-ip"]));
        assert_eq!(client, ClientIp("10.0.0.2".parse().unwrap()));
    }

    #[test]
    fn the_list_is_parsed_strictly() {
        assert_eq!("".parse::<TrustedProxies>().unwrap(), TrustedProxies::default());
        assert!("10.0.0.0/8, ::1".parse::<TrustedProxies>().is_ok());
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.internal".parse::<TrustedProxies>().is_err());
    }
}

//! The egress allow list: configured CIDRs plus the defaults (loopback, the unspecified
//! address — which means "this host" — and the hub), as keys of the kernel's LPM trie.

use std::net::{IpAddr, ToSocketAddrs};

use agent_common::AllowKey;
use ipnet::IpNet;

/// Always allowed: loopback and the unspecified address (connect(0.0.0.0) is local).
pub const DEFAULT_ALLOW: &[&str] = &["127.0.0.0/8", "::1/128", "0.0.0.0/32", "::/128"];

/// Builds the allow list: defaults, the hub's addresses (resolved now), then `extra`.
pub fn allow_list(extra: &[IpNet], hub_url: &str) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = DEFAULT_ALLOW
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    nets.extend(hub_addresses(hub_url).into_iter().map(IpNet::from));
    nets.extend(extra.iter().copied());
    nets
}

/// The addresses the hub URL's host resolves to (empty when it does not resolve: the
/// connection to the hub is the agent's own, never from scope, so nothing breaks).
pub fn hub_addresses(hub_url: &str) -> Vec<IpAddr> {
    let rest = hub_url.split_once("://").map(|(_, r)| r).unwrap_or(hub_url);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let with_port = if authority.starts_with('[') || authority.matches(':').count() == 1 {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    with_port
        .to_socket_addrs()
        .map(|it| it.map(|a| a.ip()).collect())
        .unwrap_or_default()
}

/// The kernel key of a prefix: IPv4 is stored v4-mapped, so its prefix grows by 96 bits.
pub fn key(net: &IpNet) -> AllowKey {
    match net {
        IpNet::V4(v4) => AllowKey {
            prefix_len: 96 + u32::from(v4.prefix_len()),
            addr: v4.network().to_ipv6_mapped().octets(),
        },
        IpNet::V6(v6) => AllowKey {
            prefix_len: u32::from(v6.prefix_len()),
            addr: v6.network().octets(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_prefixes_are_v4_mapped() {
        let k = key(&"10.0.0.0/8".parse().expect("net"));
        assert_eq!({ k.prefix_len }, 104);
        assert_eq!(&k.addr[10..13], &[0xff, 0xff, 10]);
        let k = key(&"2001:db8::/32".parse().expect("net"));
        assert_eq!({ k.prefix_len }, 32);
        assert_eq!(&k.addr[..4], &[0x20, 0x01, 0x0d, 0xb8]);
    }

    #[test]
    fn the_hub_and_loopback_are_allowed_by_default() {
        let nets = allow_list(&[], "http://127.0.0.1:7443");
        assert!(nets.iter().any(|n| n.to_string() == "127.0.0.1/32"));
        assert!(nets.iter().any(|n| n.to_string() == "::1/128"));
        assert_eq!(
            hub_addresses("https://[::1]:9000/x"),
            ["::1".parse::<IpAddr>().expect("ip")]
        );
        assert!(hub_addresses("http://no-such-host.invalid:1").is_empty());
    }
}

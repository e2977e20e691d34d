//! What kind of address an address is. Agents and the collector must agree: an address
//! the agent treats as internal (and pseudonymises) is one the collector never
//! correlates across members.

use std::net::IpAddr;

/// Addresses that name a host inside one network (private, loopback, link-local,
/// carrier-grade NAT, unique-local, unspecified): the same value at two members is two
/// different hosts.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Internal addresses, and those that are no single host at all (multicast,
/// broadcast), looking through IPv4-mapped IPv6.
pub fn is_local_or_group(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    is_internal(ip) || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

//! Packets to summaries: Ethernet (with 802.1Q/802.1ad VLAN tags), Linux cooked capture,
//! raw IP; IPv4, IPv6 (extension headers skipped), TCP, UDP, ICMP, ICMPv6, and DNS
//! questions. Headers are read with pnet_packet after their lengths are checked here:
//! a malformed packet is an error to count, never a panic.

use pnet_packet::Packet as _;
use pnet_packet::ethernet::{EtherTypes, EthernetPacket};
use pnet_packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet_packet::ipv4::Ipv4Packet;
use pnet_packet::ipv6::Ipv6Packet;
use pnet_packet::tcp::TcpPacket;
use pnet_packet::udp::UdpPacket;
use std::net::IpAddr;
use vedetta_common::Timestamp;

/// How the captured bytes begin (pcap link types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// An IPv4 or IPv6 packet, no link header.
    RawIp,
    /// Linux "cooked" capture (SLL), 16 bytes.
    LinuxSll,
    /// Linux "cooked" capture v2 (SLL2, `tcpdump -i any` today), 20 bytes.
    LinuxSll2,
}

impl LinkType {
    /// The link type of a pcap header's number, if we read it.
    pub fn from_pcap(number: u32) -> Option<Self> {
        match number {
            1 => Some(Self::Ethernet),
            101 | 228 | 229 | 12 | 14 => Some(Self::RawIp),
            113 => Some(Self::LinuxSll),
            276 => Some(Self::LinuxSll2),
            _ => None,
        }
    }
}

/// TCP flag bits.
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp { sport: u16, dport: u16, flags: u8 },
    Udp { sport: u16, dport: u16 },
    Icmp { kind: u8, code: u8 },
    Other(u8),
}

/// The question of a DNS message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuestion {
    /// Lower-case, dot-separated, without the final dot.
    pub name: String,
    pub qtype: u16,
    pub response: bool,
    pub answers: u16,
}

/// What the detectors need of a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacketInfo {
    pub at: Timestamp,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub transport: Transport,
    /// Bytes on the wire.
    pub length: u32,
    pub dns: Option<DnsQuestion>,
}

/// Why a packet was not summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IP (ARP, LLDP…): nothing to look at.
    NotIp,
    /// Shorter than its headers say, or headers that cannot be.
    Malformed,
}

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const MAX_VLAN_TAGS: usize = 4;

/// Summarises one captured frame.
pub fn decode(
    link: LinkType,
    bytes: &[u8],
    at: Timestamp,
    length: u32,
) -> Result<PacketInfo, Skip> {
    let (ethertype, payload) = match link {
        LinkType::Ethernet => {
            let frame = EthernetPacket::new(bytes).ok_or(Skip::Malformed)?;
            let mut ethertype = frame.get_ethertype().0;
            let mut rest = bytes.get(14..).ok_or(Skip::Malformed)?;
            for _ in 0..MAX_VLAN_TAGS {
                if ethertype != ETHERTYPE_VLAN && ethertype != ETHERTYPE_QINQ {
                    break;
                }
                let tag = rest.get(..4).ok_or(Skip::Malformed)?;
                ethertype = u16::from_be_bytes([tag[2], tag[3]]);
                rest = &rest[4..];
            }
            (ethertype, rest)
        }
        LinkType::LinuxSll => {
            let header = bytes.get(..16).ok_or(Skip::Malformed)?;
            (u16::from_be_bytes([header[14], header[15]]), &bytes[16..])
        }
        LinkType::LinuxSll2 => {
            let header = bytes.get(..20).ok_or(Skip::Malformed)?;
            (u16::from_be_bytes([header[0], header[1]]), &bytes[20..])
        }
        LinkType::RawIp => match bytes.first().map(|b| b >> 4) {
            Some(4) => (EtherTypes::Ipv4.0, bytes),
            Some(6) => (EtherTypes::Ipv6.0, bytes),
            _ => return Err(Skip::Malformed),
        },
    };
    let (src, dst, protocol, transport) = if ethertype == EtherTypes::Ipv4.0 {
        ipv4(payload)?
    } else if ethertype == EtherTypes::Ipv6.0 {
        ipv6(payload)?
    } else {
        return Err(Skip::NotIp);
    };
    let (transport, dns) = transport_of(protocol, transport)?;
    Ok(PacketInfo {
        at,
        src,
        dst,
        transport,
        length,
        dns,
    })
}

fn ipv4(bytes: &[u8]) -> Result<(IpAddr, IpAddr, IpNextHeaderProtocol, &[u8]), Skip> {
    let packet = Ipv4Packet::new(bytes).ok_or(Skip::Malformed)?;
    let header = usize::from(packet.get_header_length()) * 4;
    let total = usize::from(packet.get_total_length());
    if packet.get_version() != 4 || header < 20 || header > bytes.len() || total < header {
        return Err(Skip::Malformed);
    }
    // A capture may cut the packet (snap length): read what there is.
    let end = total.min(bytes.len());
    // Only the first fragment carries the transport header.
    let fragment_offset = packet.get_fragment_offset();
    let protocol = if fragment_offset != 0 {
        IpNextHeaderProtocol(255)
    } else {
        packet.get_next_level_protocol()
    };
    Ok((
        IpAddr::V4(packet.get_source()),
        IpAddr::V4(packet.get_destination()),
        protocol,
        &bytes[header..end],
    ))
}

fn ipv6(bytes: &[u8]) -> Result<(IpAddr, IpAddr, IpNextHeaderProtocol, &[u8]), Skip> {
    let packet = Ipv6Packet::new(bytes).ok_or(Skip::Malformed)?;
    if packet.get_version() != 6 {
        return Err(Skip::Malformed);
    }
    let end = (40 + usize::from(packet.get_payload_length())).min(bytes.len());
    let mut rest = &bytes[40..end];
    let mut next = packet.get_next_header();
    // Extension headers: hop-by-hop, routing, destination options (8-byte units after
    // the first 8), fragment (8 bytes). A bounded number of them.
    for _ in 0..8 {
        match next {
            IpNextHeaderProtocols::Hopopt
            | IpNextHeaderProtocols::Ipv6Route
            | IpNextHeaderProtocols::Ipv6Opts => {
                let header = rest.get(..2).ok_or(Skip::Malformed)?;
                let length = (usize::from(header[1]) + 1) * 8;
                next = IpNextHeaderProtocol(header[0]);
                rest = rest.get(length..).ok_or(Skip::Malformed)?;
            }
            IpNextHeaderProtocols::Ipv6Frag => {
                let header = rest.get(..8).ok_or(Skip::Malformed)?;
                let offset = u16::from_be_bytes([header[2], header[3]]) >> 3;
                next = if offset == 0 {
                    IpNextHeaderProtocol(header[0])
                } else {
                    IpNextHeaderProtocol(255)
                };
                rest = &rest[8..];
            }
            _ => break,
        }
    }
    Ok((
        IpAddr::V6(packet.get_source()),
        IpAddr::V6(packet.get_destination()),
        next,
        rest,
    ))
}

fn transport_of(
    protocol: IpNextHeaderProtocol,
    bytes: &[u8],
) -> Result<(Transport, Option<DnsQuestion>), Skip> {
    match protocol {
        IpNextHeaderProtocols::Tcp => {
            let tcp = TcpPacket::new(bytes).ok_or(Skip::Malformed)?;
            let offset = usize::from(tcp.get_data_offset()) * 4;
            if offset < 20 || offset > bytes.len() {
                return Err(Skip::Malformed);
            }
            Ok((
                Transport::Tcp {
                    sport: tcp.get_source(),
                    dport: tcp.get_destination(),
                    flags: tcp.get_flags(),
                },
                None,
            ))
        }
        IpNextHeaderProtocols::Udp => {
            let udp = UdpPacket::new(bytes).ok_or(Skip::Malformed)?;
            let (sport, dport) = (udp.get_source(), udp.get_destination());
            let dns = if sport == 53 || dport == 53 || sport == 5353 || dport == 5353 {
                dns_question(udp.payload())
            } else {
                None
            };
            Ok((Transport::Udp { sport, dport }, dns))
        }
        IpNextHeaderProtocols::Icmp | IpNextHeaderProtocols::Icmpv6 => {
            let header = bytes.get(..2).ok_or(Skip::Malformed)?;
            Ok((
                Transport::Icmp {
                    kind: header[0],
                    code: header[1],
                },
                None,
            ))
        }
        other => Ok((Transport::Other(other.0), None)),
    }
}

/// Longest DNS name (RFC 1035).
const MAX_NAME: usize = 255;

/// The first question of a DNS message, if it is one. Compression pointers do not occur
/// in a first question; a message using one there is not read.
pub fn dns_question(message: &[u8]) -> Option<DnsQuestion> {
    let header = message.get(..12)?;
    let response = header[2] & 0x80 != 0;
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let answers = u16::from_be_bytes([header[6], header[7]]);
    if questions == 0 {
        return None;
    }
    let mut name = String::new();
    let mut at = 12;
    loop {
        let length = usize::from(*message.get(at)?);
        at += 1;
        if length == 0 {
            break;
        }
        if length > 63 {
            return None;
        }
        let label = message.get(at..at + length)?;
        at += length;
        if !name.is_empty() {
            name.push('.');
        }
        if name.len() + label.len() > MAX_NAME {
            return None;
        }
        for &byte in label {
            name.push(char::from(byte.to_ascii_lowercase()));
        }
    }
    let qtype = message.get(at..at + 2)?;
    Some(DnsQuestion {
        name,
        qtype: u16::from_be_bytes([qtype[0], qtype[1]]),
        response,
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An Ethernet frame with a VLAN tag, IPv4, TCP SYN 10.0.0.1:40000 → 10.0.0.2:22.
    fn syn_frame() -> Vec<u8> {
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x08, 0x00]);
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let tcp = [
            0x9c, 0x40, 0, 22, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        ip.extend_from_slice(&tcp);
        frame.extend_from_slice(&ip);
        frame
    }

    #[test]
    fn a_tagged_syn_is_read() {
        let info = decode(LinkType::Ethernet, &syn_frame(), Timestamp(0), 58).expect("decoded");
        assert_eq!(info.src, "10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(
            info.transport,
            Transport::Tcp {
                sport: 40000,
                dport: 22,
                flags: flags::SYN
            }
        );
    }

    #[test]
    fn truncated_and_lying_headers_are_malformed() {
        let frame = syn_frame();
        for cut in [10, 16, 20, 30, 50] {
            assert_eq!(
                decode(LinkType::Ethernet, &frame[..cut], Timestamp(0), 0),
                Err(Skip::Malformed),
                "cut at {cut}"
            );
        }
        let mut lying = frame.clone();
        lying[18] = 0x4f; // IHL of 60 bytes in a 40-byte packet
        assert_eq!(
            decode(LinkType::Ethernet, &lying, Timestamp(0), 0),
            Err(Skip::Malformed)
        );
    }

    #[test]
    fn a_dns_question_is_read() {
        let mut message = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in ["AbC123", "example", "org"] {
            message.push(label.len() as u8);
            message.extend_from_slice(label.as_bytes());
        }
        message.extend_from_slice(&[0, 0, 16, 0, 1]);
        let question = dns_question(&message).expect("question");
        assert_eq!(question.name, "abc123.example.org");
        assert_eq!(question.qtype, 16);
        assert!(!question.response);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for link in [LinkType::Ethernet, LinkType::RawIp, LinkType::LinuxSll, LinkType::LinuxSll2] {
                let _ = decode(link, &bytes, Timestamp(0), bytes.len() as u32);
            }
            let _ = dns_question(&bytes);
        }

        #[test]
        fn mutated_packets_never_panic(at in 0usize..58, value in any::<u8>()) {
            let mut frame = syn_frame();
            frame[at] = value;
            let _ = decode(LinkType::Ethernet, &frame, Timestamp(0), 58);
        }
    }
}

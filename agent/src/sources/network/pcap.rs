//! Packet capture files (pcap and pcapng) as a source: the same summaries as a live
//! capture, in the packets' own time. A corrupt record ends the file (a pcap cannot be
//! resynchronised): what was read stays read, and the damage is counted.

use super::decode::LinkType;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use std::io::{BufReader, Read};
use std::path::Path;
use vedetta_common::Timestamp;

/// Figures about a file's reading.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PcapStats {
    pub packets: u64,
    /// Packets of a link type we do not read (counted, skipped).
    pub unsupported_link: u64,
    /// The error that ended the file early, if one did.
    pub corrupt: Option<String>,
}

/// Nanoseconds in one timestamp unit of a pcapng interface (`if_tsresol`: a power of
/// ten, or of two when the top bit is set).
fn nanos_per_unit(resolution: u8) -> u64 {
    let exponent = u32::from(resolution & 0x7f);
    if resolution & 0x80 == 0 {
        10u64
            .checked_pow(9u32.saturating_sub(exponent))
            .unwrap_or(1)
            .max(1)
    } else {
        // 2^-n seconds: finer than a nanosecond from n = 30 on.
        (1_000_000_000u64 >> exponent.min(63)).max(1)
    }
}

/// What receives each packet of a file: link type, bytes, time, length on the wire.
pub type PacketSink<'a> = dyn FnMut(LinkType, &[u8], Timestamp, u32) + 'a;

/// Calls `packet` with each packet of the file.
pub fn read(path: &Path, packet: &mut PacketSink<'_>) -> anyhow::Result<PcapStats> {
    let mut file = BufReader::with_capacity(
        1 << 20,
        std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?,
    );
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|e| anyhow::anyhow!("{}: not a capture file: {e}", path.display()))?;
    let reader = std::io::Cursor::new(magic).chain(file);
    let mut stats = PcapStats::default();
    let time =
        |stamp: std::time::Duration| Timestamp(i64::try_from(stamp.as_nanos()).unwrap_or(i64::MAX));
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut reader = PcapNgReader::new(reader)
            .map_err(|e| anyhow::anyhow!("{}: not a pcapng file: {e}", path.display()))?;
        // Per interface: its link type, and how many nanoseconds one unit of its
        // timestamps is. pcap-file reads the raw 64-bit stamp as nanoseconds; the
        // interface says otherwise (microseconds unless `if_tsresol` tells).
        let mut links: Vec<(Option<LinkType>, u64)> = Vec::new();
        while let Some(block) = reader.next_block() {
            match block {
                Ok(Block::SectionHeader(_)) => links.clear(),
                Ok(Block::InterfaceDescription(interface)) => {
                    let unit = interface
                        .options
                        .iter()
                        .find_map(|option| match option {
                            InterfaceDescriptionOption::IfTsResol(resolution) => {
                                Some(nanos_per_unit(*resolution))
                            }
                            _ => None,
                        })
                        .unwrap_or(1_000);
                    links.push((LinkType::from_pcap(u32::from(interface.linktype)), unit));
                }
                Ok(Block::EnhancedPacket(block)) => {
                    stats.packets += 1;
                    let interface = usize::try_from(block.interface_id)
                        .ok()
                        .and_then(|index| links.get(index).copied());
                    match interface {
                        Some((Some(link), unit)) => {
                            let raw = u64::try_from(block.timestamp.as_nanos()).unwrap_or(u64::MAX);
                            let at = Timestamp(
                                i64::try_from(raw.saturating_mul(unit)).unwrap_or(i64::MAX),
                            );
                            packet(link, &block.data, at, block.original_len)
                        }
                        _ => stats.unsupported_link += 1,
                    }
                }
                Ok(Block::SimplePacket(block)) => {
                    stats.packets += 1;
                    match links.first().and_then(|(link, _)| *link) {
                        Some(link) => packet(link, &block.data, Timestamp(0), block.original_len),
                        None => stats.unsupported_link += 1,
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    stats.corrupt = Some(error.to_string());
                    break;
                }
            }
        }
    } else {
        let mut reader = PcapReader::new(reader)
            .map_err(|e| anyhow::anyhow!("{}: not a pcap file: {e}", path.display()))?;
        let link = LinkType::from_pcap(u32::from(reader.header().datalink));
        while let Some(record) = reader.next_packet() {
            match record {
                Ok(record) => {
                    stats.packets += 1;
                    match link {
                        Some(link) => {
                            packet(link, &record.data, time(record.timestamp), record.orig_len)
                        }
                        None => stats.unsupported_link += 1,
                    }
                }
                Err(error) => {
                    stats.corrupt = Some(error.to_string());
                    break;
                }
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcapng file: one Ethernet interface (microsecond stamps unless `resolution`),
    /// one packet stamped `stamp` units after the epoch.
    fn pcapng(stamp: u64, resolution: Option<u8>) -> Vec<u8> {
        let mut file = Vec::new();
        let block = |file: &mut Vec<u8>, kind: u32, body: &[u8]| {
            let length = (12 + body.len()) as u32;
            file.extend_from_slice(&kind.to_le_bytes());
            file.extend_from_slice(&length.to_le_bytes());
            file.extend_from_slice(body);
            file.extend_from_slice(&length.to_le_bytes());
        };
        let mut header = Vec::new();
        header.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        header.extend_from_slice(&[1, 0, 0, 0]);
        header.extend_from_slice(&(-1i64).to_le_bytes());
        block(&mut file, 0x0A0D_0D0A, &header);
        let mut interface = vec![1, 0, 0, 0];
        interface.extend_from_slice(&65_535u32.to_le_bytes());
        if let Some(resolution) = resolution {
            interface.extend_from_slice(&[9, 0, 1, 0, resolution, 0, 0, 0]);
            interface.extend_from_slice(&[0, 0, 0, 0]);
        }
        block(&mut file, 1, &interface);
        let data = [0u8; 60];
        let mut packet = Vec::new();
        packet.extend_from_slice(&0u32.to_le_bytes());
        packet.extend_from_slice(&((stamp >> 32) as u32).to_le_bytes());
        packet.extend_from_slice(&(stamp as u32).to_le_bytes());
        packet.extend_from_slice(&60u32.to_le_bytes());
        packet.extend_from_slice(&60u32.to_le_bytes());
        packet.extend_from_slice(&data);
        block(&mut file, 6, &packet);
        file
    }

    fn first_time(file: &[u8]) -> Timestamp {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.pcapng");
        std::fs::write(&path, file).expect("write");
        let mut seen = Vec::new();
        let stats = read(&path, &mut |_, _, at, _| seen.push(at)).expect("read");
        assert_eq!(stats.packets, 1, "{stats:?}");
        seen[0]
    }

    #[test]
    fn pcapng_timestamps_follow_the_interface_resolution() {
        let seconds = 1_800_000_000u64;
        // Default: microseconds.
        let at = first_time(&pcapng(seconds * 1_000_000 + 250_000, None));
        assert_eq!(at.0, (seconds * 1_000_000_000 + 250_000_000) as i64);
        // if_tsresol = 9: nanoseconds.
        let at = first_time(&pcapng(seconds * 1_000_000_000 + 7, Some(9)));
        assert_eq!(at.0, (seconds * 1_000_000_000 + 7) as i64);
    }
}

//! Packet capture files (pcap and pcapng) as a source: the same summaries as a live
//! capture, in the packets' own time. A corrupt record ends the file (a pcap cannot be
//! resynchronised): what was read stays read, and the damage is counted.

use super::decode::LinkType;
use pcap_file::pcap::PcapReader;
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
        let mut links: Vec<Option<LinkType>> = Vec::new();
        while let Some(block) = reader.next_block() {
            match block {
                Ok(Block::SectionHeader(_)) => links.clear(),
                Ok(Block::InterfaceDescription(interface)) => {
                    links.push(LinkType::from_pcap(u32::from(interface.linktype)));
                }
                Ok(Block::EnhancedPacket(block)) => {
                    stats.packets += 1;
                    let link = usize::try_from(block.interface_id)
                        .ok()
                        .and_then(|index| links.get(index).copied().flatten());
                    match link {
                        Some(link) => {
                            packet(link, &block.data, time(block.timestamp), block.original_len)
                        }
                        None => stats.unsupported_link += 1,
                    }
                }
                Ok(Block::SimplePacket(block)) => {
                    stats.packets += 1;
                    match links.first().copied().flatten() {
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

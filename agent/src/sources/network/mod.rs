//! The network: packets captured live (pnet) or read from pcap files, summarised by
//! [`decode`] for the network detectors (`detect::network`).

pub mod decode;
pub mod pcap;

use crate::advisories::AdvisoryView;
use crate::detect::network::{NetworkDetector, NetworkThresholds};
use crate::health::{Health, SourceState};
use decode::{LinkType, Skip, decode};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tracing::{info, warn};
use vedetta_common::{Signal, Timestamp};

/// `[sources.network]` of the agent configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Interfaces to capture on; every interface that is up (loopback aside) when empty.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Also capture frames not addressed to this host (a SPAN port).
    #[serde(default)]
    pub promiscuous: bool,
    /// Deprecated: list the file in `[advisories] files` instead (where every source,
    /// not only the network, matches it). Still read, as one more local list.
    #[serde(default)]
    pub advisories_file: Option<PathBuf>,
    #[serde(default)]
    pub thresholds: NetworkThresholds,
}

/// The name the network source is reported under (capture errors name the interface
/// in their text).
pub const SOURCE_NAME: &str = "network";

/// Packets waiting between the capture threads and the detector.
const PACKET_QUEUE: usize = 65_536;

/// A live capture on one interface.
struct Capture {
    name: String,
    receiver: Box<dyn pnet_datalink::DataLinkReceiver>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The network source: open captures and the detector.
#[derive(Debug)]
pub struct NetworkSource {
    captures: Vec<Capture>,
    detector: NetworkDetector,
    /// The agent's advisories, looked at before each group of packets.
    advisories: AdvisoryView,
}

impl NetworkSource {
    /// Opens a capture on each configured interface. Capturing needs CAP_NET_RAW: without
    /// it, this fails with an error that says so.
    pub fn open(config: &NetworkConfig, advisories: AdvisoryView) -> anyhow::Result<Self> {
        let all = pnet_datalink::interfaces();
        let chosen: Vec<_> = if config.interfaces.is_empty() {
            all.into_iter()
                .filter(|i| i.is_up() && !i.is_loopback())
                .collect()
        } else {
            config
                .interfaces
                .iter()
                .map(|name| {
                    all.iter()
                        .find(|i| &i.name == name)
                        .cloned()
                        .ok_or_else(|| anyhow::anyhow!("no network interface {name:?}"))
                })
                .collect::<anyhow::Result<_>>()?
        };
        let mut captures = Vec::new();
        for interface in chosen {
            let settings = pnet_datalink::Config {
                read_buffer_size: 65_536,
                read_timeout: Some(Duration::from_millis(250)),
                promiscuous: config.promiscuous,
                socket_fd: Some(capture_socket(&interface.name)?),
                ..pnet_datalink::Config::default()
            };
            let receiver = match pnet_datalink::channel(&interface, settings) {
                Ok(pnet_datalink::Channel::Ethernet(_, receiver)) => receiver,
                Ok(_) => anyhow::bail!("{}: not an Ethernet-like interface", interface.name),
                Err(error) => anyhow::bail!("cannot capture on {}: {error}", interface.name),
            };
            captures.push(Capture {
                name: interface.name.clone(),
                receiver,
            });
        }
        let detector = NetworkDetector::new(config.thresholds.clone(), advisories.current());
        Ok(Self {
            captures,
            detector,
            advisories,
        })
    }
}

/// The kernel's queue of captured frames for one socket: bursts wait here while the
/// detector catches up (the default, about 200 KiB, holds a hundred full frames).
const SOCKET_BUFFER: usize = 32 * 1024 * 1024;

/// A raw packet socket with a large receive queue, handed to pnet (which binds it to
/// the interface and owns it from then on). Forcing the size past `net.core.rmem_max`
/// needs CAP_NET_ADMIN; without it the kernel's maximum is used.
fn capture_socket(interface: &str) -> anyhow::Result<i32> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockProtocol, SockType, setsockopt, socket, sockopt,
    };
    use std::os::fd::IntoRawFd;
    let socket = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .map_err(|error| match error {
        nix::errno::Errno::EPERM | nix::errno::Errno::EACCES => anyhow::anyhow!(
            "capturing on {interface} needs the CAP_NET_RAW capability: run the agent as root, \
             or give its service AmbientCapabilities=CAP_NET_RAW ({error})"
        ),
        other => anyhow::anyhow!("cannot capture on {interface}: {other}"),
    })?;
    if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_BUFFER).is_err() {
        let _ = setsockopt(&socket, sockopt::RcvBuf, &SOCKET_BUFFER);
    }
    Ok(socket.into_raw_fd())
}

/// Figures of a live capture, shared by its threads.
#[derive(Debug, Default)]
struct Counters {
    packets: AtomicU64,
    malformed: AtomicU64,
    /// Packets the detector could not keep up with.
    dropped: AtomicU64,
}

/// Runs the source until `stop` is set: one thread per interface captures and decodes,
/// this one detects.
pub fn run(
    mut source: NetworkSource,
    signals: mpsc::Sender<Signal>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) {
    let (packets, received) =
        std_mpsc::sync_channel::<Vec<decode::PacketInfo>>(PACKET_QUEUE / BATCH);
    let counters = Arc::new(Counters::default());
    let interfaces = source.captures.len();
    let mut threads = Vec::new();
    for capture in std::mem::take(&mut source.captures) {
        let (packets, counters, stop) = (packets.clone(), Arc::clone(&counters), Arc::clone(&stop));
        let capture_health = Arc::clone(&health);
        let name = format!("capture-{}", capture.name);
        match std::thread::Builder::new()
            .name(name)
            .spawn(move || capture_loop(capture, packets, &counters, &capture_health, &stop))
        {
            Ok(thread) => threads.push(thread),
            Err(error) => {
                health.source_error(
                    SOURCE_NAME,
                    &format!("cannot start a capture thread: {error}"),
                );
                warn!(%error, "cannot start a capture thread");
            }
        }
    }
    drop(packets);
    match (interfaces, threads.len()) {
        (0, _) => health.source_state(
            SOURCE_NAME,
            SourceState::Failed,
            Some("no interface to capture on (none is up, loopback aside)"),
        ),
        (_, 0) => health.source_state(
            SOURCE_NAME,
            SourceState::Failed,
            Some("no capture thread could start"),
        ),
        (wanted, started) if started < wanted => health.source_state(
            SOURCE_NAME,
            SourceState::Running,
            Some(&format!("capturing on {started} of {wanted} interfaces")),
        ),
        _ => health.source_state(SOURCE_NAME, SourceState::Running, None),
    }
    let mut packets_counted = 0;
    info!(
        interfaces = threads.len(),
        advisories = source.detector.advisories().len(),
        "network source started"
    );
    let mut checked = Instant::now();
    loop {
        let received_batch = received.recv_timeout(Duration::from_millis(250));
        // New advisories (pushed by the collector, edited, expired): matched from the
        // next packet on.
        if let Some(advisories) = source.advisories.changed() {
            source.detector.set_advisories(advisories);
        }
        match received_batch {
            Ok(batch) => {
                for packet in &batch {
                    for signal in source.detector.process(packet) {
                        let _ = signals.blocking_send(signal);
                    }
                }
            }
            Err(std_mpsc::RecvTimeoutError::Timeout) => {}
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if checked.elapsed() >= Duration::from_millis(200) {
            checked = Instant::now();
            let packets = counters.packets.load(Ordering::Relaxed);
            health.source_events(SOURCE_NAME, packets.saturating_sub(packets_counted));
            packets_counted = packets;
            for signal in source.detector.tick(Timestamp::now()) {
                let _ = signals.blocking_send(signal);
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
    }
    // The capture threads send what they hold as they stop: all of it is looked at.
    for thread in threads {
        let _ = thread.join();
    }
    while let Ok(batch) = received.try_recv() {
        for packet in &batch {
            for signal in source.detector.process(packet) {
                let _ = signals.blocking_send(signal);
            }
        }
    }
    for signal in source.detector.flush() {
        let _ = signals.blocking_send(signal);
    }
    info!(
        packets = counters.packets.load(Ordering::Relaxed),
        malformed = counters.malformed.load(Ordering::Relaxed),
        dropped = counters.dropped.load(Ordering::Relaxed),
        "network source stopped"
    );
}

/// Packets travel to the detector in groups: one hand-over per packet would cost more
/// than the detection itself.
const BATCH: usize = 256;
/// A group leaves at least this often, full or not (a quiet link still gets answers).
const BATCH_WAIT: Duration = Duration::from_millis(20);

fn capture_loop(
    mut capture: Capture,
    packets: std_mpsc::SyncSender<Vec<decode::PacketInfo>>,
    counters: &Counters,
    health: &Health,
    stop: &AtomicBool,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut since = Instant::now();
    let send = |batch: &mut Vec<decode::PacketInfo>, since: &mut Instant| {
        *since = Instant::now();
        if batch.is_empty() {
            return;
        }
        let full = std::mem::replace(batch, Vec::with_capacity(BATCH));
        let lost = full.len() as u64;
        if packets.try_send(full).is_err() {
            counters.dropped.fetch_add(lost, Ordering::Relaxed);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let frame = match capture.receiver.next() {
            Ok(frame) => frame,
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                send(&mut batch, &mut since);
                continue;
            }
            // An interface going down, an interrupted call: said, then tried again.
            Err(error) => {
                health.source_error(SOURCE_NAME, &format!("{}: {error}", capture.name));
                warn!(interface = %capture.name, %error, "capture error; retrying in a second");
                send(&mut batch, &mut since);
                crate::sources::sleep_unless_stopped(stop, Duration::from_secs(1));
                continue;
            }
        };
        counters.packets.fetch_add(1, Ordering::Relaxed);
        let length = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        match decode(LinkType::Ethernet, frame, Timestamp::now(), length) {
            Ok(packet) => batch.push(packet),
            Err(Skip::Malformed) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
            }
            Err(Skip::NotIp) => {}
        }
        if batch.len() >= BATCH || since.elapsed() >= BATCH_WAIT {
            send(&mut batch, &mut since);
        }
    }
    send(&mut batch, &mut since);
}

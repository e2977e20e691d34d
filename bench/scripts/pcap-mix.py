#!/usr/bin/env python3
"""Writes a deterministic, realistic packet capture for the network benchmarks: the agent's
`replay --pcap` (and tcpdump and tshark, see pcap-peers.sh) read it, and capture-rate.sh
replays it onto a veth pair with tcpreplay.

Usage: pcap-mix.py OUTPUT --packets N --sources S [--seed 1] [--duration 300]
       (the replay benchmark: pcap-mix.py /tmp/bench/mix.pcap --packets 5000000 --sources 1000000;
        the live-capture benchmark: --packets 2000000 --sources 100000)

The file is a classic little-endian pcap (magic a1b2c3d4, version 2.4, link type 1 =
Ethernet, snap length 65535, microsecond timestamps) of exactly N frames, each a
well-formed Ethernet / IPv4 (20-byte header, valid header checksum) / TCP or UDP frame;
TCP checksums are 0 (not computed) and UDP checksums are 0 ("none", legal on IPv4). Frames
are 60 to 1514 bytes (short ones padded to the Ethernet minimum of 60).

Time: packets start on 2025-03-03 09:00:00 UTC and span about --duration seconds
(exponentially distributed gaps, i.e. Poisson arrivals at N / duration packets a second).

Hosts: about 200 internal hosts in 10.0.0.0/16 (20 servers 10.0.1.10-29, 180 clients
10.0.2-4.10-69, and the DNS server 10.0.0.53) and S external addresses, address i being
spread deterministically over public-looking /8s from 11.0.0.0 upward (never 10/8, 100/8,
127/8, 169/8, 172/8, 192/8, 198/8, 203/8 or multicast), e.g. 11.0.0.1, 12.0.0.1, ...
Internal hosts have MACs 02:00:0a:00:xx:yy, the router 02:00:00:00:00:01 (frames to or
from outside go through it): locally administered unicast addresses, none of a real NIC.

The mix (figures for --packets 5000000 --sources 1000000; stderr gives the exact counts):
  * about 89% TCP connections between internal and external hosts (65% outbound to ports
    443, 80, 993; 35% inbound to internal servers on 443, 80, 22), interleaved (1024 open
    at a time). Most packets (~78% of TCP) are established traffic: ACK or PSH-ACK with
    payloads of 60 to 1460 bytes (TLS application-data records on 443 and 993, random
    bytes otherwise), or pure ACKs; ~20% are handshakes and closes. Some connections
    begin in the capture (SYN, SYN-ACK, ACK, with MSS/window-scale/SACK options) and some
    end in it (FIN-ACK, FIN-ACK, ACK); the others were open before or stay open after.
    Connection j uses external address j while j < S (then random ones of the S), and
    connection lengths adapt so that all S fit in N packets (with 5M packets and 1M
    sources they are short: ~4 packets each): every address appears but those of the
    connections still unopened when the file ends (at most 1,024; stderr gives the count);
  * about 10% UDP: DNS queries from clients to 10.0.0.53:53 with ordinary names (a valid
    question, A or AAAA), each followed by its answer; QUIC-like datagrams between clients
    and 12 external "CDN" addresses on port 443; NTP with 4 external servers (a client
    keeps one port for each CDN and NTP server: the answers do not look like probes);
  * about 1% unanswered SYNs from external addresses (of the S) to internal hosts on 22,
    23, 80, 445, 3389, 8080: background noise, too sparse to look like a scan;
  * one port scan: an external address (outside the S) sends SYNs to min(1000, N/20)
    distinct ports of 10.0.1.10 over 10 s from 35% of the run; the target answers RST-ACK,
    or SYN-ACK on its open ports (22, 80, 443), which the scanner resets;
  * one short SYN burst: min(6000, N/20) SYNs from forged, distinct addresses to
    10.0.1.11:80 over 4 s from 60% of the run (1,500 a second at full size: a SYN flood to
    the detector), each answered by a SYN-ACK. (With --duration under 30 s, the scan's and
    the burst's spans shrink in proportion.)

The same arguments give a byte-identical file. Standard library only; packets are built
with precompiled structs from per-connection header templates, and written in 8 MiB
batches: 5,000,000 packets (2.25 GB) take about 25 s.
"""
import argparse
import heapq
import math
import random
import struct
import sys
import time

START = 1_740_992_400  # 2025-03-03 09:00:00 UTC
ROUTER_MAC = bytes.fromhex("020000000001")
M32 = 0xFFFFFFFF
MSS = 1460
OPEN_SLOTS = 1024  # TCP connections open at a time
BATCH = 8 << 20  # bytes buffered before a write

# A pcap record header (little-endian), then Ethernet + IPv4 + TCP (big-endian): Ethernet
# addresses, type and the IP header's first two bytes come from a template (16s), as do
# flags/fragment, TTL and protocol (4s) and the addresses and ports (12s).
REC = struct.Struct("<IIII").pack
TCP = struct.Struct(">16sHH4sH12sIIHH4x").pack  # 54 bytes; TCP options follow
UDP = struct.Struct(">16sHH4sH12sH2x").pack  # 42 bytes
SYN_OPTIONS = bytes.fromhex("020405b4010303080101" "0402")  # MSS 1460, NOP, WS 8, NOP NOP, SACK
SCAN_OPTIONS = bytes.fromhex("020405b4")  # nmap: MSS only
PAD6 = bytes(6)

SKIPPED_OCTETS = {100, 127, 169, 172, 192, 198, 203}
OCTETS = [o for o in range(11, 224) if o not in SKIPPED_OCTETS]

CLIENTS = [(10, 0, 2 + k // 60, 10 + k % 60) for k in range(180)]
SERVERS = [(10, 0, 1, 10 + k) for k in range(20)]
DNS_SERVER = (10, 0, 0, 53)
SERVER_PORTS = (443, 443, 443, 443, 443, 80, 80, 22)
CLIENT_PORTS = (443,) * 16 + (80,) * 3 + (993,)
NOISE_PORTS = (22, 23, 80, 445, 3389, 8080)
SCAN_TARGET, SCAN_OPEN = SERVERS[0], (22, 80, 443)
BURST_TARGET, BURST_PORT = SERVERS[1], 80

DNS_WORDS = (
    "www mail api cdn static img login accounts docs update news shop app auth media "
    "assets portal support blog m status edge video files"
).split()
DNS_DOMAINS = (
    "google.com youtube.com microsoft.com office365.com live.com github.com apple.com "
    "icloud.com amazon.com amazonaws.com cloudflare.com akamaihd.net wikipedia.org "
    "mozilla.org ubuntu.com debian.org slack.com zoom.us linkedin.com bbc.co.uk "
    "example.org example.net npmjs.org python.org docker.io salesforce.com dropbox.com "
    "adobe.com spotify.com netflix.com"
).split()


def external(i: int) -> bytes:
    """External address i: one /8 after another, then spread within each /8 (a bijection)."""
    k, r = i % len(OCTETS), i // len(OCTETS)
    x, y = r & 0xFFFF, r >> 16
    if y >= 254:
        raise ValueError("too many external addresses")
    middle = (x * 40503 + k * 7919) & 0xFFFF
    return bytes((OCTETS[k], middle >> 8, middle & 255, 1 + (y * 97 + x * 31 + k * 13) % 254))


def mac_of(ip: tuple) -> bytes:
    return bytes((2, 0, 10, 0, ip[2], ip[3]))


def prefix(dst_mac: bytes, src_mac: bytes) -> bytes:
    return dst_mac + src_mac + b"\x08\x00\x45\x00"


def side(pfx: bytes, ttl: int, proto: int, src: bytes, dst: bytes, sport: int, dport: int, window: int):
    """One direction of a flow: (prefix, flags-TTL-protocol, addresses-ports, partial
    checksum, TCP window)."""
    fttp = struct.pack(">HBB", 0x4000, ttl, proto)
    checksum = 0x4500 + 0x4000 + (ttl << 8 | proto)
    checksum += (src[0] << 8 | src[1]) + (src[2] << 8 | src[3])
    checksum += (dst[0] << 8 | dst[1]) + (dst[2] << 8 | dst[3])
    checksum = (checksum & 0xFFFF) + (checksum >> 16)
    return (pfx, fttp, src + dst + struct.pack(">HH", sport, dport), checksum, window)


def ip_checksum(partial: int, total: int, ipid: int) -> int:
    s = partial + total + ipid
    s = (s & 0xFFFF) + (s >> 16)
    s += s >> 16
    return ~s & 0xFFFF


class Writer:
    """Frames into the file, in batches; each frame built from a flow side."""

    def __init__(self, out, start: int):
        self.out, self.start = out, start
        self.parts, self.size, self.ipid = [], 0, 0

    def flush(self):
        self.out.write(b"".join(self.parts))
        self.parts.clear()
        self.size = 0

    def tcp(self, at: int, flow, seq: int, ack: int, flags: int, payload: bytes = b"", options: bytes = b""):
        pfx, fttp, ap, partial, window = flow
        self.ipid = ipid = (self.ipid + 1) & 0xFFFF
        total = 40 + len(options) + len(payload)
        csum = ip_checksum(partial, total, ipid)
        offset_flags = (5 + len(options) // 4) << 12 | flags
        frame = TCP(pfx, total, ipid, fttp, csum, ap, seq, ack, offset_flags, window) + options + payload
        if len(frame) < 60:
            frame += bytes(60 - len(frame))
        self.frame(at, frame)

    def udp(self, at: int, flow, payload: bytes):
        pfx, fttp, ap, partial, _ = flow
        self.ipid = ipid = (self.ipid + 1) & 0xFFFF
        total = 28 + len(payload)
        frame = UDP(pfx, total, ipid, fttp, ip_checksum(partial, total, ipid), ap, 8 + len(payload)) + payload
        if len(frame) < 60:
            frame += bytes(60 - len(frame))
        self.frame(at, frame)

    def frame(self, at: int, frame: bytes):
        seconds, micros = divmod(at, 1_000_000)
        self.parts.append(REC(self.start + seconds, micros, len(frame), len(frame)) + frame)
        self.size += 16 + len(frame)
        if self.size >= BATCH:
            self.flush()


def dns_question(name: str, qtype: int) -> bytes:
    labels = b"".join(bytes((len(l),)) + l.encode() for l in name.split("."))
    return labels + b"\x00" + struct.pack(">HH", qtype, 1)


class Specials:
    """The port scan and the SYN burst: TCP frames (time in µs, number, arguments of
    Writer.tcp) made up front, merged into the stream by time."""

    def __init__(self, rng: random.Random, packets: int, sources: int, duration_us: int):
        self.frames = []
        scale = min(1.0, duration_us / 30e6)  # a run shorter than 30 s: compressed
        self.scan(rng, min(1000, packets // 20), sources, int(0.35 * duration_us), int(10e6 * scale))
        self.burst(rng, min(6000, packets // 20), sources, int(0.60 * duration_us), int(4e6 * scale))

    def add(self, at: int, flow, seq: int, ack: int, flags: int, options: bytes = b""):
        self.frames.append((at, len(self.frames), (flow, seq, ack, flags, b"", options)))

    def scan(self, rng, ports: int, sources: int, start: int, span: int):
        scanner, target = external(sources), bytes(SCAN_TARGET)
        sport = 40000 + rng.randrange(20000)
        for k, port in enumerate(rng.sample(range(1, 1025), ports)):
            at = start + span * k // max(1, ports)
            seq = rng.getrandbits(32)
            out = side(prefix(mac_of(SCAN_TARGET), ROUTER_MAC), 49, 6, scanner, target, sport, port, 1024)
            back = side(prefix(ROUTER_MAC, mac_of(SCAN_TARGET)), 64, 6, target, scanner, port, sport, 64240)
            self.add(at, out, seq, 0, 0x02, SCAN_OPTIONS)
            if port in SCAN_OPEN:
                self.add(at + 150, back, rng.getrandbits(32), seq + 1, 0x12, SYN_OPTIONS)
                self.add(at + 300, out, seq + 1, 0, 0x04)
            else:
                self.add(at + 150, back, 0, seq + 1, 0x14)

    def burst(self, rng, syns: int, sources: int, start: int, span: int):
        target = bytes(BURST_TARGET)
        for k, forged in enumerate(rng.sample(range(sources + 1, sources + 1 + 50 * syns + 1), syns)):
            at = start + span * k // max(1, syns)
            address, sport, seq = external(forged), 1024 + rng.randrange(64000), rng.getrandbits(32)
            out = side(prefix(mac_of(BURST_TARGET), ROUTER_MAC), 240, 6, address, target, sport, BURST_PORT, 512)
            back = side(prefix(ROUTER_MAC, mac_of(BURST_TARGET)), 64, 6, target, address, BURST_PORT, sport, 64240)
            self.add(at, out, seq, 0, 0x02)
            self.add(at + 80, back, rng.getrandbits(32), seq + 1, 0x12, SYN_OPTIONS)


def payload_tables(rng: random.Random):
    """Payload bytes for each length 0..MSS: pseudo-random (SSH, HTTP bodies), TLS
    application-data records, and QUIC short-header datagrams."""
    noise = rng.randbytes(MSS + 1)
    plain = [noise[:n] for n in range(MSS + 1)]
    tls = [noise[:n] if n < 6 else b"\x17\x03\x03" + struct.pack(">H", n - 5) + noise[5:n] for n in range(MSS + 1)]
    quic = [noise[:n] if n < 1 else b"\x4b" + noise[1:n] for n in range(MSS + 1)]
    return plain, tls, quic


def length_table(rng: random.Random, pure_ack: float, full: float, low: int, high: int) -> list:
    """4096 TCP payload lengths to pick from: 0 (a pure ACK), MSS (a full segment), or
    uniform in [low, high]."""
    table = []
    for _ in range(4096):
        roll = rng.random()
        table.append(0 if roll < pure_ack else MSS if roll < pure_ack + full else rng.randint(low, high))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output")
    parser.add_argument("--packets", type=int, required=True)
    parser.add_argument("--sources", type=int, required=True, help="distinct external addresses")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=float, default=300, help="seconds the capture spans")
    args = parser.parse_args()
    if args.packets < 1 or args.sources < 16:
        parser.error("--packets must be at least 1 and --sources at least 16")
    if args.sources >= len(OCTETS) * 65536 * 254 - 50 * 6000:
        parser.error("too many sources")
    began = time.monotonic()
    rng = random.Random(args.seed)
    packets, sources = args.packets, args.sources
    duration_us = int(args.duration * 1e6)
    plain, tls, quic = payload_tables(rng)
    server_lengths = length_table(rng, 0.35, 0.35, 60, MSS - 1)  # from the server: downloads
    client_lengths = length_table(rng, 0.60, 0.00, 60, 800)  # from the client: requests, ACKs

    # Internal hosts: their addresses and the Ethernet prefixes to and from the router.
    inside_out = {h: prefix(ROUTER_MAC, mac_of(h)) for h in CLIENTS + SERVERS + [DNS_SERVER]}
    outside_in = {h: prefix(mac_of(h), ROUTER_MAC) for h in CLIENTS + SERVERS + [DNS_SERVER]}
    cdns = [external(i) for i in range(12)]
    ntps = [external(i) for i in range(12, 16)]
    names = [f"{w}.{d}" for d in DNS_DOMAINS for w in DNS_WORDS]
    questions = [(dns_question(n, 1), 1) for n in names] + [(dns_question(n, 28), 28) for n in names[::4]]

    specials = Specials(rng, packets, sources, duration_us)
    # Frames due at a given time: the scan and the burst, and DNS answers, a heap of
    # (time, number, Writer.tcp arguments or (flow, payload) for Writer.udp).
    pending = specials.frames
    heapq.heapify(pending)
    special_count = len(pending)
    queued = special_count
    # Open TCP connections: [client side, server side, client seq, server seq, phase,
    # data packets left, payload table, whether it closes, data packets at first (-1 with a
    # handshake), number]; phases: 0 SYN, 1 SYN-ACK, 2 ACK, 3 data, 4-6 FIN-ACK, FIN-ACK,
    # ACK (then a new connection takes the slot).
    next_connection = 0
    mean_length = 4.0
    written = 0

    def connection():
        nonlocal next_connection, mean_length
        j = next_connection
        next_connection += 1
        if j >= sources:
            mean_length = 200.0
        elif j % 1024 == 0:
            # How long connections may be, on average, for the S addresses still to come
            # to fit in the TCP packets left.
            left_tcp = (packets - written) * 0.88 - OPEN_SLOTS * mean_length / 2
            mean_length = min(200.0, max(1.0, left_tcp / (sources - j)))
        address = external(j if j < sources else rng.randrange(sources))
        overhead = min(0.6, max(0.15, (mean_length - 3) / 20))
        data = max(1.0, mean_length - 3 * 2 * overhead)
        handshake, closes = rng.random() < overhead, rng.random() < overhead
        remaining = 1 + int(-math.log(1.0 - rng.random()) * (data - 0.5))
        ext_ttl = rng.choice((46, 50, 53, 55, 57, 113, 116, 118))
        if rng.random() < 0.65:  # outbound: an internal client, an external server
            host = CLIENTS[rng.randrange(len(CLIENTS))]
            cport, sport = 32768 + rng.randrange(28000), CLIENT_PORTS[rng.randrange(len(CLIENT_PORTS))]
            client = side(inside_out[host], 64, 6, bytes(host), address, cport, sport, 502)
            server = side(outside_in[host], ext_ttl, 6, address, bytes(host), sport, cport, 1040)
        else:  # inbound: an external client, an internal server
            host = SERVERS[rng.randrange(len(SERVERS))]
            cport, sport = 1024 + rng.randrange(64000), SERVER_PORTS[rng.randrange(len(SERVER_PORTS))]
            client = side(outside_in[host], ext_ttl, 6, address, bytes(host), cport, sport, 2053)
            server = side(inside_out[host], 64, 6, bytes(host), address, sport, cport, 501)
        table = tls if sport in (443, 993) else plain
        return [client, server, rng.getrandbits(32), rng.getrandbits(32), 0 if handshake else 3,
                remaining, table, closes, -1 if handshake else remaining, j]

    slots = [connection() for _ in range(OPEN_SLOTS)]

    getrandbits, rand, log = rng.getrandbits, rng.random, math.log
    internal = CLIENTS + SERVERS
    out = open(args.output, "wb", buffering=0)
    out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    writer = Writer(out, START)
    parts_append = writer.parts.append
    gap = duration_us / packets
    at_f, ipid = 0.0, 0
    next_due = pending[0][0] if pending else 1 << 62
    fast = slow = noise = udp = 0
    while written < packets:
        at_f += gap * -log(1.0 - rand())
        at = int(at_f)
        if at >= next_due or packets - written <= len(pending):
            # A frame due (all are later than any frame written), or the last ones.
            when, _, frame = heapq.heappop(pending)
            next_due = pending[0][0] if pending else 1 << 62
            writer.ipid = ipid
            if len(frame) == 2:
                writer.udp(when, *frame)
            else:
                writer.tcp(when, *frame)
            ipid = writer.ipid
            written += 1
            at_f = max(at_f, float(when))
            continue
        roll = getrandbits(10)
        if roll >= 92:  # TCP: ~91% of the events
            if roll < 102:  # an unanswered SYN from outside: noise
                host = internal[getrandbits(16) % 200]
                address = external(getrandbits(32) % sources)
                port = NOISE_PORTS[getrandbits(8) % 6]
                flow = side(outside_in[host], 49, 6, address, bytes(host), 1024 + getrandbits(16) % 64000, port, 1024)
                writer.ipid = ipid
                writer.tcp(at, flow, getrandbits(32), 0, 0x02, b"", SCAN_OPTIONS)
                ipid = writer.ipid
                noise += 1
                written += 1
                continue
            slot = getrandbits(10)
            conn = slots[slot]
            phase = conn[4]
            if phase == 3:  # established: the common case, inlined
                if getrandbits(8) < 141:  # server to client
                    pfx, fttp, ap, partial, window = conn[1]
                    n = server_lengths[getrandbits(12)]
                    seq, ack = conn[3], conn[2]
                    conn[3] = (seq + n) & M32
                else:
                    pfx, fttp, ap, partial, window = conn[0]
                    n = client_lengths[getrandbits(12)]
                    seq, ack = conn[2], conn[3]
                    conn[2] = (seq + n) & M32
                ipid = (ipid + 1) & 0xFFFF
                if n:
                    total, size, flags, payload = 40 + n, 54 + n, (0x5010 if n == MSS else 0x5018), conn[6][n]
                else:
                    total, size, flags, payload = 40, 60, 0x5010, PAD6
                s = partial + total + ipid
                s = (s & 0xFFFF) + (s >> 16)
                s += s >> 16
                seconds, micros = divmod(at, 1_000_000)
                parts_append(REC(START + seconds, micros, size, size))
                parts_append(TCP(pfx, total, ipid, fttp, ~s & 0xFFFF, ap, seq, ack, flags, window))
                parts_append(payload)
                writer.size += 16 + size
                if writer.size >= BATCH:
                    writer.flush()
                written += 1
                fast += 1
                conn[5] -= 1
                if conn[5] <= 0:
                    if conn[7]:
                        conn[4] = 4
                    else:
                        slots[slot] = connection()
                continue
            client, server, cseq, sseq = conn[0], conn[1], conn[2], conn[3]
            writer.ipid = ipid
            if phase == 0:
                writer.tcp(at, client, cseq, 0, 0x02, b"", SYN_OPTIONS)
                conn[2] = (cseq + 1) & M32
            elif phase == 1:
                writer.tcp(at, server, sseq, cseq, 0x12, b"", SYN_OPTIONS)
                conn[3] = (sseq + 1) & M32
            elif phase == 2 or phase == 6:
                writer.tcp(at, client, cseq, sseq, 0x10)
            elif phase == 4:  # the client closes
                writer.tcp(at, client, cseq, sseq, 0x11)
                conn[2] = (cseq + 1) & M32
            else:  # phase 5
                writer.tcp(at, server, sseq, cseq, 0x11)
                conn[3] = (sseq + 1) & M32
            ipid = writer.ipid
            written += 1
            slow += 1
            if phase == 6:
                slots[slot] = connection()
            else:
                conn[4] = 3 if phase == 2 else phase + 1
            continue
        # UDP: DNS (a question and its answer), QUIC, NTP.
        writer.ipid = ipid
        kind = getrandbits(4)
        client = CLIENTS[getrandbits(16) % 180]
        if kind < 5 and packets - written - len(pending) >= 2:
            question, qtype = questions[getrandbits(16) % len(questions)]
            txid, cport = getrandbits(16), 32768 + getrandbits(16) % 28000
            query = side(prefix(mac_of(DNS_SERVER), mac_of(client)), 64, 17, bytes(client), bytes(DNS_SERVER), cport, 53, 0)
            reply = side(prefix(mac_of(client), mac_of(DNS_SERVER)), 64, 17, bytes(DNS_SERVER), bytes(client), 53, cport, 0)
            writer.udp(at, query, struct.pack(">HHHHHH", txid, 0x0100, 1, 0, 0, 0) + question)
            if qtype == 1:
                record = struct.pack(">HHHIH", 0xC00C, 1, 1, 300, 4) + external(getrandbits(32) % sources)
                answer = struct.pack(">HHHHHH", txid, 0x8180, 1, 1, 0, 0) + question + record
            else:
                answer = struct.pack(">HHHHHH", txid, 0x8180, 1, 0, 0, 0) + question
            queued += 1  # the answer, after the resolver's delay
            heapq.heappush(pending, (at + 200 + getrandbits(12), queued, (reply, answer)))
            next_due = pending[0][0]
            written += 1
            udp += 2
        elif kind < 14:
            cdn = getrandbits(8) % 12
            cport = 49152 + (client[2] * 60 + client[3] + cdn * 1237) % 16000
            cport += cport == 54328  # tshark reads that port as Elasticsearch discovery
            if getrandbits(8) < 180:  # server to client
                flow = side(outside_in[client], 55, 17, cdns[cdn], bytes(client), 443, cport, 0)
                writer.udp(at, flow, quic[1200 + getrandbits(8) % 150])
            else:
                flow = side(inside_out[client], 64, 17, bytes(client), cdns[cdn], cport, 443, 0)
                writer.udp(at, flow, quic[40 + getrandbits(8) % 100])
            written += 1
            udp += 1
        else:
            server, request = getrandbits(8) % 4, kind == 14
            body = struct.pack(">BBBb", 0x23 if request else 0x24, 0 if request else 2, 6, -23) + bytes(44)
            cport = 32768 + (client[2] * 60 + client[3] + server * 4099) % 28000  # one a server
            if request:
                flow = side(inside_out[client], 64, 17, bytes(client), ntps[server], cport, 123, 0)
            else:
                flow = side(outside_in[client], 52, 17, ntps[server], bytes(client), 123, cport, 0)
            writer.udp(at, flow, body)
            written += 1
            udp += 1
        ipid = writer.ipid
    writer.flush()
    out.close()
    # Connections that sent nothing yet when the file ended: their addresses do not appear.
    unseen = sum(1 for c in slots if c[9] < sources and (c[4] == 0 or (c[4] == 3 and c[5] == c[8])))
    print(
        f"{args.output}: {written} packets over {at_f / 1e6:.0f} s: TCP {fast + slow + noise + special_count} "
        f"({next_connection} connections: {fast} established data/ACK segments, {slow} handshake "
        f"and close segments; {noise} noise SYNs; {special_count} scan and burst packets), UDP {udp}; "
        f"external addresses in connections {min(next_connection, sources) - unseen} of {sources}; "
        f"{time.monotonic() - began:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()

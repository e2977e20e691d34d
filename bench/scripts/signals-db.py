#!/usr/bin/env python3
"""Builds a collector data directory whose database holds N stored signals (10,000,000 for
the issue 6 query benchmark), as 30 days of a partnership's traffic, for query-latency.py.

How: `vedetta-collector init` makes the data directory (CA, keys, configuration and the
real schema, migrations applied), `org add` adds the organisations, and then this script
writes the rows directly with SQL (python3's sqlite3) into that schema: agents, signals,
signal_indicators, sightings, campaigns, campaign_orgs, campaign_signals and advisories.

Why directly and not through the real ingest: the ingest commits ~100,000+ signals/s at
best on this machine (issue 2), less with correlation, so 10 M signals would be minutes
either way, but everything it stores is "received now": received_at, sightings'
updated_at and campaigns' opened_at/updated_at would all fall within those minutes, no
campaign would ever have gone quiet and closed, and the open-campaign query would run
against an unrealistic table. Written directly, the signals span 30 days with their real
event and reception times, and the correlation state is what a collector that ran those
30 days would hold. To stay consistent with the collector, the script replays the
correlator's rules over the signals in time order (collector/src/correlate.rs, default
[correlation]: 2 organisations within 24 h open a campaign, 48 h without a signal close
it; a campaign's severity and score as the collector computes them; sightings forgotten
72 h after their last update, as close_quiet does), and writes each row as the collector
would (same JSON bodies, same columns, same indexes; indexes are dropped during the load
and recreated from their own SQL afterwards). No ANALYZE is run: the collector never runs
it, so the query planner sees the same (absent) statistics as on a real database.
Simplifications, none of which the measured queries read: no incidents are made;
campaign_signals links, at a campaign's opening, only the last 20 signals of each
organisation involved (the collector links all in the window), then every later signal.

Distributions (deterministic for a given --seed):
  * organisations: --orgs (default 40) of Zipf-like sizes (the largest sends ~17 % of all
    signals, the smallest ~0.9 %), 2-40 agents each;
  * kinds: ssh_bruteforce 38 %, port_scan 22 %, web_scan 12 %, agent_health 11.5 %,
    file_changed 8 %, web_exploit_attempt 4 %, syn_flood 1.5 %, dns_tunnel_suspected 1 %,
    suspicious_process 0.9 %, ioc_match 0.7 %, ssh_login_after_failures 0.3 %,
    ransomware_activity 0.1 %; severities per kind;
  * attacker addresses: 75 % from an internet-wide pool (--attackers, default 400,000) with
    a heavy head (rank = pool * u^3: the busiest address is in ~1.4 % of such signals,
    ~80,000 signals at 10 M, seen by every organisation), 23 % from each organisation's
    own pool of 10,000, 2 % private (never correlated); user names as pseudonyms; ports;
    exploit URLs from 2,000 malicious domains, DNS tunnel domains from 20,000, malware
    hashes from 5,000 (shared across organisations), changed files' hashes per
    organisation (never shared);
  * times: uniform over --days (default 30) ending now; each signal summarises 0-10 min of
    events; received 0.2-3 s after its last event.
The signals' ids are UUIDv7 of their time, so that rows arrive in index order as they do
in a running collector.

Writes DATA_DIR/bench-probes.json: values for the queries (the busiest indicator, a
typical one, a rare one, the largest and smallest organisation) and counts of what was
made. Prints progress and a summary on stderr/stdout.

Usage: signals-db.py COLLECTOR_BINARY DATA_DIR [--signals 10000000] [--days 30]
           [--orgs 40] [--attackers 400000] [--seed 1]
       (the benchmark: signals-db.py target/release/vedetta-collector /tmp/bench/db10m)
For 10 M signals: 10-15 minutes on the 2-core project machine (~40 us a signal, then the
index builds), ~1.5 GiB of memory, and about 9 GB of disk (DATA_DIR, ~900 bytes a signal,
plus SQLite's temporary files for the index builds, in SQLITE_TMPDIR or /var/tmp).
"""
import argparse
import bisect
import json
import os
import random
import sqlite3
import subprocess
import sys
import time

NS = 1_000_000_000
HOUR = 3600 * NS
WINDOW = 24 * HOUR
QUIET = 48 * HOUR
HORIZON = WINDOW + QUIET
SEVERITIES = ["info", "low", "medium", "high", "critical"]
SCHEMA_VERSION = 5

# kind, weight in thousandths, [(severity rank, weight)], MITRE technique, recipe
KINDS = [
    ("ssh_bruteforce", 380, [(3, 7), (2, 3)], "T1110.001", "ssh"),
    ("port_scan", 220, [(2, 6), (1, 4)], "T1046", "scan"),
    ("web_scan", 120, [(2, 8), (1, 2)], "T1595.002", "web"),
    ("agent_health", 115, [(0, 1)], None, "health"),
    ("file_changed", 80, [(1, 7), (2, 3)], "T1565.001", "file"),
    ("web_exploit_attempt", 40, [(3, 1)], "T1190", "exploit"),
    ("syn_flood", 15, [(3, 1)], "T1498.001", "flood"),
    ("dns_tunnel_suspected", 10, [(2, 1)], "T1071.004", "dns"),
    ("suspicious_process", 9, [(2, 6), (3, 4)], "T1059", "process"),
    ("ioc_match", 7, [(3, 1)], "T1071", "ioc"),
    ("ssh_login_after_failures", 3, [(4, 1)], "T1078", "login"),
    ("ransomware_activity", 1, [(4, 1)], "T1486", "ransom"),
]
# Public first octets (no private, loopback, CGNAT, link-local, test or benchmark
# ranges, no multicast, none of the built-in resolvers' /8s; not 185, which the load
# generator's campaign-latency mode uses for its campaigns).
FIRST_OCTETS = [
    2, 5, 23, 31, 37, 41, 45, 46, 51, 62, 77, 78, 80, 81, 85, 89, 91, 92, 94, 103, 104,
    109, 110, 115, 118, 121, 122, 139, 141, 146, 152, 159, 162, 165, 176, 178, 180, 188,
    190, 193, 194, 195, 196, 200, 201, 212, 213, 217, 218, 220, 221, 222,
]
SECTORS = ["bank", "city", "hospital", "school", "utility", "insurer", "port", "telco"]
LOCAL_POOL = 10_000


def address(rank):
    """A distinct public IPv4 address for each rank (a bijection on 24 bits)."""
    first = FIRST_OCTETS[rank % len(FIRST_OCTETS)]
    x = ((rank // len(FIRST_OCTETS)) * 2654435761 + 0x3C6EF3) & 0xFFFFFF
    return f"{first}.{x >> 16}.{(x >> 8) & 255}.{x & 255}"


_prefixes = {}


def rfc3339(ns):
    """As the collector writes times: RFC 3339 UTC, fraction without trailing zeros."""
    seconds, fraction = divmod(ns, NS)
    prefix = _prefixes.get(seconds)
    if prefix is None:
        if len(_prefixes) > 200_000:
            _prefixes.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        _prefixes[seconds] = prefix
    if fraction:
        return f"{prefix}.{fraction:09d}".rstrip("0") + "Z"
    return prefix + "Z"


def uuid7(ms, counter, rand12):
    b = (counter * 0x9E3779B97F4A7C15) & ((1 << 62) - 1)
    return (
        f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-{0x7000 | rand12:04x}-"
        f"{0x8000 | (b >> 48):04x}-{b & 0xFFFFFFFFFFFF:012x}"
    )


def campaign_severity(worst, orgs):
    return min(worst + 1, 4) if orgs >= 3 else worst


def score(orgs, kinds, severity, signals):
    breadth = 20 * min(orgs, 5)
    variety = 5 * min(kinds, 4)
    badness = 5 * severity
    volume = min(max(signals, 1).bit_length(), 10)
    return min(breadth + variety + badness + volume, 100)


def run(command):
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return done.stdout


class Correlator:
    """The collector's campaign rules (correlate.rs, store/correlation.rs) over signals
    in time order. Each sighting: [first, last, signals, kinds, max_severity, updated,
    recent signal ids]."""

    def __init__(self, out):
        self.sightings = {}  # (type, value) -> {org: sighting}
        self.open = {}  # (type, value) -> campaign
        self.out = out
        self.counter = 0
        self.opened = 0
        self.closed = 0

    def close(self, key, campaign):
        campaign["status"] = "closed"
        campaign["closed_at"] = campaign["updated_at"] + QUIET + random.randrange(60 * NS)
        self.write(campaign)
        self.closed += 1
        del self.open[key]

    def write(self, c):
        # As the collector keeps them: sorted when the campaign opened, later ones appended.
        parts = list(c["orgs"].values())
        body = {
            "id": c["id"],
            "indicator": {"type": c["type"], "value": c["value"]},
            "status": c["status"],
            "severity": SEVERITIES[c["severity"]],
            "score": c["score"],
            "orgs": [
                {"org": o, "first_seen": rfc3339(f), "last_seen": rfc3339(l), "signals": n}
                for (o, f, l, n) in parts
            ],
            "kinds": sorted(c["kinds"]),
            "signals": c["signals"],
            "first_seen": rfc3339(c["first_seen"]),
            "last_seen": rfc3339(c["last_seen"]),
            "opened_at": rfc3339(c["opened_at"]),
            "updated_at": rfc3339(c["updated_at"]),
            "closed_at": rfc3339(c["closed_at"]) if c["closed_at"] else None,
        }
        self.out.campaigns.append((
            c["id"], c["type"], c["value"], c["status"], c["severity"], c["score"],
            len(parts), c["signals"], c["first_seen"], c["last_seen"], c["opened_at"],
            c["updated_at"], c["closed_at"], json.dumps(body, separators=(",", ":")),
        ))
        for (o, _, _, _) in parts:
            self.out.campaign_orgs.append((c["id"], o))

    def observe(self, key, org, kind, severity, first, last, now, signal_id):
        seen = self.sightings.get(key)
        if seen is None:
            seen = self.sightings[key] = {}
        else:
            for other in [o for o, s in seen.items() if s[5] < now - HORIZON]:
                del seen[other]
        mine = seen.get(org)
        if mine is None:
            mine = seen[org] = [first, last, 1, {kind}, severity, now, [signal_id]]
        else:
            mine[0] = min(mine[0], first)
            mine[1] = max(mine[1], last)
            mine[2] += 1
            if len(mine[3]) < 32:
                mine[3].add(kind)
            mine[4] = max(mine[4], severity)
            mine[5] = now
            recent = mine[6]
            recent.append(signal_id)
            if len(recent) > 20:
                del recent[0]
        campaign = self.open.get(key)
        if campaign is not None and campaign["updated_at"] <= now - QUIET:
            self.close(key, campaign)
            campaign = None
        if campaign is not None:
            part = campaign["orgs"].get(org)
            grew = part is None
            if part is None:
                campaign["orgs"][org] = (org, first, last, 1)
            else:
                campaign["orgs"][org] = (org, min(part[1], first), max(part[2], last), part[3] + 1)
            campaign["kinds"].add(kind)
            campaign["signals"] += 1
            campaign["first_seen"] = min(campaign["first_seen"], first)
            campaign["last_seen"] = max(campaign["last_seen"], last)
            campaign["updated_at"] = now
            n = len(campaign["orgs"])
            # As the collector does: the worst signal of the campaign's organisations,
            # raised one step for breadth.
            worst = max([severity] + [seen[o][4] for o in campaign["orgs"] if o in seen])
            campaign["severity"] = campaign_severity(worst, n)
            campaign["score"] = score(n, len(campaign["kinds"]), campaign["severity"], campaign["signals"])
            self.out.campaign_signals.append((campaign["id"], signal_id))
            return grew
        close = [
            (o, s) for o, s in seen.items()
            if o == org or (s[1] >= last - WINDOW and s[0] <= last + WINDOW)
        ]
        if len(close) < 2:
            return False
        self.counter += 1
        cid = "CMP-" + uuid7(now // 1_000_000, self.counter + (1 << 40), 0x123).replace("-", "")
        kinds = set()
        for _, s in close:
            kinds |= s[3]
        total = sum(s[2] for _, s in close)
        severity_now = campaign_severity(max(s[4] for _, s in close), len(close))
        campaign = {
            "id": cid, "type": key[0], "value": key[1], "status": "open",
            "severity": severity_now,
            "score": score(len(close), len(kinds), severity_now, total),
            "orgs": {o: (o, s[0], s[1], s[2]) for o, s in sorted(close, key=lambda x: (x[1][0], x[0]))},
            "kinds": kinds, "signals": total,
            "first_seen": min(s[0] for _, s in close),
            "last_seen": max(s[1] for _, s in close),
            "opened_at": now, "updated_at": now, "closed_at": None,
        }
        self.open[key] = campaign
        self.opened += 1
        for _, s in close:
            for linked in s[6]:
                self.out.campaign_signals.append((cid, linked))
        return True

    def sweep(self, now):
        """What close_quiet does every minute: close quiet campaigns, forget old sightings."""
        for key, campaign in list(self.open.items()):
            if campaign["updated_at"] <= now - QUIET:
                self.close(key, campaign)
        for key in list(self.sightings):
            seen = self.sightings[key]
            for org in [o for o, s in seen.items() if s[5] < now - HORIZON]:
                del seen[org]
            if not seen:
                del self.sightings[key]


class Rows:
    def __init__(self):
        self.signals = []
        self.indicators = []
        self.campaigns = []
        self.campaign_orgs = []
        self.campaign_signals = []

    def flush(self, db):
        db.executemany("INSERT INTO signals VALUES (?,?,?,?,?,?,?,?,?,?)", self.signals)
        db.executemany("INSERT INTO indicator_load VALUES (?,?,?,?,?,?,?,?)", self.indicators)
        db.executemany("INSERT INTO campaigns VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self.campaigns)
        db.executemany(
            "INSERT INTO campaign_orgs VALUES (?,?) ON CONFLICT DO NOTHING", self.campaign_orgs
        )
        db.executemany(
            "INSERT INTO campaign_signals VALUES (?,?) ON CONFLICT DO NOTHING",
            self.campaign_signals,
        )
        self.__init__()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collector")
    parser.add_argument("data_dir")
    parser.add_argument("--signals", type=int, default=10_000_000)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--orgs", type=int, default=40)
    parser.add_argument("--attackers", type=int, default=400_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    random.seed(args.seed)
    rnd = random.random
    randrange = random.randrange
    started = time.time()

    # The real data directory and schema.
    init = json.loads(run([
        args.collector, "init", "--data-dir", args.data_dir, "--listen", "127.0.0.1:0",
        "--http", "127.0.0.1:0", "--format", "json",
    ]))
    orgs = [f"{SECTORS[o % len(SECTORS)]}-{o + 1:02d}" for o in range(args.orgs)]
    for org in orgs:
        run([args.collector, "org", "add", org, "--data-dir", args.data_dir])
    db = sqlite3.connect(os.path.join(args.data_dir, "vedetta.db"), isolation_level=None)
    version = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
    if version != SCHEMA_VERSION:
        sys.exit(f"schema version {version}: this script writes version {SCHEMA_VERSION}'s tables; update it")
    db.execute("PRAGMA journal_mode = OFF")
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -524288")
    indexes = db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
        "AND tbl_name IN ('signals', 'signal_indicators', 'campaign_signals')"
    ).fetchall()
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    # signal_indicators is clustered by value (WITHOUT ROWID): rows are staged in arrival
    # order and copied in key order at the end, rather than inserted at random places.
    db.execute(
        "CREATE TEMP TABLE indicator_load (value TEXT, last_seen INTEGER, signal_id TEXT, "
        "type TEXT, org TEXT, kind TEXT, severity INTEGER, first_seen INTEGER)"
    )
    db.execute("BEGIN")

    end = time.time_ns() - 60 * NS
    begin = end - int(args.days * 24 * HOUR)
    # Organisations and their agents.
    org_weights = [1 / (o + 1) ** 0.8 for o in range(args.orgs)]
    total_weight = sum(org_weights)
    org_cum = []
    acc = 0.0
    for w in org_weights:
        acc += w / total_weight
        org_cum.append(acc)
    agents = []
    agent_rows = []
    for o, org in enumerate(orgs):
        count = max(2, round(40 * org_weights[o] / org_weights[0]))
        mine = []
        for a in range(count):
            agent_id = f"{org}-{random.getrandbits(32):08x}"
            mine.append(agent_id)
            agent_rows.append((
                agent_id, org, f"{org}-host-{a + 1:02d}", f"{random.getrandbits(256):064x}",
                begin - randrange(30 * 24 * HOUR), None, end - randrange(30 * NS), 0, "0.1.0",
                randrange(86400 * 30), 0, 0, "[]", None,
            ))
        agents.append(mine)
    db.executemany("INSERT INTO agents VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", agent_rows)
    kind_cum = []
    acc = 0
    for kind in KINDS:
        acc += kind[1]
        kind_cum.append(acc)
    user_pool = [[f"pn:{random.getrandbits(64):016x}" for _ in range(2000)] for _ in orgs]
    host_pool = [[f"pn:{random.getrandbits(64):016x}" for _ in range(len(agents[o]))] for o in range(args.orgs)]
    malware = [f"{random.getrandbits(256):064x}" for _ in range(5000)]
    domains = [f"{random.getrandbits(40):010x}.{random.choice(['top', 'xyz', 'ru', 'cn', 'info'])}" for _ in range(2000)]
    tunnels = [f"{random.getrandbits(32):08x}.tunnel-{n % 97}.net" for n in range(20_000)]
    counts = {}
    rows = Rows()
    correlator = Correlator(rows)
    attackers = args.attackers
    step = (end - begin) / args.signals
    next_sweep = begin + 12 * HOUR
    indicator_rows = 0
    kind_totals = {}

    def ri(n):
        """Uniform in [0, n): random.randrange's result, at a fraction of its cost."""
        return int(rnd() * n)

    def attacker(o):
        u = rnd()
        if u < 0.02:
            return f"10.{o}.{ri(256)}.{1 + ri(254)}", False
        if u < 0.25:
            return address(attackers + o * LOCAL_POOL + int(LOCAL_POOL * rnd() ** 2)), True
        return address(int(attackers * rnd() ** 3)), True

    for i in range(args.signals):
        last = begin + int(i * step) + ri(max(int(step), 1))
        received = last + 200_000_000 + ri(3 * NS - 200_000_000)
        first = last - ri(600 * NS)
        o = min(bisect.bisect_left(org_cum, rnd()), args.orgs - 1)
        org = orgs[o]
        agent_index = int(len(agents[o]) * rnd() ** 2)
        agent_id = agents[o][agent_index]
        k = bisect.bisect_right(kind_cum, ri(1000))
        kind, _, severities, mitre, recipe = KINDS[k]
        kind_totals[kind] = kind_totals.get(kind, 0) + 1
        severity = severities[0][0]
        if len(severities) > 1:
            total = sum(w for _, w in severities)
            r = ri(total)
            for rank, w in severities:
                if r < w:
                    severity = rank
                    break
                r -= w
        count = 1 + int(400 * rnd() ** 3)
        inds = []  # (type, value, correlates)
        if recipe == "ssh" or recipe == "login":
            ip, public = attacker(o)
            inds = [("ip", ip, public), ("port", "22", False), ("user", user_pool[o][ri(2000)], False)]
            attrs = f'"attempts":{5 + ri(500)},"distinct_users":{1 + ri(60)}'
        elif recipe == "scan":
            ip, public = attacker(o)
            inds = [("ip", ip, public)]
            attrs = f'"distinct_ports":{20 + ri(5000)},"window_s":60'
        elif recipe == "web":
            ip, public = attacker(o)
            inds = [("ip", ip, public), ("port", "443", False)]
            attrs = f'"not_found_ratio":{0.5 + rnd() / 2:.3f},"requests":{10 + ri(2000)}'
        elif recipe == "exploit":
            ip, public = attacker(o)
            url = f"http://{domains[int(2000 * rnd() ** 2)]}/{ri(50)}.sh"
            inds = [("ip", ip, public), ("url", url, True), ("port", "443", False)]
            attrs = f'"payload":"cve-2024-{1000 + ri(8999)}","requests":{1 + ri(50)}'
        elif recipe == "flood":
            ip, public = attacker(o)
            inds = [("ip", ip, public), ("port", "443", False)]
            attrs = f'"pps":{10000 + ri(500000)}'
        elif recipe == "dns":
            inds = [("domain", tunnels[int(20_000 * rnd() ** 2)], True)]
            attrs = f'"mean_label_length":{30 + rnd() * 20:.2f},"queries":{100 + ri(10000)}'
        elif recipe == "ioc":
            ip, public = attacker(o)
            inds = [("ip", ip, public)]
            attrs = f'"advisory":"ADV-{random.getrandbits(64):016x}","matches":{1 + ri(20)}'
        elif recipe == "file":
            inds = [("sha256", f"{(o << 240) | (ri(50_000) * 0x9E3779B97F4A7C15):064x}", True)]
            attrs = f'"path":"/etc/conf-{ri(500)}.d","size":{ri(1 << 20)}'
        elif recipe == "process" or recipe == "ransom":
            inds = [("sha256", malware[int(5000 * rnd() ** 2)], True)]
            attrs = f'"files_touched":{ri(5000)},"pid":{1 + ri(65535)}'
        else:
            attrs = f'"drops_total":0,"spool_depth":{ri(50)}'
        ms = last // 1_000_000
        signal_id = uuid7(ms, i, ri(4096))
        indicators_json = ",".join(f'{{"type":"{t}","value":"{v}"}}' for t, v, _ in inds)
        host = host_pool[o][agent_index]
        body = (
            f'{{"id":"{signal_id}","kind":"{kind}","severity":"{SEVERITIES[severity]}",'
            f'"first_seen":"{rfc3339(first)}","last_seen":"{rfc3339(last)}","count":{count},'
            f'"indicators":[{indicators_json}],"attributes":{{{attrs}}},'
            f'"mitre":{json.dumps(mitre)},"host":"{host}"}}'
        )
        rows.signals.append((signal_id, org, agent_id, kind, severity, first, last, count, received, body))
        for t, v, correlates in inds:
            if t == "port":
                continue
            rows.indicators.append((v, last, signal_id, t, org, kind, severity, first))
            indicator_rows += 1
            if correlates:
                key = (t, v)
                counts[key] = counts.get(key, 0) + 1
                correlator.observe(key, org, kind, severity, first, last, received, signal_id)
        if received >= next_sweep:
            correlator.sweep(received)
            next_sweep = received + 12 * HOUR
        if len(rows.signals) >= 50_000:
            rows.flush(db)
            if (i + 1) % 1_000_000 == 0 or i + 1 == args.signals:
                elapsed = time.time() - started
                print(f"{i + 1:>11,} signals  {elapsed:7.1f} s  campaigns opened {correlator.opened:,}",
                      file=sys.stderr, flush=True)

    # What is left at the end: quiet campaigns close, the rest stay open.
    now = end
    correlator.sweep(now)
    for campaign in correlator.open.values():
        correlator.write(campaign)
    sightings = []
    for (t, v), seen in correlator.sightings.items():
        for org, s in seen.items():
            if s[5] >= now - HORIZON:
                sightings.append((t, v, org, s[0], s[1], s[2],
                                  json.dumps(sorted(s[3]), separators=(",", ":")), s[4], s[5]))
    db.executemany("INSERT INTO sightings VALUES (?,?,?,?,?,?,?,?,?)", sightings)
    rows.flush(db)

    # Advisories an analyst published over the period (a few withdrawn), in feed order.
    hot = sorted(counts.items(), key=lambda kv: -kv[1])[:2000]
    advisories = []
    for n in range(300):
        (t, v), _ = hot[randrange(len(hot))]
        published = begin + int((n + rnd()) * (end - begin) / 300)
        withdrawn = published + randrange(HOUR) if n % 25 == 7 else None
        advisories.append((
            f"ADV-{published // 1_000_000:012x}{random.getrandbits(80):020x}", n + 1, t, v, 3,
            "seen across members", published, "analyst-1", published + 7 * 24 * HOUR,
            withdrawn, None,
        ))
    db.executemany("INSERT INTO advisories VALUES (?,?,?,?,?,?,?,?,?,?,?)", advisories)
    db.execute("UPDATE agents SET last_batch_seq = 1000")
    db.execute("COMMIT")
    print("sorting indicators into signal_indicators", file=sys.stderr, flush=True)
    db.execute(
        "INSERT INTO signal_indicators (value, last_seen, signal_id, type, org, kind, severity, first_seen) "
        "SELECT * FROM indicator_load ORDER BY value, last_seen, signal_id"
    )
    db.execute("DROP TABLE indicator_load")
    loaded = time.time()
    print(f"rows written in {loaded - started:.1f} s; building indexes", file=sys.stderr, flush=True)
    for name, sql in indexes:
        db.execute(sql)
    db.execute("PRAGMA journal_mode = WAL")
    open_campaigns = db.execute("SELECT COUNT(*) FROM campaigns WHERE status = 'open'").fetchone()[0]
    all_campaigns = db.execute("SELECT COUNT(*) FROM campaigns").fetchone()[0]
    db.close()

    # Values for the queries.
    ips = [(v, n) for (t, v), n in counts.items() if t == "ip"]
    ips.sort(key=lambda vn: (-vn[1], vn[0]))
    busiest = ips[0]
    typical = min(ips, key=lambda vn: (abs(vn[1] - 50), vn[0]))
    rare = next(vn for vn in reversed(ips) if vn[1] == 1)
    sizes = {}
    for agent in agent_rows:
        sizes[agent[1]] = sizes.get(agent[1], 0) + 1
    probes = {
        "ca_fingerprint": init["ca_fingerprint"],
        "signals": args.signals,
        "days": args.days,
        "indicator_busiest": busiest[0], "indicator_busiest_signals": busiest[1],
        "indicator_typical": typical[0], "indicator_typical_signals": typical[1],
        "indicator_rare": rare[0],
        "indicator_unknown": "192.0.2.1",
        "org_largest": orgs[0],
        "org_smallest": orgs[-1],
        "kinds": kind_totals,
        "signal_indicator_rows": indicator_rows,
        "sightings": len(sightings),
        "campaigns": all_campaigns,
        "campaigns_open": open_campaigns,
        "agents": len(agent_rows),
        "seconds_rows": round(loaded - started, 1),
        "seconds_total": round(time.time() - started, 1),
        "database_bytes": os.path.getsize(os.path.join(args.data_dir, "vedetta.db")),
    }
    with open(os.path.join(args.data_dir, "bench-probes.json"), "w") as out:
        json.dump(probes, out, indent=1)
    print(json.dumps(probes))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Times the analysts' queries of issue 6 against a collector data directory made by
signals-db.py (10,000,000 stored signals for the benchmark): starts the real
`vedetta-collector serve` on it (loopback, ports of the system's choosing), adds an API
user of role analyst, and times each query with curl over HTTPS (TLS 1.3, the collector's
CA), REPEAT times after WARMUP untimed ones, reporting p50, p99 and max of curl's
%{time_total} in milliseconds.

By default each query's requests go through one curl process on one kept-alive
connection (as a dashboard's would), so the times are the request alone: no TCP or TLS
handshake, no process start. --fresh runs one curl per request instead (handshake
included). --cat reads the database file once first so that the page cache holds it
(the warm-up requests warm what each query touches anyway).

Queries (the values come from DATA_DIR/bench-probes.json):
  indicator lookup, target < 20 ms:  GET /api/v1/indicators/V for a typical address
      (~50 signals), the busiest one (tens of thousands), one seen once, and an unknown one;
  a filtered page of signals, target < 50 ms: GET /api/v1/signals?… (100 a page) by
      organisation + kind + severity (largest organisation), by a rare kind in the
      smallest organisation (the filter matches few rows), by organisation + a common
      kind + a severity that kind never has (matches nothing: the worst case, every row
      of the kind is read), by kind + severity over the last 24 h, by indicator (typical
      and busiest), and the newest page unfiltered;
  the open campaigns, target < 100 ms: GET /api/v1/campaigns?status=open (100 a page, the
      API's default) and with limit=1000 (the most a page may hold).
The collector's own timing is not separated out: the figure is what an analyst's client
waits for on loopback.

Usage: query-latency.py COLLECTOR_BINARY DATA_DIR [--repeat 50] [--warmup 5] [--fresh] [--cat]
       (the benchmark: query-latency.py target/release/vedetta-collector /tmp/bench/db10m --cat)
Needs curl. Prints one line per query and a JSON summary on the last line.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import urllib.parse

TARGETS_MS = {"indicator": 20, "signals": 50, "campaigns": 100}


def quantile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[round((len(sorted_values) - 1) * q)]


def queries(p):
    ind = lambda v: "/api/v1/indicators/" + urllib.parse.quote(v, safe="")
    sig = lambda **kw: "/api/v1/signals?" + urllib.parse.urlencode(kw)
    return [
        ("indicator", "typical address", ind(p["indicator_typical"])),
        ("indicator", "busiest address", ind(p["indicator_busiest"])),
        ("indicator", "address seen once", ind(p["indicator_rare"])),
        ("indicator", "unknown address", ind(p["indicator_unknown"])),
        ("signals", "org+kind+severity, largest org",
         sig(org=p["org_largest"], kind="ssh_bruteforce", severity="high", limit=100)),
        ("signals", "org+rare kind, smallest org",
         sig(org=p["org_smallest"], kind="ransomware_activity", limit=100)),
        ("signals", "org+kind+severity, matches nothing",
         sig(org=p["org_smallest"], kind="port_scan", severity="critical", limit=100)),
        ("signals", "kind+severity, last 24 h",
         sig(kind="web_exploit_attempt", severity="high", since="24h", limit=100)),
        ("signals", "by indicator, typical", sig(indicator=p["indicator_typical"], limit=100)),
        ("signals", "by indicator, busiest", sig(indicator=p["indicator_busiest"], limit=100)),
        ("signals", "newest, unfiltered", sig(limit=100)),
        ("campaigns", "open, default page (100)", "/api/v1/campaigns?status=open"),
        ("campaigns", "open, limit=1000", "/api/v1/campaigns?status=open&limit=1000"),
    ]


def items_in(path):
    """How many results a saved answer holds."""
    try:
        with open(path) as f:
            answer = json.load(f)
    except (OSError, ValueError):
        return None
    if "items" in answer:
        return len(answer["items"])
    if "signals" in answer:
        return answer["signals"]
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collector")
    parser.add_argument("data_dir")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--fresh", action="store_true")
    parser.add_argument("--cat", action="store_true")
    args = parser.parse_args()
    data = os.path.abspath(args.data_dir)
    with open(os.path.join(data, "bench-probes.json")) as f:
        probes = json.load(f)
    if args.cat:
        with open(os.path.join(data, "vedetta.db"), "rb") as f:
            while f.read(1 << 24):
                pass
    user = subprocess.run(
        [args.collector, "user", "add", f"bench-query-{os.getpid()}", "--role", "analyst",
         "--format", "json", "--data-dir", data],
        capture_output=True, text=True, check=True,
    )
    token = json.loads(user.stdout)["token"]
    serve = subprocess.Popen(
        [args.collector, "serve", "--data-dir", data, "--listen", "127.0.0.1:0",
         "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, RUST_LOG="warn"),
    )
    results = []
    try:
        ready = json.loads(serve.stdout.readline())
        base = "https://localhost:" + ready["https"].rsplit(":", 1)[1]
        ca = os.path.join(data, "ca.crt")
        with tempfile.TemporaryDirectory() as tmp:
            header = os.path.join(tmp, "header")
            with open(header, "w") as f:
                f.write(f"Authorization: Bearer {token}\n")
            curl = ["curl", "-s", "--cacert", ca, "-H", f"@{header}",
                    "-w", "%{http_code} %{time_total} %{size_download}\n"]
            print(f"{'query':<42} {'results':>7} {'bytes':>9} {'p50 ms':>8} {'p99 ms':>8} "
                  f"{'max ms':>8}  target")
            for group, name, path in queries(probes):
                sample = os.path.join(tmp, "sample.json")
                total = args.warmup + args.repeat
                lines = []
                if args.fresh:
                    for n in range(total):
                        out = sample if n == 0 else "/dev/null"
                        lines += subprocess.run(curl + ["-o", out, base + path], capture_output=True,
                                                text=True, check=True).stdout.splitlines()
                else:
                    config = os.path.join(tmp, "urls")
                    with open(config, "w") as f:
                        for n in range(total):
                            f.write(f'url = "{base}{path}"\n')
                            f.write(f'output = "{sample if n == 0 else "/dev/null"}"\n')
                    lines = subprocess.run(curl + ["-K", config], capture_output=True, text=True,
                                           check=True).stdout.splitlines()
                timed = [line.split() for line in lines[args.warmup:]]
                codes = sorted({code for code, _, _ in timed})
                times = sorted(float(t) * 1000 for _, t, _ in timed)
                size = int(timed[-1][2]) if timed else 0
                p50, p99 = quantile(times, 0.5), quantile(times, 0.99)
                worst = times[-1] if times else 0.0
                target = TARGETS_MS[group]
                verdict = "met" if p99 < target and codes == ["200"] else "NOT MET"
                if codes != ["200"]:
                    verdict += f" (HTTP {','.join(codes)})"
                count = items_in(sample)
                print(f"{group + ': ' + name:<42} {count if count is not None else '-':>7} "
                      f"{size:>9} {p50:8.2f} {p99:8.2f} {worst:8.2f}  < {target} ms {verdict}",
                      flush=True)
                results.append({"group": group, "query": name, "path": path, "status": codes,
                                "results": count, "bytes": size, "p50_ms": round(p50, 3),
                                "p99_ms": round(p99, 3), "max_ms": round(worst, 3),
                                "target_ms": target, "met": verdict == "met"})
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=30)
    print(json.dumps({"signals": probes["signals"], "repeat": args.repeat, "fresh": args.fresh,
                      "queries": results}))
    if not all(r["status"] == ["200"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()

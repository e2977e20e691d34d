#!/usr/bin/env python3
"""Change-to-signal latency of the agent's file-integrity source: a real agent
(`run --dry-run`) watches a directory of 1,000 files; one file at a time is rewritten and
the time until its `file_changed` signal is printed is measured.

Usage: fim-latency.py AGENT_BINARY WORKDIR [--changes 300]
Prints p50, p99 and max in milliseconds. The per-minute cap on `file_changed` signals is
lifted through a rules file in WORKDIR so that every change is reported.
"""
import argparse
import json
import os
import subprocess
import threading
import queue
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("agent")
    parser.add_argument("workdir")
    parser.add_argument("--changes", type=int, default=300)
    args = parser.parse_args()
    work = os.path.abspath(args.workdir)
    tree = os.path.join(work, "tree")
    rules = os.path.join(work, "rules")
    os.makedirs(tree, exist_ok=True)
    os.makedirs(rules, exist_ok=True)
    for n in range(1000):
        with open(os.path.join(tree, f"f{n:04}.conf"), "w") as f:
            f.write(f"setting = {n}\n" * 50)
    with open(os.path.join(rules, "limits.toml"), "w") as f:
        f.write("[file_limits]\nfile_changed_per_minute = 1000000\n")
    config = os.path.join(work, "agent.toml")
    with open(config, "w") as f:
        f.write(
            f'state_dir = "state"\nrules_dir = "{rules}"\n[health]\ninterval = "1h"\n'
            f'[privacy]\nshare_file_paths = true\n[sources.files]\npaths = ["{tree}"]\n'
        )
    agent = subprocess.Popen(
        [args.agent, "run", "--dry-run", "--config", config],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in agent.stderr:
        if "the watched files" in line:
            break
    threading.Thread(target=lambda: [None for _ in agent.stderr], daemon=True).start()
    signals: "queue.Queue[dict]" = queue.Queue()

    def read() -> None:
        for line in agent.stdout:
            try:
                signals.put(json.loads(line))
            except ValueError:
                pass

    threading.Thread(target=read, daemon=True).start()
    latencies = []
    for n in range(args.changes):
        path = os.path.join(tree, f"f{n % 1000:04}.conf")
        with open(path, "a") as f:
            f.write(f"changed = {n}\n")
        start = time.monotonic()
        while True:
            signal = signals.get(timeout=30)
            if signal.get("kind") == "file_changed" and signal["attributes"].get("path") == path:
                latencies.append((time.monotonic() - start) * 1000)
                break
        time.sleep(0.02)
    agent.terminate()
    agent.wait()
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    print(
        f"changes {len(latencies)}  p50 {pick(0.50):.1f} ms  p99 {pick(0.99):.1f} ms  "
        f"max {latencies[-1]:.1f} ms"
    )


if __name__ == "__main__":
    main()

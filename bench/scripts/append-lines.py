#!/usr/bin/env python3
"""Appends lines taken from SOURCE to TARGET at RATE lines per second for SECONDS,
in tenth-of-a-second slices, to drive the agent's live tailing at a steady rate.

Usage: append-lines.py SOURCE TARGET RATE SECONDS
"""
import sys
import time

source, target, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = open(source).read().splitlines()
out = open(target, "a")
start = time.time()
written = 0
for tick in range(seconds * 10):
    for _ in range(rate // 10):
        out.write(lines[written % len(lines)] + "\n")
        written += 1
    out.flush()
    delay = start + (tick + 1) / 10 - time.time()
    if delay > 0:
        time.sleep(delay)
print(f"wrote {written} lines in {time.time() - start:.1f} s")

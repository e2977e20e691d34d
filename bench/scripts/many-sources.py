#!/usr/bin/env python3
"""Writes an sshd log in which N distinct addresses each fail three passwords (below every
threshold), spread over 50 minutes: the worst case for the agent's key tables.

Usage: many-sources.py N OUTPUT     (the state-memory benchmark uses N = 1,000,000)
"""
import sys


def main() -> None:
    count, output = int(sys.argv[1]), sys.argv[2]
    with open(output, "w", encoding="ascii") as out:
        for n in range(count):
            seconds = n * 3000 // count
            stamp = f"Mar  1 00:{seconds // 60:02d}:{seconds % 60:02d}"
            address = f"{11 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}.7"
            for port in range(1000, 1003):
                out.write(
                    f"{stamp} host1 sshd[{n}]: Failed password for root from {address} "
                    f"port {port} ssh2\n"
                )


if __name__ == "__main__":
    main()

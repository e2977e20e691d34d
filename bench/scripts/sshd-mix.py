#!/usr/bin/env python3
"""Writes a realistic OpenSSH auth log mix for replay benchmarks (classic syslog format,
as Debian's rsyslog writes /var/log/auth.log with traditional timestamps, so that
fail2ban-regex's stock sshd filter reads it too).

The mix per 100 lines, roughly: internet brute force (Failed password, PAM lines,
invalid users, preauth disconnects) from a rotating population of attackers, ordinary
publickey logins with their sessions, a few typos followed by a success, cron and sudo
noise.

Usage: sshd-mix.py LINES OUT [--attackers N]
"""
import argparse
import datetime as dt
import random

parser = argparse.ArgumentParser()
parser.add_argument("lines", type=int)
parser.add_argument("out")
parser.add_argument("--attackers", type=int, default=20000, help="distinct attacking addresses")
args = parser.parse_args()

rng = random.Random(42)
users = ["root", "admin", "test", "oracle", "postgres", "ubuntu", "guest", "git", "deploy", "user"]
staff = ["alice", "bob", "carla", "dario"]
t = dt.datetime(2026, 3, 1, 0, 0, 0)
pid = 10000


def attacker(n):
    return f"{45 + n % 150}.{(n // 150) % 250}.{(n // 37500) % 250}.{n % 251 + 1}"


with open(args.out, "w", buffering=1 << 20) as out:
    written = 0
    while written < args.lines:
        t += dt.timedelta(milliseconds=rng.randint(5, 60))
        stamp = t.strftime("%b %e %H:%M:%S")
        pid += 1
        roll = rng.random()
        lines = []
        if roll < 0.80:
            ip = attacker(rng.randrange(args.attackers))
            user = rng.choice(users)
            port = rng.randint(1024, 65535)
            if user in ("root", "deploy") or rng.random() < 0.3:
                lines.append(f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={user}")
                lines.append(f"Failed password for {user} from {ip} port {port} ssh2")
            else:
                lines.append(f"Invalid user {user} from {ip} port {port}")
                lines.append(f"pam_unix(sshd:auth): check pass; user unknown")
                lines.append(f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}")
                lines.append(f"Failed password for invalid user {user} from {ip} port {port} ssh2")
            lines.append(f"Received disconnect from {ip} port {port}:11: Bye Bye [preauth]")
        elif roll < 0.92:
            who = rng.choice(staff)
            ip = f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}"
            lines.append(f"Accepted publickey for {who} from {ip} port {rng.randint(1024, 65535)} ssh2: ED25519 SHA256:Zm9vYmFyYmF6")
            lines.append(f"pam_unix(sshd:session): session opened for user {who}(uid=1000) by (uid=0)")
            lines.append(f"pam_unix(sshd:session): session closed for user {who}")
        elif roll < 0.94:
            who = rng.choice(staff)
            ip = f"10.0.{rng.randint(0, 9)}.{rng.randint(1, 254)}"
            lines.append(f"Failed password for {who} from {ip} port 50000 ssh2")
            lines.append(f"Accepted password for {who} from {ip} port 50000 ssh2")
        else:
            out.write(f"{stamp} host1 CRON[{pid}]: pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)\n")
            written += 1
            continue
        for line in lines:
            out.write(f"{stamp} host1 sshd[{pid}]: {line}\n")
        written += len(lines)

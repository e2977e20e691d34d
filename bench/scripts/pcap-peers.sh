#!/bin/sh
# Times reading one capture file with the agent and with its peers:
#   (a) vedetta-agent replay --pcap PCAP > /dev/null   (decode + the network detectors;
#       signals to /dev/null, its figures on stderr give the packet count);
#   (b) tcpdump -n -r PCAP > /dev/null                  (decode + one summary line a packet);
#   (c) tshark -n -r PCAP > /dev/null                   (full dissection + a summary line).
# Each is pinned to CPU 0 (taskset -c 0) and measured with /usr/bin/time -v: wall time, user
# and system CPU, peak RSS; packets/s is the agent's packet count over the wall time. The
# page cache is warm (the file is read once with cat first), so the times are CPU, not disk.
# Name resolution is off for the peers (-n); the agent does none.
# Needs GNU time, taskset, tcpdump and tshark. Run as root (tshark warns about it on
# stderr, which is discarded) or as the file's owner.
#
# Usage: pcap-peers.sh AGENT_BINARY PCAP
#        (the benchmark: pcap-mix.py /tmp/bench/mix.pcap --packets 5000000 --sources 1000000;
#         pcap-peers.sh target/release/vedetta-agent /tmp/bench/mix.pcap)
set -eu
[ $# -eq 2 ] && [ -x "$1" ] && [ -f "$2" ] || { echo "usage: $0 AGENT_BINARY PCAP" >&2; exit 2; }
agent=$1 pcap=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run NAME COMMAND...: runs the command pinned to CPU 0 under /usr/bin/time -v, its stdout
# to /dev/null and its stderr to $tmp/NAME.err; leaves its figures in $tmp/NAME.time.
run() {
    name=$1; shift
    if ! taskset -c 0 /usr/bin/time -v -o "$tmp/$name.time" "$@" > /dev/null 2> "$tmp/$name.err"; then
        echo "$0: $name failed:" >&2
        tail -n 5 "$tmp/$name.err" >&2
        exit 1
    fi
}

# line NAME: one line of figures for a run.
line() {
    awk -v name="$1" -v work="$packets" -v unit=packets/s \
        -f "$(dirname "$0")/time-v.awk" "$tmp/$1.time"
}

cat "$pcap" > /dev/null   # warm the page cache

run agent "$agent" replay --pcap "$pcap"
# The figures are the last line of the agent's stderr: {"file":{"packets":N,...},...}.
packets=$(sed -n 's/^.*"file":{"packets":\([0-9]*\).*$/\1/p' "$tmp/agent.err" | tail -n 1)
[ -n "$packets" ] || { echo "$0: no figures from the agent:" >&2; tail -n 5 "$tmp/agent.err" >&2; exit 1; }
run tcpdump tcpdump -n -r "$pcap"
run tshark tshark -n -r "$pcap"

echo "$pcap: $packets packets, $(stat -c %s "$pcap") bytes; $(nproc) CPUs, each run pinned to CPU 0"
echo "$(tcpdump --version 2>&1 | head -n 1); $(tshark --version 2>/dev/null | head -n 1)"
echo "agent figures: $(tail -n 1 "$tmp/agent.err")"
line agent
line tcpdump
line tshark

#!/bin/sh
# Measures the live capture's highest packet rate with less than 0.1% loss.
#
# Two network namespaces joined by a veth pair: in the first, `vedetta-agent run --dry-run`
# captures on its end of the pair (config: state_dir in a temp dir, [health] interval = "1h",
# [sources.network] interfaces = [that end]); from the second, tcpreplay sends a capture
# made by pcap-mix.py at a fixed rate (--pps). For each rate a fresh agent is started, and
# once its log says "network source started" the file is replayed; a second later the agent
# gets SIGTERM, and its last log line, "network source stopped packets=… malformed=…
# dropped=…", gives what it captured. Then
#     loss = (sent - captured + dropped) / sent
# where sent is tcpreplay's "Successful packets:", captured the frames the agent read and
# dropped those it read but could not queue for its detector (so the loss counts frames the
# kernel dropped before the agent read them as well as the agent's own drops).
#
# Each line also gives tcpreplay's achieved rate (it may fall short of the one asked for),
# the kernel's input-backlog drops over the run (/proc/net/softnet_stat, all CPUs: frames
# lost before any socket saw them, not the agent's doing), and the agent's CPU time
# (utime + stime of /proc/PID/stat, all threads) between "started" and SIGTERM, also as a
# share of one CPU over that time, and the signals the agent printed (agent_health aside).
#
# The frames' MAC addresses are not the veth's: the kernel hands them to packet sockets
# (the capture) and drops them before IP, so the agent's namespace never answers. IPv6 is
# off in both namespaces so that nothing else crosses the wire. The agent runs pinned to
# AGENT_CPUS and tcpreplay to REPLAY_CPUS (on a veth the receiving side's softirq work runs
# on the sender's CPU, so it is charged to tcpreplay's CPU). tcpreplay runs with
# --no-flow-stats (no per-flow table to keep).
#
# Needs root, iproute2, tcpreplay, taskset, capinfos (wireshark-common), python3.
#
# Usage: capture-rate.sh AGENT_BINARY [PCAP]
#   Without PCAP, one is made with pcap-mix.py (PACKETS packets, SOURCES external addresses).
#   Environment (defaults): RATES="50000 100000 200000 400000" PACKETS=2000000
#   SOURCES=100000 AGENT_CPUS=0 REPLAY_CPUS=1 (on a single-CPU machine, both 0).
#   (the benchmark: capture-rate.sh target/release/vedetta-agent)
set -eu
[ $# -ge 1 ] && [ $# -le 2 ] && [ -x "$1" ] || { echo "usage: $0 AGENT_BINARY [PCAP]" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 2; }
agent=$(realpath "$1")
rates=${RATES:-50000 100000 200000 400000}
packets=${PACKETS:-2000000}
sources=${SOURCES:-100000}
if [ "$(nproc)" -ge 2 ]; then
    agent_cpus=${AGENT_CPUS:-0} replay_cpus=${REPLAY_CPUS:-1}
else
    agent_cpus=${AGENT_CPUS:-0} replay_cpus=${REPLAY_CPUS:-0}
fi
here=$(dirname "$(realpath "$0")")
tick=$(getconf CLK_TCK)

tmp=$(mktemp -d)
tag=vcr$$                             # unique names: namespaces and veth ends (< 16 chars)
ns_in=${tag}in ns_out=${tag}out veth_in=${tag}i veth_out=${tag}o
agent_pid=
cleanup() {
    if [ -n "$agent_pid" ] && kill -0 "$agent_pid" 2>/dev/null; then
        kill -KILL "$agent_pid" 2>/dev/null || true
        wait "$agent_pid" 2>/dev/null || true
    fi
    ip netns del "$ns_in" 2>/dev/null || true
    ip netns del "$ns_out" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The capture to replay.
if [ $# -eq 2 ]; then
    pcap=$(realpath "$2")
else
    pcap=$tmp/mix.pcap
    python3 "$here/pcap-mix.py" "$pcap" --packets "$packets" --sources "$sources"
fi
count=$(capinfos -c -M "$pcap" | awk -F': *' '/Number of packets/ { print $2 }')
[ -n "$count" ] && [ "$count" -gt 0 ] || { echo "$0: cannot count the packets of $pcap" >&2; exit 1; }
cat "$pcap" > /dev/null   # warm the page cache: tcpreplay reads the file as it sends

# The wire.
for ns in "$ns_in" "$ns_out"; do
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -q -w net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
ip link add "$veth_in" netns "$ns_in" type veth peer name "$veth_out" netns "$ns_out"
ip -n "$ns_in" link set "$veth_in" up
ip -n "$ns_out" link set "$veth_out" up

cat > "$tmp/agent.toml" <<EOF
state_dir = "$tmp/state"
[health]
interval = "1h"
[sources.network]
interfaces = ["$veth_in"]
EOF

# cpu_ticks PID: the process's user + system CPU so far, in clock ticks (fields 14 and 15
# of /proc/PID/stat, counted after the command name, which may hold spaces).
cpu_ticks() {
    sed 's/^.*) //' "/proc/$1/stat" | awk '{ print $12 + $13 }'
}

# softnet_drops: frames dropped by the kernel's per-CPU input backlogs so far (the second
# column of /proc/net/softnet_stat, hexadecimal, one line a CPU).
softnet_drops() {
    total=0
    for hex in $(awk '{ print $2 }' /proc/net/softnet_stat); do
        total=$((total + 0x$hex))
    done
    echo "$total"
}

# log_field NAME FILE: NAME=value on the agent's "network source stopped" line.
log_field() {
    grep 'network source stopped' "$2" | tail -n 1 | sed -n "s/.*[[:space:]]$1=\([0-9]*\).*/\1/p"
}

echo "$pcap: $count packets; $(nproc) CPUs; agent on CPU $agent_cpus, tcpreplay on CPU $replay_cpus;" \
    "$(tcpreplay --version 2>&1 | head -n 1)"
printf '%9s %9s %10s %10s %9s %8s %9s %10s %6s %7s\n' \
    "rate/s" "sent" "achieved/s" "captured" "dropped" "loss%" "kern.drop" "agent CPU" "CPU%" "signals"
best=none
for rate in $rates; do
    log=$tmp/agent-$rate.log
    rm -rf "$tmp/state"
    RUST_LOG=info NO_COLOR=1 ip netns exec "$ns_in" taskset -c "$agent_cpus" \
        "$agent" run --dry-run --config "$tmp/agent.toml" > "$tmp/signals-$rate.ndjson" 2> "$log" &
    agent_pid=$!
    waited=0
    until grep -q 'network source started' "$log"; do
        if ! kill -0 "$agent_pid" 2>/dev/null || [ "$waited" -ge 300 ]; then
            echo "$0: the agent did not start capturing:" >&2
            tail -n 20 "$log" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    cpu_before=$(cpu_ticks "$agent_pid")
    drops_before=$(softnet_drops)
    began=$(date +%s.%N)

    limit=$((count / rate * 3 + 60))
    if ! ip netns exec "$ns_out" taskset -c "$replay_cpus" timeout "$limit" \
        tcpreplay --intf1="$veth_out" --pps="$rate" --no-flow-stats "$pcap" > "$tmp/replay-$rate" 2>&1; then
        echo "$0: tcpreplay failed at $rate/s:" >&2
        tail -n 20 "$tmp/replay-$rate" >&2
        exit 1
    fi
    sleep 1   # let the agent read what is still queued

    cpu_after=$(cpu_ticks "$agent_pid")
    drops_after=$(softnet_drops)
    ended=$(date +%s.%N)
    kill -TERM "$agent_pid"
    waited=0
    while kill -0 "$agent_pid" 2>/dev/null; do
        if [ "$waited" -ge 300 ]; then
            echo "$0: the agent did not stop within 30 s of SIGTERM" >&2
            exit 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    status=0
    wait "$agent_pid" || status=$?
    agent_pid=
    [ "$status" -eq 0 ] || { echo "$0: the agent exited with status $status:" >&2; tail -n 20 "$log" >&2; exit 1; }

    sent=$(sed -n 's/^[[:space:]]*Successful packets:[[:space:]]*\([0-9]*\).*/\1/p' "$tmp/replay-$rate" | tail -n 1)
    achieved=$(sed -n 's/^Rated:.*[[:space:],]\([0-9.]*\) pps.*/\1/p' "$tmp/replay-$rate" | tail -n 1)
    signals=$(grep -vc '"agent_health"' "$tmp/signals-$rate.ndjson" || true)
    captured=$(log_field packets "$log")
    dropped=$(log_field dropped "$log")
    [ -n "$sent" ] && [ -n "$captured" ] && [ -n "$dropped" ] || {
        echo "$0: missing figures at $rate/s; tcpreplay said:" >&2
        cat "$tmp/replay-$rate" >&2
        echo "and the agent's last log lines:" >&2
        tail -n 5 "$log" >&2
        exit 1
    }
    line=$(awk -v rate="$rate" -v sent="$sent" -v achieved="${achieved:-0}" -v captured="$captured" \
        -v dropped="$dropped" -v kdrops=$((drops_after - drops_before)) \
        -v ticks=$((cpu_after - cpu_before)) -v tick="$tick" -v began="$began" -v ended="$ended" \
        -v signals="$signals" 'BEGIN {
            loss = sent > 0 ? 100 * (sent - captured + dropped) / sent : 100
            cpu = ticks / tick
            printf "%9d %9d %10.0f %10d %9d %8.3f %9d %9.2fs %5.0f%% %7d\n", rate, sent, achieved,
                captured, dropped, loss, kdrops, cpu, 100 * cpu / (ended - began), signals
            exit !(loss < 0.1)
        }') && ok=yes || ok=no
    echo "$line"
    if [ "$ok" = yes ] && { [ "$best" = none ] || [ "$rate" -gt "$best" ]; }; then best=$rate; fi
done
echo "highest rate with loss < 0.1%: $best (of: $rates)"

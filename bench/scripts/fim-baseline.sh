#!/bin/sh
# The agent's baseline build of a tree made by fim-tree.py, beside its peers in one run
# (fim-peers.sh: aide --init and sha256sum, pinned to CPU 0), on a warm page cache:
#   - `vedetta-agent scan` building the baseline, one hashing thread, pinned to CPU 0;
#   - the same with two hashing threads, unpinned (both cores);
#   - a rescan with nothing changed (metadata compared, nothing hashed), pinned.
# Usage: fim-baseline.sh AGENT_BINARY DIR    (e.g. target/release/vedetta-agent /tmp/bench/fimtree)
set -eu
agent=$(realpath "$1"); dir=$(realpath "$2")
here=$(dirname "$(realpath "$0")")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sh "$here/fim-peers.sh" "$dir"
run() { # label, config, pin?
    if [ "$3" = pin ]; then set -- "$1" "$2" taskset -c 0; else set -- "$1" "$2"; fi
    label=$1; config=$2; shift 2
    /usr/bin/time -v -o "$work/time" "$@" "$agent" scan --config "$config" > /dev/null 2> "$work/out"
    printf '%-28s wall %6.2f s  peak RSS %6.1f MiB  %s\n' "$label" \
        "$(grep -o '"seconds":[0-9.]*' "$work/out" | cut -d: -f2)" \
        "$(awk '/Maximum resident/ {print $6/1024}' "$work/time")" \
        "$(grep -o '"entries":[0-9]*' "$work/out")"
}
printf 'state_dir = "s1"\n[sources.files]\npaths = ["%s"]\nhash_threads = 1\n' "$dir" > "$work/one.toml"
printf 'state_dir = "s2"\n[sources.files]\npaths = ["%s"]\nhash_threads = 2\n' "$dir" > "$work/two.toml"
run "agent baseline, 1 thread" "$work/one.toml" pin
run "agent baseline, 2 threads" "$work/two.toml" nopin
run "agent rescan, unchanged" "$work/one.toml" pin

#!/bin/sh
# Times the FIM benchmark's peers on a tree made by fim-tree.py, to set beside the agent's
# baseline build on the same tree:
#   (a) aide --init, with a minimal config (sha256 plus p+i+n+u+g+s+m+c) that selects only DIR
#       and writes its database to a temp dir;
#   (b) find DIR -type f -print0 | xargs -0 sha256sum > /dev/null.
# Both are pinned to CPU 0 and run on a warm page cache (the tree is read once with cat first).
# Wall time and peak RSS come from /usr/bin/time -v; for (b), which times the whole pipeline,
# the peak RSS is that of its largest process (a sha256sum, or xargs).
# Needs aide (apt-get install aide), GNU time and taskset. Run as root or as the tree's owner.
#
# Usage: fim-peers.sh DIR      (the benchmark: fim-peers.sh /tmp/bench/fimtree)
set -eu
[ $# -eq 1 ] && [ -d "$1" ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$(realpath "$1")
case $dir in *[[:space:]]*) echo "$0: DIR must not contain white space" >&2; exit 2 ;; esac
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# aide takes a selection line as a regex anchored at its start: escape DIR, and end it with
# (/|$) so that siblings such as DIR-old are not selected.
regex=$(printf '%s' "$dir" | sed 's/[][\\.*^$+?(){}|@]/\\&/g')
cat > "$tmp/aide.conf" <<EOF
database_out=file:$tmp/aide.db
database_attrs=E
report_url=stdout
Bench = p+i+n+u+g+s+m+c+sha256
$regex(/|\$) Bench
EOF

# run NAME COMMAND...: runs the command pinned to CPU 0 under /usr/bin/time -v, then prints
# one line: wall time, user and system CPU, peak RSS and throughput.
run() {
    name=$1; shift
    taskset -c 0 /usr/bin/time -v -o "$tmp/time" "$@" > "$tmp/out"
    awk -v name="$name" -v work="$bytes" -v scale=1e9 -v unit=GB/s \
        -f "$(dirname "$0")/time-v.awk" "$tmp/time"
}

find "$dir" -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%.0f %.0f\n", n, s }' > "$tmp/count"
read -r files bytes < "$tmp/count"
echo "tree $dir: $files files, $bytes bytes; $(aide --version 2>&1 | head -n 1); $(nproc) CPUs, pinned to CPU 0"
find "$dir" -type f -print0 | xargs -0 cat > /dev/null   # warm the page cache

run aide aide -c "$tmp/aide.conf" --init
grep -E 'Number of entries' "$tmp/out" | sed 's/^/          aide /'
run sha256sum sh -c 'find "$1" -type f -print0 | xargs -0 sha256sum > /dev/null' sh "$dir"

# Reads a `/usr/bin/time -v -o FILE` report and prints one line of figures: wall time,
# user and system CPU, peak RSS, and a throughput of WORK units (divided by SCALE) a
# second. Shared by the benchmark scripts that set a tool beside its peers.
#   awk -v name=NAME -v work=N -v scale=1e9 -v unit=GB/s -f time-v.awk FILE
BEGIN { FS = ": "; if (scale == "") scale = 1 }
/Elapsed \(wall clock\)/ { n = split($2, t, ":"); wall = 0
                           for (i = 1; i <= n; i++) wall = wall * 60 + t[i] }
/User time/              { user = $2 }
/System time/            { sys = $2 }
/Maximum resident/       { rss = $2 }
END {
    printf "%-9s wall %8.2f s  user %8.2f s  sys %6.2f s  peak RSS %8.1f MiB  %12.3f %s\n",
           name, wall, user, sys, rss / 1024, work / scale / (wall > 0 ? wall : 0.01), unit
}

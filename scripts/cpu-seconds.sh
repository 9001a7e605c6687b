#!/usr/bin/env bash
# CPU seconds (user + system) used by each command name over a window, and the
# share of idle CPU, read from /proc: how the two cores were shared during a
# benchmark (docs/loadtest/README.md). Usage: scripts/cpu-seconds.sh SECONDS
# Processes that start during the window (new PostgreSQL backends) are not
# counted.
set -euo pipefail
snap() {
  for p in /proc/[0-9]*; do
    read -r line < "$p/stat" 2>/dev/null || continue
    local comm=${line#*(}; comm=${comm%%)*}; local rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo "$comm ${12} ${13}"
  done | awk '{a[$1] += $2 + $3} END {for (k in a) print k, a[k]}'
}
idle() { awk '/^cpu /{print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8}' /proc/stat; }
s1=$(snap); i1=$(idle); sleep "${1:?seconds}"; s2=$(snap); i2=$(idle)
join <(echo "$s1" | sort) <(echo "$s2" | sort) |
  awk -v hz="$(getconf CLK_TCK)" '{d = ($3 - $2) / hz; if (d > 0.01) printf "%-20s %6.2f s\n", $1, d}' |
  sort -k2 -nr
echo "$i1 $i2" | awk '{printf "idle %.0f%% of all CPU\n", 100 * ($3 - $1) / ($4 - $2)}'

#!/usr/bin/env bash
# Measures the agent (the real binary) at rest: CPU share of one core and
# RSS over a measuring window, on its defaults and with the longest window
# the policy accepts (--period 1s --idle-after 24h: 86,400 datapoints).
# Usage: scripts/bench-rest.sh [SECONDS]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/connwatch" ./cmd/connwatch
tck=$(getconf CLK_TCK)

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

measure() {
  local name=$1; shift
  local state="$tmp/state-$name"
  "$tmp/connwatch" agent --state-dir "$state" --events "$tmp/events-$name" --metrics-addr "" --wall=false "$@" 2>"$tmp/log-$name" &
  local pid=$!
  sleep 5 # warm up: first scan, first periods
  local t0 c0 t1 c1
  t0=$(date +%s.%N); c0=$(ticks $pid)
  sleep "$secs"
  t1=$(date +%s.%N); c1=$(ticks $pid)
  local rss
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
  kill $pid; wait $pid 2>/dev/null || true
  awk -v n="$name" -v c="$((c1 - c0))" -v t0="$t0" -v t1="$t1" -v hz="$tck" -v rss="$rss" 'BEGIN {
    printf "%-28s CPU %5.2f %% of a core (%d ticks in %.1f s), RSS %.1f MB\n", n, 100 * c / hz / (t1 - t0), c, t1 - t0, rss / 1024 }'
}

measure "defaults"
measure "period 1s, idle-after 24h" --period 1s --idle-after 24h

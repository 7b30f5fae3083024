#!/usr/bin/env bash
# Measures what a local user's fork loop costs the agent (the real binary,
# dry-run): a real unprivileged user runs a copy of bash named
# "sshd-forker" that forks a subshell in a loop for SECONDS (default 10),
# and the agent's CPU (utime+stime from /proc/PID/stat) is compared with
# the same time at rest. Needs root (it creates the user cwhostile when
# missing, as the tests do). Usage: scripts/bench-hostile.sh [SECONDS]
# CONNWATCH_BIN=path measures another build; the agent's metrics (scan
# counts) are read on BENCH_METRICS_ADDR (default 127.0.0.1:19817). Other
# sshd activity on the machine (real connections) legitimately causes
# scans: the scan counts tell it apart.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
user=cwhostile
[ "$(id -u)" = 0 ] || { echo "bench-hostile: run as root" >&2; exit 2; }
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
work=$(mktemp -d)
chmod 755 "$work"
agent=
cleanup() {
  [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
maddr=${BENCH_METRICS_ADDR:-127.0.0.1:19817}
bin=${CONNWATCH_BIN:-}
if [ -z "$bin" ]; then
  bin=$work/connwatch
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin" ./cmd/connwatch
fi
mkdir "$work/u"
cp "$(command -v bash)" "$work/u/sshd-forker"
chown -R "$user" "$work/u"

"$bin" agent --state-dir "$work/state" --events "$work/events.jsonl" --sshd-log "" \
  --wall=false --metrics-addr "$maddr" --boot-grace 0 2>"$work/agent.log" &
agent=$!
for _ in $(seq 100); do
  grep -q "subscribed to process events" "$work/agent.log" && break
  sleep 0.1
done
if ! grep -q "subscribed to process events" "$work/agent.log"; then
  echo "bench-hostile: the agent did not subscribe to process events:" >&2
  cat "$work/agent.log" >&2
  exit 1
fi
sleep 2 # past the first scans

# utime+stime in clock ticks (comm is "connwatch": no spaces to skip).
cpu() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
hz=$(getconf CLK_TCK)

scans() {
  curl -fsS "http://$maddr/metrics" | awk '/^connwatch_source_scan_duration_seconds_count\{source="sshd"\}/ { print $2 }'
}

r0=$(cpu) rs0=$(scans)
sleep "$secs"
r1=$(cpu) rs1=$(scans)

l0=$(cpu) ls0=$(scans)
forks=$(runuser -u "$user" -- "$work/u/sshd-forker" -c \
  "n=0; end=\$((SECONDS + $secs)); while [ \$SECONDS -lt \$end ]; do (:); n=\$((n + 1)); done; echo \$n")
l1=$(cpu) ls1=$(scans)

pct() { awk -v t="$1" -v hz="$hz" -v s="$secs" 'BEGIN { printf "%.2f", t / hz / s * 100 }'; }
echo "agent at rest:              $(pct $((r1 - r0)))% of one core over ${secs}s, $((rs1 - rs0)) scans"
echo "agent during the fork loop: $(pct $((l1 - l0)))% of one core over ${secs}s, $((ls1 - ls0)) scans ($forks forks by $user's sshd-forker, $((forks / secs))/s)"

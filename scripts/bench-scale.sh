#!/usr/bin/env bash
# Measures connwatch on a machine with many other processes: first as the
# machine is, then with N extra idle processes (default 10,000 forked by perl,
# each ending by itself after an hour, and all killed on exit). Each time:
# the wall time of `connwatch status --json --scan`, reading /proc, and,
# while the agent runs, of `connwatch status --json` showing the agent's
# view (hyperfine when installed,
# else RUNS runs timed with date +%s%N), the classic recipe
# `ps -A x | grep sshd | grep "\[priv\]" | wc -l` for comparison, and the
# agent (the real binary, on its defaults as bench-rest.sh runs it) at
# rest over SECONDS: CPU share of one core (utime+stime from
# /proc/PID/stat) and VmRSS/VmHWM. Needs root (the agent subscribes to
# process events as root only).
# Usage: scripts/bench-scale.sh [N] [SECONDS]   (default 10000 30)
# CONNWATCH_BIN=path measures another build; RUNS (default 20) is the
# number of timed status runs without hyperfine.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
secs=${2:-30}
runs=${RUNS:-20}
[ "$(id -u)" = 0 ] || { echo "bench-scale: run as root" >&2; exit 2; }
tmp=$(mktemp -d)
spawner= agent=
cleanup() {
  # The sleepers are one session and process group of their own; wait
  # until they are gone (exiting 10,000 processes takes a while), so that
  # a run right after this one starts on a quiet machine.
  if [ -n "$spawner" ]; then
    kill -- "-$spawner" 2>/dev/null
    for _ in $(seq 600); do kill -0 -- "-$spawner" 2>/dev/null || break; sleep 0.2; done
  fi
  [ -n "$agent" ] && kill "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
bin=${CONNWATCH_BIN:-}
if [ -z "$bin" ]; then
  bin=$tmp/connwatch
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin" ./cmd/connwatch
fi
tck=$(getconf CLK_TCK)

nprocs() { local c=0 d; for d in /proc/[0-9]*; do c=$((c + 1)); done; echo "$c"; }

# spawn starts n sleeping processes in a new session: one perl forks
# them (a fork is far cheaper than a shell's fork and exec; still, about
# 7 ms each on a small VM), each sleeps an hour at most.
spawn() {
  setsid perl -e '$n = shift; for (1 .. $n) { my $p = fork; die "fork: $!" unless defined $p; if (!$p) { sleep 3600; exit 0 } } 1 while wait != -1' "$n" </dev/null >/dev/null 2>&1 &
  spawner=$!
  # Until perl has its n children (the kernel lists them for its thread).
  local i kids
  for i in $(seq 3000); do
    kids=$(wc -w <"/proc/$spawner/task/$spawner/children" 2>/dev/null || echo 0)
    [ "$kids" -ge "$n" ] && break
    sleep 0.2
  done
  sleep 1
}

# ms prints the median and the minimum of the durations (ns) on stdin, in ms.
ms() { sort -n | awk '{ v[NR] = $1 } END { printf "median %.1f ms, min %.1f ms (%d runs)", v[int((NR + 1) / 2)] / 1e6, v[1] / 1e6, NR }'; }

timed() {
  local i s e
  for i in $(seq "$runs"); do
    s=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    e=$(date +%s%N)
    echo $((e - s))
  done | ms
}

# status_wall times `connwatch status --json ARGS...`.
status_wall() {
  if command -v hyperfine >/dev/null; then
    hyperfine -N --warmup 3 --runs "$runs" --export-json "$tmp/h.json" "$bin status --json $*" >/dev/null 2>&1
    python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][0]; t=sorted(r["times"]); print("median %.1f ms, min %.1f ms (%d runs, hyperfine)" % (r["median"]*1e3, t[0]*1e3, len(t)))' "$tmp/h.json"
  else
    timed "$bin" status --json "$@"
  fi
}

ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }

agent_rest() {
  local state="$tmp/state-$1"
  "$bin" agent --state-dir "$state" --events "$tmp/events-$1" --metrics-addr "" --wall=false 2>"$tmp/log-$1" &
  agent=$!
  sleep 5 # warm up: first scan, first periods
  local t0 c0 t1 c1 rss hwm
  t0=$(date +%s.%N); c0=$(ticks $agent)
  sleep "$secs"
  t1=$(date +%s.%N); c1=$(ticks $agent)
  rss=$(awk '/^VmRSS/ {print $2}' "/proc/$agent/status")
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$agent/status")
  grep -q "subscribed to process events" "$tmp/log-$1" || echo "  (the agent had no process events: see its log)"
  echo "  connwatch status --json with this agent running (its view): $(status_wall --state-dir "$state")"
  "$bin" status --json --state-dir "$state" | grep -q '"source": *"agent"' || echo "  (status did not use the agent's view)"
  kill "$agent"; wait "$agent" 2>/dev/null || true
  agent=
  awk -v c="$((c1 - c0))" -v t0="$t0" -v t1="$t1" -v hz="$tck" -v rss="$rss" -v hwm="$hwm" 'BEGIN {
    printf "  agent at rest:             CPU %.2f %% of a core (%d ticks in %.1f s), VmRSS %.1f MiB, VmHWM %.1f MiB\n",
      100 * c / hz / (t1 - t0), c, t1 - t0, rss / 1024, hwm / 1024 }'
}

measure() {
  echo "$1: $(nprocs) processes"
  echo "  connwatch status --json --scan (reads /proc): $(status_wall --scan)"
  echo "  ps | grep | grep | wc -l:  $(timed bash -c 'ps -A x | grep sshd | grep "\[priv\]" | wc -l')"
  agent_rest "$2"
}

measure "as the machine is" base
spawn
measure "with $n extra sleeping processes" loaded

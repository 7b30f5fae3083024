#!/usr/bin/env bash
# Measures the agent (the real binary) against a real sshd; needs root:
# connect and disconnect event latency, misses over N sessions of 100 ms,
# RSS and CPU at rest. Usage: scripts/bench-agent.sh [N]   (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(mktemp -d)/connwatch
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin" ./cmd/connwatch
CONNWATCH_BIN=$bin CONNWATCH_BENCH_SESSIONS=${1:-200} \
  go test -count=1 -timeout 20m -run '^TestAgentBench$' -v ./cmd/connwatch/ | grep -Ev '^(=== RUN|--- |PASS|ok )'

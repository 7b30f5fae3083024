#!/usr/bin/env bash
# Measures the agent end to end against real VPN peers with its default
# poll intervals; needs root, openvpn, wireguard-go and wg: misses over N
# connections per kind and the delay from a connection being up (or
# ending) to its event. Usage: scripts/bench-vpn.sh [N]   (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
CONNWATCH_BENCH_VPN=${1:-10} \
  go test -count=1 -timeout 30m -run '^TestAgentVPNBench$' -v ./cmd/connwatch/ | grep -Ev '^(=== RUN|--- |PASS|ok )|netns|link cw'

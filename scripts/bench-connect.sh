#!/usr/bin/env bash
# Measures connwatch connect against a real sshd on loopback and the
# loopback AWS test server (the real AWS SDK, no AWS account):
#   - first byte: time from nothing to sshd's banner, a direct TCP connect
#     against starting `connwatch connect` (process start, one
#     DescribeInstances, dial, splice);
#   - throughput: 64 MiB through the real ssh to `cat > /dev/null`, direct
#     and with connect as the ProxyCommand;
#   - after listen: the instance runs but its SSH port opens later; the
#     time from the port accepting to the first byte through connect;
#   - the splice alone (internal/connect benchmarks): both directions,
#     one-byte echo, new connection to first byte, against a direct
#     loopback connection.
# Usage: scripts/bench-connect.sh [COUNT]   (default 3). Needs root (sshd).
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-3}
[ "$(id -u)" = 0 ] || { echo "bench-connect: run as root (sshd)" >&2; exit 2; }
echo "== connwatch connect with the real ssh and sshd (cmd/connwatch)"
go test ./cmd/connwatch -run '^$' -bench 'BenchmarkConnect' -benchtime 10x -count "$count"
echo "== the splice alone (internal/connect)"
go test ./internal/connect -run '^$' -bench . -benchtime 1s -count "$count"

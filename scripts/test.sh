#!/usr/bin/env bash
# Runs every connwatch test. As root it first installs the test
# dependencies; integration tests that need root or a missing binary skip
# with a reason, except under CI=true where they fail instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  scripts/install-test-deps.sh
fi
go vet ./...
go test -count=1 -timeout 12m ./... "$@"

#!/usr/bin/env bash
# Builds kamal-proxy from the Go module proxy (scripts/go-build.sh) and prints the binary's path. Users pull
# basecamp/kamal-proxy from Docker Hub as usual; the test bench, which reaches no image registry, seeds an image of
# this binary under that name instead (tests/bench.py).
set -euo pipefail
exec "$(dirname "$0")/go-build.sh" kamal-proxy github.com/basecamp/kamal-proxy "${KAMAL_PROXY_VERSION:-0.9.2}" \
  github.com/basecamp/kamal-proxy/cmd/kamal-proxy

#!/usr/bin/env bash
# Builds toxiproxy's server from the Go module proxy (scripts/go-build.sh) and prints the binary's path. The test
# bench runs it as the fault proxy between the deployer and each host's sshd (latency, cuts), driven over its HTTP
# API by tests/faults.py.
set -euo pipefail
exec "$(dirname "$0")/go-build.sh" toxiproxy-server github.com/Shopify/toxiproxy/v2 "${TOXIPROXY_VERSION:-2.12.0}" \
  github.com/Shopify/toxiproxy/v2/cmd/server

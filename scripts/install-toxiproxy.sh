#!/usr/bin/env bash
# Builds toxiproxy's server from the Go module proxy into a cache outside the repository and prints the binary's
# path. The test bench runs it as the fault proxy between the deployer and each host's sshd (latency, cuts), driven
# over its HTTP API by tests/faults.py. Idempotent: a second run only prints the path.
set -euo pipefail
TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-2.12.0}"
CACHE_ROOT="${PULUMI_KAMAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-kamal}"
out="$CACHE_ROOT/toxiproxy-v$TOXIPROXY_VERSION/toxiproxy-server"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "install-toxiproxy: needs a Go toolchain (https://go.dev/dl)" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"
printf 'module pulumikamal.local/build/toxiproxy\ngo 1.24\nrequire github.com/Shopify/toxiproxy/v2 v%s\n' \
  "$TOXIPROXY_VERSION" > "$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/Shopify/toxiproxy/v2/cmd/server"\n' > "$work/tools.go"
echo "install-toxiproxy: building toxiproxy-server v$TOXIPROXY_VERSION" >&2
( cd "$work" && GOFLAGS=-mod=mod go mod tidy >&2 \
  && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp" \
     github.com/Shopify/toxiproxy/v2/cmd/server )
mv "$out.tmp" "$out"
echo "$out"

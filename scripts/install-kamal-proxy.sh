#!/usr/bin/env bash
# Builds kamal-proxy from the Go module proxy into a cache outside the repository and prints the binary's path.
# Users pull basecamp/kamal-proxy from Docker Hub as usual; the test bench, which reaches no image registry, seeds
# an image of this binary under that name instead (tests/bench.py). Idempotent.
set -euo pipefail
KAMAL_PROXY_VERSION="${KAMAL_PROXY_VERSION:-0.9.2}"
CACHE_ROOT="${PULUMI_KAMAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-kamal}"
out="$CACHE_ROOT/kamal-proxy-v$KAMAL_PROXY_VERSION/kamal-proxy"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "install-kamal-proxy: needs a Go toolchain (https://go.dev/dl)" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"
printf 'module pulumikamal.local/build/kamal-proxy\ngo 1.24\nrequire github.com/basecamp/kamal-proxy v%s\n' \
  "$KAMAL_PROXY_VERSION" > "$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/basecamp/kamal-proxy/cmd/kamal-proxy"\n' > "$work/tools.go"
echo "install-kamal-proxy: building kamal-proxy v$KAMAL_PROXY_VERSION" >&2
( cd "$work" && GOFLAGS=-mod=mod go mod tidy >&2 \
  && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp" \
     github.com/basecamp/kamal-proxy/cmd/kamal-proxy )
mv "$out.tmp" "$out"
echo "$out"

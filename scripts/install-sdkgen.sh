#!/usr/bin/env bash
# Builds scripts/sdkgen (Pulumi's Python SDK generator, from the pulumi/pkg module at the CLI's version, fetched from
# the Go module proxy) into a cache outside the repository, and prints the binary's path. Idempotent: a second run
# only prints the path; a change to main.go builds again.
set -euo pipefail
PULUMI_VERSION="${PULUMI_VERSION:-3.274.1}"
CACHE_ROOT="${PULUMI_KAMAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-kamal}"
src="$(cd "$(dirname "$0")/sdkgen" && pwd)/main.go"
out="$CACHE_ROOT/sdkgen-v$PULUMI_VERSION-$(sha256sum "$src" | cut -c1-12)/sdkgen"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "sdkgen: building it needs a Go toolchain (https://go.dev/dl)" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"
cp "$src" "$work/"
# The pulumi modules' own module-to-module replace, as scripts/install-pulumi.sh copies it.
cat > "$work/go.mod" <<MOD
module pulumikamal.local/build/sdkgen
go 1.24
require github.com/pulumi/pulumi/pkg/v3 v$PULUMI_VERSION
require github.com/pulumi/pulumi/sdk/v3 v$PULUMI_VERSION
replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e
MOD
echo "sdkgen: building Pulumi's Python SDK generator (v$PULUMI_VERSION) - the first time this takes a few minutes" >&2
( cd "$work" && GOFLAGS=-mod=mod go mod tidy >&2 \
  && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp" . )
mv "$out.tmp" "$out"
echo "$out"

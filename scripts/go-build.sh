#!/usr/bin/env bash
# go-build.sh NAME MODULE VERSION PACKAGE: builds one main package of a Go module, fetched from the Go module proxy
# through a throwaway wrapper module, into a cache outside the repository, and prints the binary's path.
# Idempotent: a second run only prints the path.
set -euo pipefail
name="$1" module="$2" version="$3" package="$4"
CACHE_ROOT="${PULUMI_KAMAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-kamal}"
out="$CACHE_ROOT/$name-v$version/$name"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "$name: building it needs a Go toolchain (https://go.dev/dl)" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$(dirname "$out")"
printf 'module pulumikamal.local/build/%s\ngo 1.24\nrequire %s v%s\n' "$name" "$module" "$version" > "$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$package" > "$work/tools.go"
echo "$name: building v$version from $module" >&2
( cd "$work" && GOFLAGS=-mod=mod go mod tidy >&2 \
  && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$out.tmp" "$package" )
mv "$out.tmp" "$out"
echo "$out"

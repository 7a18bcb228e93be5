#!/usr/bin/env bash
# Builds a current Docker Engine daemon (`dockerd` and its `docker-proxy`) from the Go module proxy into a cache
# outside the repository and prints the path of `dockerd`. Only the test bench uses it, to run its hosts on the
# engine users install today beside Debian's 20.10 (tests/bench.py, SHIPYARD_BENCH_DOCKERD=current); containerd,
# runc and iptables are Debian's. Idempotent: a second run takes well under a second.
set -euo pipefail
# The engine's source is the github.com/moby/moby/v2 module; its tags are v2.0.0-beta.N, one per engine release.
MOBY_VERSION="${MOBY_VERSION:-v2.0.0-beta.24}"
MODULE=github.com/moby/moby/v2
CACHE_ROOT="${PULUMI_KAMAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-kamal}"
dir="$CACHE_ROOT/dockerd-$MOBY_VERSION"
if [ -x "$dir/dockerd" ] && [ -x "$dir/docker-proxy" ]; then echo "$dir/dockerd"; exit 0; fi
command -v go >/dev/null 2>&1 || { echo "install-dockerd: needs a Go toolchain (https://go.dev/dl)" >&2; exit 1; }
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$dir"
printf 'module pulumikamal.local/build/dockerd\ngo 1.26\nrequire %s %s\n' "$MODULE" "$MOBY_VERSION" > "$work/go.mod"
printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/docker-proxy"\n\t_ "%s/cmd/dockerd"\n)\n' \
  "$MODULE" "$MODULE" > "$work/tools.go"
echo "install-dockerd: building dockerd from $MODULE $MOBY_VERSION - the first time this takes a few minutes" >&2
( cd "$work" && GOFLAGS=-mod=mod go mod tidy >&2 )
src="$(cd "$work" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' "$MODULE")"
built="$(cd "$work" && GOFLAGS=-mod=mod go list -m -f '{{.Time.Format "2006-01-02T15:04:05Z"}}' "$MODULE")"
# The engine version a tag was released as is the `next` release its releases/versions.yaml names.
engine="$(sed -n 's/^ *next: *"\{0,1\}\([0-9][^"]*\)"\{0,1\} *$/\1/p' "$src/releases/versions.yaml" 2>/dev/null || true)"
pkg="$MODULE/dockerversion"
# What moby's static build sets (hack/make.sh): its tags and the version stamps; without cgo, so the journald log
# driver and the btrfs and disk-quota code are left out, which the bench does not use.
( cd "$work" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags "netgo osusergo static_build nri_no_wasm" \
    -ldflags "-s -w -X $pkg.Version=${engine:-$MOBY_VERSION} -X $pkg.GitCommit=$MOBY_VERSION -X $pkg.BuildTime=$built" \
    -o "$dir/dockerd.tmp" "$MODULE/cmd/dockerd" \
  && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -tags "netgo osusergo static_build" -ldflags "-s -w" \
    -o "$dir/docker-proxy" "$MODULE/cmd/docker-proxy" )
mv "$dir/dockerd.tmp" "$dir/dockerd"
echo "install-dockerd: built $("$dir/dockerd" --version)" >&2
echo "$dir/dockerd"

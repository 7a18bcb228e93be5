#!/usr/bin/env bash
# Installs the Pulumi CLI, its Python language host and the dynamic-provider launcher into a cache outside the
# repository, and prints the directory to put on PATH.
#
# Order of preference:
#   1. a `pulumi` already on PATH that has the Python language host beside it (the usual user install);
#   2. the cache from an earlier run of this script;
#   3. the official installer (get.pulumi.com), when it can be reached;
#   4. a build from the Go module proxy (for machines that reach package registries only).
# Idempotent: a second run takes well under a second.
set -euo pipefail

PULUMI_VERSION="${PULUMI_VERSION:-3.274.1}"
# The Python language host lived inside the sdk/v3 module until it got a module of its own; the newest sdk/v3
# version that still carries it is the one the Go build uses (the CLI itself is built at PULUMI_VERSION).
LANGHOST_SDK_VERSION="${LANGHOST_SDK_VERSION:-3.68.0}"
CACHE_ROOT="${PULUMI_KAMAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pulumi-kamal}"
BIN="$CACHE_ROOT/pulumi-v$PULUMI_VERSION/bin"

log() { echo "install-pulumi: $*" >&2; }

complete() {  # complete DIR: a usable CLI + language host + provider launcher in DIR
  [ -x "$1/pulumi" ] && [ -x "$1/pulumi-language-python" ] && [ -x "$1/pulumi-resource-pulumi-python" ] \
    && [ -x "$1/pulumi-language-python-exec" ] && "$1/pulumi" version >/dev/null 2>&1
}

if [ -z "${PULUMI_FORCE_BUILD:-}" ] && command -v pulumi >/dev/null 2>&1; then
  existing="$(dirname "$(command -v pulumi)")"
  if complete "$existing"; then echo "$existing"; exit 0; fi
fi
if complete "$BIN"; then echo "$BIN"; exit 0; fi

mkdir -p "$BIN"

if [ -z "${PULUMI_FORCE_BUILD:-}" ] && command -v curl >/dev/null 2>&1 \
   && curl -fsSL --max-time 10 -o "$CACHE_ROOT/get-pulumi.sh" https://get.pulumi.com 2>/dev/null; then
  log "installing Pulumi v$PULUMI_VERSION with the official installer"
  if sh "$CACHE_ROOT/get-pulumi.sh" --version "$PULUMI_VERSION" --install-root "$CACHE_ROOT/official" --no-edit-path >&2 \
     && cp -a "$CACHE_ROOT/official/bin/." "$BIN/" && complete "$BIN"; then
    echo "$BIN"; exit 0
  fi
  log "the official installer failed; building from the Go module proxy instead"
fi

command -v go >/dev/null 2>&1 || { log "neither the official installer nor a Go toolchain is available: install Go (https://go.dev/dl) or Pulumi (https://www.pulumi.com/docs/install/)"; exit 1; }

VERSION_PKG=github.com/pulumi/pulumi/sdk/v3/go/common/version
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT

# Builds one main package of a pulumi module through a throwaway wrapper module: the pulumi modules carry
# relative `replace` directives, so `go install pkg@version` refuses them; requiring them from a wrapper works
# because replace directives of dependencies are ignored. Their module-to-module replaces are copied here.
build() {  # build NAME PACKAGE VERSION_STAMP REQUIRE...
  local name="$1" pkg="$2" stamp="$3"; shift 3
  local dir="$work/$name"; mkdir -p "$dir"
  {
    echo "module pulumikamal.local/build/$name"
    echo "go 1.24"
    for req in "$@"; do echo "require $req"; done
    echo "replace github.com/atotto/clipboard => github.com/tgummerer/clipboard v0.0.0-20241001131231-d02d263e614e"
  } > "$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" > "$dir/tools.go"
  log "building $name ($pkg) - the first time this takes several minutes"
  ( cd "$dir" && GOFLAGS=-mod=mod go mod tidy >&2 \
    && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w -X $VERSION_PKG.Version=v$stamp" -o "$BIN/$name" "$pkg" )
}

build pulumi github.com/pulumi/pulumi/pkg/v3/cmd/pulumi "$PULUMI_VERSION" \
  "github.com/pulumi/pulumi/pkg/v3 v$PULUMI_VERSION" "github.com/pulumi/pulumi/sdk/v3 v$PULUMI_VERSION"
build pulumi-language-python github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python "$LANGHOST_SDK_VERSION" \
  "github.com/pulumi/pulumi/sdk/v3 v$LANGHOST_SDK_VERSION"

# The small launcher scripts ship in sdk/v3's python folders.
sdk_dir="$(cd "$work/pulumi" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
install -m 0755 "$sdk_dir/python/cmd/pulumi-language-python-exec" "$BIN/"
install -m 0755 "$sdk_dir/python/dist/pulumi-resource-pulumi-python" "$BIN/"

complete "$BIN" || { log "the build finished but $BIN is incomplete"; exit 1; }
log "installed $("$BIN/pulumi" version) into $BIN"
echo "$BIN"

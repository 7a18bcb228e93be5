#!/usr/bin/env bash
# `make sdk` (scripts/gen-sdk.sh [OUT]): generates the `shipyard` plugin's Python SDK (the package pulumi_shipyard)
# from its schema into OUT (default: sdk/python), with Pulumi's own Python generator (scripts/sdkgen). Run it after a
# change to the schema (components/plugin/schema.py); the unit tier fails while the committed SDK is out of date.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-sdk/python}"
gen="$(scripts/install-sdkgen.sh)"
schema="$(mktemp)"; trap 'rm -f "$schema"' EXIT
.venv/bin/python -c "from components.plugin.schema import as_json; print(as_json())" > "$schema"
rm -rf "$out/pulumi_shipyard"
"$gen" "$schema" "$out"
cp "$out/pulumi_shipyard/README.md" "$out/README.md"  # where its pyproject.toml looks for it

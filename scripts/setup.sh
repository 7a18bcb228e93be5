#!/usr/bin/env bash
# `make setup`: installs what the project and its test bench need, idempotently; a second run takes seconds.
# Run as root on Debian (the bench makes network namespaces and runs dockerd and sshd).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\033[1m== %s\033[0m\n' "$*"; }

# 1. Debian packages: Docker Engine, sshd, the registry, busybox for the seeded base image, htpasswd (bcrypt) for
#    the registry that wants a password, PostgreSQL (the team-state backend the tests start as a private cluster),
#    Ruby (a Kamal config's ERB beyond the ENV forms is Ruby; Kamal's users have it).
packages=(docker.io openssh-server openssh-client docker-registry busybox-static apache2-utils iproute2 util-linux git
          curl procps postgresql ruby)
missing=()
for p in "${packages[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p"); done
if ((${#missing[@]})); then
  step "installing Debian packages: ${missing[*]}"
  [ "$(id -u)" = 0 ] || { echo "setup: installing packages needs root (apt-get)" >&2; exit 1; }
  apt-get update -qq
  # policy-rc.d: never start services from package scripts; the bench starts its own daemons. A policy the
  # machine already has is set aside and put back afterwards (also on failure); only ours is removed.
  policy=/usr/sbin/policy-rc.d kept=""
  if [ -e "$policy" ] || [ -L "$policy" ]; then kept="$(mktemp /usr/sbin/.policy-rc.d.XXXXXX)"; mv "$policy" "$kept"; fi
  restore_policy() { rm -f "$policy"; if [ -n "$kept" ]; then mv "$kept" "$policy"; fi; }
  trap restore_policy EXIT
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  restore_policy; trap - EXIT
fi

# 2. The Python environment.
if [ ! -x .venv/bin/python ]; then step "creating .venv"; python3 -m venv .venv; fi
stamp=".venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  step "installing Python requirements"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi

# The `shipyard` command (pyproject.toml), editable: it always runs this checkout's code.
if [ ! -x .venv/bin/shipyard ]; then
  step "installing the shipyard command"
  .venv/bin/python -m pip install -q --no-deps -e .
fi

# Its modules' bytecode, as a regular install compiles a package's: every program and plugin start then reads it
# instead of compiling the sources (about 50 ms each), also where PYTHONDONTWRITEBYTECODE is set. Stale files only.
.venv/bin/python -m compileall -q components >/dev/null

# 3. The Pulumi CLI, linked into .venv/bin so that one PATH entry serves the CLI, tests and the demo.
bin="$(scripts/install-pulumi.sh)"
for f in pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python; do
  [ "$bin/$f" -ef ".venv/bin/$f" ] || ln -sf "$bin/$f" ".venv/bin/$f"
done
# Pulumi YAML's language host: YAML programs use the shipyard plugin too (a Go build, cached; about 1.5 min once).
yaml_host="$(scripts/go-build.sh pulumi-language-yaml github.com/pulumi/pulumi-yaml 1.25.0 \
  github.com/pulumi/pulumi-yaml/cmd/pulumi-language-yaml)"
[ "$yaml_host" -ef .venv/bin/pulumi-language-yaml ] || ln -sf "$yaml_host" .venv/bin/pulumi-language-yaml
# 4. kamal-proxy, for the bench's seeded proxy image (users get basecamp/kamal-proxy from Docker Hub).
kamal_proxy="$(scripts/install-kamal-proxy.sh)"
[ "$kamal_proxy" -ef .venv/bin/kamal-proxy ] || ln -sf "$kamal_proxy" .venv/bin/kamal-proxy
# 5. A current Docker Engine daemon, for running the bench on it as well as on Debian's (SHIPYARD_BENCH_DOCKERD=current).
#    Linked under its own name: Debian's dockerd stays the bench's default.
dockerd_current="$(scripts/install-dockerd.sh)"
[ "$dockerd_current" -ef .venv/bin/dockerd-current ] || ln -sf "$dockerd_current" .venv/bin/dockerd-current

# 6. toxiproxy, the bench's fault proxy between the deployer and each host's sshd (latency, cut connections).
toxiproxy="$(scripts/install-toxiproxy.sh)"
[ "$toxiproxy" -ef .venv/bin/toxiproxy-server ] || ln -sf "$toxiproxy" .venv/bin/toxiproxy-server

# 7. The real Kamal, the tests' peer and oracle (and the benchmark's), in a virtualenv of its own.
scripts/install-kamal.sh >/dev/null

step "ready: Pulumi CLI $(.venv/bin/pulumi version), Python packages: $(.venv/bin/python -c 'from importlib.metadata import version as v; print(*(f"{p} {v(p)}" for p in ("pulumi", "docker", "paramiko", "pydantic")), sep=", ")')"

#!/usr/bin/env bash
# `make demo`: deploys examples/hello as staging and production - the same commit, one host - with the real
# `pulumi up`, then shows what each destination answers. `make demo-down` destroys both, removes the two stacks
# (their files in stacks/ stay) and stops the bench. A stack file changed since the checkout is yours now (the README
# has you write your stacks over these): neither deploys nor destroys it.
set -euo pipefail
cd "$(dirname "$0")/.."

for stack in staging production; do
  file="stacks/Pulumi.$stack.yaml"
  if [ -n "$(git status --porcelain -- "$file" 2>/dev/null)" ]; then
    what=deployed also=""
    [ "${1:-}" = down ] && what=destroyed also="; \`.venv/bin/python -m tests.bench down\` stops the bench alone"
    echo "make demo${1:+-$1}: $file is no longer the demo's (changed since the checkout), so its stack is yours:" \
         "nothing was $what. \`git checkout $file\` brings the demo's back$also." >&2
    exit 1
  fi
done

if [ "${1:-}" = down ]; then
  for stack in staging production; do
    if pulumi stack select "$stack" 2>/dev/null; then
      pulumi destroy --yes --stack "$stack" && pulumi stack rm --yes --preserve-config --stack "$stack" || true
    fi
  done
  python -m tests.bench down
  exit 0
fi

python -m tests.bench up >/dev/null
mkdir -p .pulumi-state
for stack in staging production; do
  pulumi stack select --create "$stack" >/dev/null
  echo "== pulumi up --stack $stack"
  pulumi up --yes --skip-preview --stack "$stack" | tail -n 4
done
echo
for stack in staging production; do
  for url in $(pulumi stack output urls --json --stack "$stack" | python -c 'import json,sys; print(*json.load(sys.stdin))'); do
    printf '%-10s %s -> %s\n' "$stack" "$url" "$(curl -fsS --max-time 5 "$url/" | tr '\n' ' ')"
  done
  printf '%-10s image %s (%s)\n' "$stack" "$(pulumi stack output tag --stack "$stack")" \
    "$(pulumi stack output image_id --stack "$stack" | cut -c1-19)"
done

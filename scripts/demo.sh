#!/usr/bin/env bash
# `make demo`: deploys examples/hello as staging and production - the same commit, one host - with the real
# `pulumi up`, then shows what each destination answers. `make demo-down` destroys both, removes the two stacks
# (their files in stacks/ stay) and stops the bench - unless something else runs on it (a program of yours deployed
# there): then the bench stays up, and it says what runs where. A stack file changed since the checkout is yours now (the README
# has you write your stacks over these), and so is a stack that runs another service than the demo's (deployed from
# such a file, which `git checkout` has since put back): neither is deployed nor destroyed.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE="${1:-}"
refuse() {  # what is the user's, and how to get the demo back or let it go
  local what=deployed also=""
  [ "$MODE" = down ] && what=destroyed also="; \`.venv/bin/python -m tests.bench down\` stops the bench alone"
  echo "make demo${MODE:+-$MODE}: $1: nothing was $what. $2$also." >&2
  exit 1
}

# A Pulumi command's last lines (what changed, how long; not a destroy's advice to remove the stack, which demo-down
# does next), or all it said if it failed.
summed() {
  local out
  if out=$("$@" 2>&1); then
    sed '/^The resources in the stack have been deleted/,$d' <<< "$out" | sed '${/^$/d}' | tail -n 4
  else
    echo "$out" >&2
    return 1
  fi
}

# a stack that runs another service first: whatever its file says now, the demo cannot have it
theirs=() said=()
for stack in staging production; do
  demo=$(git show "HEAD:stacks/Pulumi.$stack.yaml" 2>/dev/null || cat "stacks/Pulumi.$stack.yaml")
  demo=$(sed -n 's/^ *shipyard:service: *//p' <<< "$demo")
  running=$(pulumi stack output service --stack "$stack" 2>/dev/null || true)
  if [ -n "$running" ] && [ "$running" != "$demo" ]; then
    theirs+=("$stack") said+=("stack $stack runs service $running, not the demo's $demo")
  fi
done
case ${#theirs[@]} in
  0) ;;
  1) refuse "${said[0]}, so it is yours" "When you are done with it, \`pulumi destroy --stack ${theirs[0]}\` and \
\`pulumi stack rm --preserve-config ${theirs[0]}\` remove it (and keep its file)" ;;
  *) refuse "${said[0]}, and ${said[1]}, so they are yours" "When you are done with them, \`pulumi destroy --stack \
STACK\` and \`pulumi stack rm --preserve-config STACK\` remove each (and keep its file)" ;;
esac
read -ra changed <<< "$(git status --porcelain -- stacks/Pulumi.staging.yaml stacks/Pulumi.production.yaml \
                         2>/dev/null | awk '{print $NF}' | tr '\n' ' ')"
if [ "$MODE" = down ] && [ ${#changed[@]} -gt 0 ]; then
  # a file of yours whose stack is gone (destroyed and removed) leaves nothing of yours on the bench: the demo's
  # other stack, and the bench, can go
  stacks=$(pulumi stack ls --json 2>/dev/null || true)
  kept=()
  for file in "${changed[@]}"; do
    stack=${file#stacks/Pulumi.}
    grep -q "\"name\": *\"${stack%.yaml}\"" <<< "$stacks" && kept+=("$file")
  done
  changed=(${kept[@]+"${kept[@]}"})
fi
keep="keep a copy of yours first: it holds your config and secrets"
case ${#changed[@]} in
  0) ;;
  1) refuse "${changed[0]} is no longer the demo's (changed since the checkout), so its stack is yours" \
            "\`git checkout ${changed[0]}\` brings the demo's back ($keep)" ;;
  *) refuse "${changed[0]} and ${changed[1]} are no longer the demo's (changed since the checkout), so their stacks \
are yours" "\`git checkout stacks/\` brings the demo's back ($keep)" ;;
esac

if [ "$MODE" = down ]; then
  for stack in staging production; do
    if pulumi stack select "$stack" 2>/dev/null; then
      echo "== pulumi destroy --stack $stack"
      summed pulumi destroy --yes --skip-preview --stack "$stack" && \
        pulumi stack rm --yes --preserve-config --stack "$stack" || true
    fi
  done
  # what else runs on the bench (a program of yours deployed there, as the README shows) would go with it
  others=$(python -m tests.bench in-use | paste -sd ';' | sed 's/;/; /g')
  if [ -n "$others" ]; then
    echo "make demo-down: the bench's hosts still run $others - the bench stays up. Destroy that first (\`pulumi \
destroy\` of its stack), or \`.venv/bin/python -m tests.bench down\` stops the bench and all that runs on it." >&2
    exit 1
  fi
  python -m tests.bench down
  echo "== the demo's bench is stopped"
  exit 0
fi

python -m tests.bench up >/dev/null
mkdir -p .pulumi-state
for stack in staging production; do
  out=$(pulumi stack select --create "$stack" 2>&1) || { echo "$out" >&2; exit 1; }
  echo "== pulumi up --stack $stack"
  summed pulumi up --yes --skip-preview --stack "$stack"
done
echo
for stack in staging production; do
  for url in $(pulumi stack output urls --json --stack "$stack" | python -c 'import json,sys; print(*json.load(sys.stdin))'); do
    printf '%-10s %s -> %s\n' "$stack" "$url" "$(curl -fsS --max-time 5 "$url/" | paste -sd ' ')"
  done
  printf '%-10s image %s (%s)\n' "$stack" "$(pulumi stack output tag --stack "$stack")" \
    "$(pulumi stack output image_id --stack "$stack" | cut -c1-19)"
done

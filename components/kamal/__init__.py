"""Kamal's `config/deploy.yml` as a stack's config: read it the way Kamal 2.11 does, map it to `shipyard:*` keys.

A stack sets `shipyard:kamal: {config: ../myapp/config/deploy.yml}`; `stack_config` reads that file, deep-merges the
destination's overlay `deploy.<destination>.yml` over it (ActiveSupport `deep_merge`: hashes merge key by key,
everything else - lists included - is replaced), reads `.kamal/secrets-common` and `.kamal/secrets[.<destination>]`
(dotenv, later files win), maps every key to what shipyard does, and deep-merges the stack's own keys over the result.

Every key Kamal documents is either mapped or refused by its path: one `ConfigError` lists every refused key, one
per line. The parts: `erb` (ERB and YAML), `secrets` (dotenv and `$(...)`), `mapping*` (Kamal's keys to shipyard's,
by area), `merge` (Kamal's merge rule).

No pulumi, docker or paramiko here: files in, a plain dict out.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from .. import config
from ..config import Deploy
from ..errors import ConfigError
from .erb import read_yaml, render_erb
from .mapping import KAMAL_VERSION, Mapper
from .merge import deep_merge
from .secrets import CommandRunner, Secrets, parse_dotenv, read_secrets, run_command

OPTIONS = ("config", "destination", "run_secret_commands", "ignore", "takeover")

__all__ = ["KAMAL_VERSION", "OPTIONS", "CommandRunner", "Secrets", "deep_merge", "load", "overlay_file",
           "parse_dotenv", "read_secrets", "read_yaml", "render_erb", "run_command", "stack_config"]

def overlay_file(config_file: Path, destination: str) -> Path:
    """Kamal's `sub_ext(".<destination>.yml")`: config/deploy.yml -> config/deploy.staging.yml."""
    return config_file.with_suffix(f".{destination}.yml")


def load(config_file: Path, *, destination: str | None, project_dir: Path, environ: Mapping[str, str] | None = None,
         run_secret_commands: bool = False, ignore: Iterable[str] = (), stack: Mapping[str, Any] | None = None,
         runner: CommandRunner = run_command, secrets_needed: bool = True) -> dict[str, Any]:
    """Read a Kamal config for `destination` (None: as `kamal deploy` without `-d`) and return the raw shipyard
    config it maps to. `stack` is the stack's own config: secrets it sets are never looked up (nor their commands
    run). Raises one ConfigError listing every refused key. `secrets_needed=False`: read for what is deployed
    already (the `shipyard` command's details, logs...), as Kamal reads it for those - a secret missing here is
    left unread, and no secret command runs; only the SSH keys' secrets are still needed."""
    environ = dict(os.environ if environ is None else environ)
    if destination:
        environ["KAMAL_DESTINATION"] = destination
    config_file = config_file.resolve()
    app_dir = config_file.parent.parent
    files = _files(config_file, destination)
    raw: dict[str, Any] = {}
    ignored = tuple(ignore)
    problems: list[tuple[str, str, bool]] = []
    if destination and not files[1].is_file():
        raise ConfigError("kamal.config", f"{os.path.relpath(files[1], app_dir)} does not exist: Kamal reads it for "
                                          f"destination {destination}; create it (`{{}}` for no changes), or set "
                                          f"shipyard:kamal.destination (to '' for none)")
    for file in files:
        data, erb = read_yaml(file, os.path.relpath(file, app_dir), environ, cwd=app_dir)
        for path, message, ignorable in erb:
            if ignorable and _listed(path, ignored):
                _drop(data, path)  # deployed without it, never with the ERB's placeholder
        raw = deep_merge(raw, data)
        problems += erb
    secrets = read_secrets(app_dir, str(raw.get("secrets_path") or ".kamal/secrets"), destination, environ,
                           runner if run_secret_commands and secrets_needed else None)
    mapper = Mapper(raw, app_dir, project_dir.resolve(), destination, secrets, stack or {},
                    secrets_needed=secrets_needed)
    out = mapper.run()
    problems += mapper.problems
    seen, lines, fixes = set(), [], 0
    for path, message, ignorable in problems:
        if path in seen or ignorable and _listed(path, ignored):
            continue
        seen.add(path)
        lines.append(f"{path}: {message}")
        fixes += not ignorable
    if lines:
        label = _label(config_file, destination)
        if len(lines) == 1:  # one line: the key, why, and - for a key not supported yet - how to go without it
            how = "" if fixes else "; drop it, or list its path in shipyard:kamal.ignore to deploy without it"
            raise ConfigError("kamal", f"{label}: {lines[0]}{how}")
        if not fixes:
            how = "drop them, or list their paths in shipyard:kamal.ignore to deploy without them"
        elif fixes < len(lines):
            how = ("fix each as it says; those not supported yet may instead be listed in shipyard:kamal.ignore to "
                   "deploy without them")
        else:
            how = "fix each as it says"
        raise ConfigError("kamal", "\n".join([f"{label} cannot be deployed as written ({how}):", *lines]))
    return out


def _files(config_file: Path, destination: str | None) -> list[Path]:
    """What Kamal reads for `destination`: the config file, then the destination's overlay."""
    return [config_file] + ([overlay_file(config_file, destination)] if destination else [])


def _label(config_file: Path, destination: str | None) -> str:
    """The files Kamal reads for `destination`, as the app's directory names them (`config/deploy.yml + ...`)."""
    return " + ".join(os.path.relpath(f, config_file.parent.parent) for f in _files(config_file, destination))


def _listed(path: str, ignored: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith((f"{p}.", f"{p}[")) for p in ignored)


def _drop(data: Any, path: str) -> None:
    """Remove the key at a refusal's path (`a.b[2].c`) from a parsed file, if it is there."""
    parts = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", path)]
    node = data
    for part in parts[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)
    elif isinstance(node, list) and isinstance(parts[-1], int) and parts[-1] < len(node):
        del node[parts[-1]]


def load_stack(raw: Mapping[str, Any], *, stack: str, project_dir: Path,
               environ: Mapping[str, str] | None = None, secrets_needed: bool = True) -> Deploy:
    """A stack's validated config from its `shipyard:*` keys, whether it names a Kamal config or not: the one
    pipeline the program and the `shipyard` command both read a stack through. A `pulumi config set` its errors
    suggest is for this stack (`--stack`): a project has several. `secrets_needed`: as `load`'s."""
    cfg = stack_config(raw, stack=stack, project_dir=project_dir, environ=environ, secrets_needed=secrets_needed)
    try:
        return config.load(cfg, stack=stack)
    except ConfigError as exc:
        top = re.split(r"[.\[]", exc.path)[0]
        if "kamal" in raw and top in cfg and top not in raw and top not in config.INTERNAL_KEYS | {"takeover"}:
            # a value of the Kamal config's that shipyard refuses: named in its file, as the mapping's refusals are
            label = _label((project_dir / _options(raw)["config"]).resolve(), cfg["kamal_app"]["destination"])
            raise ConfigError("kamal", f"{label}: {exc.path}: {exc.message}") from None
        if "`pulumi config set " not in exc.message:
            raise
        raise ConfigError(exc.path, exc.message.replace("`pulumi config set ", f"`pulumi config set --stack {stack} ")
                          ) from None


def _options(raw: Mapping[str, Any]) -> Any:
    """The stack's `shipyard:kamal`, its short form (the file alone) as the long one."""
    return {"config": raw["kamal"]} if isinstance(raw["kamal"], str) else raw["kamal"]


def stack_config(raw: Mapping[str, Any], *, stack: str, project_dir: Path, environ: Mapping[str, str] | None = None,
                 runner: CommandRunner = run_command, secrets_needed: bool = True) -> dict[str, Any]:
    """The stack's `shipyard:*` keys, with `kamal` replaced by the Kamal config it names and the stack's own keys
    deep-merged over that (the stack wins). Without `kamal`, the keys as they are. A Kamal stack also takes over
    what Kamal deployed of the app (`takeover`, with Kamal's destination) unless it sets `kamal.takeover: false`."""
    if "kamal" not in raw:
        return dict(raw)
    opts = _options(raw)
    if not isinstance(opts, dict) or not isinstance(opts.get("config"), str):
        raise ConfigError("kamal", "give the Kamal config file: shipyard:kamal: {config: ../myapp/config/deploy.yml}")
    for key in opts:
        if key not in OPTIONS:
            raise ConfigError(f"kamal.{key}", f"unknown key: known keys are {', '.join(OPTIONS)}")
    for flag in ("run_secret_commands", "takeover"):
        if not isinstance(opts.get(flag, False), bool):
            raise ConfigError(f"kamal.{flag}", "should be true or false")
    ignore = opts.get("ignore") or []
    if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
        raise ConfigError("kamal.ignore", "should be a list of Kamal key paths, like accessories.db.options")
    own = {k: v for k, v in raw.items() if k != "kamal"}
    destination = opts["destination"] if "destination" in opts else (own.get("destination") or stack)
    if destination is not None and not isinstance(destination, str):
        raise ConfigError("kamal.destination", "should be a destination name, or null for none")
    mapped = load(project_dir / opts["config"], destination=destination or None, project_dir=project_dir,
                  environ=environ, run_secret_commands=opts.get("run_secret_commands", False), ignore=ignore,
                  stack=own, runner=runner, secrets_needed=secrets_needed)
    if "promote" in own:
        mapped.pop("builder", None)  # how the app builds: the source stack's business, this one builds nothing
    mapped["kamal_app"] = {"destination": destination or None}
    if opts.get("takeover", True):
        # Kamal may already serve this app: its routes and containers carry Kamal's destination (or none)
        mapped["takeover"] = {"destination": destination or None}
    return deep_merge(mapped, own)

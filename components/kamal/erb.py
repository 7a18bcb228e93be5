"""Kamal's ERB, as far as shipyard evaluates it, and one config file read through it into a hash.

Only `<%= ENV["X"] %>`, `<%= ENV.fetch("X") %>` and `<%= ENV.fetch("X", "default") %>` are evaluated (and `<%# %>`
comments skipped); any other tag becomes a placeholder, so it is reported by the key path it stands under (or by its
line when it prints nothing).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..errors import ConfigError
from .merge import join

_ENV_EXPR = re.compile(r"""^\s*ENV\s*(?:
    \[\s*(?P<q1>["'])(?P<k1>[^"'\#]+)(?P=q1)\s*\]
  | \.fetch\s*\(\s*(?P<q2>["'])(?P<k2>[^"'\#]+)(?P=q2)\s*(?:,\s*(?P<q3>["'])(?P<d>[^"'\#]*)(?P=q3)\s*)?\)
)\s*$""", re.X)
_PLACEHOLDER = "__shipyard_erb_{}__"
_PLACEHOLDER_RE = re.compile(r"__shipyard_erb_(\d+)__")
ERB_HELP = 'only <%= ENV["X"] %>, <%= ENV.fetch("X") %> and <%= ENV.fetch("X", "default") %> are evaluated'


@dataclass
class _Rendered:
    text: str
    problems: dict[int, tuple[int, str]] = field(default_factory=dict)  # placeholder -> (line, message)


def render_erb(template: str, environ: Mapping[str, str]) -> _Rendered:
    """Render Kamal's ERB (trim mode "-"): supported expressions become their value; anything else becomes a
    placeholder whose key path is found after parsing, with the reason in `problems`."""
    out: list[str] = []
    problems: dict[int, tuple[int, str]] = {}
    i = 0
    while True:
        start = template.find("<%", i)
        if start < 0:
            out.append(template[i:])
            break
        out.append(template[i:start])
        if template.startswith("<%%", start):  # a literal "<%"
            out.append("<%")
            i = start + 3
            continue
        end = template.find("%>", start + 2)
        if end < 0:
            out.append(template[start:])
            break
        body = template[start + 2:end]
        line = template.count("\n", 0, start) + 1
        i = end + 2
        if body.endswith("-"):  # `-%>` eats the newline after the tag
            body = body[:-1]
            if template.startswith("\n", i):
                i += 1
        if body.startswith("#"):
            continue
        tag = f"<%{template[start + 2:end]}%>"
        if not body.startswith("="):  # Ruby code: it prints nothing, so it has no key path, only a line
            problems[len(problems)] = (line, f"ERB {tag} is not supported ({ERB_HELP})")
            continue
        m = _ENV_EXPR.match(body[1:])
        if m is None:
            problems[len(problems)] = (line, f"ERB {tag} is not supported ({ERB_HELP})")
            out.append(_PLACEHOLDER.format(len(problems) - 1))
            continue
        name = m["k1"] or m["k2"]
        if m["k1"]:
            out.append(environ.get(name, ""))
        elif name in environ:
            out.append(environ[name])
        elif m["d"] is not None:
            out.append(m["d"])
        else:
            problems[len(problems)] = (line, f"{tag}: {name} is not set in the environment (Kamal stops here too)")
            out.append(_PLACEHOLDER.format(len(problems) - 1))
    return _Rendered("".join(out), problems)


def _placeholder_paths(node: Any, path: str = "") -> dict[int, str]:
    found: dict[int, str] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            sub = join(path, str(k))
            for m in _PLACEHOLDER_RE.finditer(str(k)):
                found.setdefault(int(m[1]), sub)
            found.update({n: p for n, p in _placeholder_paths(v, sub).items() if n not in found})
    elif isinstance(node, list):
        for idx, v in enumerate(node):
            found.update({n: p for n, p in _placeholder_paths(v, f"{path}[{idx}]").items() if n not in found})
    elif isinstance(node, str):
        for m in _PLACEHOLDER_RE.finditer(node):
            found.setdefault(int(m[1]), path)
    return found



def read_yaml(file: Path, label: str, environ: Mapping[str, str]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """One Kamal config file: ERB, then YAML (anchors allowed, as Kamal's unsafe_load). Returns the hash and the
    (path, message) of every ERB tag that could not be evaluated."""
    if not file.is_file():
        raise ConfigError("kamal.config", f"{label} does not exist")
    rendered = render_erb(file.read_text(), environ)
    try:
        data = yaml.safe_load(rendered.text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError("kamal.config", f"{label}{where} is not valid YAML: {getattr(exc, 'problem', exc)}") \
            from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("kamal.config", f"{label} must hold a mapping of keys (service, image, servers, ...)")
    paths = _placeholder_paths(data)
    problems = [(paths.get(n, f"{label} line {line}"), msg) for n, (line, msg) in rendered.problems.items()]
    return data, problems

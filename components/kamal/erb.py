"""Kamal's ERB, and one config file read through it into a hash.

`<%= ENV["X"] %>`, `<%= ENV.fetch("X") %>` and `<%= ENV.fetch("X", "default") %>` are evaluated here (and `<%# %>`
comments skipped). A file with any other tag is Ruby, as Kamal evaluates it: with Ruby installed, the whole file is
rendered by Ruby's own ERB in the app directory (backticks run there, as under `kamal deploy`); without it, each such
tag is reported by the key path it stands under (or by its line when it prints nothing), saying Ruby is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
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
ERB_HELP = ('Kamal evaluates it with Ruby: install ruby (without it only <%= ENV["X"] %>, <%= ENV.fetch("X") %> '
            'and <%= ENV.fetch("X", "default") %> are evaluated)')
# Ruby's ERB as Kamal calls it (trim mode "-"). Kamal renders inside its own process, so a config may call Kamal's
# helpers; Kamal::Utils.docker_arch (the deploying machine's Docker architecture) is the one its own configs use.
RUBY_ERB = """
require "erb"
module Kamal; module Utils
  def self.docker_arch
    arch = `docker info --format '{{.Architecture}}' 2>/dev/null`.strip
    { "aarch64" => "arm64", "x86_64" => "amd64" }.fetch(arch, arch)
  end
end; end
$stdout.write ERB.new($stdin.read, trim_mode: "-").result
"""


@dataclass
class _Rendered:
    text: str
    problems: dict[int, tuple[int, str]] = field(default_factory=dict)  # placeholder -> (line, message)
    ruby: bool = False  # a tag beyond the ENV forms: the file is Ruby's to render


def render_erb(template: str, environ: Mapping[str, str]) -> _Rendered:
    """Render Kamal's ERB (trim mode "-"): supported expressions become their value; anything else becomes a
    placeholder whose key path is found after parsing, with the reason in `problems`."""
    out: list[str] = []
    problems: dict[int, tuple[int, str]] = {}
    ruby = False
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
            ruby = True
            problems[len(problems)] = (line, f"ERB {tag}: {ERB_HELP}")
            continue
        m = _ENV_EXPR.match(body[1:])
        if m is None:
            ruby = True
            problems[len(problems)] = (line, f"ERB {tag}: {ERB_HELP}")
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
    return _Rendered("".join(out), problems, ruby)


def render_ruby(template: str, label: str, environ: Mapping[str, str], cwd: Path, ruby: str) -> str:
    """The whole file through Ruby's ERB, in `cwd`, with `environ` as its ENV."""
    env = {"PATH": os.environ.get("PATH", ""), **environ}
    try:
        proc = subprocess.run([ruby, "-e", RUBY_ERB], input=template, cwd=cwd, env=env, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ConfigError("kamal.config", f"{label}: its ERB ran for over 60 s in Ruby") from None
    if proc.returncode != 0:
        errors = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        reason = errors[0] if errors else f"ruby exited {proc.returncode}"
        raise ConfigError("kamal.config", f"{label}: its ERB failed in Ruby, as it would in Kamal: {reason}")
    return proc.stdout


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



def read_yaml(file: Path, label: str, environ: Mapping[str, str], *, cwd: Path,
              ruby: str | None = None) -> tuple[dict[str, Any], list[tuple[str, str, bool]]]:
    """One Kamal config file: ERB, then YAML (anchors allowed, as Kamal's unsafe_load). Returns the hash and the
    (path, message, ignorable) of every ERB tag that could not be evaluated. `ruby`: the Ruby to render with
    (default: the one on PATH, if any)."""
    if not file.is_file():
        raise ConfigError("kamal.config", f"{label} does not exist")
    template = file.read_text()
    rendered = render_erb(template, environ)
    ruby = ruby or shutil.which("ruby")
    if rendered.ruby and ruby:
        rendered = _Rendered(render_ruby(template, label, environ, cwd, ruby))
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
    # a tag that needs Ruby may be ignored (deployed without its key); an unset variable is the app's to set
    problems = [(paths.get(n, f"{label} line {line}"), msg, ERB_HELP in msg)
                for n, (line, msg) in rendered.problems.items()]
    return data, problems

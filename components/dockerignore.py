"""`.dockerignore`, as `docker build` applies it to a local context: which paths the builder receives.

Pure: the tree is given as a function listing a directory, so the rules are tested with data. The semantics are
Docker's (the CLI's ignore-file reader, moby's pattern matcher and the archiver's walk), including its quirks:

- a line starting with `#` is a comment; other lines are trimmed, cleaned like Go's `filepath.Clean`, and a
  leading `/` is dropped, so `/tmp`, `./tmp` and `tmp/` are the same pattern - all relative to the context root;
- `*` and `?` never cross a `/`; `**` matches any number of directories (`**/*.env` matches `secret.env` too);
  `[...]` classes and `\\` escapes as in `filepath.Match`;
- a pattern that matches a directory excludes everything under it; `!pattern` re-includes; the last matching
  pattern wins;
- an excluded directory is not even entered unless some `!` pattern, as written, starts with that directory's path
  (`!dir/keep` can re-include `dir/keep`; `!**/keep` cannot reach into an excluded `dir`);
- `.dockerignore` and the Dockerfile are always sent (the builder needs them), whatever the patterns say.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["IgnoreFileError", "Pattern", "parse", "compile_patterns", "matches", "select", "go_clean"]

_BOM = "\ufeff"
# Go's unicode.IsSpace, which strings.TrimSpace uses; Python's str.strip() would also strip \x1c-\x1f.
_GO_SPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace() and c not in "\x1c\x1d\x1e\x1f")
_REGEX_ESCAPE = set(".+()|{}$")  # regexp metacharacters that mean nothing in a filepath.Match pattern


class IgnoreFileError(ValueError):
    """A pattern Docker refuses. `line` is 1-based (0 when unknown)."""

    def __init__(self, line: int, pattern: str, reason: str):
        self.line, self.pattern, self.reason = line, pattern, reason
        super().__init__(f"line {line}: {pattern!r} {reason}" if line else f"{pattern!r} {reason}")


def go_clean(path: str) -> str:
    """Go's `path.Clean`: the shortest equivalent path, lexically (`./a//b/../c/` -> `a/c`, `` -> `.`)."""
    if path == "":
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for el in path.split("/"):
        if el in ("", "."):
            continue
        if el == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
        else:
            parts.append(el)
    out = "/".join(parts)
    return "/" + out if rooted else (out or ".")


def _trim(s: str) -> str:
    return s.strip(_GO_SPACE)


def parse(text: str) -> list[tuple[int, str]]:
    """The patterns of an ignore file, with their line numbers, normalised as the Docker CLI reads them."""
    out = []
    for number, line in enumerate(text.split("\n"), start=1):
        if line.endswith("\r"):
            line = line[:-1]
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM):]
        if line.startswith("#"):
            continue
        pattern = _trim(line)
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = _trim(pattern[1:])
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append((number, "!" + pattern if invert else pattern))
    return out


@dataclass(frozen=True)
class Pattern:
    """One compiled pattern: `text` is the cleaned pattern without its `!`."""

    text: str
    exclusion: bool
    kind: str  # exact | prefix | suffix | regexp
    regex: re.Pattern[str] | None

    def match(self, path: str) -> bool:
        if self.kind == "exact":
            return path == self.text
        if self.kind == "prefix":
            return path.startswith(self.text[:-2])
        if self.kind == "suffix":
            suffix = self.text[2:]
            return path.endswith(suffix) or (suffix[:1] == "/" and path == suffix[1:])
        assert self.regex is not None
        return self.regex.match(path) is not None


class _BadPattern(Exception):
    pass


def _scan_chunk(pattern: str) -> tuple[bool, str, str]:
    star = False
    while pattern.startswith("*"):
        pattern, star = pattern[1:], True
    in_range, i = False, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            if i + 1 < len(pattern):
                i += 1
        elif c == "[":
            in_range = True
        elif c == "]":
            in_range = False
        elif c == "*" and not in_range:
            break
        i += 1
    return star, pattern[:i], pattern[i:]


def _class_char(chunk: str) -> tuple[str, str]:
    if not chunk or chunk[0] in "-]":
        raise _BadPattern
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise _BadPattern
    r, rest = chunk[0], chunk[1:]
    if "\ud800" <= r <= "\udfff" or not rest:  # invalid UTF-8, or the class never ends
        raise _BadPattern
    return r, rest


def _match_chunk(chunk: str, s: str) -> tuple[str, bool]:
    failed = False
    while chunk:
        failed = failed or not s
        c = chunk[0]
        if c == "[":
            r = ""
            if not failed:
                r, s = s[0], s[1:]
            chunk = chunk[1:]
            negated = chunk.startswith("^")
            if negated:
                chunk = chunk[1:]
            hit, ranges = False, 0
            while True:
                if chunk.startswith("]") and ranges:
                    chunk = chunk[1:]
                    break
                lo, chunk = _class_char(chunk)
                hi = lo
                if chunk[0] == "-":
                    hi, chunk = _class_char(chunk[1:])
                hit = hit or (lo <= r <= hi if r else False)
                ranges += 1
            failed = failed or hit == negated
        elif c == "?":
            if not failed:
                failed, s = s[0] == "/", s[1:]
            chunk = chunk[1:]
        else:
            if c == "\\":
                chunk = chunk[1:]
                if not chunk:
                    raise _BadPattern
            if not failed:
                failed, s = chunk[0] != s[0], s[1:]
            chunk = chunk[1:]
    return ("", False) if failed else (s, True)


def _go_match(pattern: str, name: str) -> bool:
    """Go's `filepath.Match` on a slash-separated name; raises `_BadPattern` where Go returns ErrBadPattern (it
    checks the pattern only as far as it gets matching, which is all moby asks of it)."""
    while pattern:
        star, chunk, pattern = _scan_chunk(pattern)
        if star and not chunk:
            return "/" not in name
        rest, ok = _match_chunk(chunk, name)
        if ok and (not rest or pattern):
            name = rest
            continue
        if star:
            i = 0
            while i < len(name) and name[i] != "/":
                rest, ok = _match_chunk(chunk, name[i + 1:])
                if ok and not (not pattern and rest):
                    name = rest
                    break
                i += 1
            else:
                return False
            continue
        return False
    return not name


def _validate(pattern: str) -> str | None:
    """Why moby refuses `pattern`: it asks `filepath.Match(pattern, ".")` for an error."""
    try:
        _go_match(pattern, ".")
    except _BadPattern:
        return "is not a valid pattern (an unterminated [...] class, a bad range or a trailing \\)"
    return None


def _compile(text: str, exclusion: bool) -> Pattern:
    """moby's translation of a pattern into an exact, prefix, suffix or regexp match."""
    reg, kind, i, n = "^", "exact", 0, len(text)
    first = True
    while i < n:
        ch = text[i]
        i += 1
        if ch == "*":
            if i < n and text[i] == "*":
                i += 1
                if i < n and text[i] == "/":
                    i += 1
                if i >= n:  # `**` at the end matches everything below
                    if kind == "exact":
                        kind = "prefix"
                    else:
                        reg += ".*"
                        kind = "regexp"
                else:
                    reg += "(.*/)?"
                    kind = "regexp"
                if first:
                    kind = "suffix"
            else:
                reg += "[^/]*"
                kind = "regexp"
        elif ch == "?":
            reg += "[^/]"
            kind = "regexp"
        elif ch in _REGEX_ESCAPE:
            reg += "\\" + ch
        elif ch == "\\":
            if i < n:
                reg += "\\" + text[i]
                i += 1
                kind = "regexp"
            else:
                reg += "\\\\"
        elif ch in "[]":
            reg += ch
            kind = "regexp"
        else:
            reg += ch
        first = False
    regex = None
    if kind == "regexp":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                re.compile(reg)  # its error names the problem; the anchored one may only see a bad `\Z`
                regex = re.compile(reg + r"\Z")
        except re.error as exc:
            raise IgnoreFileError(0, text, f"is not a valid pattern ({exc.msg})") from None
    return Pattern(text, exclusion, kind, regex)


def compile_patterns(lines: Iterable[tuple[int, str] | str]) -> list[Pattern]:
    """moby's `patternmatcher.New`: trim, clean, split off `!`, check the syntax."""
    out = []
    for item in lines:
        number, raw = item if isinstance(item, tuple) else (0, item)
        p = _trim(raw)
        if not p:
            continue
        p = go_clean(p)
        exclusion = p.startswith("!")
        if exclusion:
            if len(p) == 1:
                raise IgnoreFileError(number, raw, "is an exclusion of nothing (a lone !)")
            p = p[1:]
        why = _validate(p)
        if why:
            raise IgnoreFileError(number, raw, why)
        try:
            out.append(_compile(p, exclusion))
        except IgnoreFileError as exc:
            raise IgnoreFileError(number, raw, exc.reason) from None
    return out


def _parent_dirs(path: str) -> list[str]:
    """`a/b/c` -> [`a`, `a/b`] (the parents, outermost first)."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]


def matches(patterns: list[Pattern], path: str, parent: list[bool] | None = None) -> tuple[bool, list[bool]]:
    """Whether `path` is excluded, and which patterns matched it (or a parent), for its children.

    moby's `MatchesUsingParentResults`: a pattern is only tried when it could change the outcome so far (an
    exclusion once excluded, an inclusion while included); a pattern that matched the parent matches the child.
    Without `parent`, the path's parent directories are tried as well."""
    excluded = False
    info = [False] * len(patterns)
    for k, pat in enumerate(patterns):
        hit = bool(parent) and parent[k]
        if not hit:
            if pat.exclusion != excluded:
                continue
            hit = pat.match(path)
            if not hit and not parent:
                hit = any(pat.match(d) for d in _parent_dirs(path))
        info[k] = hit
        if hit:
            excluded = not pat.exclusion
    return excluded, info


def _matches_legacy(patterns: list[Pattern], path: str) -> bool:
    """moby's deprecated `Matches` (one parent, at the pattern's depth), which the CLI still uses to decide
    whether it must re-include the Dockerfile and `.dockerignore`."""
    excluded = False
    parents = path.split("/")[:-1]
    for pat in patterns:
        if pat.exclusion != excluded:
            continue
        hit = pat.match(path)
        depth = len(pat.text.split("/"))
        if not hit and parents and depth <= len(parents):
            hit = pat.match("/".join(parents[:depth]))
        if hit:
            excluded = not pat.exclusion
    return excluded


ListDir = Callable[[str], Iterable[tuple[str, bool]]]


def select(list_dir: ListDir, patterns: list[Pattern], always: Iterable[str] = ()) -> list[tuple[str, bool]]:
    """The paths sent to the builder, parents before children: (relative path, is a directory).

    `list_dir(rel)` gives the (name, is_dir) entries of a directory (`""` is the root; symlinks are not
    directories). `always` are paths sent whatever the patterns say (`.dockerignore` and the Dockerfile): like the
    CLI, an `!path` exception is added for each of them that the patterns exclude."""
    patterns = list(patterns)
    always = [go_clean(a) for a in always]
    for a in always:
        if _matches_legacy(patterns, a):
            patterns.append(Pattern(a, True, "exact", None))
    has_exclusions = any(p.exclusion for p in patterns)
    out: list[tuple[str, bool]] = []

    def walk(rel_dir: str, parent: list[bool] | None) -> None:
        entries = sorted(list_dir(rel_dir), key=lambda e: e[0].encode("utf-8", "surrogateescape"))
        for name, is_dir in entries:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            excluded, info = matches(patterns, rel, parent)
            if not excluded:
                out.append((rel, is_dir))
                if is_dir:
                    walk(rel, info)
            elif is_dir and has_exclusions and any(
                    (p.text + "/").startswith(rel + "/") for p in patterns if p.exclusion):
                walk(rel, info)  # an exception may re-include something below; the directory itself is not sent

    walk("", None)
    sent = {p for p, _ in out}
    out.extend((a, False) for a in always if a not in sent and _exists(list_dir, a))
    return out


def _exists(list_dir: ListDir, rel: str) -> bool:
    head, _, name = rel.rpartition("/")
    try:
        return any(n == name and not d for n, d in list_dir(head))
    except OSError:
        return False

"""Go's path matching, as Docker's `.dockerignore` handling uses it: `path.Clean` and `filepath.Match` (with its
exact error cases), in Python. Pure."""

from __future__ import annotations


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


class BadPattern(Exception):
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
        raise BadPattern
    if chunk[0] == "\\":
        chunk = chunk[1:]
        if not chunk:
            raise BadPattern
    r, rest = chunk[0], chunk[1:]
    if "\ud800" <= r <= "\udfff" or not rest:  # invalid UTF-8, or the class never ends
        raise BadPattern
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
                    raise BadPattern
            if not failed:
                failed, s = chunk[0] != s[0], s[1:]
            chunk = chunk[1:]
    return ("", False) if failed else (s, True)


def go_match(pattern: str, name: str) -> bool:
    """Go's `filepath.Match` on a slash-separated name; raises `BadPattern` where Go returns ErrBadPattern (it
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


def validate(pattern: str) -> str | None:
    """Why moby refuses `pattern`: it asks `filepath.Match(pattern, ".")` for an error."""
    try:
        go_match(pattern, ".")
    except BadPattern:
        return "is not a valid pattern (an unterminated [...] class, a bad range or a trailing \\)"
    return None

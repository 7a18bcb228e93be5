"""Text shown to users from hosts (build logs, container logs): terminal escapes stripped, secrets masked."""

from __future__ import annotations

import re
from typing import Iterable

_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    """Remove terminal escape sequences (CSI such as colours and cursor moves, OSC such as titles and links)."""
    return _ESCAPES.sub("", text)


def redact(text: str, secrets: Iterable[str]) -> str:
    """Every secret value (of 4 characters or more) in `text` replaced by `[secret]`, longest first."""
    for value in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, "[secret]")
    return text


def tail(text: str, lines: int = 10, secrets: Iterable[str] = ()) -> str:
    """The last lines of a log, cleaned for an error message."""
    kept = [ln.rstrip() for ln in strip_ansi(text).splitlines() if ln.strip()][-lines:]
    return redact("\n".join(kept), secrets)

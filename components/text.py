"""Text from hosts (build logs, container logs) made fit for an error message. Pure.

Quote a log as `redact(strip_ansi(log), secret_values)`: escapes first, so none can split a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

REDACTED = "[secret]"

# ECMA-48 escapes, 7-bit (ESC ...) and 8-bit (C1) forms. String sequences (OSC, DCS, SOS, PM, APC) run to their
# terminator (BEL for OSC, ST for all), or to the end of the text, as a terminal would swallow them.
_ANSI = re.compile(r"""
      (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]         # CSI: colours, cursor moves, erase line...
    | (?:\x1b\]|\x9d) .*? (?:\x07|\x1b\\|\x9c|\Z)                     # OSC: window titles, hyperlinks
    | (?:\x1b[PX^_]|[\x90\x98\x9e\x9f]) .*? (?:\x1b\\|\x9c|\Z)        # DCS, SOS, PM, APC
    | \x1b [\x20-\x2f]* [\x30-\x7e]                                   # ESC ( B, ESC 7, ESC c, ESC M...
    | \x1b                                                            # a lone ESC
""", re.S | re.X)


def strip_ansi(text: str) -> str:
    """`text` without ANSI/ECMA-48 escape sequences (CSI, OSC, DCS/SOS/PM/APC, two-character escapes)."""
    return _ANSI.sub("", text)


def redact(text: str, secrets: Iterable[str] | Mapping[str, str]) -> str:
    """`text` with every occurrence of every secret value replaced by `[secret]`. Values of 3 characters or fewer
    are left alone (they would redact ordinary words); a multi-line value is also redacted line by line, so a
    key printed one line at a time does not leak. A mapping's values are the secrets, not its keys."""
    values = secrets.values() if isinstance(secrets, Mapping) else secrets
    needles: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            continue
        needles.add(value)
        if "\n" in value:
            needles.update(line.rstrip("\r") for line in value.split("\n"))
    needles = {n for n in needles if len(n) > 3}
    if not needles:
        return text
    # longest first: a secret that contains another is replaced whole
    pattern = re.compile("|".join(re.escape(n) for n in sorted(needles, key=len, reverse=True)))
    return pattern.sub(REDACTED, text)


def tail(text: str, lines: int = 10, secrets: Iterable[str] | Mapping[str, str] = ()) -> str:
    """The last non-empty lines of a log, escapes stripped and secrets redacted, for an error message."""
    kept = [ln.rstrip() for ln in strip_ansi(text).splitlines() if ln.strip()][-lines:]
    return redact("\n".join(kept), secrets)

"""How the `shipyard` command shows things: aligned columns for people, colour only on a terminal, JSON for
scripts. Pure: no Pulumi, no hosts."""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence, TextIO

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COLOURS = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34", "magenta": "35",
           "cyan": "36"}
# one colour per host, so interleaved lines of `logs -f` can be told apart at a glance
HOST_COLOURS = ("cyan", "magenta", "yellow", "blue", "green")


def colour_enabled(stream: TextIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (https://no-color.org)."""
    return stream.isatty() and not os.environ.get("NO_COLOR")


class Painter:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, text: str, colour: str | None) -> str:
        if not self.enabled or not colour:
            return text
        return f"\x1b[{COLOURS[colour]}m{text}\x1b[0m"


STATE_COLOURS = {"running": "green", "healthy": "green", "exited": "dim", "unhealthy": "red", "starting": "yellow",
                 "restarting": "yellow", "dead": "red", "failed": "red", "succeeded": "green", "missing": "red"}


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], paint: Painter | None = None,
          colour_column: str | None = None) -> str:
    """Rows under headers, each column as wide as its widest cell; None shows as '-'. The cells of
    `colour_column` are coloured by their value (running green, exited dim...)."""
    paint = paint or Painter(False)
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    ci = list(headers).index(colour_column) if colour_column in headers else None
    lines = ["  ".join(paint(h.ljust(w), "bold") for h, w in zip(headers, widths)).rstrip()]
    for r in cells:
        parts = []
        for i, (v, w) in enumerate(zip(r, widths)):
            padded = v.ljust(w)
            parts.append(paint(padded, STATE_COLOURS.get(v)) if i == ci else padded)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def to_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, default=str)


def short_id(image_or_container_id: str | None) -> str | None:
    """`sha256:6a348f720833...` -> `6a348f720833` (Docker's short form)."""
    if not image_or_container_id:
        return None
    return image_or_container_id.split(":", 1)[-1][:12]


def when(ts: float | int | str | datetime | None) -> str | None:
    """A moment in UTC as `2024-05-01 12:30:05Z`: Unix seconds, Docker's RFC 3339 strings or datetimes."""
    if ts is None or ts == "":
        return None
    if isinstance(ts, (int, float)):
        dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    elif isinstance(ts, str):
        text = re.sub(r"\.\d+", "", ts).replace("Z", "+00:00")
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            return ts
    else:
        dt = ts
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def prefixed(prefix: str, line: str, width: int, paint: Painter, colour: str | None) -> str:
    """One line of output from a host, after its name: `10.0.0.2  | GET / 200`."""
    return f"{paint(prefix.ljust(width), colour)} | {line}"


def progress(message: str, stream: TextIO = sys.stderr) -> None:
    """A step of a long operation, on stderr so that stdout stays the result (e.g. JSON)."""
    print(f"==> {message}", file=stream, flush=True)

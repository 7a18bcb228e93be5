"""`shipyard logs`: the destination's current containers' logs, from every host at once, each line prefixed with
its host (Kamal's `app logs` and `accessory logs`). `-f` follows all of them until interrupted."""

from __future__ import annotations

import argparse
import json
import queue
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

from .. import hosts
from ..errors import ConfigError
from ..hosts import docker_errors
from ..ssh import SSHTarget
from . import output
from .stack import StackContext

DURATION = re.compile(r"^(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Source:
    host: str
    role: str  # a role, or an accessory's name
    container: str
    id: str


def parse_since(text: str | None, now: float) -> datetime | None:
    """`--since`: a duration back from now (`90s`, `5m`, `2h`, `1d`) or a timestamp (`2024-05-01T12:00:00Z`)."""
    if not text:
        return None
    m = DURATION.match(text.strip())
    if m:
        return datetime.fromtimestamp(now - float(m["n"]) * UNITS[m["unit"]], tz=timezone.utc)
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError("--since", f"{text!r} is neither a duration (30s, 5m, 2h, 1d) nor a timestamp "
                                     f"(2024-05-01T12:00:00Z)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def sources(outputs: dict[str, Any], role: str | None, host: str | None) -> list[Source]:
    """The containers to read: the current one of each role on each host, and each accessory's, narrowed to
    `role` (a role or an accessory name) and `host`."""
    found = [Source(h, r, c["name"], c["id"]) for h, roles in (outputs.get("containers") or {}).items()
             for r, c in roles.items()]
    found += [Source(h, a, c["container"], c["id"]) for a, per_host in (outputs.get("accessories") or {}).items()
              for h, c in per_host.items()]
    names = sorted({s.role for s in found})
    if role is not None and role not in names:
        raise ConfigError("--role", f"no role or accessory named {role!r}: there are {', '.join(names)}")
    hosts_ = sorted({s.host for s in found if role is None or s.role == role})
    if host is not None and host not in hosts_:
        raise ConfigError("--host", f"{host!r} runs none of them: use one of {', '.join(hosts_)}")
    return [s for s in found if (role is None or s.role == role) and (host is None or s.host == host)]


def lines_of(chunks: Iterator[bytes]) -> Iterator[str]:
    """Whole lines from a stream of byte chunks that may split lines anywhere."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.rstrip(b"\r").decode(errors="replace")
    if pending:
        yield pending.decode(errors="replace")


def label(source: Source, several_roles: bool) -> str:
    return f"{source.host} {source.role}" if several_roles else source.host


def _read(target: SSHTarget, source: Source, args: argparse.Namespace, since: datetime | None,
          out: queue.Queue) -> None:
    """One container's lines into `out`, then what ended them (an error) and None: every reader ends with None,
    whatever it met, so the command never waits for a reader that is gone."""
    try:
        c = hosts.client(target)
        with docker_errors(target, f"reading the logs of {source.container}"):
            stream = c.logs(source.id, stdout=True, stderr=True, stream=True, follow=args.follow,
                            tail=args.lines if args.lines is not None else "all", since=since)
            for line in lines_of(stream):
                if args.grep is None or args.grep.search(line):
                    out.put((source, line))
    except Exception as exc:  # noqa: BLE001 - told by the command, as one line
        out.put((source, exc))
    finally:
        out.put((source, None))


def show(ctx: StackContext, args: argparse.Namespace) -> int:
    chosen = sources(ctx.outputs, args.role, args.host)
    since = parse_since(args.since, time.time())
    if args.lines is None and since is None:
        args.lines = 10 if args.follow else 100
    several = len({s.role for s in chosen}) > 1
    width = max(len(label(s, several)) for s in chosen)
    hosts_ = sorted({s.host for s in chosen})
    colours = {h: output.HOST_COLOURS[i % len(output.HOST_COLOURS)] for i, h in enumerate(hosts_)}
    targets = {h: ctx.target(h) for h in hosts_}  # a config error: before any reader
    out: queue.Queue = queue.Queue()
    for s in chosen:
        threading.Thread(target=_read, args=(targets[s.host], s, args, since, out), daemon=True).start()
    running, buffered, error = len(chosen), {s: [] for s in chosen}, None
    try:
        while running:
            source, item = out.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                error = error or item
            elif args.follow:  # as they come, interleaved
                _print(source, item, args, several, width, colours)
            else:
                buffered[source].append(item)
    except KeyboardInterrupt:
        return 0  # following ends with Ctrl-C
    for source in chosen:  # without -f: each container's lines together, in order
        for line in buffered[source]:
            _print(source, line, args, several, width, colours)
    if error is not None:
        raise error
    return 0


def _print(source: Source, line: str, args: argparse.Namespace, several: bool, width: int,
           colours: dict[str, str]) -> None:
    if args.json:
        print(json.dumps({"host": source.host, "role": source.role, "container": source.container, "line": line}),
              flush=True)  # one object per line
    else:
        print(output.prefixed(label(source, several), line, width, args.paint, colours[source.host]), flush=True)


def _pattern(text: str) -> re.Pattern:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"not a regular expression: {exc}") from None


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("logs", parents=[common], help="logs of the destination's containers, from every host",
                       description=__doc__)
    p.add_argument("--role", help="a role (web, jobs...) or an accessory's name (db...); default: all")
    p.add_argument("--host", help="only this host")
    p.add_argument("--since", help="from this long ago (30s, 5m, 2h, 1d) or this timestamp")
    p.add_argument("-n", "--lines", type=int, help="last N lines of each container (default: 100, or 10 with -f, unless --since)")
    p.add_argument("--grep", type=_pattern, help="only lines matching this regular expression")
    p.add_argument("-f", "--follow", action="store_true", help="keep following every host until Ctrl-C")
    p.set_defaults(handler=show)

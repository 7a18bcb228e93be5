"""How each host is reached: a resource records the SSH settings it was last created or updated with
(`schema.TARGET_KEYS`), and a later step that only removes it - a replaced image, a destroy - uses them. So settings
that do not work must never be recorded, and settings put right since must be what the removal uses:

- an update that changes how a host is reached (a user, a port, a key) connects with the new settings first, so a
  wrong `ssh.user` fails that update and the state keeps the settings that worked (`changed`), even where the
  update itself would not have touched the host (an image's build host, where nothing is built again);
- a delete uses how the run's program reaches the same host now (`Reach`), where the program said it: the settings
  the run checked, unless it gave one host two ways."""

from __future__ import annotations

import threading
from typing import Any, Iterator, Mapping

from pulumi.runtime.rpc import contains_unknowns

from ..ssh import SSHTarget
from .schema import TARGET_KEYS


def targets(props: Mapping[str, Any]) -> Iterator[SSHTarget]:
    """The SSH targets `props` hold, where known (a preview's may wait on other resources)."""
    for key in TARGET_KEYS:
        value = props.get(key)
        for t in value if isinstance(value, list) else [value]:
            if isinstance(t, dict) and isinstance(t.get("host"), str) and not contains_unknowns(t):
                yield SSHTarget.from_dict(t)


def changed(olds: Mapping[str, Any], news: Mapping[str, Any]) -> list[SSHTarget]:
    """The targets of `news` whose host `olds` reached another way: an update connects with these first."""
    before = {t.host: t for t in targets(olds)}
    return list({t: None for t in targets(news) if t.host in before and before[t.host] != t})


class Reach:
    """Each host's target as this run's program gives it (`seen` in every check), for the run's deletes (`now`)."""

    def __init__(self) -> None:
        self._now: dict[str, SSHTarget | None] = {}  # None: the program reaches the host two ways, so it is not told
        self._guard = threading.Lock()

    def seen(self, news: Mapping[str, Any]) -> None:
        with self._guard:
            for t in targets(news):
                if self._now.setdefault(t.host, t) != t:
                    self._now[t.host] = None

    def now(self, props: dict[str, Any]) -> dict[str, Any]:
        """`props` (a recorded resource's) with each target as the program reaches its host now, where it says."""
        with self._guard:
            now = dict(self._now)

        def current(t: Any) -> Any:
            if not isinstance(t, dict) or not isinstance(t.get("host"), str) or now.get(t["host"]) is None:
                return t
            return now[t["host"]].to_dict()
        out = dict(props)
        for key in TARGET_KEYS:
            value = props.get(key)
            if isinstance(value, list):
                out[key] = [current(t) for t in value]
            elif value is not None:
                out[key] = current(value)
        return out

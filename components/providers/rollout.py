"""`shipyard:index:Rollout`: a destination's rollout is one unit. The component declares two of these per boot batch
(`boot.limit` hosts at a time; one batch without a limit), around the batch's routes:

- `start` depends on every new container of the batch (each created, and - for a proxied role - ready but not yet
  routed). It starts the roles without a proxy (workers), which their create left stopped, and waits until each is
  ready. If one does not become ready, every worker it started is stopped again (kept, so the next `up` can try
  it again) and its predecessors run as before; so are the proxied roles' new containers, which no route targets
  yet (the next `up`'s start starts them again, before their routes switch).
- The routes depend on `start`: no route switches before every role's new container is ready.
- `retire` depends on the routes: only then do the workers' predecessors stop (with the drain timeout), Kamal's
  containers of a takeover stop, and every role keeps `retain` stopped versions; unused images go. Then it waits
  `wait` seconds (`boot.wait`) before the next batch begins.

So when any role fails - a container that crashes, a health check that never passes - no role has moved: every
route and every worker still runs the previous version. A proxied role's predecessor is stopped by its route's
switch (`providers.proxy`); this is the one other place that retires containers.

When something fails before `start` (another role's create, another host's proxy), the engine starts no step after
it, so no `start` comes: the proxied containers made ready in that run would run unrouted until the next `up`. The
plugin process serves one run, so it keeps them (`made_ready`) until their `start` takes them, and a failed operation
stops them (`abandon`), as a failed `start` does. Likewise when something fails after `start` (a route's switch):
no `retire` comes, so the workers `start` started stop again and their predecessors do the work, as before the
deploy - unless every route of their batch has switched: the new version serves, so they run on. The next `up`
records no new `start` (it did its part), so its `retire` starts them again (where they stopped), each ready,
before it stops their predecessors. A Ctrl-C ends the run the same way: the engine finishes the steps in flight,
starts none after them, and sends the plugin `Cancel` (`INTERRUPTED`)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Callable, Iterator

from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from .. import decisions, hosts, naming
from ..errors import Abandoned, HostError
from ..hosts import SSHTarget, docker_errors
from .base import each_at_once, label_filters, of_role, proxy_routes, service_of, stop_kamal, target
from .container import after_rollout, clean_up_assets, prune_images, put_accessory_back, put_back, start_ready, \
    stop_timeout

STEPS = ("start", "retire")


def entry_key(entry: dict[str, Any]) -> str:
    return f"{entry['role']}@{entry['target']['host']}"


def entries(props: dict[str, Any]) -> list[dict[str, Any]]:
    """The rollout's containers, each with its container ID. The IDs are kept apart (`ids`, by `<role>@<host>`), so a
    preview of a new rollout names the IDs it moves to and nothing else; states written before carry them in the
    entries."""
    ids = props.get("ids") or {}
    return [{**e, "container_id": ids.get(entry_key(e), e.get("container_id"))} for e in props.get("containers") or []]


def _entry_props(props: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """One container's entry as the container functions read props: the destination's facts, the entry's own,
    and the secrets a failing container's output is redacted with."""
    return {"owner": props["owner"], "destination": props["destination"], "labels": props["labels"],
            "lock": props.get("lock"), **entry,
            "proxy": bool(entry.get("proxied")),
            "secret_env": {str(i): v for i, v in enumerate(props.get("redact") or [])}}


def _by_host(entries: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        out.setdefault(e["target"]["host"], []).append(e)
    return out


def _stop_unrouted(props: dict[str, Any], proxied: list[dict[str, Any]]) -> None:
    """After a failed start, on one host: the proxied roles' containers of this rollout that no route targets (new
    ones, ready but never routed) stop - kept: the state knows them, and the next `up`'s start starts them again
    before their routes switch. The ones routed now run on. Best effort: the failure is what the user must see."""
    t = target(proxied[0])
    try:
        with docker_errors(t, f"stopping the unrouted containers of destination {props['destination']}"):
            routes = proxy_routes(t)
            if routes is None:
                return  # kamal-proxy does not answer: what it routes to is unknown, so nothing is stopped
            c = hosts.client(t)
            running = [decisions.Seen.from_list(i) for i in c.containers(filters={"label": label_filters(props)})]
            unrouted = {s.id for s in running} - set(decisions.routed(routes.values(), running))
            for entry in proxied:
                if entry["container_id"] in unrouted:
                    c.stop(entry["container_id"], timeout=stop_timeout(_entry_props(props, entry)))
    except HostError:
        pass


Started = list[tuple[dict[str, Any], list[str]]]  # (entry, what it took a port from) of each container started


def _put_back(started: Started) -> None:
    """Workers started for a rollout that goes no further stop again (kept: the state knows them), and what they
    took a port from runs again; each host at once (a worker's stop waits its drain time)."""
    by_host: dict[str, Started] = {}
    for entry, handed in started:
        by_host.setdefault(entry["target"]["host"], []).append((entry, handed))
    each_at_once(by_host, lambda done: [put_back(target(e), e, e["container_id"], h, keep=True) for e, h in done])


def _key(props: dict[str, Any]) -> frozenset[str]:
    """A batch's rollout, the same for its `start` and its `retire`: its new containers."""
    return frozenset(e["container_id"] for e in entries(props))


class _Run:
    """What this process's run has begun and a later step of it settles (one plugin process serves one run). Once an
    operation of the run has failed, the engine starts no step after it, so:

    - `ready`: the proxied containers of a rollout made ready (created, never routed), until their `start` takes
      them, stop;
    - `ahead`: the workers a `start` started, until their `retire` takes them, stop again and what they took a port
      from runs again: their routes never switch - unless every route of their batch has switched in this run
      (`switched`): the new version serves, so they run on, and the next `up` retires what ran before;
    - `accessories`: an accessory that took over from the one it replaces (a changed config), until the engine
      deletes that one (the run's last steps), is stopped and the one it replaced runs again - unless its own route
      has switched to it, or an app role has moved in this run (`moved`: a route switched, a retirement began),
      whose new version may need it. Its state records the new one: the next `up`'s diff finds it stopped
      (`ContainerProvider.observed`), so that run starts it again before any role's new container."""

    def __init__(self) -> None:
        self.ready: dict[str, dict[str, Any]] = {}
        self.ahead: dict[frozenset[str], tuple[frozenset[str], Started]] = {}  # batch: its proxied ones, workers
        self.switched: set[str] = set()  # the proxied containers whose route has switched to them
        self.accessories: dict[str, tuple[dict[str, Any], str, list[str]]] = {}  # new one: its props, it, what it stopped
        self.moved = False  # an app role's route has switched, or a retirement began
        self.switching = 0  # route switches under way: an ending run waits for them before it puts workers back
        self.failed = ""  # why the run ends here (`FAILED`, `INTERRUPTED`), once it does
        self.guard = threading.Condition()

    def made_ready(self, props: dict[str, Any], cid: str) -> None:
        with self.guard:
            if not self.failed:
                self.ready[cid] = props
                return
        self._stop({cid: props})  # the run failed while it was made ready: its `start` never comes

    def accessory_switched(self, props: dict[str, Any], cid: str, stopped: list[str]) -> None:
        with self.guard:
            if not self.failed or self.moved:
                self.accessories[cid] = (props, cid, stopped)
                return
        put_accessory_back(props, cid, stopped)  # the run failed while it took over

    def replaced_gone(self, cid: str) -> None:
        """The engine deletes `cid`, replaced in this run: the run got to its end, what replaced it stays."""
        with self.guard:
            for new, (_, _, stopped) in list(self.accessories.items()):
                if cid in stopped:
                    del self.accessories[new]

    def started(self, cids: list[str]) -> None:
        with self.guard:
            for cid in cids:
                self.ready.pop(cid, None)

    def started_ahead(self, props: dict[str, Any], workers: Started) -> str:
        """A `start` has started `workers`: held until their `retire`. When the run has ended meanwhile, why: no
        route switches, so the `start` undoes itself."""
        with self.guard:
            if not self.failed:
                self.ahead[_key(props)] = (frozenset(e["container_id"] for e in entries(props) if e.get("proxied")),
                                           workers)
            return self.failed

    def retiring(self, props: dict[str, Any]) -> Started | str:
        """The workers this run's `start` of the batch started, now its `retire`'s to handle; why the run ended, if it
        has: a put-back may be stopping them as this runs, so nothing is retired."""
        with self.guard:
            _, workers = self.ahead.pop(_key(props), (None, []))
            self.moved = self.moved or not self.failed
            return self.failed or workers

    def abandon(self, why: str) -> None:
        with self.guard:
            self.failed = self.failed or why
            self.guard.wait_for(lambda: not self.switching)  # each ends in time: kamal-proxy's own deploy timeout
            ready, self.ready = self.ready, {}
            ahead, self.ahead = self.ahead, {}
            back = [w for proxied, workers in ahead.values() if not proxied or not proxied <= self.switched
                    for w in workers]
            accessories, self.accessories = ({} if self.moved else self.accessories), {}
        self._stop(ready)
        _put_back(back)
        each_at_once(accessories, lambda accessory: put_accessory_back(*accessory))

    @contextlib.contextmanager
    def switch(self, props: dict[str, Any]) -> Iterator[None]:
        with self.guard:
            if self.failed:
                raise Abandoned(f"destination {props['destination']}: {self.failed} before route {props['service']} "
                                f"switched: it serves what it served before")
            self.switching += 1
        done = False
        try:
            yield
            done = True
        finally:
            with self.guard:
                self.switching -= 1
                if done:
                    self.switched.add(props["container_id"])
                    if props.get("role", "").startswith(naming.ACCESSORY_PREFIX):
                        self.accessories.pop(props["container_id"], None)  # its route serves it: it stays
                    else:
                        self.moved = True
                self.guard.notify_all()

    @staticmethod
    def _stop(containers: dict[str, dict[str, Any]]) -> None:
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for cid, props in containers.items():
            key = (props["target"]["host"], props["owner"], props["destination"], service_of(props))
            groups.setdefault(key, []).append({**props, "container_id": cid})
        each_at_once({"/".join(k): es for k, es in groups.items()}, lambda es: _stop_unrouted(es[0], es))


RUN = _Run()  # the process's
FAILED = "another operation of this deploy failed"
INTERRUPTED = "the deploy was interrupted"


def made_ready(props: dict[str, Any], cid: str) -> None:
    """A rollout's proxied container `cid` is ready (its create is done): its `start` takes it, or it stops when
    the run fails."""
    RUN.made_ready(props, cid)


def switching(props: dict[str, Any]) -> contextlib.AbstractContextManager[None]:
    """Around a route's switch (`props`: the route's): a rollout's (with its new `container_id`) is refused once the
    run has ended (its workers went back, so the route must not move either); an ending run waits until the switches
    under way are done, and leaves running the workers of a batch whose every route has switched. A route of no
    container (an upstream given as it is) switches as it comes."""
    return RUN.switch(props) if props.get("container_id") else contextlib.nullcontext()


def accessory_switched(props: dict[str, Any], cid: str, stopped: list[str]) -> None:
    """Accessory `cid` runs in place of `stopped` (the one it replaces): it stays once the engine deletes that one
    (`replaced_gone`), or an app role has moved; a run that ends before puts the replaced one back."""
    RUN.accessory_switched(props, cid, stopped)


def replaced_gone(cid: str) -> None:
    RUN.replaced_gone(cid)


def abandon(why: str = FAILED) -> None:
    """An operation of this run failed, or the run was interrupted (`INTERRUPTED`: the engine's `Cancel`, on a
    Ctrl-C and as it ends the plugin): no step comes after it, so what waits for one goes back (`_Run`)."""
    RUN.abandon(why)


class RolloutProvider(ResourceProvider):
    serialize_as_secret_always = False
    compared = ("ids", "containers")  # what its diff looks at: a preview names nothing else

    def create(self, props: dict[str, Any]) -> CreateResult:
        self._run(props)
        return CreateResult(id_=f"{props['destination']}-{props['step']}", outs=props)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        self._run(news)
        return UpdateResult(outs=news)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        """A new container in any role (or one more or less) is a new rollout; how hosts are reached is not."""
        def key(props):
            return sorted((e["target"]["host"], e["role"], e["container_id"]) for e in entries(props))
        return DiffResult(changes=key(olds) != key(news), replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_=id_, outs=props)  # what it did is on the containers and routes, each read there

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        """A container's own delete removes it; nothing of the rollout's stays behind. A destroy begins here (its
        `retire` goes first): every host of the batch is connected to now, while the engine gets to their routes."""
        hosts.open_ahead(list({e["target"]["host"]: SSHTarget.from_dict(e["target"])
                               for e in props.get("containers") or []}.values()))

    def _run(self, props: dict[str, Any]) -> None:
        if props["step"] == "start":
            self._start(props)
        else:
            self._retire(props)

    # -- start ----------------------------------------------------------------------------------------------------

    def _start(self, props: dict[str, Any]) -> None:
        RUN.started([e["container_id"] for e in entries(props)])  # whatever happens now, this step's to handle
        groups = _by_host(entries(props))
        results, started = _start_roles(props, groups)
        failures = [r for r in results.values() if isinstance(r, BaseException)]
        # the routes switch next; until the retirement, a failed run stops the workers again
        ended = "" if failures else RUN.started_ahead(props, [(e, handed) for done in started.values()
                                                              for e, handed in done if not e.get("proxied")])
        if not failures and not ended:
            return
        # one role failed somewhere (or the run did, meanwhile): every worker started here stops again, its
        # predecessors run as before, and the proxied roles' new containers (ready, never routed: the routes come
        # after this step) stop too
        _put_back([d for done in started.values() for d in done])
        each_at_once({h: [e for e in es if e.get("proxied")] for h, es in groups.items()
                      if any(e.get("proxied") for e in es)}, lambda proxied: _stop_unrouted(props, proxied))
        if not failures:
            raise Abandoned(f"destination {props['destination']}: {ended} while its rollout started the new workers: "
                            f"they were stopped again; no role changed")
        raise _told(failures[0], any(started.values()), "The workers of this rollout started already were stopped "
                                                        "again; no role changed")

    # -- retire ---------------------------------------------------------------------------------------------------

    def _retire(self, props: dict[str, Any]) -> None:
        ahead = RUN.retiring(props)  # whatever happens now, this step's to handle
        if isinstance(ahead, str):
            raise Abandoned(f"destination {props['destination']}: {ahead} before its rollout retired what ran "
                            f"before: the new workers were stopped again and nothing was retired; the next `up` "
                            f"finishes the rollout")
        groups = _by_host(entries(props))
        # the routes have switched; workers a failed run stopped again after its `start` start first, each ready, on
        # every host, before any predecessor stops
        workers = {h: [e for e in es if not e.get("proxied")] for h, es in groups.items()}
        results, started = _start_roles(props, {h: es for h, es in workers.items() if es})
        failures = [r for r in results.values() if isinstance(r, BaseException)]
        if failures:  # what this run's `start` started goes back too: no predecessor stops anywhere
            _put_back([*ahead, *(d for done in started.values() for d in done)])
            raise _told(failures[0], bool(ahead) or any(started.values()), "The workers of this rollout started "
                                                                           "already were stopped again; their "
                                                                           "predecessors run on")

        def retire(entries: list[dict[str, Any]]) -> None:
            t = target(entries[0])
            c = hosts.client(t)
            with docker_errors(t, f"retiring what destination {props['destination']} ran before"):
                listing = results.get(t.host)  # listed by the start above, unless it started something here
                if listing is None or started.get(t.host):
                    listing = c.containers(all=True, filters={"label": label_filters(props)})
                removed: set[str] = set()
                for entry in entries:
                    p = _entry_props(props, entry)
                    removed |= after_rollout(c, p, entry["container_id"],
                                             [i for i in listing if i["Id"] not in removed])  # each removed once
                    if not entry.get("proxied"):  # a proxied role's route stops Kamal's, once it has switched
                        stop_kamal(c, p)
                    clean_up_assets(t, p, [i for i in listing if i["Id"] not in removed])
                used = {i.get("ImageID") for i in listing if i["Id"] not in removed} | \
                    {e["image"] for e in entries}
                prune_images(c, _entry_props(props, entries[0]), used)

        failures = [r for r in each_at_once(groups, retire).values() if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        time.sleep(float(props.get("wait") or 0))  # boot.wait: before the next batch of hosts


def _start_roles(props: dict[str, Any], groups: dict[str, list[dict[str, Any]]]
                 ) -> tuple[dict[str, Any], dict[str, Started]]:
    """On each host, the containers of `groups` that do not run start: a worker, waited for until ready
    (`start_ready`); a proxied one (stopped by a rollout that failed after its create), for its route's switch to
    check. Returns each host's listing of the destination's containers from before (or the exception it raised)
    and what started there."""
    started: dict[str, Started] = {h: [] for h in groups}

    def start(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        t = target(entries[0])
        c = hosts.client(t)
        with docker_errors(t, f"starting the workers of destination {props['destination']}"):
            listing = c.containers(all=True, filters={"label": label_filters(props)})
            for entry in entries:
                p = _entry_props(props, entry)
                info = next((i for i in listing if i["Id"] == entry["container_id"]), None)
                if info is None:
                    raise HostError(str(t), f"container {entry['name']} (role {entry['role']}) of destination "
                                            f"{props['destination']} is gone from the host; run `pulumi up "
                                            f"--refresh` to create it again")
                if info.get("State") == "running":
                    continue
                if entry.get("proxied"):
                    c.start(entry["container_id"])
                    started[t.host].append((entry, []))
                    continue
                handed = start_ready(c, t, entry["container_id"], p, of_role(listing, p, entry["role"]), keep=True)
                started[t.host].append((entry, handed))
        return listing

    return each_at_once(groups, start), started


def _told(first: BaseException, undone: bool, then: str) -> BaseException:
    """The first failure of a step, saying what became of the containers it had started (`then`), if any
    (`undone`)."""
    if isinstance(first, HostError) and undone:
        detail = str(first).split(": ", 1)[1]
        told = type(first)(first.host, f"{detail} {then}")
        told.__cause__ = first
        return told
    return first

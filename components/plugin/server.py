"""The `shipyard` resource provider plugin: one gRPC server that serves every resource kind a destination puts on
its hosts (`schema.PROVIDERS`), each backed by its provider in `components.providers`, and constructs the
`shipyard:index:Destination` component (`destination`).

The engine starts it as `pulumi-resource-shipyard <engine address>`; it prints its port and serves until the engine
stops it. Operations run on a thread pool sized for fleets (no cap of four as in the dynamic-provider server), so
one process serves every host of a destination. The providers get plain values - secrets unwrapped, then wrapped
again in what they return under the same key; unknowns as the SDK's `Unknown` - as the dynamic-provider server gave
them. Diffs are detailed: each changed property by its path (`env.FOO`, `target.user`) and whether it replaces, so a
preview names what changes and nothing else."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Collection, Iterable, Mapping

import grpc
from google.protobuf import empty_pb2
from pulumi.runtime import proto, rpc
from pulumi.provider.server import ProviderServicer
from pulumi.runtime.proto import engine_pb2_grpc, provider_pb2_grpc

from .. import decisions, hosts
from ..errors import DeployError
from ..providers import rollout
from . import reach, schema

VERSION = schema.VERSION
MAX_MESSAGE = 400 * 1024 * 1024  # as the engine's own limit: a state with many routes and files
WORKERS = 64  # operations at once: a fleet's hosts, each waiting on SSH far more than on this process


def reveal(value: Any) -> tuple[Any, bool]:
    """A value with its secrets unwrapped, and whether it held any."""
    if rpc.is_rpc_secret(value):
        return reveal(rpc.unwrap_rpc_secret(value))[0], True
    if isinstance(value, dict):
        pairs = {k: reveal(v) for k, v in value.items()}
        return {k: v for k, (v, _) in pairs.items()}, any(s for _, s in pairs.values())
    if isinstance(value, list):
        items = [reveal(v) for v in value]
        return [v for v, _ in items], any(s for _, s in items)
    return value, False


def plain(props: Any, secret: set[str] | None = None, *, keep_unknowns: bool = False) -> dict[str, Any]:
    """A request's properties as the providers take them: plain values (secrets unwrapped: each key that held one
    goes into `secret`, so what comes back under it is wrapped again), unknowns as the SDK's `Unknown`."""
    out = {}
    for key, value in rpc.deserialize_properties(props, keep_unknowns).items():
        out[key], hidden = reveal(value)
        if hidden and secret is not None:
            secret.add(key)
    return out


def recorded(outputs: Any, inputs: Any, secret: set[str] | None = None, *, keep_unknowns: bool = False
             ) -> dict[str, Any]:
    """A resource's recorded state as the providers take it: its recorded outputs over its recorded inputs. The
    outputs leave out the inputs they would repeat (`beyond`); states written before that keep both."""
    return {**plain(inputs, secret, keep_unknowns=keep_unknowns), **plain(outputs, secret, keep_unknowns=keep_unknowns)}


def _wire_type(value: Any) -> type:
    """A value's type as the engine keeps it: one number type (`5` comes back as `5.0`), booleans apart from it."""
    return float if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value)


def identical(a: Any, b: Any) -> bool:
    """Equal and of the same types as the engine keeps them, all the way down (`True` is not `1`): what the state
    can leave to the inputs."""
    if _wire_type(a) is not _wire_type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(identical(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    return a == b


def beyond(outs: Mapping[str, Any], inputs: Mapping[str, Any], keep: Iterable[str]) -> dict[str, Any]:
    """The outputs the state records for a resource: what its provider computed or found (a refresh's drift) and
    `keep`, not the other inputs repeated."""
    return {k: v for k, v in outs.items() if k in keep or k not in inputs or not identical(v, inputs[k])}


def _kept(urn: str, secret: set[str]) -> set[str]:
    """What a resource's outputs keep whatever its inputs: its kind's (`schema.recorded_outputs`: what a program
    reads back, its secrets) and whatever came secret."""
    return secret | schema.recorded_outputs(schema.kind_of(_type_token(urn)))


def _type_token(urn: str) -> str:
    """The resource type a URN names (`urn:pulumi:<stack>::<project>::<parent types$>type::name`)."""
    return urn.split("::")[2].split("$")[-1]


async def wire(outs: Mapping[str, Any], secret: set[str] = frozenset()) -> Any:
    """Properties for the engine, each key that came in secret wrapped as a secret again."""
    return await rpc.serialize_properties({k: rpc.wrap_rpc_secret(v) if k in secret else v
                                           for k, v in outs.items()}, {})


def check_failure(prop: str, reason: str, news: Mapping[str, Any]) -> proto.CheckFailure:
    """A refused input as the engine prints it. The engine quotes a named property's whole value before the reason:
    for a map or a list (`promote`, `ports`) a dump in Go's syntax that buries the reason, so such a property is
    named in the reason instead (`...: promote: version v1 already names a build ...`)."""
    if isinstance(news.get(prop), (dict, list)):
        return proto.CheckFailure(property="", reason=f"{prop}: {reason}")
    return proto.CheckFailure(property=prop, reason=reason)


def message(exc: BaseException, doing: str = "", props: Mapping[str, Any] | None = None) -> str:
    """What the engine prints for a failed operation: our own errors say what happened and what to do; a connection
    to the resource's host that broke where no step translated it says so too; anything else is a bug, said so
    (with the traceback under SHIPYARD_DEBUG)."""
    if isinstance(exc, DeployError):
        return str(exc)
    where = (props or {}).get("target") or (props or {}).get("build_host")
    if isinstance(where, dict) and where.get("host"):
        from ..dockerapi import translate
        from ..ssh import SSHTarget
        found = translate(SSHTarget.from_dict(where), doing, exc)
        if found is not None and found.broken:
            return str(found.error)
    if os.environ.get("SHIPYARD_DEBUG"):
        import traceback
        return "".join(traceback.format_exception(exc))
    return (f"unexpected {type(exc).__name__}: {exc} - this is a bug in shipyard; run again with SHIPYARD_DEBUG=1 "
            f"for the traceback and report it")


def _name(urn: str) -> str:
    """A resource's name, from its URN (`urn:pulumi:<stack>::<project>::<type>::<name>`)."""
    return urn.rsplit("::", 1)[-1]


def _key(name: str) -> str:
    return f".{name}" if name.replace("_", "a").isalnum() and not name[:1].isdigit() else f'["{name}"]'


def leaf_changes(old: Any, new: Any, path: str, depth: int = 3) -> list[tuple[str, Any, Any]]:
    """(path, old, new) of each changed value under `path`: objects by key, lists of the same length by index, down
    to `depth` levels; below that (or where a list grew or shrank) the value as a whole."""
    if decisions.same(old, new):
        return []
    if depth and isinstance(old, Mapping) and isinstance(new, Mapping):
        return [c for k in sorted(set(old) | set(new)) for c in leaf_changes(old.get(k), new.get(k),
                                                                                path + _key(k), depth - 1)]
    if depth and isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)) and len(old) == len(new):
        return [c for i, (o, n) in enumerate(zip(old, new)) for c in leaf_changes(o, n, f"{path}[{i}]", depth - 1)]
    return [(path, old, new)]


def detailed_diff(olds: Mapping[str, Any], news: Mapping[str, Any], replaces: list[str],
                  compared: tuple[str, ...] | None = None, outputs: Collection[str] | None = None) -> dict[str, Any]:
    """Each changed input by its path (`env.FOO`, `target.user`, `labels["a.b"]`, `containers[0].container_id`),
    marked as replacing where its key replaces - for an SSH target, its host only. Outputs the inputs never carry
    are not compared, nor inputs outside `compared` (where the provider's diff looks at those only). A preview shows
    each change against the recorded outputs where they hold its key (`outputs`), else against the recorded inputs
    (`beyond`)."""
    kinds = proto.PropertyDiff
    out: dict[str, Any] = {}
    for key in sorted(news):
        if key.startswith("__") or (compared is not None and key not in compared):
            continue  # (`__provider`: the serialized provider of states written before the plugin)
        for path, old, new in leaf_changes(olds.get(key), news.get(key), key):
            replace = key in replaces and (key not in schema.TARGET_KEYS or path.endswith(".host"))
            if old is None:
                kind = kinds.ADD_REPLACE if replace else kinds.ADD
            elif new is None:
                kind = kinds.DELETE_REPLACE if replace else kinds.DELETE
            else:
                kind = kinds.UPDATE_REPLACE if replace else kinds.UPDATE
            # against the recorded outputs where they have the key: a refresh's drift (a route pointed elsewhere by
            # hand) shows as what is there now => what the stack wants; elsewhere against the recorded inputs
            out[path] = proto.PropertyDiff(kind=kind, inputDiff=outputs is not None and key not in outputs)
    return out


class Component:
    """The `Destination` component's provider (`destination.py`), made at the SDK's first call of it (Construct):
    a program of the resource kinds alone never pays for importing the program and its config."""

    def __getattr__(self, name: str) -> Any:
        if "real" not in self.__dict__:
            from .destination import DestinationProvider
            self.__dict__["real"] = DestinationProvider(VERSION, schema.as_json())
        return getattr(self.__dict__["real"], name)


class Servicer(ProviderServicer):
    """The resource types' CRUD here; `Construct` (the `Destination` component, `destination.py`) is the SDK's."""

    def __init__(self, engine_address: str = "", args: list[str] | None = None) -> None:
        super().__init__(Component(), list(args or []), engine_address)  # type: ignore[arg-type]
        self._engine = engine_address
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="shipyard")
        self._reach = reach.Reach()
        self._checked: dict[str, dict[str, Any]] = {}  # inputs as a first check saw them (`recheck_against_olds`)

    async def _run(self, context, fn: Callable[..., Any], *args: Any, doing: str = "",
                   props: Mapping[str, Any] | None = None) -> Any:
        """`fn(*args)` in the pool; a failure goes back to the engine as one message (`doing` what, to the
        resource of `props`)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the engine as one message
            await self._abandon()
            await context.abort(grpc.StatusCode.UNKNOWN, message(exc, doing, props))

    async def _abandon(self) -> None:
        """A failed operation (or a refused input) ends the run: no rollout starts after it
        (`providers.rollout.abandon`)."""
        await asyncio.get_running_loop().run_in_executor(self._pool, rollout.abandon)

    async def _say(self, urn: str, message: str) -> None:
        """`message` in the CLI's output beside the resource of `urn` (the engine's log) - best effort."""
        if not self._engine:
            return
        try:
            async with grpc.aio.insecure_channel(self._engine) as channel:
                await engine_pb2_grpc.EngineStub(channel).Log(proto.LogRequest(
                    severity=proto.LogSeverity.Value("INFO"), message=message, urn=urn))
        except grpc.RpcError:
            pass

    @staticmethod
    def _provider(urn: str):
        """The provider of the resource a URN names."""
        return schema.provider_for(_type_token(urn))

    # -- the plugin itself -----------------------------------------------------------------------------------------

    async def GetPluginInfo(self, request, context):
        return proto.PluginInfo(version=VERSION)

    async def GetSchema(self, request, context):
        return proto.GetSchemaResponse(schema=schema.as_json())

    async def CheckConfig(self, request, context):
        return proto.CheckResponse(inputs=request.news, failures=[])

    async def DiffConfig(self, request, context):
        # the provider has no configuration: a stack moving to it (or between its versions) replaces nothing
        return proto.DiffResponse(changes=proto.DiffResponse.DIFF_NONE)

    async def Configure(self, request, context):
        # secrets come wrapped (the engine requires it of a plugin that constructs components): the providers get
        # them plain, and what they return under a secret input's key goes back wrapped (`plain`, `wire`); no create
        # or update at preview
        return proto.ConfigureResponse(acceptSecrets=True, supportsPreview=False, acceptResources=False,
                                       acceptOutputs=False)

    async def Cancel(self, request, context):
        # the engine's on a Ctrl-C (the steps in flight finish, none follows) and before it ends the plugin: what
        # waits for a later step goes back, as on a failure, and the engine waits for that to end
        await asyncio.get_running_loop().run_in_executor(self._pool, rollout.abandon, rollout.INTERRUPTED)
        return empty_pb2.Empty()

    # -- resources ---------------------------------------------------------------------------------------------

    async def Check(self, request, context):
        secret: set[str] = set()
        olds, news = plain(request.olds, keep_unknowns=True), plain(request.news, secret, keep_unknowns=True)
        olds.pop("__provider", None)
        news.pop("__provider", None)
        self._reach.seen(news)
        provider = self._provider(request.urn)
        if getattr(provider, "recheck_against_olds", False):
            if olds:
                self._checked[request.urn] = olds
            else:
                # the engine checks a replacement again with no olds, just after its check with them and its diff
                # (`pulumi up` checks each resource serially): what it replaces is what its host's look is against
                olds = self._checked.get(request.urn, olds)
        result = await self._run(context, provider.check, olds, news)
        if result.failures:
            await self._abandon()
        return proto.CheckResponse(inputs=await wire(result.inputs or news, secret), failures=[
            check_failure(f.property, f.reason, news) for f in result.failures or []])

    async def Diff(self, request, context):
        olds = recorded(request.olds, request.old_inputs, keep_unknowns=True)
        news = plain(request.news, keep_unknowns=True)
        provider = self._provider(request.urn)
        if hasattr(provider, "observed"):  # what is on the host, where the recorded outputs may not say it
            olds, found = await self._run(context, provider.observed, request.id, olds)
            if found:  # the preview shows the recorded value: it says why the change is there
                await self._say(request.urn, found)
        result = await self._run(context, provider.diff, request.id, olds, news)
        if not result.changes:
            return proto.DiffResponse(changes=proto.DiffResponse.DIFF_NONE)
        replaces = list(result.replaces or [])
        details = detailed_diff(olds, news, replaces, getattr(provider, "compared", None),
                                request.olds.fields.keys())
        return proto.DiffResponse(changes=proto.DiffResponse.DIFF_SOME, replaces=replaces,
                                  deleteBeforeReplace=bool(result.delete_before_replace),
                                  diffs=sorted({re.split(r"[.\[]", p)[0] for p in details}),
                                  detailedDiff=details, hasDetailedDiff=bool(details))

    async def Create(self, request, context):
        secret: set[str] = set()
        props = plain(request.properties, secret)
        result = await self._run(context, self._provider(request.urn).create, props,
                                 doing=f"creating {_name(request.urn)}", props=props)
        outs = beyond(result.outs or {}, plain(request.properties), _kept(request.urn, secret))
        return proto.CreateResponse(id=result.id, properties=await wire(outs, secret))

    async def Update(self, request, context):
        secret: set[str] = set()
        olds, news = recorded(request.olds, request.old_inputs, secret), plain(request.news, secret)
        result = await self._run(context, _update, self._provider(request.urn), request.id, olds, news,
                                 doing=f"updating {_name(request.urn)}", props=news)
        outs = beyond(result.outs or {}, plain(request.news), _kept(request.urn, secret))
        return proto.UpdateResponse(properties=await wire(outs, secret))

    async def Read(self, request, context):
        secret: set[str] = set()
        props = recorded(request.properties, request.inputs, secret)
        result = await self._run(context, self._provider(request.urn).read, request.id, props,
                                 doing=f"reading {_name(request.urn)}", props=props)
        inputs = result.inputs if result.inputs is not None else plain(request.inputs)
        outs = beyond(result.outs or {}, inputs, _kept(request.urn, secret))
        fields: dict[str, Any] = {"id": result.id, "properties": await wire(outs, secret)}
        if result.inputs is not None:
            fields["inputs"] = await wire(result.inputs, secret)
        return proto.ReadResponse(**fields)

    async def Delete(self, request, context):
        props = self._reach.now(recorded(request.properties, request.old_inputs))
        await self._run(context, self._provider(request.urn).delete, request.id, props,
                        doing=f"removing {_name(request.urn)}", props=props)
        return empty_pb2.Empty()


def _update(provider: Any, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> Any:
    """An update, after connecting with any SSH settings it changes (`reach.changed`): settings that do not work
    fail it, so they are never recorded."""
    for t in reach.changed(olds, news):
        with hosts.docker_errors(t, "connecting with its new SSH settings"):
            hosts.connection(t)
    return provider.update(id_, olds, news)


def serve(args: list[str]) -> None:
    """Serve until the engine stops the plugin (`args`: the engine's address, then flags); the port goes to stdout,
    as the engine expects."""
    engine = next((a for a in args if not a.startswith("-")), "")

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE),
                                          ("grpc.max_send_message_length", MAX_MESSAGE)])
        provider_pb2_grpc.add_ResourceProviderServicer_to_server(Servicer(engine, args), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        sys.stdout.write(f"{port}\n")
        sys.stdout.flush()
        await server.wait_for_termination()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

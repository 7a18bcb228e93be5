"""Dynamic providers for what a destination puts on its hosts, one module per kind of resource: `image`,
`container` (app roles and accessories), `rollout` (a destination's rollout as one unit), `proxy` (kamal-proxy
and routes), `network`, `volume` - and `hook` (Kamal's hooks, run on the deploying machine).

Providers hold no state and no clients: every method reaches its host through `components.hosts`, and decisions
come from the pure `components.decisions`. Diffs are exact: computed outputs and the serialized provider never
count, and each input is declared replace-on-change or update-in-place. The classes are re-exported here, where
states written by earlier releases expect them."""

from .base import STOP_TIMEOUT_S, report_deploy_errors_without_traceback
from .container import Container, ContainerProvider
from .hook import HOOKS, Hook, HookProvider
from .image import Image, ImageProvider
from .network import Network, NetworkProvider
from .proxy import Proxy, ProxyProvider, ProxyRoute, RouteProvider
from .rollout import Rollout, RolloutProvider
from .volume import Volume, VolumeProvider

report_deploy_errors_without_traceback()

__all__ = ["HOOKS", "STOP_TIMEOUT_S", "Container", "ContainerProvider", "Hook", "HookProvider", "Image",
           "ImageProvider", "Network", "NetworkProvider", "Proxy", "ProxyProvider", "ProxyRoute", "Rollout",
           "RolloutProvider", "RouteProvider", "Volume", "VolumeProvider"]

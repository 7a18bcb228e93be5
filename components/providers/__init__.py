"""The providers behind the `shipyard` plugin's resource types (`components.plugin`), one module per kind of
resource: `image`, `container` (app roles and accessories), `rollout` (a destination's rollout as one unit), `proxy`
(kamal-proxy and routes), `network`, `volume` - and `hook` (Kamal's hooks, run on the deploying machine). They run
in the plugin's process; the resource classes a program declares are `components.resources`.

Providers hold no state and no clients: every method reaches its host through `components.hosts`, and decisions
come from the pure `components.decisions`. Diffs are exact: computed outputs (and the serialized provider states
of the dynamic-resource releases carry) never count, and each input is declared replace-on-change or
update-in-place."""

from .base import STOP_TIMEOUT_S
from .container import ContainerProvider
from .hook import HookProvider
from .image import ImageProvider
from .network import NetworkProvider
from .proxy import ProxyProvider, RouteProvider
from .rollout import RolloutProvider
from .volume import VolumeProvider

__all__ = ["STOP_TIMEOUT_S", "ContainerProvider", "HookProvider", "ImageProvider", "NetworkProvider", "ProxyProvider",
           "RolloutProvider", "RouteProvider", "VolumeProvider"]

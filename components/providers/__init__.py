"""The providers behind the `shipyard` plugin's resource types (`components.plugin`), one module per kind of
resource: `image`, `container` (app roles and accessories), `rollout` (a destination's rollout as one unit), `proxy`
(kamal-proxy and routes), `network`, `volume` - and `hook` (Kamal's hooks, run on the deploying machine); `resource`
holds the resource classes' base.

Providers hold no state and no clients: every method reaches its host through `components.hosts`, and decisions
come from the pure `components.decisions`. Diffs are exact: computed outputs (and the serialized provider states
of the dynamic-resource releases carry) never count, and each input is declared replace-on-change or
update-in-place."""

from .base import STOP_TIMEOUT_S
from .container import Container, ContainerProvider
from .hook import HOOKS, Hook, HookProvider
from .image import Image, ImageProvider
from .network import Network, NetworkProvider
from .proxy import Proxy, ProxyProvider, ProxyRoute, RouteProvider
from .rollout import Rollout, RolloutProvider
from .volume import Volume, VolumeProvider

__all__ = ["HOOKS", "STOP_TIMEOUT_S", "Container", "ContainerProvider", "Hook", "HookProvider", "Image",
           "ImageProvider", "Network", "NetworkProvider", "Proxy", "ProxyProvider", "ProxyRoute", "Rollout",
           "RolloutProvider", "RouteProvider", "Volume", "VolumeProvider"]

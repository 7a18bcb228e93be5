"""`python -m components.plugin <engine address>`: the `shipyard` resource provider plugin, as the engine starts it
(through `pulumi-resource-shipyard`)."""

import sys

from .server import serve

serve(sys.argv[1:])

"""One exception tree for everything the deployer reports to a user.

Every message names what it is about (destination, host, object, config path) and says what to do. Raw paramiko
and docker errors are translated into these at the one place that talks to hosts (`components.hosts`).
"""

from __future__ import annotations


class DeployError(Exception):
    """Base of every error this project raises on purpose."""


class ConfigError(DeployError):
    """A config value is wrong. `path` is where, e.g. `servers.web.hosts[1]`."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class HostError(DeployError):
    """Something about one host; the message starts with the host."""

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__(f"host {host}: {message}")


class HostUnreachable(HostError):
    pass


class HostKeyRejected(HostError):
    pass


class AuthenticationFailed(HostError):
    pass


class DockerError(HostError):
    """The host's Docker daemon refused or failed an operation."""


class BuildFailed(HostError):
    pass


class OwnershipConflict(HostError):
    """An object we were about to create or change belongs to another destination or stack."""


class HealthCheckFailed(HostError):
    pass


class LockLost(HostError):
    """A host lock this process held is gone (its own SSH connection broke, or someone released it): what was to
    be done under it is not done."""


class Abandoned(DeployError):
    """A step of a deploy whose run has failed elsewhere meanwhile: it goes no further, and undoes what it began."""


class HookFailed(DeployError):
    """A hook (`.kamal/hooks/<name>`) failed on the deploying machine; the message starts with the hook."""

    def __init__(self, hook: str, message: str):
        self.hook = hook
        super().__init__(f"hook {hook}: {message}")


class StackError(DeployError):
    """Something about a stack as a whole (not found, not deployed, locked by another deploy); the message starts
    with the stack."""

    def __init__(self, stack: str, message: str):
        self.stack = stack
        super().__init__(f"stack {stack}: {message}")


class StackLocked(StackError):
    """Another process is updating the stack; the message names it."""

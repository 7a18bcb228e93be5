"""Every name, tag and label the deployer gives to an object on a host. Nothing else formats them.

Pure: no pulumi, docker or paramiko. Inputs are already validated by `components.config`, whose patterns keep
every part within what Docker allows in names and tags.
"""

from __future__ import annotations

PROJECT = "shipyard"
OWNER_LABEL = f"{PROJECT}.stack"  # value: <project>/<stack>; delete and prune act only on this stack's objects

SERVICE, ROLE, DESTINATION, VERSION = "service", "role", "destination", "version"
SOURCE_LABEL = f"{PROJECT}.source"  # what the image was built from: context hash or promoted image reference
BUILD_LABEL = f"{PROJECT}.build"  # how it was built: Dockerfile, args, target (or the promoted source); see plan

# kamal-proxy is one per host, shared by every destination: Kamal's names, so a host Kamal set up is recognised.
PROXY_CONTAINER = "kamal-proxy"
PROXY_NETWORK = "kamal"
PROXY_VOLUME = "kamal-proxy-config"
PROXY_LABEL = f"{PROJECT}.proxy"  # marks the proxy container; it carries no stack's ownership label
PROXY_RUN_LABEL = "shipyard.proxy-run"  # on kamal-proxy: a digest of how it was told to run (proxy.run)


def owner(project: str, stack: str) -> str:
    """The ownership label's value. It leaves out the Pulumi organization, which differs between backends, so a
    stack moved to another backend (`pulumi stack export/import`) still owns what it deployed."""
    return f"{project}/{stack}"


def same_owner(value: str | None, owner_value: str) -> bool:
    """Whether an ownership label names this stack: `<project>/<stack>`, or `<org>/<project>/<stack>` as labels
    written by earlier releases read (any organization: the backend may have changed)."""
    return bool(value) and value.split("/")[-2:] == owner_value.split("/")[-2:]


def image_repository(image: str, registry_server: str | None) -> str:
    """`<server>/<image>` with a registry, the bare image name without one."""
    return f"{registry_server}/{image}" if registry_server else image


def image_tag(repository: str, version: str, destination: str) -> str:
    """`<repo>:<version>-<destination>`: never a bare version, never `latest`, so no destination can retag another's."""
    return f"{repository}:{version}-{destination}"


def container_name(service: str, role: str, destination: str, version: str) -> str:
    return f"{service}-{role}-{destination}-{version}"


def network_name(service: str, destination: str) -> str:
    return f"{service}-{destination}"


def accessory_name(service: str, destination: str, accessory: str) -> str:
    return f"{service}-{destination}-{accessory}"


def proxy_service(service: str, role: str, destination: str | None) -> str:
    """The name of a destination's route in kamal-proxy: one per service, role and destination - Kamal's name, so
    a route Kamal made is recognised (Kamal leaves the destination out when it has none)."""
    return "-".join(p for p in (service, role, destination) if p)


COMMAND_ENV = "SHIPYARD_COMMAND"  # what the `shipyard` command runs the program for: deploy (unset), or rollback
STATE_DIR = f".{PROJECT}"  # on each host, relative to the SSH user's home


def destination_dir(service: str, destination: str) -> str:
    return f"{STATE_DIR}/{service}-{destination}"


def volume_name(service: str, destination: str, volume: str) -> str:
    """Named volumes carry the destination: staging's `data` is never production's."""
    return f"{service}-{destination}-{volume}"


ACCESSORY_PREFIX = "accessory."


def accessory_role(accessory: str) -> str:
    """The role label of an accessory's container (app roles are plain names; this cannot clash with them)."""
    return f"{ACCESSORY_PREFIX}{accessory}"


def replaced_name(name: str, container_id: str) -> str:
    """What a container is renamed to when a replacement with the same name takes its place (same version, new
    config): the replacement takes the real name and the old one is deleted by ID afterwards."""
    return f"{name}_replaced_{container_id[:12]}"


def pending_name(name: str, nonce: str) -> str:
    """The name a new container has until it is ready; it takes its real name only then, so a container under a
    pending name was left by an interrupted run and never served."""
    return f"{name}_pending_{nonce}"


def is_pending(name: str) -> bool:
    return "_pending_" in name


def of_run(name: str, run: str) -> bool:
    """A pending name given by run `run` (its nonce starts with the run's: `pending_name(name, run + ...)`)."""
    return name.partition("_pending_")[2].startswith(run)


def is_aside(name: str) -> bool:
    return is_replaced(name) or "_pending_" in name


def is_replaced(name: str) -> bool:
    """Moved aside under its replaced name (`replaced_name`)."""
    return "_replaced_" in name


def image_labels(service: str, destination: str, version: str, owner_value: str) -> dict[str, str]:
    return {SERVICE: service, DESTINATION: destination, VERSION: version, OWNER_LABEL: owner_value}


def container_labels(service: str, role: str, destination: str, version: str, owner_value: str) -> dict[str, str]:
    return {**image_labels(service, destination, version, owner_value), ROLE: role}


def owned_by(labels: dict[str, str] | None, owner_value: str, destination: str) -> bool:
    """True when an object's labels say this stack and this destination own it."""
    labels = labels or {}
    return same_owner(labels.get(OWNER_LABEL), owner_value) and labels.get(DESTINATION) == destination


def describe_owner(labels: dict[str, str] | None) -> str:
    labels = labels or {}
    if OWNER_LABEL in labels:
        return f"stack {labels[OWNER_LABEL]} (destination {labels.get(DESTINATION, '?')})"
    if DESTINATION in labels:  # Kamal labels its containers `destination`, empty without one
        dest = labels[DESTINATION]
        return f"destination {dest} of another deployer" if dest else "another deployer (without a destination)"
    return "something not managed by this project"

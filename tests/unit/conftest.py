"""Every unit test starts as a plugin process does: no rollout's containers held, no operation failed yet; and
opens no connection of its own (`hosts.open_ahead`), as its Docker clients are fakes."""

from __future__ import annotations

import pytest

from components import hosts
from components.providers import rollout


@pytest.fixture(autouse=True)
def fresh_run(monkeypatch):
    monkeypatch.setattr(rollout, "RUN", rollout._Run())


@pytest.fixture(autouse=True)
def no_connections_ahead(monkeypatch):
    monkeypatch.setattr(hosts, "open_ahead", lambda targets: None)

"""Every unit test starts as a plugin process does: no rollout's containers held, no operation failed yet."""

from __future__ import annotations

import pytest

from components.providers import rollout


@pytest.fixture(autouse=True)
def fresh_run(monkeypatch):
    monkeypatch.setattr(rollout, "UNSTARTED", rollout._Unstarted())

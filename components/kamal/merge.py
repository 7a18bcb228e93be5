"""Kamal's own merge rule, and the key paths every part of the reader reports problems under."""

from __future__ import annotations

from typing import Any

def deep_merge(base: Any, over: Any) -> Any:
    """ActiveSupport's `Hash#deep_merge`: hashes merge key by key, `over` wins; anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = deep_merge(base[key], value) if key in base else value
        return out
    return over


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key

"""Typed fields of the YAML config sections (node, trust, ...): one way to read each kind,
with the same error wording everywhere (``<where>: <key> ...``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ion.authoring.durations import parse_duration
from ion.errors import ConfigError


def duration_ms(data: Mapping[str, Any], key: str, default: int, where: str) -> int:
    """A positive duration (``10s``, ``5m``, ...) in milliseconds; ``default`` when absent."""
    if key not in data:
        return default
    try:
        ms = parse_duration(data[key])
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None
    if ms <= 0:
        raise ConfigError(f"{where}: {key} must be positive")
    return ms


def positive_int(data: Mapping[str, Any], key: str, default: int, where: str) -> int:
    """An integer >= 1 (not a bool); ``default`` when absent."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {key} must be a positive integer")
    return value

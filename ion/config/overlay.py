"""Config sections as frozen dataclasses: overlay a mapping on the defaults, refusing typos."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import TYPE_CHECKING, Any, TypeVar

from ion.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

D = TypeVar("D", bound="DataclassInstance")


def overlay(cls: type[D], data: Mapping[str, Any], *, where: str) -> D:
    """``cls()`` with the keys in ``data`` replaced; unknown keys and invalid values raise
    ``ConfigError`` naming ``where`` (the class validates its own values when built)."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    unknown = sorted(set(map(str, data)) - {f.name for f in fields(cls)})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    try:
        return replace(cls(), **dict(data))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None

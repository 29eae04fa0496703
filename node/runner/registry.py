"""Component implementations by type name: the built-ins, then installed entry points.

Third-party components are installed Python packages that declare an entry point in the group
``ion.components.python``, for example in their ``pyproject.toml``::

    [project.entry-points."ion.components.python"]
    kmeans_scorer = "mypkg.scoring:KMeansScorer"

An ION names a type; this module maps the name to installed code.  Nothing from the wire is ever
imported, evaluated or unpickled: a name that is not installed is an error, nothing more.
Entry points are loaded lazily, only for the types a pipeline uses, so one broken or heavy
package does not affect pipelines that do not use it.  Built-in names are reserved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, cast

from .component import ComponentFactory

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "ion.components.python"


class EntryPointLike(Protocol):
    """The part of ``importlib.metadata.EntryPoint`` the registry uses."""

    @property
    def name(self) -> str: ...

    @property
    def value(self) -> str: ...

    def load(self) -> Any: ...


class UnknownComponentError(LookupError):
    """No installed component has this type name."""


class ComponentLoadError(RuntimeError):
    """A component type is installed but cannot be loaded (import error, not a class, ...)."""


def installed_entry_points() -> list[EntryPointLike]:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def default_builtins() -> dict[str, ComponentFactory]:
    """The python engine's built-ins: the runner's general-purpose components and the
    shipped ML components (``node.components``: sources, KMeans and TFLite scoring, health)."""
    from node.components.python_builtins import PYTHON_BUILTINS

    from .builtin import BUILTINS

    return {**BUILTINS, **PYTHON_BUILTINS}


class Registry:
    """Resolves component type names; built-ins win, entry points are loaded on first use."""

    def __init__(
        self,
        builtins: Mapping[str, ComponentFactory] | None = None,
        entry_points: Callable[[], Iterable[EntryPointLike]] | None = installed_entry_points,
    ) -> None:
        if builtins is None:
            builtins = default_builtins()
        self._builtins = dict(builtins)
        self._discover = entry_points
        self._found: dict[str, list[EntryPointLike]] | None = None
        self._loaded: dict[str, ComponentFactory] = {}

    def names(self) -> list[str]:
        """Every type name available here (without loading any entry point)."""
        return sorted(set(self._builtins) | set(self._entry_points()))

    def resolve(self, type_name: str) -> ComponentFactory:
        """The factory for ``type_name``; UnknownComponentError or ComponentLoadError if none."""
        if type_name in self._builtins:
            return self._builtins[type_name]
        if type_name in self._loaded:
            return self._loaded[type_name]
        # The same distribution found twice on the path is one candidate, not a conflict.
        candidates = list({ep.value: ep for ep in self._entry_points().get(type_name, [])}.values())
        if not candidates:
            raise UnknownComponentError(
                f"unknown component type {type_name!r}; installed types: "
                f"{', '.join(self.names()) or 'none'}"
            )
        if len(candidates) > 1:
            raise ComponentLoadError(
                f"component type {type_name!r} is provided by several installed entry points: "
                f"{', '.join(sorted(ep.value for ep in candidates))}"
            )
        ep = candidates[0]
        try:
            loaded: Any = ep.load()
        except Exception as e:
            raise ComponentLoadError(
                f"component type {type_name!r} ({ep.value}) cannot be loaded: "
                f"{type(e).__name__}: {e}"
            ) from e
        if not isinstance(loaded, type):
            raise ComponentLoadError(
                f"component type {type_name!r} ({ep.value}) is not a class: {loaded!r}"
            )
        factory = cast("ComponentFactory", loaded)
        self._loaded[type_name] = factory
        return factory

    def _entry_points(self) -> dict[str, list[EntryPointLike]]:
        if self._found is None:
            found: dict[str, list[EntryPointLike]] = {}
            for ep in self._discover() if self._discover is not None else ():
                if ep.name in self._builtins:
                    log.warning(
                        "ignoring entry point %s = %s: %r is a built-in component type",
                        ep.name,
                        ep.value,
                        ep.name,
                    )
                    continue
                found.setdefault(ep.name, []).append(ep)
            self._found = found
        return self._found

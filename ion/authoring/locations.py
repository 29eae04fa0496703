"""Location paths: how a problem names the place in an ION it is about.

A location reads like the YAML it points at: ``pipelines[training].components[fit].inputs.data``
or ``edges[model].to[0]``.  Elements of the named lists (pipelines, components, edges) are named by
their name; when the name is missing or repeats an earlier one, by ``#<index>`` (0-based), so that
every location names exactly one element.  The parser records a line for every location it reads
and the validator builds the same strings, so a validation problem finds its line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

logger = logging.getLogger(__name__)


def child(loc: str, key: str) -> str:
    """The location of mapping key ``key`` under ``loc``."""
    return f"{loc}.{key}" if loc else key


def item(loc: str, key: str | int) -> str:
    """The location of list element ``key`` (a name, ``#i`` or an index) under ``loc``."""
    return f"{loc}[{key}]"


def element_keys(names: Iterable[str]) -> tuple[str, ...]:
    """The key of each element of a named list: its name, or ``#i`` when empty or repeated."""
    seen: set[str] = set()
    keys: list[str] = []
    for index, name in enumerate(names):
        if name and name not in seen:
            seen.add(name)
            keys.append(name)
        else:
            keys.append(f"#{index}")
    return tuple(keys)


def parent(loc: str) -> str | None:
    """The enclosing location, or ``None`` at the top.  Brackets may hold dots."""
    depth = 0
    for pos in range(len(loc) - 1, -1, -1):
        char = loc[pos]
        if char == "]":
            depth += 1
        elif char == "[":
            depth -= 1
            if depth == 0:
                return loc[:pos]
        elif char == "." and depth == 0:
            return loc[:pos]
    return None


def is_within(loc: str, scope: str) -> bool:
    """Whether ``loc`` is ``scope`` or anything under it."""
    if not scope:
        return True
    return loc == scope or loc.startswith((scope + ".", scope + "["))


def line_of(lines: Mapping[str, int], loc: str) -> int | None:
    """The line of ``loc``, else of the nearest enclosing location that has one."""
    current: str | None = loc
    while current is not None:
        line = lines.get(current)
        if line is not None:
            return line
        current = parent(current)
    return None

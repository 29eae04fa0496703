"""Names: they become MQTT topic levels, so they follow NAME_PATTERN and never repeat."""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterable

from ion.authoring.locations import child
from ion.model.definition import NAME_PATTERN
from ion.validate.report import Collector

logger = logging.getLogger(__name__)

_NAME = re.compile(NAME_PATTERN)


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def check_name(out: Collector, loc: str, what: str, name: str) -> None:
    """``loc`` is the location of the name itself."""
    if not name:
        out.error(loc, f"{what} name is missing")
    elif not valid_name(name):
        out.error(
            loc,
            f"{what} name {name!r} is not allowed: use 1-64 lower-case letters, digits, '-' or "
            "'_', starting and ending with a letter or digit",
        )


def check_unique(out: Collector, what: str, named: Iterable[tuple[str, str]]) -> None:
    """``named`` holds (element location, name); every repeat after the first is an error."""
    first: dict[str, str] = {}
    for loc, name in named:
        if not name:
            continue
        if name in first:
            where = out.line(first[name])
            at = f"line {where}" if where else first[name]
            out.error(child(loc, "name"), f"duplicate {what} name {name!r} (first at {at})")
        else:
            first[name] = loc


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""

"""Query parameters: parsed strictly, so a bad one is a 400 that says what is wrong."""

from __future__ import annotations

from collections.abc import Mapping

from ion.errors import InputError

from .pages_more import ChartQuery, EventQuery
from .store import MAX_LIMIT, SERIES_TABLES


class BadParamError(InputError):
    """A query parameter that cannot be used."""


def int_param(query: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParamError(f"{name} must be an integer, not {raw!r}") from None
    if not lo <= value <= hi:
        raise BadParamError(f"{name} must be between {lo} and {hi}, not {value}")
    return value


def text_param(query: Mapping[str, str], name: str) -> str | None:
    raw = query.get(name)
    if raw is None or raw.strip() == "":
        return None
    if len(raw) > 200:
        raise BadParamError(f"{name} is too long")
    return raw.strip()


def event_query(query: Mapping[str, str]) -> EventQuery:
    return EventQuery(
        since_ms=int_param(query, "since", 0, 0, 2**62),
        limit=int_param(query, "limit", 100, 1, MAX_LIMIT),
        node_id=text_param(query, "node"),
    )


def chart_query(query: Mapping[str, str]) -> ChartQuery:
    return ChartQuery(
        node_id=text_param(query, "node"),
        pipeline=text_param(query, "pipeline"),
        window_ms=int_param(query, "minutes", 60, 1, 60 * 24 * 90) * 60_000,
    )


def series_table(query: Mapping[str, str]) -> str:
    table = query.get("table", "stats")
    if table not in SERIES_TABLES:
        raise BadParamError(f"table must be one of {', '.join(SERIES_TABLES)}, not {table!r}")
    return table


def safe_next(value: str | None) -> str:
    """Where to go after an action: a path on this site only (no open redirect)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"

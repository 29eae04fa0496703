"""Numbers and times for people (pure)."""

from __future__ import annotations

import time


def duration_ms(ms: float | None) -> str:
    if ms is None:
        return "-"
    ms = max(0.0, float(ms))
    if ms < 1000:
        return f"{ms:.0f} ms"
    s = ms / 1000
    if s < 90:
        return f"{s:.1f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.0f} d"


def age(now_ms: int, then_ms: int | None) -> str:
    """``3.2 s ago``; ``never`` for 0 or None (the schema's "not yet")."""
    if not then_ms:
        return "never"
    return f"{duration_ms(now_ms - then_ms)} ago"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover (the loop always returns)


def clock(ms: int | None) -> str:
    """UTC wall-clock time of a ``*_ms`` value."""
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z"


def number(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}"

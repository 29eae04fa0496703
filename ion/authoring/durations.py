"""Durations and schedules as authors write them.

A duration is an integer of milliseconds or a string of whole-number parts with units, largest
unit first, each unit at most once: ``500ms``, ``30s``, ``10m``, ``6h``, ``1d``, ``1h30m``.  A
leading ``-`` is accepted so that the validator (not the parser) can report negative durations
with their location.  A schedule is ``""`` (run once per apply and on triggers) or
``every <duration>``.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger(__name__)

UNITS_MS: dict[str, int] = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1_000, "ms": 1}
_ORDER = tuple(UNITS_MS)
_WHOLE = re.compile(r"^(-?)((?:[0-9]+(?:ms|s|m|h|d))+)$")
_PART = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_INT64_MAX = 2**63 - 1
_SCHEDULE = re.compile(r"^every\s+(\S+)$")


def parse_duration(value: str | int) -> int:
    """Milliseconds for ``value``; ``ValueError`` says what is wrong with it (``TypeError``
    for a boolean)."""
    if isinstance(value, bool):  # bool is an int; ``true`` is never a duration
        raise TypeError("expected a duration such as 30s or an integer of milliseconds")
    ms = value if isinstance(value, int) else _parse_text(value.strip())
    if abs(ms) > _INT64_MAX:
        raise ValueError(f"duration {value!r} is too large")
    return ms


def _parse_text(text: str) -> int:
    if text in ("0", "-0"):
        return 0
    if re.fullmatch(r"-?[0-9]+", text):
        raise ValueError(f"duration {text!r} has no unit: write {text}ms, or an unquoted integer")
    match = _WHOLE.match(text)
    if match is None:
        raise ValueError(
            f"bad duration {text!r}: expected whole numbers with units ms, s, m, h, d "
            "(for example 500ms, 30s, 10m, 6h, 1d, 1h30m)"
        )
    total = 0
    last = -1
    for number, unit in _PART.findall(match.group(2)):
        rank = _ORDER.index(unit)
        if rank <= last:
            raise ValueError(f"bad duration {text!r}: units must go from largest to smallest, once")
        last = rank
        total += int(number) * UNITS_MS[unit]
    return -total if match.group(1) else total


def format_duration(ms: int) -> str:
    """The shortest exact text for ``ms`` that :func:`parse_duration` reads back."""
    if ms == 0:
        return "0s"
    sign = "-" if ms < 0 else ""
    rest = abs(ms)
    parts: list[str] = []
    for unit, size in UNITS_MS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)


def schedule_interval_ms(schedule: str) -> int | None:
    """The interval of ``every <duration>``; ``None`` for the empty schedule.

    Raises ``ValueError`` for any other text, or an interval that is not positive.
    """
    if schedule == "":
        return None
    match = _SCHEDULE.match(schedule.strip())
    if match is None:
        raise ValueError(f"bad schedule {schedule!r}: expected 'every <duration>', e.g. 'every 6h'")
    interval = parse_duration(match.group(1))
    if interval <= 0:
        raise ValueError(f"bad schedule {schedule!r}: the interval must be positive")
    return interval

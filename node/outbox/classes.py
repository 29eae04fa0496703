"""Traffic classes of the outbox and the one frozen config of the outbox and its store.

Six classes, most important first: control > model > events > health > stats > data.  Each has

``priority``
    Its weight in the send scheduler: the number of MQTT messages (in-flight slots) it may take
    per scheduling round.  Higher also means visited earlier in a round.  Every class with
    something queued gets at least one slot per round, so none starves.
``ttl_ms``
    How long an item may wait, counted from its ``created_ms``; ``None`` never expires.
``max_items`` / ``max_bytes``
    Caps on what the class holds on disk (queued and in flight together).
``on_full``
    What an enqueue does when a cap would be passed: ``reject`` the new item, ``drop_oldest``
    queued item(s) to make room, or ``compact``: replace the oldest queued item with the same
    compaction key (per-key drop-oldest, so one chatty key cannot push out the others) and fall
    back to drop-oldest when the key has nothing queued.

Config files give a mapping; ``OutboxConfig.from_mapping`` overlays it on the defaults below and
rejects unknown keys and wrong types, naming where.  Keys and defaults:

``classes.<name>.{priority, ttl_ms, max_items, max_bytes, on_full}``: see ``DEFAULT_CLASSES``.
``live_share`` (0.5): share of a class's slots for live items while a backlog exists.
``batch_item_max_bytes`` (4096): items smaller than this may be packed into batches.
``batch_max_items`` (64), ``batch_max_bytes`` (65536): the size of one batch.
``batch_topic_levels`` (0): group batches by this many leading topic levels; 0 = whole topic.
``max_candidates`` (4096): at most this many queued items per class and segment are read to
plan one scheduling step.
``synchronous`` ("NORMAL"): SQLite's ``synchronous`` pragma, "NORMAL" or "FULL" (see store).
``retention_max_items`` (10000), ``retention_max_bytes`` (16 MiB), ``retention_max_age_ms``
(1 h): the bound on recently sent items kept for retransmit requests.
``max_db_bytes`` (none): cap the database file (SQLite ``max_page_count``); past it an enqueue
is refused with ``DISK_FULL``, as when the disk itself is full.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import Any, Literal, get_args

from ion.errors import ConfigError

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS


class TrafficClass(enum.Enum):
    """The outbox's traffic classes, declared from most to least important."""

    CONTROL = "control"
    MODEL = "model"
    EVENTS = "events"
    HEALTH = "health"
    STATS = "stats"
    DATA = "data"

    # Members are singletons compared by identity; the C-level hash keeps hot dict lookups cheap
    # (Enum's own __hash__ is Python code, which shows up in the enqueue profile).
    __hash__ = object.__hash__

    @property
    def code(self) -> int:
        """A small stable integer for storage (the declaration index)."""
        return _CODES[self]

    @classmethod
    def from_code(cls, code: int) -> TrafficClass:
        return _BY_CODE[code]


_CODES = {c: i for i, c in enumerate(TrafficClass)}
_BY_CODE = dict(enumerate(TrafficClass))

OnFull = Literal["drop_oldest", "reject", "compact"]
ON_FULL_RULES: tuple[str, ...] = get_args(OnFull)
Synchronous = Literal["NORMAL", "FULL"]


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: must be an integer, not {value!r}")
    return value


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{name} must be a positive integer, not {value!r}")


@dataclass(frozen=True, slots=True)
class ClassConfig:
    priority: int
    ttl_ms: int | None
    max_items: int
    max_bytes: int
    on_full: OnFull

    def __post_init__(self) -> None:
        _positive_int(self.priority, "priority")
        if self.ttl_ms is not None:
            _positive_int(self.ttl_ms, "ttl_ms")
        _positive_int(self.max_items, "max_items")
        _positive_int(self.max_bytes, "max_bytes")
        if self.on_full not in ON_FULL_RULES:
            raise ConfigError(f"on_full must be one of {', '.join(ON_FULL_RULES)}")


DEFAULT_CLASSES: Mapping[TrafficClass, ClassConfig] = MappingProxyType(
    {
        # Commands and their results: never silently dropped; the sender learns "full" at once.
        TrafficClass.CONTROL: ClassConfig(32, _DAY_MS, 10_000, 16 * MiB, "reject"),
        # Model chunks: a receiver resumes by asking for missing chunks, but dropping parts of
        # a transfer on the sending side only wastes the link, so refuse instead.
        TrafficClass.MODEL: ClassConfig(16, _DAY_MS, 100_000, 256 * MiB, "reject"),
        TrafficClass.EVENTS: ClassConfig(8, 7 * _DAY_MS, 200_000, 64 * MiB, "drop_oldest"),
        # Health and stats are latest-wins per pipeline when space runs out.
        TrafficClass.HEALTH: ClassConfig(4, _DAY_MS, 100_000, 32 * MiB, "compact"),
        TrafficClass.STATS: ClassConfig(2, _DAY_MS, 100_000, 32 * MiB, "compact"),
        TrafficClass.DATA: ClassConfig(1, _HOUR_MS, 1_000_000, 128 * MiB, "drop_oldest"),
    }
)


@dataclass(frozen=True, slots=True)
class OutboxConfig:
    classes: Mapping[TrafficClass, ClassConfig] = field(default_factory=lambda: DEFAULT_CLASSES)
    live_share: float = 0.5
    batch_item_max_bytes: int = 4 * KiB
    batch_max_items: int = 64
    batch_max_bytes: int = 64 * KiB
    batch_topic_levels: int = 0
    max_candidates: int = 4096
    synchronous: Synchronous = "NORMAL"
    retention_max_items: int = 10_000
    retention_max_bytes: int = 16 * MiB
    retention_max_age_ms: int = _HOUR_MS
    max_db_bytes: int | None = None

    def __post_init__(self) -> None:
        missing = [c.value for c in TrafficClass if c not in self.classes]
        if missing:
            raise ConfigError(f"classes: missing {', '.join(missing)}")
        object.__setattr__(self, "classes", MappingProxyType(dict(self.classes)))
        if isinstance(self.live_share, bool) or not 0.0 <= self.live_share <= 1.0:
            raise ConfigError("live_share must be a number from 0 to 1")
        for name in (
            "batch_item_max_bytes",
            "batch_max_items",
            "batch_max_bytes",
            "max_candidates",
            "retention_max_items",
            "retention_max_bytes",
            "retention_max_age_ms",
        ):
            _positive_int(getattr(self, name), name)
        if isinstance(self.batch_topic_levels, bool) or not (
            isinstance(self.batch_topic_levels, int) and self.batch_topic_levels >= 0
        ):
            raise ConfigError("batch_topic_levels must be an integer >= 0")
        if self.max_db_bytes is not None:
            _positive_int(self.max_db_bytes, "max_db_bytes")
        if self.synchronous not in get_args(Synchronous):
            raise ConfigError("synchronous must be NORMAL or FULL")

    def of(self, traffic_class: TrafficClass) -> ClassConfig:
        return self.classes[traffic_class]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "outbox") -> OutboxConfig:
        """Overlay a config-file section on the defaults; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        own = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - own)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}")
        base = cls()
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key == "classes":
                changes["classes"] = _classes_from_mapping(value, f"{where}.classes")
            elif key == "live_share":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"{where}.live_share: must be a number")
                changes[key] = float(value)
            elif key == "synchronous":
                if not isinstance(value, str):
                    raise ConfigError(f"{where}.synchronous: must be NORMAL or FULL")
                changes[key] = value.upper()
            elif key == "max_db_bytes" and value is None:
                changes[key] = None
            else:
                changes[key] = _int(value, f"{where}.{key}")
        try:
            return replace(base, **changes)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _classes_from_mapping(data: Any, where: str) -> Mapping[TrafficClass, ClassConfig]:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping of class name to settings")
    names = {c.value: c for c in TrafficClass}
    unknown = sorted(set(map(str, data)) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown class(es) {', '.join(unknown)}")
    result = dict(DEFAULT_CLASSES)
    own = {f.name for f in fields(ClassConfig)}
    for name, section in data.items():
        here = f"{where}.{name}"
        if not isinstance(section, Mapping):
            raise ConfigError(f"{here}: must be a mapping")
        bad = sorted(set(map(str, section)) - own)
        if bad:
            raise ConfigError(f"{here}: unknown key(s) {', '.join(bad)}")
        changes: dict[str, Any] = {}
        for key, value in section.items():
            if key == "on_full":
                changes[key] = value
            elif key == "ttl_ms" and value is None:
                changes[key] = None
            else:
                changes[key] = _int(value, f"{here}.{key}")
        try:
            result[names[name]] = replace(result[names[name]], **changes)
        except ConfigError as exc:
            raise ConfigError(f"{here}: {exc}") from None
    return result

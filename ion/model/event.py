"""Events, triggers and data records: mirrors proto/ion/v1/event.proto."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class Severity(enum.Enum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, for people and for rules."""

    type: str  # dotted, e.g. "model.accepted", "health.drift", "pipeline.crash_loop"
    severity: Severity
    subject: str = ""  # what it is about, e.g. "kmeans/inference@edge-1"
    message: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)
    pipeline: str = ""
    component: str = ""


@dataclass(frozen=True, slots=True)
class Trigger:
    """Sent along a trigger edge: start the target batch pipeline."""

    edge: str
    target_pipeline: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DataRecords:
    """Rows of numbers (row-major, ``len(columns)`` values per row) and/or an opaque payload.

    ``timestamps_ms`` is empty or holds one time per row.
    """

    columns: tuple[str, ...] = ()
    values: tuple[float, ...] = ()
    timestamps_ms: tuple[int, ...] = ()
    payload: bytes = b""
    content_type: str = ""

    def __post_init__(self) -> None:
        width = len(self.columns)
        if width == 0:
            if self.values:
                raise ValueError(f"data records hold {len(self.values)} values but no columns")
            # A payload-only message may still carry its time.
            if len(self.timestamps_ms) > 1:
                raise ValueError("data records without columns hold more than one timestamp")
            return
        if len(self.values) % width:
            raise ValueError(
                f"data records hold {len(self.values)} values, not a multiple of {width} columns"
            )
        rows = len(self.values) // width
        if self.timestamps_ms and len(self.timestamps_ms) != rows:
            raise ValueError(
                f"data records hold {rows} rows but {len(self.timestamps_ms)} timestamps"
            )

    @property
    def row_count(self) -> int:
        return len(self.values) // len(self.columns) if self.columns else 0

    def row(self, i: int) -> tuple[float, ...]:
        width = len(self.columns)
        if not 0 <= i < self.row_count:
            raise IndexError(f"row {i} out of range ({self.row_count} rows)")
        return self.values[i * width : (i + 1) * width]

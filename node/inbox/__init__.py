"""The inbox's pure parts: the duplicate filter by message id and per-stream gap tracking.

Their persistence lives in ``node.outbox.store.OutboxStore`` (``inbox_seen``,
``inbox_remember``, ``load_stream_floors``, ``save_stream_floors``): one module talks to SQLite.
"""

from __future__ import annotations

from node.inbox.dedup import DedupConfig, DedupTrim, Screening, is_message_id, screen, trim_for
from node.inbox.sequence import (
    Action,
    Deliver,
    Duplicate,
    GapFilled,
    Lost,
    RequestRetransmit,
    SequenceConfig,
    SequenceTracker,
)

__all__ = [
    "Action",
    "DedupConfig",
    "DedupTrim",
    "Deliver",
    "Duplicate",
    "GapFilled",
    "Lost",
    "RequestRetransmit",
    "Screening",
    "SequenceConfig",
    "SequenceTracker",
    "is_message_id",
    "screen",
    "trim_for",
]

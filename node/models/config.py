"""The model exchange's settings: one frozen value, every key with its default.

``chunk_size`` (256 KiB): bytes per chunk this node publishes.
``max_model_bytes`` (4 GiB), ``max_chunk_bytes`` (8 MiB): manifests over these are refused
before anything is fetched (a chunk must fit the broker's message size limit).
``max_entries`` (100000), ``max_file_bytes`` (4 GiB), ``max_unpacked_bytes`` (8 GiB): what a
received directory archive may hold.
``keep_versions`` (3): versions kept per edge when the edge's policy does not say.
``prune_after_ms`` (5000): versions beyond those are removed this long after an activation,
not at once: the pipeline loads the new version then, and deleting a large model competes
with that for the disk (and, with many nodes on one disk, with the others still receiving:
0.3-0.6 s on the last node of a 20-node rollout, bench/model_rollout.py).
``request_after_ms`` (2000): ask for missing chunks after this long without progress; the
wait doubles up to ``request_max_interval_ms`` (30000) while nothing arrives.
``max_request_indexes`` (4096): at most this many indexes in one chunk request.
``resend_guard_ms`` (1000): a chunk sent is not sent again for this long, however many
consumers ask (they all read the same topic).
``staging_max_bytes`` (64 MiB), ``staging_ttl_ms`` (10 min): chunks that arrive before their
manifest.
``publish_window`` (8): chunks stored into the outbox at once (bounds memory).
``publish_retry_ms`` (60000): how long publishing a model waits for room in a full outbox.
``serve_held`` (false): also answer chunk requests for models this node received (by default
only the producer answers, and a gateway's cache answers its children).
``gateway_cache`` (true): a gateway (a node with ``relay``) keeps a copy of the models it relays
down and answers its children's chunk requests from it, asking upstream only for what it lacks
(``node.models.gateway``); ``gateway_cache_versions`` (2) per model edge, at most
``gateway_cache_bytes`` (8 GiB) in all, least recently used out first.
``tick_ms`` (250): how often timers (requests, staging expiry) are looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from ion.config.overlay import overlay
from ion.errors import ConfigError

if TYPE_CHECKING:
    # Imported when the limits are first asked for: every agent loads this config, and an
    # agent with no model edge never needs the transfer and archive code
    # (tests/test_idle_footprint.py).
    from .pack import UnpackLimits
    from .transfer import TransferLimits

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULT_CHUNK_SIZE = 256 * 1024  # node.models.transfer's default too

_FLAGS = frozenset({"serve_held", "gateway_cache"})


@dataclass(frozen=True, slots=True)
class ModelConfig:
    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_model_bytes: int = 4 * GiB
    max_chunk_bytes: int = 8 * MiB
    max_entries: int = 100_000
    max_file_bytes: int = 4 * GiB
    max_unpacked_bytes: int = 8 * GiB
    keep_versions: int = 3
    prune_after_ms: int = 5_000
    request_after_ms: int = 2_000
    request_max_interval_ms: int = 30_000
    max_request_indexes: int = 4096
    resend_guard_ms: int = 1_000
    staging_max_bytes: int = 64 * MiB
    staging_ttl_ms: int = 600_000
    publish_window: int = 8
    publish_retry_ms: int = 60_000
    serve_held: bool = False
    tick_ms: int = 250
    gateway_cache: bool = True
    gateway_cache_versions: int = 2
    gateway_cache_bytes: int = 8 * GiB

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _FLAGS:
                if not isinstance(value, bool):
                    raise ConfigError(f"{f.name} must be true or false")
            elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{f.name} must be a positive integer, not {value!r}")
        if self.chunk_size > self.max_chunk_bytes:
            raise ConfigError("chunk_size must not exceed max_chunk_bytes")

    @property
    def transfer_limits(self) -> TransferLimits:
        from .transfer import TransferLimits

        return TransferLimits(self.max_model_bytes, self.max_chunk_bytes)

    @property
    def unpack_limits(self) -> UnpackLimits:
        from .pack import UnpackLimits

        return UnpackLimits(
            max_entries=self.max_entries,
            max_file_bytes=self.max_file_bytes,
            max_total_bytes=self.max_unpacked_bytes,
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "models") -> ModelConfig:
        return overlay(cls, data, where=where)

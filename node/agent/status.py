"""The node's status message, built from the agent's parts (pure) plus a resource sampler."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from ion.model.definition import Pipeline
from ion.model.messages import (
    IonVersion,
    LinkStatus,
    ModelStatus,
    NodeState,
    NodeStatus,
    PipelineState,
    PipelineStatus,
    QueueStatus,
    ResourceUsage,
)
from node.config import NodeConfig
from node.outbox.records import OutboxStats
from node.pipelines.lifecycle import State, StateReport
from node.reconcile import PipelineKey

_STATES: Mapping[State, PipelineState] = {
    State.PENDING: PipelineState.PENDING,
    State.STARTING: PipelineState.STARTING,
    State.RUNNING: PipelineState.RUNNING,
    State.SUCCEEDED: PipelineState.SUCCEEDED,
    State.FAILED: PipelineState.FAILED,
    State.BACKOFF: PipelineState.BACKOFF,
    State.CRASH_LOOP: PipelineState.CRASH_LOOP,
    State.STOPPING: PipelineState.STOPPING,
    State.STOPPED: PipelineState.STOPPED,
    State.KILLED: PipelineState.KILLED,
}


def pipeline_state(state: State) -> PipelineState:
    return _STATES[state]


def pipeline_statuses(
    reports: Mapping[PipelineKey, tuple[Pipeline | None, StateReport]],
    since_ms: Mapping[PipelineKey, int],
) -> tuple[PipelineStatus, ...]:
    out = []
    for key, (spec, report) in sorted(reports.items()):
        last = report.last_exit
        out.append(
            PipelineStatus(
                ion=key[0],
                pipeline=key[1],
                state=_STATES[report.state],
                engine=spec.engine if spec else "",
                restarts=report.restarts,
                since_ms=since_ms.get(key, 0),
                message=report.detail,
                exit_code=last.code if last is not None and last.code is not None else 0,
                ion_version=report.version,
            )
        )
    return tuple(out)


def queue_statuses(stats: OutboxStats, link: str = "broker") -> tuple[QueueStatus, ...]:
    return tuple(
        QueueStatus(
            link=link,
            traffic_class=cls.value,
            depth=c.items,
            bytes=c.bytes,
            oldest_age_ms=c.oldest_age_ms or 0,
            sent=c.counters.get("acked", 0),
            dropped=c.counters.get("dropped", 0) + c.counters.get("compacted", 0),
            expired=c.counters.get("expired", 0),
            rejected=c.counters.get("rejected", 0),
        )
        for cls, c in stats.classes.items()
    )


def build_status(
    config: NodeConfig,
    *,
    state: NodeState,
    version: str,
    started_ms: int,
    pipelines: tuple[PipelineStatus, ...] = (),
    queues: tuple[QueueStatus, ...] = (),
    resources: ResourceUsage | None = None,
    links: Iterable[LinkStatus] = (),
    ions: Mapping[str, int] | None = None,
    counters: Mapping[str, int] | None = None,
    error: str = "",
    models: Iterable[ModelStatus] = (),
) -> NodeStatus:
    ident = config.identity
    return NodeStatus(
        node_id=ident.node_id,
        state=state,
        agent_version=version,
        labels=dict(ident.labels),
        layer=ident.layer,
        parent=ident.parent,
        started_ms=started_ms,
        heartbeat_interval_ms=config.heartbeat_interval_ms,
        pipelines=pipelines,
        queues=queues,
        resources=resources,
        links=tuple(links),
        ions=tuple(IonVersion(name=n, version=v) for n, v in sorted((ions or {}).items())),
        counters=dict(sorted((counters or {}).items())),
        error=error,
        models=tuple(models),
    )


class ResourceSampler:
    """CPU share of this process since the last sample, its RSS, free disk, load average."""

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._last = (time.monotonic(), time.process_time())

    def sample(self) -> ResourceUsage:
        now, cpu = time.monotonic(), time.process_time()
        wall = now - self._last[0]
        share = 100.0 * (cpu - self._last[1]) / wall if wall > 0 else 0.0
        self._last = (now, cpu)
        try:
            free = shutil.disk_usage(self._data_dir).free
        except OSError:
            free = 0
        return ResourceUsage(
            cpu_percent=round(share, 2),
            rss_bytes=_rss_bytes(),
            disk_free_bytes=free,
            load1=os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
        )


def _rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")

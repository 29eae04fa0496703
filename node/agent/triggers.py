"""Trigger edges, decided: telemetry and ``now`` in, firings out (pure).

A trigger edge fires when its ``metric`` is above ``above`` on at least ``min_nodes`` nodes
running the source pipeline within ``window``, at most once per ``cooldown``, and then starts
a run of each target (batch) pipeline.  Every node that hosts a target pipeline of the edge
evaluates it by itself, from the telemetry the source nodes publish, so retraining starts
while the rest of the cloud (monitor, operators) is unreachable.

State, per watched edge:

- ``latest``: per source node, its newest reading of the metric (value, time).  A node that
  reports twice counts once, with its newest value: a node whose latest value fell back
  under the threshold no longer counts, whatever it said before.  Readings older than
  ``window`` do not count (and are forgotten).
- ``last_fired``: when the edge last fired, here or on another node that evaluates it
  (learned from its trigger message).  Kept by the shell across restarts, so a restarted
  agent does not fire again inside the cooldown.

Which nodes run the source: a node whose status says it does not (the pipeline absent,
stopped, failed or crash-looping, or the node offline) has its reading dropped until it
reports again; without any status a node that reports is taken to run the source (reports
are the proof).

Metrics: ``drift`` is the overall drift score (``feature == ""``) the source node put into
its ``HealthReport``; any other name is looked up in ``StatsReport`` and ``HealthReport``
scalars and in ``Event`` attributes (a number as text).  Non-finite values are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ion.model.definition import TriggerCondition
from ion.model.event import Event
from ion.model.health import HealthReport, StatsReport
from ion.model.status import NodeState, NodeStatus, PipelineState

DRIFT = "drift"
Telemetry = HealthReport | StatsReport | Event
EdgeKey = tuple[str, str]
"""(ION name, edge name)."""

# Pipeline states in which a node still counts as running the source: a streaming pipeline
# between two restarts (BACKOFF) is still placed and about to report again.
_RUNNING = frozenset(
    {PipelineState.PENDING, PipelineState.STARTING, PipelineState.RUNNING, PipelineState.BACKOFF}
)
_NODE_UP = frozenset({NodeState.ONLINE, NodeState.DRAINING})


@dataclass(frozen=True, slots=True)
class WatchedEdge:
    """A trigger edge this node evaluates (it hosts at least one of its targets)."""

    ion: str
    edge: str
    source_pipeline: str
    condition: TriggerCondition
    targets: tuple[str, ...]  # every target pipeline of the edge
    source_component: str = ""  # when the edge names one: only its telemetry counts

    @property
    def key(self) -> EdgeKey:
        return (self.ion, self.edge)

    def __post_init__(self) -> None:
        c = self.condition
        if c.min_nodes < 1 or c.window_ms <= 0 or c.cooldown_ms < 0 or not c.metric:
            raise ValueError(f"trigger {self.ion}/{self.edge}: invalid condition {c}")


@dataclass(frozen=True, slots=True)
class Firing:
    """The edge fired: start each target; ``values`` are the nodes over the threshold."""

    ion: str
    edge: str
    targets: tuple[str, ...]
    metric: str
    above: float
    values: Mapping[str, float]  # node -> its latest value, for the nodes that agreed
    at_ms: int

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(sorted(self.values))

    def reason(self) -> str:
        shown = ", ".join(f"{n}={self.values[n]:.3g}" for n in self.nodes)
        return f"{self.metric} above {self.above:g} on {len(self.values)} node(s): {shown}"


@dataclass(slots=True)
class _Reading:
    value: float
    at_ms: int


@dataclass(slots=True)
class _EdgeState:
    watched: WatchedEdge
    latest: dict[str, _Reading] = field(default_factory=dict)


def metric_value(body: Telemetry, metric: str) -> float | None:
    """The value of ``metric`` in one telemetry message, or None when it holds none."""
    found: list[float] = []
    if isinstance(body, HealthReport):
        if metric == DRIFT:
            found = [d.score for d in body.drift if not d.feature]
        else:
            found = [m.value for m in body.scalars if m.name == metric]
    elif isinstance(body, StatsReport):
        found = [m.value for m in body.scalars if m.name == metric]
    elif metric in body.attributes:
        try:
            found = [float(body.attributes[metric])]
        except ValueError:
            return None
    finite = [v for v in found if math.isfinite(v)]
    # Several overall drift scores (e.g. PSI and Jensen-Shannon) in one report: the highest
    # is the one that crossed a threshold first; for stats the last one given is the newest.
    if not finite:
        return None
    return max(finite) if metric == DRIFT else finite[-1]


class TriggerBook:
    """Every trigger edge this node evaluates, and what it has heard (see the module doc)."""

    def __init__(self, last_fired: Mapping[EdgeKey, int] | None = None) -> None:
        self._edges: dict[EdgeKey, _EdgeState] = {}
        self._last_fired: dict[EdgeKey, int] = dict(last_fired or {})

    # -- configuration --------------------------------------------------------------------------

    def configure(self, edges: Iterable[WatchedEdge]) -> None:
        """The edges to watch now (after a definition changed).  Readings of an edge that
        stays are kept, also when its condition changed; cooldowns are kept for every edge
        (an edge removed and added back must not fire again early)."""
        wanted = {e.key: e for e in edges}
        for key in list(self._edges):
            if key not in wanted:
                del self._edges[key]
        for key, watched in wanted.items():
            state = self._edges.get(key)
            if state is None:
                self._edges[key] = _EdgeState(watched)
            else:
                if watched.source_pipeline != state.watched.source_pipeline:
                    state.latest.clear()
                state.watched = watched

    @property
    def watched(self) -> tuple[WatchedEdge, ...]:
        return tuple(s.watched for s in self._edges.values())

    @property
    def last_fired(self) -> dict[EdgeKey, int]:
        """When each edge last fired (ms), for the shell to persist."""
        return dict(self._last_fired)

    # -- what arrives ---------------------------------------------------------------------------

    def observe(self, ion: str, pipeline: str, node: str, body: Telemetry, at_ms: int) -> int:
        """A telemetry message of ``ion/pipeline`` from ``node``, made at ``at_ms``; returns
        how many watched edges took a reading from it."""
        taken = 0
        for state in self._edges.values():
            w = state.watched
            if w.ion != ion or w.source_pipeline != pipeline:
                continue
            component = getattr(body, "component", "")
            if w.source_component and component and component != w.source_component:
                continue
            value = metric_value(body, w.condition.metric)
            if value is None:
                continue
            held = state.latest.get(node)
            if held is not None and held.at_ms > at_ms:
                continue  # an older report that arrived late says nothing new
            state.latest[node] = _Reading(value, at_ms)
            taken += 1
        return taken

    def node_status(self, status: NodeStatus) -> None:
        """A node's status: forget its readings for sources it no longer runs."""
        up = status.state in _NODE_UP
        running = {(p.ion, p.pipeline) for p in status.pipelines if p.state in _RUNNING}
        for state in self._edges.values():
            w = state.watched
            if not up or (w.ion, w.source_pipeline) not in running:
                state.latest.pop(status.node_id, None)

    def fired_elsewhere(self, ion: str, edge: str, now_ms: int) -> bool:
        """Another node fired ``ion/edge`` (its trigger message arrived).  True when this
        node should start its targets too: the edge was not in its cooldown here.  Either
        way the cooldown starts now, so the two nodes do not fire twice for one episode."""
        key = (ion, edge)
        state = self._edges.get(key)
        if state is None:
            return False
        if not self._cooled(key, state.watched.condition, now_ms):
            return False
        self._last_fired[key] = now_ms
        return True

    # -- deciding -------------------------------------------------------------------------------

    def evaluate(self, now_ms: int) -> list[Firing]:
        """The edges that fire now (their cooldown starts at ``now_ms``)."""
        firings = []
        for key, state in self._edges.items():
            w = state.watched
            c = w.condition
            for node in [n for n, r in state.latest.items() if now_ms - r.at_ms > c.window_ms]:
                del state.latest[node]
            over = {n: r.value for n, r in state.latest.items() if r.value > c.above}
            if len(over) < c.min_nodes or not self._cooled(key, c, now_ms):
                continue
            self._last_fired[key] = now_ms
            firings.append(
                Firing(
                    ion=w.ion,
                    edge=w.edge,
                    targets=w.targets,
                    metric=c.metric,
                    above=c.above,
                    values=dict(sorted(over.items())),
                    at_ms=now_ms,
                )
            )
        return firings

    def nodes_over(self, ion: str, edge: str, now_ms: int) -> dict[str, float]:
        """Nodes whose latest reading within the window is over the threshold (for status
        and tests; changes nothing)."""
        state = self._edges.get((ion, edge))
        if state is None:
            return {}
        c = state.watched.condition
        return {
            n: r.value
            for n, r in state.latest.items()
            if now_ms - r.at_ms <= c.window_ms and r.value > c.above
        }

    def _cooled(self, key: EdgeKey, condition: TriggerCondition, now_ms: int) -> bool:
        last = self._last_fired.get(key)
        # A clock that went back (last > now) keeps the edge cooling: firing twice in a
        # cooldown is the mistake to avoid.
        return last is None or now_ms - last >= condition.cooldown_ms

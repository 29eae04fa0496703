"""The demo's fleet: real node agents as child processes on one machine, and a live view.

``DemoFleet`` writes one config per node and runs ``python -m node run -c FILE`` for each, in
its own process group, with its output in ``<root>/logs/<node>.log``; leaving the context (or
Ctrl-C) sends SIGTERM, waits, and SIGKILLs what is left, so no process outlives the demo.
``FleetView`` subscribes to the whole namespace and turns what the agents publish (status,
events, stats, health) into the lines the demo prints: what a person would want to see.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from ion import topics
from ion.errors import DecodeError
from ion.model.event import Event
from ion.model.health import HealthReport, StatsReport
from ion.model.messages import EnvelopeBatch, NodeState, NodeStatus
from ion.wire.codec import decode

REPO_ROOT = Path(__file__).resolve().parents[1]


_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt orphaned descendants (a pipeline's grandchildren whose agent was stopped), so the
    demo can reap them: nothing it started may outlive it, not even as a zombie."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def reap_orphans(grace_s: float = 5.0) -> int:
    """Kill and reap every remaining child of this process (adopted or not); returns how many."""
    me = os.getpid()
    reaped = 0
    deadline = time.monotonic() + grace_s
    while True:
        children = _children_of(me)
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid:
            reaped += 1
            continue
        if not children or time.monotonic() > deadline:
            return reaped
        time.sleep(0.05)


def _children_of(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command may hold spaces and parentheses: fields resume after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            out.append(int(entry.name))
    return out


@dataclass(frozen=True, slots=True)
class DemoNode:
    node_id: str
    labels: Mapping[str, str]
    layer: str = "edge"
    parent: str = ""  # the gateway it sits behind
    broker_url: str = ""  # "" = the fleet's broker
    upstream_url: str = ""  # gateways only: the broker above


class DemoFleet:
    def __init__(
        self,
        broker_url: str,
        root: Path,
        nodes: Sequence[DemoNode],
        *,
        extra_config: Mapping[str, Any] | None = None,
        per_node: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.per_node = dict(per_node or {})
        self.broker_url = broker_url
        self.root = root
        self.nodes = list(nodes)
        self.extra = dict(extra_config or {})
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def data_dir(self, node_id: str) -> Path:
        return self.root / "nodes" / node_id

    def __enter__(self) -> Self:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
        )
        try:
            for n in self.nodes:
                node: dict[str, Any] = {"id": n.node_id, "labels": dict(n.labels)}
                node["layer"] = n.layer
                if n.parent:
                    node["parent"] = n.parent
                cfg = {
                    "node": node,
                    "broker": {"url": n.broker_url or self.broker_url},
                    **({"upstream": {"url": n.upstream_url}} if n.upstream_url else {}),
                    "data_dir": str(self.data_dir(n.node_id)),
                    "heartbeat_interval": "2s",
                    **self.extra,
                    **self.per_node.get(n.node_id, {}),
                }
                path = self.root / f"{n.node_id}.yaml"
                path.write_text(yaml.safe_dump(cfg, sort_keys=False))
                log = (logs / f"{n.node_id}.log").open("ab")
                self.procs[n.node_id] = subprocess.Popen(  # noqa: S603 - our own agent
                    [sys.executable, "-m", "node", "run", "-c", str(path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.root,
                    start_new_session=True,
                )
                log.close()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM the agents from the bottom up (edge nodes, then gateways, then the rest:
        each drains through the layer above while it still runs), then SIGKILL leftovers."""
        layers = {n.node_id: n.layer for n in self.nodes}
        order = ("edge", "gateway")
        for wave in (
            *([p for n, p in self.procs.items() if layers.get(n) == layer] for layer in order),
            [p for n, p in self.procs.items() if layers.get(n) not in order],
        ):
            for proc in wave:
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for proc in wave:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.procs.values():
            # The whole group: a pipeline's own children included.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]


_MODEL_STORY = {
    "model.activated": "activated",
    "model.accepted": "accepted",
    "model.rolled_back": "rolled back",
    "model.canary_started": "canary started with",
    "model.canary_passed": "canary passed for",
    "model.canary_failed": "canary failed for",
    "model.promoted": "promoted",
    "model.pending": "holds back",
    "model.refused_by_gate": "gate refused",
    "model.rejected": "rejected",
}
_WITH_REASON = frozenset(
    {
        "model.rolled_back",
        "model.canary_failed",
        "model.refused_by_gate",
        "model.rejected",
        "model.pending",
    }
)


@dataclass
class FleetView:
    """What the fleet published, folded for display (fed from a paho callback thread)."""

    say: Callable[[str], None]
    statuses: dict[str, NodeStatus] = field(default_factory=dict)
    events: Counter[str] = field(default_factory=Counter)
    drift: dict[str, float] = field(default_factory=dict)
    scored: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    anomalies: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    _said: set[str] = field(default_factory=set)
    _summarised: dict[str, str] = field(default_factory=dict)
    # The story's milestones: the first model, a trigger firing, who accepted which version.
    first_version: str = ""
    triggered: bool = False
    accepted: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.say(text)

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            t = topics.parse(topic)
            env = decode(payload)
        except (topics.TopicError, DecodeError):
            return
        bodies = (
            [(e.source_node, e.body) for e in env.body.envelopes]
            if isinstance(env.body, EnvelopeBatch)
            else [(env.source_node, env.body)]
        )
        with self._lock:
            for source, body in bodies:
                self._fold(t.node or source, body)

    def _fold(self, node: str, body: object) -> None:
        if isinstance(body, NodeStatus):
            self._status(body)
        elif isinstance(body, Event):
            self.events[body.type] += 1
            if body.type == "trigger.fired":
                self.triggered = True
            if body.type in _MODEL_STORY:
                version = body.attributes.get("version", "")
                if body.type == "model.accepted" and version:
                    self.first_version = self.first_version or version
                    self.accepted[version].add(node)
                detail = f" ({body.message})" if body.type in _WITH_REASON and body.message else ""
                self.once(
                    f"{body.type}/{node}/{version}",
                    f"{node}: {_MODEL_STORY[body.type]} model version {version}{detail}",
                )
            elif body.type.startswith("alert."):
                # The monitor's alerts: subject is "<rule>:<what it is about>".
                self.once(
                    f"{body.type}/{body.subject}/{self.events[body.type]}",
                    f"{node}: {body.type.upper()} {body.subject}: {body.message}",
                )
            elif body.type == "trigger.fired":
                self.once(
                    f"{body.type}/{body.subject}/{self.events[body.type]}",
                    f"{node}: {body.type.upper()}: {body.message or body.subject}",
                )
            elif body.type == "health.drift":
                key = f"drift/{node}/{body.attributes.get('model_id')}"
                self.once(key, f"{node}: DRIFT: {body.message}")
            elif body.type == "health.drift_cleared":
                self.once(f"cleared/{node}/{self.events[body.type]}", f"{node}: {body.message}")
        elif isinstance(body, StatsReport):
            p = body.progress
            if body.component == "engine" and p is not None and p.stages_total:
                # A Spark job's progress as the agent samples it: one line per finished stage.
                self.once(
                    f"progress/{node}/{body.pipeline}/{p.jobs_total}/{p.stages_done}",
                    f"{node}: {body.pipeline} on Spark: {p.jobs_done}/{p.jobs_total} jobs, "
                    f"{p.stages_done}/{p.stages_total} stages, {p.tasks_done} tasks done",
                )
            for m in body.scalars:
                if m.name == "scored":
                    self.scored[node] += m.value
                elif m.name == "anomalies":
                    self.anomalies[node] += m.value
        elif isinstance(body, HealthReport):
            for d in body.drift:
                if not d.feature:
                    self.drift[node] = d.score

    def _status(self, status: NodeStatus) -> None:
        node = status.node_id
        before = self.statuses.get(node)
        self.statuses[node] = status
        if before is None or before.state is not status.state:
            self.say(f"{node}: {status.state.value}")
        old = {(p.ion, p.pipeline): p.state for p in (before.pipelines if before else ())}
        for p in status.pipelines:
            if old.get((p.ion, p.pipeline)) is not p.state:
                detail = f" ({p.message})" if p.message and p.message != p.state.value else ""
                self.say(f"{node}: pipeline {p.pipeline} {p.state.value}{detail}")

    def retrained_everywhere(self, nodes: Iterable[str]) -> bool:
        """Whether a trigger fired and a model newer than the first one runs on ``nodes``."""
        want = set(nodes)
        with self._lock:
            return self.triggered and any(
                v != self.first_version and want <= got for v, got in self.accepted.items()
            )

    def online(self) -> list[str]:
        with self._lock:
            return sorted(n for n, s in self.statuses.items() if s.state is NodeState.ONLINE)

    def summary(self) -> Iterator[str]:
        """A line per scoring node whose figures changed since the last summary."""
        with self._lock:
            for node in sorted(self.scored):
                scored = self.scored[node]
                rate = self.anomalies[node] / scored if scored else 0.0
                drift = self.drift.get(node)
                drift_text = f", drift (PSI) {drift:.3f}" if drift is not None else ""
                line = f"{node}: {scored:,.0f} readings scored, anomaly rate {rate:.2%}{drift_text}"
                if scored and self._summarised.get(node) != line:
                    self._summarised[node] = line
                    yield line

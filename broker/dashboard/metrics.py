"""``/metrics``: the store's current state in the Prometheus text exposition format (pure).

Format 0.0.4: ``# HELP`` and ``# TYPE`` once per family, then its samples; label values
escape backslash, double quote and newline.  Families come from current-state tables (and
the latest drift score per series), so a scrape costs a handful of indexed queries.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str  # gauge | counter
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)


def _label_value(v: object) -> str:
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(float(x))


def exposition(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for f in families:
        help_text = f.help.replace("\\", "\\\\").replace("\n", "\\n")
        lines += [f"# HELP {f.name} {help_text}", f"# TYPE {f.name} {f.kind}"]
        for labels, value in f.samples:
            text = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            lines.append(
                f"{f.name}{{{text}}} {_value(value)}" if text else f"{f.name} {_value(value)}"
            )
    return "\n".join(lines) + "\n"


def _num(x: object) -> float:
    try:
        return float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def families(
    *,
    now_ms: int,
    nodes: Iterable[Mapping[str, Any]],
    pipelines: Iterable[Mapping[str, Any]],
    queues: Iterable[Mapping[str, Any]],
    drift: Iterable[Mapping[str, Any]],
    alerts: Iterable[Mapping[str, Any]],
    streams: Iterable[Mapping[str, Any]],
) -> list[Family]:
    up = Family("ion_node_up", "gauge", "1 when the node's last status says online.")
    seen = Family("ion_node_last_seen_age_seconds", "gauge", "Since anything came from it.")
    cpu = Family("ion_node_cpu_percent", "gauge", "CPU use the node last reported.")
    rss = Family("ion_node_rss_bytes", "gauge", "Agent resident memory last reported.")
    for n in nodes:
        labels = {"node": str(n.get("node_id")), "layer": str(n.get("layer") or "")}
        up.samples.append((labels, 1.0 if n.get("state") == "online" else 0.0))
        node = {"node": labels["node"]}
        if n.get("seen_ms"):
            seen.samples.append((node, max(0.0, (now_ms - int(n["seen_ms"])) / 1000)))
        cpu.samples.append((node, _num(n.get("cpu_percent"))))
        rss.samples.append((node, _num(n.get("rss_bytes"))))
    state = Family(
        "ion_pipeline_state", "gauge", "1 for the state each pipeline is in on each node."
    )
    restarts = Family("ion_pipeline_restarts", "gauge", "Restarts of the pipeline on the node.")
    for p in pipelines:
        labels = {"node": str(p.get("node_id")), "ion": str(p.get("ion")),
                  "pipeline": str(p.get("pipeline"))}  # fmt: skip
        state.samples.append(({**labels, "state": str(p.get("state") or "")}, 1.0))
        restarts.samples.append((labels, _num(p.get("restarts") or 0)))
    depth = Family("ion_queue_depth", "gauge", "Outbox items waiting, per link and class.")
    qbytes = Family("ion_queue_bytes", "gauge", "Outbox bytes waiting, per link and class.")
    oldest = Family("ion_queue_oldest_age_seconds", "gauge", "Age of the oldest waiting item.")
    for q in queues:
        labels = {"node": str(q.get("node_id")), "link": str(q.get("link")),
                  "class": str(q.get("traffic_class"))}  # fmt: skip
        depth.samples.append((labels, _num(q.get("depth"))))
        qbytes.samples.append((labels, _num(q.get("bytes"))))
        oldest.samples.append((labels, _num(q.get("oldest_age_ms")) / 1000))
    score = Family("ion_drift_score", "gauge", "Latest drift score over all features.")
    limit = Family("ion_drift_threshold", "gauge", "The threshold the drift score is held to.")
    for d in drift:
        labels = {"node": str(d.get("node_id")), "ion": str(d.get("ion")),
                  "pipeline": str(d.get("pipeline")), "metric": str(d.get("metric"))}  # fmt: skip
        score.samples.append((labels, _num(d.get("score"))))
        limit.samples.append((labels, _num(d.get("threshold"))))
    firing = Family("ion_alerts_firing", "gauge", "Alerts firing now, per rule and severity.")
    counts = Counter(
        (str(a.get("rule")), str(a.get("severity"))) for a in alerts if a.get("state") == "firing"
    )
    for (rule, severity), count in sorted(counts.items()):
        firing.samples.append(({"rule": rule, "severity": severity}, float(count)))
    received = Family(
        "ion_stream_received_total", "counter", "Messages the monitor received per stream."
    )
    gaps = Family("ion_stream_gaps_total", "counter", "Sequence numbers found missing.")
    open_gaps = Family("ion_stream_open_gaps", "gauge", "Missing and not received since.")
    lag = Family("ion_stream_lag_seconds", "gauge", "Receive time minus created time, last.")
    for s in streams:
        labels = {"source": str(s.get("source_node")), "stream": str(s.get("stream"))}
        received.samples.append((labels, _num(s.get("received") or 0)))
        gaps.samples.append((labels, _num(s.get("gaps") or 0)))
        open_gaps.samples.append((labels, _num(s.get("gaps") or 0) - _num(s.get("repaired") or 0)))
        lag.samples.append((labels, _num(s.get("lag_ms")) / 1000))
    return [up, seen, cpu, rss, state, restarts, depth, qbytes, oldest, score, limit, firing,
            received, gaps, open_gaps, lag]  # fmt: skip

"""Helpers for the end-to-end tests of the KMeans example: its ION made small and quick, a
watcher of what the agents publish, the simulated devices and the seed training data."""

from __future__ import annotations

import contextlib
import queue
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ion.errors import DecodeError
from ion.model.event import Event, Trigger
from ion.model.health import HealthReport, StatsReport
from ion.wire.codec import decode_all

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "kmeans"

# The self-retraining loop: training reads the recorder's window on cloud-1; the edges sample
# every reading along `fresh` to the recorder, whose window holds the last 15 s of readings (by
# their own time: on a shared machine the edges fall behind their sensors, so arrival time would
# mislead); drift on two edges fires `retrain`.
_RECORDER = """  - name: recorder
    engine: python
    mode: streaming
    placement: {nodes: [cloud-1]}
    components:
      - {name: record, type: window_recorder,
          args: {path: window.csv, rows: 3000, max_age: 15s, min_rows: 500, interval: 1s}}
"""
_SAMPLE = """      - {name: sample, type: data_sampler, inputs: {data: sensors.data},
          args: {share: 1.0}}
"""
_LOOP_EDGES = """  - name: fresh
    kind: data
    from: inference.sample.sample
    to: recorder
  - name: retrain
    kind: trigger
    from: inference
    to: [training]
    trigger: {metric: drift, above: 0.25, min_nodes: 2, window: 30s, cooldown: 30m}
"""
# Without the loop: training reads data/train.csv in its work dir, anomalies go to `alerts`.
_ALERTS = """  - name: alerts
    engine: python
    mode: streaming
    placement: {labels: {tier: cloud}}
    components:
      - {name: sink, type: event_sink, args: {path: anomalies.jsonl}}
"""
_ALERT_EDGES = """  - name: anomalies
    kind: events
    from: inference
    to: alerts
"""


def kmeans_ion_yaml(
    name: str,
    *,
    loop: bool = True,
    policy: str = "{type: auto}",
    threshold: float = 0.2,
    drift_window: str = "10s",
    min_samples: int = 1000,
) -> str:
    """examples/kmeans/ion.yaml made small and quick: Spark on one core, windows of seconds.

    ``loop``: the self-retraining loop (recorder, sampler, ``fresh`` and ``retrain`` edges)
    rather than a fixed training set with an ``alerts`` pipeline.  ``policy`` is the model
    edge's policy (YAML flow text); ``threshold``, ``drift_window`` and ``min_samples`` its
    drift check."""
    placement = "{nodes: [cloud-1]}" if loop else "{labels: {tier: cloud}}"
    train_csv = "../recorder/window.csv" if loop else "data/train.csv"
    scored = "sample.data" if loop else "sensors.data"
    recorder, sample, alerts = (_RECORDER, _SAMPLE, "") if loop else ("", "", _ALERTS)
    drift = f"threshold: {threshold}, window: {drift_window}, min_samples: {min_samples}"
    return f"""
apiVersion: ion/v1
kind: ION
metadata: {{name: {name}}}
pipelines:
  - name: training
    engine: spark
    role: training
    mode: batch
    placement: {placement}
    engine_config: {{master: "local[1]", spark.driver.memory: 1g}}
    components:
      - {{name: read, type: csv_source, args: {{path: {train_csv}}}}}
      - {{name: baseline, type: feature_histograms, inputs: {{data: read.data}},
          args: {{bins: 10}}}}
      - {{name: fit, type: kmeans_train, inputs: {{data: read.data}}, args: {{k: 4, seed: 7}}}}
      - {{name: publish, type: model_publisher,
          inputs: {{model: fit.model, health: baseline.health}}}}
{recorder}  - name: inference
    engine: python
    role: inference
    mode: streaming
    placement: {{labels: {{tier: edge}}}}
    components:
      - {{name: sensors, type: mqtt_source,
          args: {{topic: sensors/+/readings, batch: 50, max_wait: 200ms}}}}
      - {{name: model, type: model_subscriber}}
{sample}      - {{name: score, type: kmeans_score, inputs: {{data: {scored}, model: model.model}},
          args: {{window: 2s}}}}
      - {{name: health, type: health_reporter, inputs: {{health: score.health}},
          args: {{interval: 2s}}}}
{alerts}edges:
  - name: model
    kind: model
    from: training
    to: [inference]
    policy: {policy}
    drift: {{metric: psi, {drift}}}
{_LOOP_EDGES if loop else _ALERT_EDGES}"""


class Watcher:
    """What the agents published on the bus, decoded (batches unpacked), in arrival order.

    ``client`` is anything with a ``messages`` queue of MQTT messages; nothing is read from it
    until a method that polls is called."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.health: list[tuple[str, HealthReport]] = []  # (source node, report)
        self.stats: list[tuple[str, int, StatsReport]] = []  # (source node, created ms, report)
        self.triggers: list[tuple[str, Trigger]] = []  # (source node, trigger)
        self.events: list[Event] = []

    def poll(self) -> None:
        while True:
            try:
                msg = self.client.messages.get_nowait()
            except queue.Empty:
                return
            try:
                envs = decode_all(msg.payload)
            except DecodeError:
                continue
            for e in envs:
                if isinstance(e.body, HealthReport):
                    self.health.append((e.source_node, e.body))
                elif isinstance(e.body, StatsReport):
                    self.stats.append((e.source_node, e.created_ms, e.body))
                elif isinstance(e.body, Trigger):
                    self.triggers.append((e.source_node, e.body))
                elif isinstance(e.body, Event):
                    self.events.append(e.body)

    def of_type(self, kind: str) -> list[Event]:
        self.poll()
        return [e for e in self.events if e.type == kind]

    def event_types(self) -> set[str]:
        self.poll()
        return {e.type for e in self.events}

    def drift_reports(self) -> list[HealthReport]:
        self.poll()
        return [h for _, h in self.health if h.drift]

    def scores(self, node: str, version: str) -> list[float]:
        """Overall drift scores node reported against model ``version``, oldest first."""
        self.poll()
        return [
            d.score
            for n, h in self.health
            if n == node and h.model_version == version
            for d in h.drift
            if not d.feature
        ]

    def scored(self) -> float:
        """Readings scored so far, over every node."""
        self.poll()
        return sum(m.value for _, _, s in self.stats for m in s.scalars if m.name == "scored")

    def metric_values(self, node: str, name: str) -> list[tuple[int, float]]:
        """(created ms, value) of every ``name`` scalar ``node`` reported, among the messages
        polled so far (this does not poll)."""
        return [
            (at, m.value)
            for n, at, s in self.stats
            if n == node
            for m in s.scalars
            if m.name == name
        ]


@contextlib.contextmanager
def devices(
    url: str,
    drift_file: Path,
    *,
    count: int | None = None,
    batch: int | None = None,
    name: str = "",
    seed: int | None = None,
    tls_dir: Path | None = None,
    must_live: bool = False,
) -> Iterator[None]:
    """examples/kmeans/devices.py publishing 40 readings/s per device to ``url`` (drifted while
    ``drift_file`` exists), stopped on exit.

    ``count`` devices, or the one device ``name``; ``batch`` readings per message;
    ``tls_dir`` holds the device's ca.crt, client.crt and client.key; with ``must_live`` the
    devices must still be running when the block ends (their stderr says why not)."""
    args = ["--broker", url, "--rate", "40", "--drift-file", str(drift_file)]
    if count is not None:
        args += ["--devices", str(count)]
    if batch is not None:
        args += ["--batch", str(batch)]
    if name:
        args += ["--name", name]
    if seed is not None:
        args += ["--seed", str(seed)]
    if tls_dir is not None:
        args += ["--ca-file", str(tls_dir / "ca.crt"), "--cert-file", str(tls_dir / "client.crt")]
        args += ["--key-file", str(tls_dir / "client.key")]
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLE / "devices.py"), *args],
        stdout=subprocess.DEVNULL,
        # Only read when they must live: an unread pipe could fill up and stall them.
        stderr=subprocess.PIPE if must_live else subprocess.DEVNULL,
    )
    try:
        yield
        if must_live:
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


def seed_data(out: Path, rows: int, name: str | None = None) -> None:
    """``rows`` readings from examples/kmeans/generate.py, written to ``out`` as ``name``.csv
    (the generator's default name when None)."""
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "generate.py"),
            *("--out", str(out), "--rows", str(rows)),
            *(("--name", name) if name is not None else ()),
        ],
        check=True,
        capture_output=True,
    )

"""Edge inference throughput: ``kmeans_score`` streaming over generated sensor readings, against
plain numpy scoring of the very same batches, same run, same process.  Target: at least 100,000
events/s per core for ``kmeans_score`` at the example's batch size.

    .venv/bin/python bench/inference_throughput.py [--quick] [--rows 1000000] [--batch 50 500]

Rates are events (readings) per second of *process CPU time* (``time.process_time``), i.e.
per core used, whatever else the machine is doing; best of ``--repeat`` runs.

What the rows mean:

- ``kmeans_score``: the component as a pipeline runs it: a ``ModelFeed`` asked once per batch,
  standardise, squared distances to every centroid in one matrix product, nearest centroid,
  anomaly flags, the window's counters, live histograms of every feature on the model's
  baseline edges, a ``ScoredBatch`` out and one ``Event`` per anomaly (1 % of the rows).
- ``plain numpy``: the same arithmetic (standardise, distances, argmin, threshold) on the same
  batches and nothing else: the floor for scoring in Python at this batch size.
- ``numpy, one array``: the same arithmetic over all rows at once: no per-batch cost at all.
- ``mqtt_source parse+assemble``: JSON payloads (one reading each) to a ``Batch``, without a
  broker: what the source costs per reading before scoring starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ion.model.definition import PipelineMode
from node.components.kmeans import KMeansScore
from node.components.kmeans_model import FORMAT, KMeansModel
from node.components.mqtt_source import assemble, parse_json
from node.components.values import Batch
from node.health.histograms import baseline
from node.models.artifact import ModelArtifact
from node.runner.component import Args, Context, StopSignal

TARGET = 100_000.0
REPO = Path(__file__).resolve().parents[1]


def load_generate() -> ModuleType:
    name = "ion_example_kmeans_generate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, REPO / "examples" / "kmeans" / "generate.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


class StaticFeed:
    def __init__(self, artifact: ModelArtifact) -> None:
        self.artifact = artifact

    def latest(self) -> ModelArtifact | None:
        return self.artifact

    def wait(self, timeout: float | None = None) -> ModelArtifact | None:
        return self.artifact

    def accepted(self, artifact: ModelArtifact, ok: bool, detail: str = "") -> None:
        assert ok, detail


def train(gen: ModuleType, work: Path) -> tuple[ModelArtifact, KMeansModel]:
    """A model without Spark: centroids are the operating modes' means (what KMeans finds on
    this data), threshold the 0.99 quantile, baseline 10 quantile bins per feature."""
    data = gen.generate(50_000, 6, anomaly_rate=0.01, seed=1)
    x = data.values
    mean, std = x.mean(axis=0), x.std(axis=0, ddof=1)
    z = (x - mean) / std
    centroids = np.array([z[(data.mode == k) & ~data.anomaly].mean(axis=0) for k in range(4)])
    rough = KMeansModel.of(data.features, mean, std, centroids, 0.0)
    threshold = float(np.quantile(rough.nearest(x)[0], 0.99))
    model = KMeansModel.of(data.features, mean, std, centroids, threshold)
    directory = model.save(work / "model")
    hist = baseline(data.features, x, 10, "quantile")
    art = ModelArtifact(directory, FORMAT, baseline=hist, model_id="bench", version="1")
    return art, model


def run_component(art: ModelArtifact, batches: list[Batch], work: Path) -> tuple[float, int]:
    with StopSignal() as stop:
        ctx = Context(
            ion="bench",
            pipeline="inference",
            component="score",
            node_id="edge-1",
            version=1,
            mode=PipelineMode.STREAMING,
            work_dir=work,
            bound_inputs=frozenset({"data", "model"}),
            log=logging.getLogger("bench.score"),
            stop_signal=stop,
        )
        score = KMeansScore(Args({"window": "1m", "max_events": 1_000_000}), ctx)
        started = time.process_time()
        anomalies = 0
        # In a streaming pipeline the runner passes a ModelFeed on the model port.
        inputs: dict[str, Any] = {"data": iter(batches), "model": StaticFeed(art)}
        for port, _ in score.stream(inputs):
            if port == "events":
                anomalies += 1
        return time.process_time() - started, anomalies


def numpy_score(
    model: KMeansModel, x: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distance to the nearest centroid, its index and the anomaly flag: nothing else."""
    c = model.centroids
    z = (x - model.mean) / model.std
    d2 = z @ (-2.0 * c.T) + np.einsum("ij,ij->i", c, c)
    d2 += np.einsum("ij,ij->i", z, z)[:, None]
    cluster = d2.argmin(axis=1)
    distance = np.sqrt(np.maximum(d2.min(axis=1), 0.0))
    return distance, cluster, distance > threshold


def run_numpy(model: KMeansModel, arrays: list[np.ndarray]) -> tuple[float, int]:
    started = time.process_time()
    anomalies = 0
    for x in arrays:
        anomalies += int(np.count_nonzero(numpy_score(model, x, model.threshold)[2]))
    return time.process_time() - started, anomalies


def run_parse(payloads: list[bytes], batch: int) -> float:
    started = time.process_time()
    readings = []
    for p in payloads:
        rs, _ = parse_json(p, "dev-1")
        readings.extend(rs)
        if len(readings) >= batch:
            assemble(readings)
            readings = []
    return time.process_time() - started


def best(runs: int, fn: Callable[[], float]) -> float:
    return min(fn() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few seconds)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="readings scored per run")
    parser.add_argument("--batch", type=int, nargs="+", default=[50, 500], help="batch sizes")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (best kept)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.repeat = 100_000, 2
    gen = load_generate()
    live = gen.generate(args.rows, 6, anomaly_rate=0.01, seed=2)
    payloads = [
        json.dumps(
            {"device": "dev-1", "ts": i, **dict(zip(live.features, row, strict=True))}
        ).encode()
        for i, row in enumerate(live.values[: min(args.rows, 100_000)].tolist())
    ]
    n = args.rows

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        art, model = train(gen, work)
        print(
            f"inference throughput: {n:,} readings x {len(live.features)} features, k={model.k}, "
            f"1 % anomalies, best of {args.repeat}, events per CPU second"
        )
        print(f"{'':34} {'events/s':>12} {'vs numpy':>9}")
        whole = best(args.repeat, lambda: run_numpy(model, [live.values])[0])
        verdicts = []
        for size in args.batch:
            batches = [
                Batch.of(live.features, live.values[i : i + size]) for i in range(0, n, size)
            ]
            arrays = [b.values for b in batches]
            np_runs = [run_numpy(model, arrays) for _ in range(args.repeat)]
            comp_runs = [run_component(art, batches, work) for _ in range(args.repeat)]
            t_np = min(t for t, _ in np_runs)
            events, expected = comp_runs[0][1], np_runs[0][1]
            assert events == expected, (events, expected)  # same verdicts as plain numpy
            rate, base = n / min(t for t, _ in comp_runs), n / t_np
            print(f"{'kmeans_score, batch ' + str(size):34} {rate:12,.0f} {rate / base:8.2f}x")
            print(f"{'plain numpy, batch ' + str(size):34} {base:12,.0f} {1.0:8.2f}x")
            verdicts.append((size, rate))
        print(f"{'numpy, one array':34} {n / whole:12,.0f}")
        per = min(args.batch)
        parse = best(args.repeat, lambda: run_parse(payloads, per))
        print(f"{'mqtt_source parse+assemble, ' + str(per):34} {len(payloads) / parse:12,.0f}")
        for size, rate in verdicts:
            met = "met" if rate >= TARGET else "MISSED"
            print(f"target {TARGET:,.0f} events/s per core at batch {size}: {met}")


if __name__ == "__main__":
    main()

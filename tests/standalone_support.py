"""Running the KMeans example's pipelines alone, without an agent, as docs/engines.md shows:
runner specs made from examples/kmeans/ion.yaml, the generator's data, a model made with numpy,
and the JSON lines the SDK writes in standalone mode."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from ion.authoring import parse_ion
from ion.model.definition import ArgValue, Component, Pipeline
from ion.model.health import StatsReport
from ion.model.local import Emit
from ion.model.messages import Envelope
from ion.wire.local import frame_from_json
from node.agent.edgeports import resolve_edges
from node.components.kmeans_model import FORMAT, KMeansModel
from node.health.histograms import baseline
from node.models.artifact import ModelArtifact
from node.runner.spec import EdgePort, RunnerSpec, write

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "kmeans"
ION = "kmeans-anomaly"
T = TypeVar("T")


def example_pipeline(
    name: str,
    *,
    replace: Mapping[str, tuple[str, Mapping[str, ArgValue]]] | None = None,
    engine_config: Mapping[str, str] | None = None,
) -> tuple[Pipeline, tuple[EdgePort, ...]]:
    """Pipeline ``name`` of examples/kmeans/ion.yaml and its edge ports as the agent resolves
    them; ``replace`` gives components another type and arguments (e.g. the inference's MQTT
    source a CSV file)."""
    parsed = parse_ion((EXAMPLE / "ion.yaml").read_text(), "ion.yaml")
    assert parsed.definition is not None, parsed.problems
    ports = resolve_edges(parsed.definition).ports
    pipeline = next(p for p in parsed.definition.pipelines if p.name == name)
    swaps = dict(replace or {})
    components = tuple(
        Component(c.name, swaps[c.name][0], dict(swaps[c.name][1]), c.inputs)
        if c.name in swaps
        else c
        for c in pipeline.components
    )
    pipeline = dataclasses.replace(pipeline, components=components)
    if engine_config is not None:
        pipeline = dataclasses.replace(pipeline, engine_config=dict(engine_config))
    return pipeline, ports.get(name, ())


def write_spec(path: Path, pipeline: Pipeline, edges: tuple[EdgePort, ...]) -> Path:
    write(RunnerSpec(ION, 1, "laptop", pipeline, edges), path)
    return path


def generate(out: Path, name: str, rows: int, seed: int, drift: float = 0.0) -> Path:
    """examples/kmeans/generate.py, run as its documentation says; the CSV's path."""
    subprocess.run(
        [
            sys.executable,
            str(EXAMPLE / "generate.py"),
            "--out",
            str(out),
            "--name",
            name,
            "--rows",
            str(rows),
            "--seed",
            str(seed),
            "--drift",
            str(drift),
        ],
        check=True,
        capture_output=True,
    )
    return out / f"{name}.csv"


def numpy_model(train_csv: Path, directory: Path) -> ModelArtifact:
    """A ``kmeans-json/1`` model without Spark: centroids are the mean reading of each
    operating mode the generator labelled (what KMeans finds on this data), the threshold the
    99th percentile of the normal rows' distances, baseline quantile histograms attached."""
    values = np.loadtxt(train_csv, delimiter=",", skiprows=1)
    features = train_csv.read_text().splitlines()[0].split(",")
    labels = np.loadtxt(
        train_csv.with_name(f"{train_csv.stem}_labels.csv"),
        delimiter=",",
        skiprows=1,
        dtype=np.int64,
    )
    anomaly, mode = labels[:, 0].astype(bool), labels[:, 1]
    mean, std = values.mean(axis=0), values.std(axis=0, ddof=1)
    z = (values - mean) / std
    centroids = np.array([z[(mode == m) & ~anomaly].mean(axis=0) for m in np.unique(mode)])
    probe = KMeansModel.of(features, mean, std, centroids, 1.0)
    distance, _ = probe.nearest(values)
    threshold = float(np.quantile(distance[~anomaly], 0.99))
    model = KMeansModel.of(features, mean, std, centroids, threshold)
    model.save(directory)
    return ModelArtifact(
        path=directory.absolute(),
        format=FORMAT,
        metrics={"threshold": threshold},
        baseline=baseline(features, values, 10, "quantile"),
        version="numpy-1",
    )


def emitted(path: Path) -> list[tuple[str, Envelope]]:
    """The ``(edge, envelope)`` of every line a standalone SDK wrote to ``path``."""
    out = []
    for line in path.read_text().splitlines():
        msg = frame_from_json(line).message
        assert isinstance(msg, Emit), line
        out.append((msg.edge, msg.envelope))
    return out


def bodies(path: Path, kind: type[T]) -> list[T]:
    """The message bodies of one type written to ``path``, in order."""
    return [e.body for _edge, e in emitted(path) if isinstance(e.body, kind)]


def stats_of(path: Path) -> dict[str, float]:
    """The scalars of the last stats report written (what a window ended with)."""
    reports = bodies(path, StatsReport)
    assert reports, f"no stats in {path}"
    return {m.name: m.value for m in reports[-1].scalars}

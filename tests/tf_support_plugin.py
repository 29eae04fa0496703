"""Components for the tensorflow engine's tests, run inside the engine's child (not by pytest).

Made installable through an entry-point dist-info directory on the child's PYTHONPATH (see
``tf_support.plugin_dir``), exactly how a third-party package provides components.  Only the
standard library, numpy and ``node`` are imported here, so the child starts quickly.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from node.components.values import Batch
from node.models.artifact import ModelArtifact
from node.runner import Args, Component, Context


class CsvTestSource(Component):
    """A CSV file with a header of feature names and numbers only, as one ``Batch``."""

    output_ports = ("data",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.path = ctx.work_dir / args.get_str("path")

    def run(self, inputs: Mapping[str, Any]) -> Batch:
        with self.path.open(encoding="utf-8") as f:
            names = f.readline().strip().split(",")
            values = np.loadtxt(f, delimiter=",", ndmin=2)
        return Batch.of(names, values)


class ArtifactSink(Component):
    """Writes the ``ModelArtifact`` it receives as JSON to ``path`` in the work dir."""

    input_ports = ("model",)
    output_ports = ()

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.path = ctx.work_dir / args.get_str("path")

    def run(self, inputs: Mapping[str, Any]) -> None:
        artifact = inputs["model"]
        assert isinstance(artifact, ModelArtifact)
        doc = {
            "path": str(artifact.path),
            "format": artifact.format,
            "metrics": dict(artifact.metrics),
            "annotations": dict(artifact.annotations),
            "baseline": [
                {
                    "feature": h.feature,
                    "bin_edges": list(h.bin_edges),  # JSON's Infinity: read back by json
                    "counts": list(h.counts),
                    "missing": h.missing,
                }
                for h in artifact.baseline
            ],
        }
        self.path.write_text(json.dumps(doc))


class ScoresSink(Component):
    """Writes the rows and anomalies of the scores it receives as JSON to ``path``."""

    input_ports = ("in",)
    output_ports = ()

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.path = ctx.work_dir / args.get_str("path")

    def run(self, inputs: Mapping[str, Any]) -> None:
        value = inputs["in"]
        scores = value if isinstance(value, list) else [value]
        doc = {
            "rows": sum(s.rows for s in scores),
            "anomalies": sum(s.anomalies for s in scores),
            "type": type(scores[0]).__name__,
        }
        self.path.write_text(json.dumps(doc))


class EnvEcho(Component):
    """Prints the environment variables the tensorflow engine sets, as ``NAME=value``."""

    output_ports = ()

    def run(self, inputs: Mapping[str, Any]) -> None:
        for name in sorted(os.environ):
            if name.startswith(("TF_", "OMP_", "KERAS_", "ION_")):
                print(f"{name}={os.environ[name]}", flush=True)


class IgnoresTerm(Component):
    output_ports = ()

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[None]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        while True:
            time.sleep(0.02)
            yield None


ENTRY_POINTS = {
    "test_csv": "CsvTestSource",
    "artifact_sink": "ArtifactSink",
    "ignores_term": "IgnoresTerm",
    "env_echo": "EnvEcho",
    "scores_sink": "ScoresSink",
}
"""Type name -> class name in this module."""

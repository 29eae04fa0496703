"""Helpers for the tensorflow engine's tests: test components made installable, pipelines,
synthetic sensor data with anomalies, and hand-built TensorBoard event records."""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tf_support_plugin
from support.pipelines import comp, install_plugin, pipe

from ion.model.definition import (
    ArgValue,
    Component,
    Pipeline,
    PipelineMode,
)
from node.engines.base import JobExit, JobSpec
from node.engines.tensorflow_engine import TensorFlowEngine
from node.engines.tfevents import frame_record

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BATCH = PipelineMode.BATCH
STREAMING = PipelineMode.STREAMING
FEATURES = ("temperature", "humidity", "pressure", "vibration")

# Small and quick (the test machine has two cores, shared): one thread for TensorFlow ops.
SMALL = {"intra_op_threads": "1", "inter_op_threads": "1"}
# A model that learns the synthetic data in a few seconds and separates its anomalies.
TINY_MODEL: dict[str, ArgValue] = {
    "hidden": (16,),
    "latent_dim": 3,
    "learning_rate": 0.01,
    "batch_size": 64,
    "epochs": 15,
    "threshold_quantile": 0.99,
    "seed": 1,
}


def plugin_dir(root: Path) -> Path:
    """A directory holding a dist-info that declares the test components as entry points
    (their module is tests/tf_support_plugin.py); put it and tests/ on PYTHONPATH."""
    module = tf_support_plugin.__name__
    entries = {n: f"{module}:{cls}" for n, cls in tf_support_plugin.ENTRY_POINTS.items()}
    return install_plugin(root, "ion-tf-testplug", entries)


def child_env(plugins: Path) -> dict[str, str]:
    return {"PYTHONPATH": os.pathsep.join([str(plugins), str(TESTS), str(REPO)])}


def tf_pipe(
    name: str,
    mode: PipelineMode,
    *components: Component,
    config: Mapping[str, str] | None = None,
) -> Pipeline:
    return pipe(
        name, mode, *components, engine="tensorflow", config=SMALL if config is None else config
    )


@dataclass
class TensorFlowCase:
    """The tensorflow engine described for the conformance suite."""

    work_root: Path
    env: Mapping[str, str] = field(default_factory=dict)
    name: str = "tensorflow"
    stop_grace_s: float = 5.0

    def engine(self) -> TensorFlowEngine:
        return TensorFlowEngine()

    def missing_engine(self) -> TensorFlowEngine:
        return TensorFlowEngine(python=self.work_root / "no-such-python")

    def printing(self, marker: str) -> Pipeline:
        return tf_pipe(
            "printing",
            BATCH,
            comp("src", "counter_source", {"count": 2}),
            comp("out", "log_sink", {"prefix": f"{marker} "}, "src"),
        )

    def long_running(self, marker: str) -> Pipeline:
        return tf_pipe(
            "long-running",
            STREAMING,
            comp("src", "counter_source", {"rate": 50.0}),
            comp("out", "log_sink", {"prefix": f"{marker} "}, "src"),
        )

    def crashing(self, code: int, marker: str) -> Pipeline:
        return tf_pipe("crashing", BATCH, comp("boom", "fail", {"code": code, "message": marker}))

    def bad_arguments(self) -> tuple[Pipeline, str]:
        pipeline = tf_pipe(
            "bad-args",
            BATCH,
            comp("read", "test_csv", {"path": "data.csv"}),
            comp("fit", "keras_autoencoder_train", {"epochs": "many"}, "data=read.data"),
        )
        return pipeline, "argument 'epochs' must be an integer"

    def unknown_component(self) -> tuple[Pipeline, str]:
        return tf_pipe("unknown", BATCH, comp("x", "no_such_thing")), "'no_such_thing'"

    def ignoring_sigterm(self) -> Pipeline:
        return tf_pipe("stubborn", STREAMING, comp("x", "ignores_term"))


async def run_job(engine: TensorFlowEngine, spec: JobSpec, timeout_s: float = 120.0) -> JobExit:
    job = await engine.start(spec)
    try:
        async with asyncio.timeout(timeout_s):
            return await job.wait()
    finally:
        await job.stop(1.0)


# -- synthetic sensor data -----------------------------------------------------------------


def normal_readings(n: int, rng: np.random.Generator) -> np.ndarray:
    """Readings that lie near a closed curve (one hidden phase drives every sensor)."""
    t = rng.uniform(0.0, 2 * np.pi, n)
    return np.column_stack(
        [
            20 + 5 * np.sin(t) + rng.normal(0, 0.1, n),
            50 + 10 * np.cos(t) + rng.normal(0, 0.2, n),
            1000 + 3 * (np.sin(t) + np.cos(t)) + rng.normal(0, 0.1, n),
            0.5 + 0.2 * np.sin(2 * t) + rng.normal(0, 0.01, n),
        ]
    )


def anomalous_readings(n: int, rng: np.random.Generator) -> np.ndarray:
    """Readings whose sensors disagree: each value is plausible alone, the row is not."""
    x = normal_readings(n, rng)
    x[:, 1] = 100 - x[:, 1]
    x[:, 2] += 6
    return x


def write_csv(path: Path, values: np.ndarray, names: tuple[str, ...] = FEATURES) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(names)] + [",".join(f"{v:.6f}" for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")


# -- hand-built TensorBoard events (protobuf wire format) ------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: ten bytes, two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint(number << 3 | wire)


def length_delimited(number: int, data: bytes) -> bytes:
    return key(number, 2) + varint(len(data)) + data


def simple_value(tag: str, value: float) -> bytes:
    """A ``Summary.Value`` in the TF1 form: tag and simple_value."""
    return length_delimited(1, tag.encode()) + key(2, 5) + struct.pack("<f", value)


def tensor_value(tag: str, tensor: bytes) -> bytes:
    """A ``Summary.Value`` in the TF2 form: tag and a TensorProto."""
    return length_delimited(1, tag.encode()) + length_delimited(8, tensor)


def tensor(
    dtype: int, *, content: bytes = b"", fields: bytes = b"", dims: tuple[int, ...] = ()
) -> bytes:
    shape = b"".join(length_delimited(2, key(1, 0) + varint(d)) for d in dims)
    out = key(1, 0) + varint(dtype) + length_delimited(2, shape)
    if content:
        out += length_delimited(4, content)
    return out + fields


def event(wall_time: float, step: int, *values: bytes) -> bytes:
    summary = b"".join(length_delimited(1, v) for v in values)
    out = key(1, 1) + struct.pack("<d", wall_time)
    if step:
        out += key(2, 0) + varint(step)
    return out + length_delimited(5, summary)


def event_file(path: Path, *events: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        for data in events:
            f.write(frame_record(data))
    return path

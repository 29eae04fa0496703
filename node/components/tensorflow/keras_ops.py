"""The TensorFlow work of the autoencoder components: build, train, save, convert.

The one module of ``node.components.tensorflow`` that imports TensorFlow and Keras; the
components import it inside ``run`` (in the tensorflow engine's child), so building a plan,
checking arguments and scoring at the edge never load TensorFlow.

Training writes its scalars for TensorBoard with ``tf.summary.write`` (TensorFlow core) rather
than Keras' ``TensorBoard`` callback, which needs the separate ``tensorboard`` package
(tensorflow-cpu 2.21 no longer installs it).  The files are the same kind TensorBoard reads,
tags as Keras names them (``epoch_loss``, ``epoch_val_loss``), and the engine tails them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras  # type: ignore[import-untyped]
import numpy as np
import tensorflow as tf  # type: ignore[import-untyped]
from tensorflow.core.framework import summary_pb2  # type: ignore[import-untyped]

from ion.model.health import Histogram
from node.components.values import Batch
from node.health.histograms import quantile_edges

from .model_format import (
    KERAS_FILE,
    KERAS_FORMAT,
    TFLITE_FILE,
    TFLITE_FORMAT,
    AutoencoderMeta,
    FloatArray,
    baseline_histograms,
    reconstruction_error,
    write_meta,
)
from .training import TrainSettings

BASELINE_BINS = 10
VALIDATION_SHARE = 0.2
MIN_VALIDATION_ROWS = 20
"""Fewer complete rows than this: train on all of them, without a validation loss."""
MIN_ROWS = 8
PROBE_ROWS = 64


@dataclass(frozen=True, slots=True)
class Trained:
    meta: AutoencoderMeta
    metrics: Mapping[str, float]
    baseline: tuple[Histogram, ...]


def versions() -> str:
    return f"tensorflow {tf.__version__}, keras {keras.__version__}"


def build(features: int, settings: TrainSettings) -> Any:
    """Dense encoder (``hidden`` then ``latent_dim``) and its mirror image as decoder."""
    inputs = keras.Input((features,), name="features")
    h = inputs
    for i, units in enumerate(settings.hidden):
        h = keras.layers.Dense(units, activation="relu", name=f"encode_{i}")(h)
    h = keras.layers.Dense(settings.latent_dim, activation="relu", name="code")(h)
    for i, units in enumerate(reversed(settings.hidden)):
        h = keras.layers.Dense(units, activation="relu", name=f"decode_{i}")(h)
    outputs = keras.layers.Dense(features, name="reconstruction")(h)
    return keras.Model(inputs, outputs, name="autoencoder")


def train(
    batch: Batch,
    settings: TrainSettings,
    out_dir: Path,
    tensorboard_dir: Path,
    log: logging.Logger,
) -> Trained:
    """Fit an autoencoder on the complete rows of ``batch``; save it (``.keras`` and meta)
    into the empty directory ``out_dir``."""
    x = batch.values[~np.isnan(batch.values).any(axis=1)]
    if x.shape[0] < MIN_ROWS:
        raise ValueError(
            f"need at least {MIN_ROWS} rows without missing values to train, got {x.shape[0]} "
            f"(of {batch.rows})"
        )
    if x.shape[0] < batch.rows:
        log.warning("training on %d of %d rows (the rest miss a value)", x.shape[0], batch.rows)
    keras.utils.set_random_seed(settings.seed)
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    std[~(std > 0)] = 1.0  # a constant feature: keep it at zero instead of dividing by zero
    provisional = AutoencoderMeta(KERAS_FORMAT, batch.features, mean, std, threshold=0.0)
    z = provisional.standardize(x)
    order = np.random.default_rng(settings.seed).permutation(len(z))
    n_val = int(len(z) * VALIDATION_SHARE) if len(z) >= MIN_VALIDATION_ROWS else 0
    val, fit = z[order[:n_val]], z[order[n_val:]]

    model = build(len(batch.features), settings)
    model.compile(optimizer=keras.optimizers.Adam(settings.learning_rate), loss="mse")
    log.info(
        "training an autoencoder on %d rows x %d features (%d for validation), %s",
        len(fit),
        len(batch.features),
        n_val,
        versions(),
    )
    history = model.fit(
        fit,
        fit,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        validation_data=(val, val) if n_val else None,
        shuffle=True,
        verbose=0,
        callbacks=[_summaries(tensorboard_dir, settings.epochs, log)],
    )
    errors = reconstruction_error(z, model.predict(z, batch_size=1024, verbose=0))
    threshold = float(np.quantile(errors, settings.threshold_quantile))
    meta = dataclasses.replace(
        provisional,
        threshold=threshold,
        threshold_quantile=settings.threshold_quantile,
        feature_edges={
            f: _inner(quantile_edges(x[:, j], BASELINE_BINS)) for j, f in enumerate(batch.features)
        },
        error_edges=_inner(quantile_edges(errors, BASELINE_BINS)),
    )
    model.save(out_dir / KERAS_FILE)
    write_meta(out_dir, meta)
    metrics = {
        "loss": float(history.history["loss"][-1]),
        "threshold": threshold,
        "train_rows": float(len(fit)),
        "epochs": float(len(history.history["loss"])),
    }
    if n_val:
        metrics["val_loss"] = float(history.history["val_loss"][-1])
    return Trained(meta, metrics, baseline_histograms(meta, x, errors))


def _inner(edges: tuple[float, ...]) -> tuple[float, ...]:
    return edges[1:-1]  # without the infinite outer edges (see model_format)


def _summaries(logdir: Path, epochs: int, log: logging.Logger) -> Any:
    """A callback writing each epoch's logs as TensorBoard scalars ``epoch_<name>``."""
    writer = tf.summary.create_file_writer(str(logdir))
    metadata = summary_pb2.SummaryMetadata()
    metadata.plugin_data.plugin_name = "scalars"  # so TensorBoard shows them as scalars
    every = max(epochs // 10, 1)

    class ScalarSummaries(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
            values: dict[str, float] = {}
            for key, raw in (logs or {}).items():
                number = _number(raw)
                if number is not None:
                    values[key] = number
            with writer.as_default():
                for name, value in values.items():
                    tf.summary.write(
                        f"epoch_{name}", tf.constant(value), step=epoch, metadata=metadata
                    )
            writer.flush()  # the engine tails the file: every epoch must reach it now
            if epoch % every == 0 or epoch + 1 == epochs:
                shown = ", ".join(f"{k}={v:.5g}" for k, v in values.items())
                log.info("epoch %d/%d: %s", epoch + 1, epochs, shown)

        def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
            writer.close()

    return ScalarSummaries()


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def export_tflite(
    source: Path, meta: AutoencoderMeta, quantize: str, out_dir: Path, log: logging.Logger
) -> dict[str, float]:
    """Convert the Keras model in ``source`` to TFLite in the empty directory ``out_dir``;
    the metrics of the conversion (size, and the largest difference to Keras on a probe)."""
    model = keras.models.load_model(source / KERAS_FILE, safe_mode=True, compile=False)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize in ("dynamic", "float16"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    # The converter prints a SavedModel summary meant for notebooks; keep the log to one line.
    with contextlib.redirect_stdout(io.StringIO()):
        flatbuffer = converter.convert()
    (out_dir / TFLITE_FILE).write_bytes(flatbuffer)
    tflite_meta = dataclasses.replace(meta, format=TFLITE_FORMAT, quantize=quantize)
    write_meta(out_dir, tflite_meta)
    metrics = {"tflite_bytes": float(len(flatbuffer))}
    diff = _probe(model, out_dir, tflite_meta)
    if diff is not None:
        metrics["tflite_max_abs_diff"] = diff
    log.info(
        "converted to TFLite (%s quantisation): %d bytes, largest difference to Keras %s",
        quantize,
        len(flatbuffer),
        "not checked (ai-edge-litert missing)" if diff is None else f"{diff:.3g}",
    )
    return metrics


def _probe(model: Any, directory: Path, meta: AutoencoderMeta) -> float | None:
    """Run the converted model with the edge scorer's own loader on standard-normal input
    (what standardised data looks like) and compare with Keras."""
    import importlib.util

    if importlib.util.find_spec("ai_edge_litert") is None:
        return None
    from node.components.tflite_score import TfliteNetwork

    z = np.random.default_rng(0).standard_normal((PROBE_ROWS, len(meta.features)))
    z32 = z.astype(np.float32)
    expected: FloatArray = np.asarray(model.predict(z32, verbose=0), dtype=np.float64)
    network = TfliteNetwork(directory / TFLITE_FILE, len(meta.features), threads=1)
    got = network.reconstruct(z32).astype(np.float64)
    return float(np.abs(got - expected).max())

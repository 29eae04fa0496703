"""``keras_autoencoder_train`` and ``tflite_export``: batch components of the tensorflow engine.

``keras_autoencoder_train`` takes ``data`` (a ``Batch``, or the other forms listed in
``batches``), standardises the features, fits a dense autoencoder (``hidden`` units, then a
``latent_dim`` code, then the mirror image), and sets the anomaly threshold at the
``threshold_quantile`` of the training rows' reconstruction errors.  A fifth of the rows (when
there are at least 20) are held out for ``val_loss``.  Every epoch's loss goes to TensorBoard
in ``$ION_TENSORBOARD_DIR``, where the engine reads it for the job's statistics.  Its ``model``
output is a ``ModelArtifact`` of format ``keras-autoencoder/1`` with metrics ``loss``,
``val_loss``, ``threshold``, ``train_rows``, ``epochs``, and baseline histograms of every
feature and of the reconstruction error (10 quantile bins).

``tflite_export`` converts such a model to TensorFlow Lite (``quantize``: ``none``,
``dynamic`` range or ``float16`` weights), checks the result with the edge scorer's own loader,
and returns a ``tflite-autoencoder/1`` artifact with the same metrics and baseline plus
``tflite_bytes`` and ``tflite_max_abs_diff``.

Models are written under ``<work_dir>/models/<component>``, replaced whole on each run.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.models.artifact import ModelArtifact
from node.runner.component import Args, ArgsError, Component, Context

from .batches import as_batch
from .model_format import (
    KERAS_FORMAT,
    QUANTIZE_MODES,
    TFLITE_FORMAT,
    ModelFormatError,
    read_meta,
    replace_directory,
    staging_directory,
)

TENSORBOARD_ENV = "ION_TENSORBOARD_DIR"
MAX_UNITS = 4096
MAX_LAYERS = 8
DEFAULT_HIDDEN = (32, 16)


@dataclass(frozen=True, slots=True)
class TrainSettings:
    """The catalog's arguments of ``keras_autoencoder_train``, checked, with its defaults."""

    hidden: tuple[int, ...] = DEFAULT_HIDDEN
    latent_dim: int = 8
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    threshold_quantile: float = 0.99
    seed: int = 1


def tensorboard_dir(ctx: Context) -> Path:
    """Where training writes TensorBoard files: the engine's run directory, else the work
    dir's ``tensorboard`` (a pipeline run by hand)."""
    configured = os.environ.get(TENSORBOARD_ENV)
    return Path(configured) if configured else ctx.work_dir / "tensorboard"


def model_dir(ctx: Context) -> Path:
    return ctx.work_dir / "models" / ctx.component


class KerasAutoencoderTrain(Component):
    input_ports = ("data",)
    output_ports = ("model",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        hidden = _layer_sizes(args.get("hidden"))
        quantile = args.get_float("threshold_quantile", 0.99, min=0.0, max=1.0)
        if quantile <= 0:
            raise ArgsError("argument 'threshold_quantile' must be above 0")
        learning_rate = args.get_float("learning_rate", 1e-3, min=0.0)
        if learning_rate <= 0:
            raise ArgsError("argument 'learning_rate' must be above 0")
        self.settings = TrainSettings(
            hidden=hidden,
            latent_dim=args.get_int("latent_dim", 8, min=1, max=MAX_UNITS),
            epochs=args.get_int("epochs", 20, min=1, max=1_000_000),
            batch_size=args.get_int("batch_size", 64, min=1, max=1 << 20),
            learning_rate=learning_rate,
            threshold_quantile=quantile,
            seed=args.get_int("seed", 1),
        )

    def run(self, inputs: Mapping[str, Any]) -> ModelArtifact:
        batch = as_batch(inputs["data"])
        if not batch.features:
            raise ValueError("the data has no numeric features to train on")
        from . import keras_ops  # TensorFlow is loaded here, when there is work for it

        final = model_dir(self.ctx)
        staging = staging_directory(final)
        board = tensorboard_dir(self.ctx)
        board.mkdir(parents=True, exist_ok=True)
        trained = keras_ops.train(batch, self.settings, staging, board, self.log)
        replace_directory(staging, final)
        self.log.info(
            "model saved in %s: %s",
            final,
            ", ".join(f"{k}={v:.5g}" for k, v in trained.metrics.items()),
        )
        return ModelArtifact(
            path=final,
            format=KERAS_FORMAT,
            metrics=dict(trained.metrics),
            baseline=trained.baseline,
            annotations={"framework": keras_ops.versions(), "features": ",".join(batch.features)},
        )


def _layer_sizes(raw: object) -> tuple[int, ...]:
    if raw is None:
        return DEFAULT_HIDDEN
    sizes = tuple(raw) if isinstance(raw, tuple | list) else ()
    if (
        not sizes
        or len(sizes) > MAX_LAYERS
        or not all(type(u) is int and 1 <= u <= MAX_UNITS for u in sizes)
    ):
        raise ArgsError(
            f"argument 'hidden' must be a list of 1 to {MAX_LAYERS} layer sizes from 1 to "
            f"{MAX_UNITS}, not {raw!r}"
        )
    return tuple(int(u) for u in sizes)


class TfliteExport(Component):
    input_ports = ("model",)
    output_ports = ("model",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.quantize = args.get_str("quantize", "none", choices=QUANTIZE_MODES)

    def run(self, inputs: Mapping[str, Any]) -> ModelArtifact:
        artifact = inputs["model"]
        if not isinstance(artifact, ModelArtifact):
            raise TypeError(f"the model input must be a ModelArtifact, not {artifact!r}")
        if artifact.format != KERAS_FORMAT:
            raise ModelFormatError(
                f"tflite_export converts {KERAS_FORMAT} models, not {artifact.format!r}"
            )
        meta = read_meta(artifact.path, KERAS_FORMAT)
        from . import keras_ops

        final = model_dir(self.ctx)
        staging = staging_directory(final)
        metrics = keras_ops.export_tflite(artifact.path, meta, self.quantize, staging, self.log)
        replace_directory(staging, final)
        return ModelArtifact(
            path=final,
            format=TFLITE_FORMAT,
            metrics={**artifact.metrics, **metrics},
            baseline=artifact.baseline,
            annotations={**artifact.annotations, "quantize": self.quantize},
        )

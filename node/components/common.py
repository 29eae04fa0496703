"""What the python and Spark component sets share: ``model_publisher`` and argument helpers.

``model_publisher`` is engine-agnostic: it takes the trained ``ModelArtifact`` on ``model`` and,
when bound, the baseline ``HealthReport`` on ``health``, and returns the artifact with the
baseline histograms and the extra ``metrics`` attached.  Publishing itself (manifest, chunks,
signature) is the agent's job: the runner hands the ``model`` output to the SDK.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from ion.authoring.durations import parse_duration
from ion.model.health import HealthReport, Histogram
from node.models.artifact import ModelArtifact
from node.runner.component import Args, ArgsError, Component, Context


def duration_s(args: Args, name: str, default: str) -> float:
    """A duration argument (``30s``, ``1m``, or integer milliseconds) in seconds, > 0."""
    raw = args.get(name)
    value: Any = default if raw is None else raw
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise ArgsError(f"argument {name!r} must be a duration such as 30s, not {value!r}")
    try:
        ms = parse_duration(value)
    except (TypeError, ValueError) as e:
        raise ArgsError(f"argument {name!r}: {e}") from e
    if ms <= 0:
        raise ArgsError(f"argument {name!r} must be a positive duration, not {value!r}")
    return ms / 1000.0


def str_list(args: Args, name: str) -> tuple[str, ...] | None:
    """A list-of-names argument, or None when absent."""
    raw = args.get(name)
    if raw is None:
        return None
    if not isinstance(raw, tuple | list) or not all(isinstance(x, str) for x in raw):
        raise ArgsError(f"argument {name!r} must be a list of names, not {raw!r}")
    if len(set(raw)) != len(raw):
        raise ArgsError(f"argument {name!r} repeats a name: {list(raw)}")
    return tuple(str(x) for x in raw)


def input_path(ctx: Context, path: str) -> Path:
    """A file to read: absolute, or relative to the pipeline's work directory."""
    p = Path(path)
    return p if p.is_absolute() else ctx.work_dir / p


def output_path(ctx: Context, path: str) -> Path:
    """A file to write: it must stay inside the work directory, since the path comes from the
    ION, i.e. from the wire."""
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ArgsError(f"path must be relative, inside the work dir: {path!r}")
    return ctx.work_dir / Path(*rel.parts)


def baseline_of(value: object) -> tuple[Histogram, ...]:
    """The histograms in a ``health`` value: a HealthReport or a sequence of Histograms."""
    if isinstance(value, HealthReport):
        return value.histograms
    if isinstance(value, Sequence) and all(isinstance(h, Histogram) for h in value):
        return tuple(value)
    raise TypeError(
        f"health must be a HealthReport or a sequence of Histogram, not {type(value).__name__}"
    )


class ModelPublisher(Component):
    """Attaches the baseline histograms and extra metrics to a trained model."""

    input_ports = ("model",)
    optional_input_ports = ("health",)
    output_ports = ("model",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        raw = args.get("metrics")
        metrics: dict[str, float] = {}
        if raw is not None:
            if not isinstance(raw, Mapping):
                raise ArgsError(f"argument 'metrics' must be a map of name: number, not {raw!r}")
            for key, value in raw.items():
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ArgsError(f"argument 'metrics': {key!r} must be a number, not {value!r}")
                metrics[str(key)] = float(value)
        self.metrics = metrics

    def publish(self, model: object, health: object = None) -> ModelArtifact:
        if not isinstance(model, ModelArtifact):
            raise TypeError(f"model must be a ModelArtifact, not {type(model).__name__}")
        out = replace(model, metrics={**model.metrics, **self.metrics})
        if health is not None:
            out = out.with_baseline(baseline_of(health))
            self.log.info("model %s: %d baseline histogram(s)", out.format, len(out.baseline))
        return out

    def run(self, inputs: Mapping[str, Any]) -> ModelArtifact:
        return self.publish(inputs["model"], inputs.get("health"))

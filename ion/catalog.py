"""The component catalog: which component types exist, on which engines, with which ports and
arguments.

The validator checks every component of an ION against a catalog: its type exists for the
pipeline's engine, its inputs are bound to outputs of the same port type, its arguments are
known and well typed.  ``builtin_catalog()`` lists the components shipped with the runtime;
``Catalog.with_entry_points()`` adds those that installed packages declare in the
``ion.components`` entry-point group (the object is a ``ComponentSpec``, or a callable returning
one or a list of them).

Ports: an input is satisfied either by a binding inside the pipeline (``inputs: {data:
read.data}``) or by an ION edge that targets it; inputs listed in ``optional_inputs`` may stay
unconnected.  Outputs may feed any number of inputs and ION edges.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from ion.errors import Problem
from ion.model.definition import ArgValue, PortType

logger = logging.getLogger(__name__)

ENGINES: frozenset[str] = frozenset({"python", "spark", "tensorflow"})
ENTRY_POINT_GROUP = "ion.components"

ArgType = Literal["int", "float", "str", "bool", "list", "map", "any"]
ARG_TYPES: tuple[str, ...] = get_args(ArgType)

_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True, slots=True)
class ArgSpec:
    """One argument of a component.  ``default`` None means "no default"; a required
    argument never has one.  ``choices``, when given, lists every allowed value."""

    type: ArgType = "any"
    required: bool = False
    default: ArgValue = None
    description: str = ""
    choices: tuple[ArgValue, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in ARG_TYPES:
            raise ValueError(f"unknown argument type {self.type!r}; one of {ARG_TYPES}")
        if self.required and self.default is not None:
            raise ValueError("a required argument has no default")
        if self.default is not None and not self.accepts(self.default):
            raise ValueError(f"default {self.default!r} is not a valid {self.type}")

    def accepts(self, value: ArgValue) -> bool:
        """Whether a non-null ``value`` has this argument's type (and is one of the choices)."""
        if self.choices and value not in self.choices:
            return False
        return type_matches(self.type, value)


def type_matches(arg_type: str, value: ArgValue) -> bool:
    if arg_type == "any":
        return True
    if isinstance(value, bool):  # before int: bool is an int
        return arg_type == "bool"
    checks: dict[str, Callable[[ArgValue], bool]] = {
        "int": lambda v: isinstance(v, int),
        "float": lambda v: isinstance(v, int | float),
        "str": lambda v: isinstance(v, str),
        "list": lambda v: isinstance(v, tuple | list),
        "map": lambda v: isinstance(v, Mapping),
    }
    check = checks.get(arg_type)
    return check is not None and check(value)


def type_name(value: ArgValue) -> str:
    """The ArgType a value would have, for messages ("expected int, got str")."""
    if value is None:
        return "null"
    for name, kind in (("bool", bool), ("int", int), ("float", float), ("str", str)):
        if isinstance(value, kind):
            return name
    return "list" if isinstance(value, tuple | list) else "map"


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    type: str
    engines: tuple[str, ...]
    inputs: Mapping[str, PortType] = field(default_factory=dict)
    outputs: Mapping[str, PortType] = field(default_factory=dict)
    args: Mapping[str, ArgSpec] = field(default_factory=dict)
    description: str = ""
    optional_inputs: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not _TYPE_PATTERN.match(self.type):
            raise ValueError(f"component type {self.type!r} must be lower_snake_case")
        if not self.engines:
            raise ValueError(f"component type {self.type!r} names no engine")
        unknown = self.optional_inputs - set(self.inputs)
        if unknown:
            raise ValueError(f"optional inputs {sorted(unknown)} are not inputs of {self.type}")

    def input_required(self, port: str) -> bool:
        return port in self.inputs and port not in self.optional_inputs


@dataclass(frozen=True, slots=True)
class Catalog:
    """Component specs by type.  ``problems`` holds what went wrong while loading plugins
    (warnings: the catalog is still usable without them)."""

    specs: Mapping[str, ComponentSpec] = field(default_factory=dict)
    engines: frozenset[str] = ENGINES
    problems: tuple[Problem, ...] = ()

    @classmethod
    def of(cls, specs: Iterable[ComponentSpec], engines: Iterable[str] = ENGINES) -> Catalog:
        by_type: dict[str, ComponentSpec] = {}
        for spec in specs:
            if spec.type in by_type:
                raise ValueError(f"component type {spec.type!r} listed twice")
            by_type[spec.type] = spec
        return cls(by_type, frozenset(engines))

    def __contains__(self, component_type: object) -> bool:
        return component_type in self.specs

    def __len__(self) -> int:
        return len(self.specs)

    def get(self, component_type: str, engine: str | None = None) -> ComponentSpec | None:
        """The spec of ``component_type``, if it exists (on ``engine``, when given)."""
        spec = self.specs.get(component_type)
        if spec is None or (engine is not None and engine not in spec.engines):
            return None
        return spec

    def types(self, engine: str | None = None) -> tuple[str, ...]:
        return tuple(
            sorted(t for t, s in self.specs.items() if engine is None or engine in s.engines)
        )

    def suggest(self, component_type: str, engine: str | None = None) -> str | None:
        """The closest known type on ``engine``, for "did you mean" messages."""
        close = difflib.get_close_matches(component_type, self.types(engine), n=1, cutoff=0.6)
        return close[0] if close else None

    def with_specs(self, specs: Iterable[ComponentSpec], origin: str = "") -> Catalog:
        """A catalog with ``specs`` added.  A type already present is kept as it is (with a
        warning unless the new spec is identical), so a plugin cannot replace a builtin."""
        merged = dict(self.specs)
        problems = list(self.problems)
        for spec in specs:
            existing = merged.get(spec.type)
            if existing is None:
                merged[spec.type] = spec
            elif existing != spec:
                problems.append(
                    _warning(origin, f"component type {spec.type!r} is already defined; ignored")
                )
            unknown = set(spec.engines) - self.engines
            if unknown:
                problems.append(
                    _warning(origin, f"{spec.type}: unknown engine(s) {', '.join(sorted(unknown))}")
                )
        return Catalog(merged, self.engines, tuple(problems))

    def with_entry_points(
        self, entry_points: Iterable[importlib.metadata.EntryPoint] | None = None
    ) -> Catalog:
        """A catalog with the specs of the ``ion.components`` entry points (or of those given,
        for tests).  A plugin that fails to load is a warning in ``problems``, never an error."""
        if entry_points is None:
            entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        catalog = self
        for entry_point in entry_points:
            origin = f"entry point {entry_point.name} ({entry_point.value})"
            try:
                specs = _specs_from(entry_point.load())
            except Exception as exc:  # noqa: BLE001  (plugin code can raise anything)
                logger.warning("cannot load component %s: %s", origin, exc)
                catalog = Catalog(
                    catalog.specs,
                    catalog.engines,
                    (*catalog.problems, _warning(origin, f"cannot load: {exc}")),
                )
                continue
            catalog = catalog.with_specs(specs, origin)
        return catalog


def _specs_from(obj: object) -> list[ComponentSpec]:
    if isinstance(obj, ComponentSpec):
        return [obj]
    if callable(obj):
        obj = obj()
        if isinstance(obj, ComponentSpec):
            return [obj]
    if isinstance(obj, list | tuple) and all(isinstance(s, ComponentSpec) for s in obj):
        return list(obj)
    raise TypeError(f"expected a ComponentSpec, got {type(obj).__name__}")


def _warning(origin: str, message: str) -> Problem:
    return Problem("warning", origin, message)


# -- the builtin components ------------------------------------------------------------------

D, M, H, S, EV = PortType.DATA, PortType.MODEL, PortType.HEALTH, PortType.STATS, PortType.EVENTS
_ALL = ("python", "spark", "tensorflow")


def _arg(
    arg_type: ArgType,
    description: str,
    default: ArgValue = None,
    *,
    required: bool = False,
    choices: tuple[ArgValue, ...] = (),
) -> ArgSpec:
    return ArgSpec(arg_type, required, default, description, choices)


_BUILTIN: tuple[ComponentSpec, ...] = (
    # -- general-purpose python components (node/runner/builtin.py) ---------------------------
    ComponentSpec(
        "counter_source",
        ("python",),
        outputs={"out": D},
        args={
            "count": _arg("int", "how many numbers (required in batch mode; default: endless)"),
            "start": _arg("int", "first number", 0),
            "step": _arg("int", "difference between numbers", 1),
            "rate": _arg("float", "numbers per second; 0 is as fast as possible", 0.0),
        },
        description="Emits start, start+step, ... (tests, demos, load).",
    ),
    ComponentSpec(
        "scale",
        ("python",),
        inputs={"in": D},
        outputs={"out": D},
        args={
            "factor": _arg("float", "multiplier", 1.0),
            "offset": _arg("float", "added after multiplying", 0.0),
        },
        description="Maps each number x to x * factor + offset.",
    ),
    ComponentSpec(
        "sleep",
        ("python",),
        inputs={"in": D},
        outputs={"out": D},
        args={"seconds": _arg("float", "how long to wait", required=True)},
        description="Waits, then passes its input on (tests of slow stages and stopping).",
        optional_inputs=frozenset({"in"}),
    ),
    ComponentSpec(
        "fail",
        ("python",),
        inputs={"in": D},
        outputs={"out": D},
        args={
            "code": _arg("int", "exit status (1-255)", 1),
            "message": _arg("str", "the error printed", "failing on purpose"),
            "delay_s": _arg("float", "seconds before failing", 0.0),
            "after_items": _arg("int", "fail after passing on this many items", 0),
        },
        description="Fails on purpose (crash-loop and error-report tests).",
        optional_inputs=frozenset({"in"}),
    ),
    ComponentSpec(
        "log_sink",
        ("python",),
        inputs={"in": D},
        args={
            "every": _arg("int", "print every n-th item", 1),
            "prefix": _arg("str", "text before each printed item", ""),
        },
        description="Prints items to the pipeline's log.",
    ),
    ComponentSpec(
        "jsonl_sink",
        ("python",),
        inputs={"in": D},
        args={"path": _arg("str", "file inside the work dir (default: <component>.jsonl)")},
        description="Appends items as JSON lines to a file in the pipeline's work dir.",
    ),
    # -- sources -----------------------------------------------------------------------------
    ComponentSpec(
        "csv_source",
        _ALL,
        outputs={"data": D},
        args={
            "path": _arg(
                "str", "CSV file or directory (relative to the pipeline's work dir)", required=True
            ),
            "header": _arg("bool", "first line holds column names", True),
            "delimiter": _arg("str", "field separator", ","),
            "columns": _arg("list", "columns to keep (default: all)"),
        },
        description="Reads records from CSV files.",
    ),
    ComponentSpec(
        "data_source",
        ("python", "tensorflow"),
        outputs={"data": D},
        args={
            "path": _arg("str", "file to replay", required=True),
            "format": _arg("str", "file format", "csv", choices=("csv", "jsonl")),
            "loop": _arg("bool", "start again at the end of the file", False),
            "rate": _arg("float", "records per second; 0 replays as fast as possible", 0.0),
        },
        description="Replays records from a file as a stream (tests, demos).",
    ),
    ComponentSpec(
        "mqtt_source",
        ("python",),
        outputs={"data": D},
        args={
            "topic": _arg("str", "topic filter on the node's local broker", required=True),
            "format": _arg("str", "payload format", "json", choices=("json", "csv")),
            "batch": _arg("int", "records per batch handed downstream", 100),
            "max_wait": _arg("str", "longest wait for a full batch (a duration)", "1s"),
            "columns": _arg("list", "features to read, in this order (default: the model's)"),
            "broker": _arg("str", "broker URL (default: the node's broker, ION_BROKER_URL)"),
        },
        description="Subscribes to sensor readings on the node's local broker.",
    ),
    # -- health ------------------------------------------------------------------------------
    ComponentSpec(
        "feature_histograms",
        _ALL,
        inputs={"data": D},
        outputs={"health": H},
        args={
            "bins": _arg("int", "bins per feature", 10),
            "method": _arg("str", "bin edges", "quantile", choices=("quantile", "uniform")),
            "columns": _arg("list", "features to summarise (default: all numeric)"),
        },
        description="Feature histograms of the training data: the drift baseline of a model.",
    ),
    ComponentSpec(
        "health_reporter",
        ("python", "tensorflow"),
        inputs={"health": H},
        outputs={"health": H},
        args={"interval": _arg("str", "how often to report merged histograms (a duration)", "30s")},
        description="Merges windowed health histograms and reports them on a fixed interval.",
    ),
    # -- models --------------------------------------------------------------------------
    ComponentSpec(
        "kmeans_train",
        ("spark",),
        inputs={"data": D},
        outputs={"model": M},
        args={
            "k": _arg("int", "number of clusters", required=True),
            "max_iter": _arg("int", "iterations at most", 20),
            "seed": _arg("int", "random seed", 1),
            "tol": _arg("float", "convergence tolerance", 1e-4),
            "restarts": _arg(
                "int", "fits from different seeds; the one with the lowest cost is kept", 3
            ),
            "threshold_quantile": _arg(
                "float", "quantile of training distances above which a point is an anomaly", 0.99
            ),
            "features": _arg("list", "feature columns (default: all numeric)"),
        },
        description="Fits KMeans (Spark MLlib); the anomaly threshold is a distance quantile.",
    ),
    ComponentSpec(
        "keras_autoencoder_train",
        ("tensorflow",),
        inputs={"data": D},
        outputs={"model": M},
        args={
            "hidden": _arg("list", "units of the encoder's hidden layers", (32, 16)),
            "latent_dim": _arg("int", "size of the code layer", 8),
            "epochs": _arg("int", "training epochs", 20),
            "batch_size": _arg("int", "batch size", 64),
            "learning_rate": _arg("float", "Adam learning rate", 1e-3),
            "threshold_quantile": _arg(
                "float", "quantile of reconstruction errors marking an anomaly", 0.99
            ),
            "seed": _arg("int", "random seed", 1),
        },
        description="Trains a Keras autoencoder; anomalies reconstruct badly.",
    ),
    ComponentSpec(
        "tflite_export",
        ("tensorflow",),
        inputs={"model": M},
        outputs={"model": M},
        args={
            "quantize": _arg(
                "str", "post-training quantisation", "none", choices=("none", "dynamic", "float16")
            ),
        },
        description="Converts a Keras model to TensorFlow Lite for light edge inference.",
    ),
    ComponentSpec(
        "model_publisher",
        _ALL,
        inputs={"model": M, "health": H},
        outputs={"model": M},
        optional_inputs=frozenset({"health"}),
        args={
            "metrics": _arg("map", "extra metrics to record in the manifest (name: number)"),
        },
        description=(
            "Attaches the baseline histograms from `health` (when bound) and the `metrics` to "
            "the trained model; its `model` output is what an ION model edge publishes (the "
            "agent packs, hashes and chunks it)."
        ),
    ),
    ComponentSpec(
        "model_subscriber",
        ("python", "tensorflow"),
        inputs={"model": M},
        outputs={"model": M},
        args={"warmup": _arg("bool", "score one dummy record before activating a version", False)},
        description=(
            "Receives models from an ION model edge (its `model` input is the edge's target) "
            "and hands the version the edge policy activated to downstream components."
        ),
    ),
    # -- scoring -------------------------------------------------------------------------
    ComponentSpec(
        "kmeans_score",
        ("python",),
        inputs={"data": D, "model": M},
        outputs={"data": D, "stats": S, "health": H, "events": EV},
        args={
            "threshold": _arg("float", "anomaly distance (default: the model's own threshold)"),
            "window": _arg("str", "window for stats and health histograms (a duration)", "1m"),
            "max_events": _arg(
                "int", "anomaly events per window at most (the rest are summed up in one)", 100
            ),
        },
        description=(
            "Scores records by distance to the nearest centroid: scored records on `data`, "
            "counts on `stats`, windowed histograms on `health`, one event per anomaly."
        ),
    ),
    ComponentSpec(
        "tflite_score",
        ("python", "tensorflow"),
        inputs={"data": D, "model": M},
        outputs={"data": D, "stats": S, "health": H, "events": EV},
        args={
            "threshold": _arg("float", "anomaly reconstruction error (default: the model's)"),
            "window": _arg("str", "window for stats and health histograms (a duration)", "1m"),
            "threads": _arg("int", "interpreter threads", 1),
            "max_events": _arg(
                "int", "anomaly events per window at most (the rest are summed up in one)", 100
            ),
        },
        description="Scores records with a TensorFlow Lite autoencoder (ai-edge-litert).",
    ),
    # -- fresh training data (node.components.recording) ---------------------------------
    ComponentSpec(
        "data_sampler",
        ("python",),
        inputs={"data": D},
        outputs={"data": D, "sample": D},
        args={
            "share": _arg("float", "fraction of the rows kept, in (0, 1]", 0.1),
            "seed": _arg("int", "random seed (default: unseeded)"),
            "columns": _arg("list", "features to keep, in this order (default: all)"),
        },
        description=(
            "A tap: passes its input through on `data` and a random share of the rows on "
            "`sample`, as data records (typically along a data edge to a `window_recorder` "
            "that keeps the training set fresh)."
        ),
    ),
    ComponentSpec(
        "window_recorder",
        ("python",),
        inputs={"data": D},
        outputs={"stats": S},
        args={
            "path": _arg("str", "CSV file inside the work dir holding the window", "window.csv"),
            "rows": _arg("int", "newest rows kept", 5000),
            "interval": _arg("str", "rewrite the file at most this often (a duration)", "10s"),
            "max_age": _arg(
                "str", "keep rows read within this of the newest (a duration; default: no limit)"
            ),
            "min_rows": _arg("int", "rows kept whatever their age", 0),
        },
        description=(
            "Keeps the newest `rows` rows it receives in a CSV file (atomically rewritten; a "
            "file already there starts the window): a training set that follows live data."
        ),
    ),
    # -- sinks ---------------------------------------------------------------------------
    ComponentSpec(
        "event_sink",
        _ALL,
        inputs={"events": EV},
        args={
            "path": _arg("str", "append events to this JSON-lines file (default: the log)"),
        },
        description="Writes the events it receives to a file or the log.",
    ),
)


def builtin_catalog() -> Catalog:
    """The components shipped with the runtime."""
    return Catalog.of(_BUILTIN)

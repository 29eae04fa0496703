"""What the python engine and its runner agree on: the spec file and the exit statuses.

The engine writes one JSON document (``FORMAT``) into the job's work directory and runs
``python -m node.runner --spec FILE``.  The document holds the pipeline losslessly (component
arguments keep int vs float, order, null) plus the job's identity.  It is data only: component
types name installed code (see ``node.runner.registry``), never code to load.

Exit statuses: 0 finished (batch: every component ran; streaming: drained after SIGTERM or its
sources ended), 1 a component failed, 2 the spec was rejected before anything ran (reserved for
that: a component asking for status 2 gets 1), 143 a batch run was interrupted by SIGTERM.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ion.errors import InputError
from ion.model.definition import (
    ArgValue,
    Component,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PortBinding,
    RestartPolicy,
)

FORMAT = "ion-runner/1"

EXIT_OK = 0
EXIT_COMPONENT_FAILED = 1
EXIT_SPEC_ERROR = 2
EXIT_TERMINATED = 128 + 15

ERROR_PREFIX = "ion-runner: error: "
"""Each reason for EXIT_SPEC_ERROR is one stderr line starting with this."""

_MAX_DEPTH = 32


class SpecError(InputError):
    """A spec file the runner cannot use."""


@dataclass(frozen=True, slots=True)
class EdgePort:
    """A component port of this pipeline that is one end of an ION edge.

    ``direction`` is ``out`` (the port's values leave along the edge: the runner hands them to
    the SDK) or ``in`` (the edge's messages arrive at the port: the runner reads them from the
    SDK).  ``kind`` is the edge kind (``model``, ``data``, ``health``, ...).
    """

    edge: str
    kind: str
    direction: str
    component: str
    port: str

    def __post_init__(self) -> None:
        if self.direction not in ("in", "out"):
            raise ValueError(f"edge port direction must be 'in' or 'out', not {self.direction!r}")


@dataclass(frozen=True, slots=True)
class RunnerSpec:
    ion: str
    version: int
    node_id: str
    pipeline: Pipeline
    edges: tuple[EdgePort, ...] = ()
    """The pipeline's ports that are ends of ION edges (resolved by the agent)."""

    @property
    def job_id(self) -> str:
        return f"{self.ion}/{self.pipeline.name}"


def dumps(spec: RunnerSpec) -> str:
    doc = {
        "format": FORMAT,
        "ion": spec.ion,
        "version": spec.version,
        "node_id": spec.node_id,
        "pipeline": _pipeline_to_json(spec.pipeline),
        "edges": [
            {
                "edge": e.edge,
                "kind": e.kind,
                "direction": e.direction,
                "component": e.component,
                "port": e.port,
            }
            for e in spec.edges
        ],
    }
    return json.dumps(doc, indent=2, allow_nan=True) + "\n"


def loads(text: str) -> RunnerSpec:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise SpecError(f"spec is not valid JSON: {e}") from e
    r = _Reader(doc, "spec")
    if (fmt := r.get_str("format")) != FORMAT:
        raise SpecError(f"spec format {fmt!r} is not {FORMAT!r}")
    spec = RunnerSpec(
        ion=r.get_str("ion"),
        version=r.get_int("version"),
        node_id=r.get_str("node_id"),
        pipeline=_pipeline_from_json(r.get_obj("pipeline")),
        edges=tuple(
            _edge_from_json(e, f"spec.edges[{i}]") for i, e in enumerate(r.get_list("edges"))
        ),
    )
    r.done()
    return spec


def _edge_from_json(doc: Any, where: str) -> EdgePort:
    r = _Reader(doc, where)
    try:
        port = EdgePort(
            edge=r.get_str("edge"),
            kind=r.get_str("kind"),
            direction=r.get_str("direction"),
            component=r.get_str("component"),
            port=r.get_str("port"),
        )
    except ValueError as e:
        raise SpecError(f"{where}: {e}") from e
    r.done()
    return port


def write(spec: RunnerSpec, path: Path) -> None:
    """Write atomically, so a runner never reads half a spec."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(dumps(spec), encoding="utf-8")
    tmp.replace(path)


def read(path: Path) -> RunnerSpec:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SpecError(f"cannot read spec {path}: {e.strerror or e}") from e
    return loads(text)


def _pipeline_to_json(p: Pipeline) -> dict[str, Any]:
    return {
        "name": p.name,
        "engine": p.engine,
        "role": p.role.value,
        "mode": p.mode.value,
        "placement": {"nodes": list(p.placement.nodes), "labels": dict(p.placement.labels)},
        "components": [
            {
                "name": c.name,
                "type": c.type,
                "args": {k: _arg_to_json(v) for k, v in c.args.items()},
                "inputs": [
                    {"port": b.port, "from_component": b.from_component, "from_port": b.from_port}
                    for b in c.inputs
                ],
            }
            for c in p.components
        ],
        "schedule": p.schedule,
        "engine_config": dict(p.engine_config),
        "restart": {
            "max_restarts": p.restart.max_restarts,
            "window_ms": p.restart.window_ms,
            "backoff_initial_ms": p.restart.backoff_initial_ms,
            "backoff_max_ms": p.restart.backoff_max_ms,
        },
        "description": p.description,
    }


def _arg_to_json(v: ArgValue, depth: int = 0) -> Any:
    if depth > _MAX_DEPTH:
        raise ValueError("argument value nested too deeply")
    if isinstance(v, tuple | list):
        return [_arg_to_json(x, depth + 1) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _arg_to_json(x, depth + 1) for k, x in v.items()}
    return v


def _pipeline_from_json(doc: Mapping[str, Any]) -> Pipeline:
    r = _Reader(doc, "pipeline")
    placement = _Reader(r.get_obj("placement"), "pipeline.placement")
    restart = _Reader(r.get_obj("restart"), "pipeline.restart")
    components = []
    for i, c in enumerate(r.get_list("components")):
        cr = _Reader(c, f"pipeline.components[{i}]")
        inputs = []
        for j, b in enumerate(cr.get_list("inputs")):
            br = _Reader(b, f"pipeline.components[{i}].inputs[{j}]")
            inputs.append(
                PortBinding(
                    br.get_str("port"), br.get_str("from_component"), br.get_str("from_port")
                )
            )
            br.done()
        args = {k: _arg_from_json(v, f"{cr.where}.args.{k}") for k, v in cr.get_obj("args").items()}
        components.append(Component(cr.get_str("name"), cr.get_str("type"), args, tuple(inputs)))
        cr.done()
    try:
        pipeline = Pipeline(
            name=r.get_str("name"),
            engine=r.get_str("engine"),
            role=PipelineRole(r.get_str("role")),
            mode=PipelineMode(r.get_str("mode")),
            placement=Placement(
                nodes=tuple(placement.get_str_list("nodes")), labels=placement.get_str_map("labels")
            ),
            components=tuple(components),
            schedule=r.get_str("schedule"),
            engine_config=r.get_str_map("engine_config"),
            restart=RestartPolicy(
                max_restarts=restart.get_int("max_restarts"),
                window_ms=restart.get_int("window_ms"),
                backoff_initial_ms=restart.get_int("backoff_initial_ms"),
                backoff_max_ms=restart.get_int("backoff_max_ms"),
            ),
            description=r.get_str("description"),
        )
    except ValueError as e:  # an unknown role or mode
        raise SpecError(f"pipeline: {e}") from e
    for reader in (r, placement, restart):
        reader.done()
    return pipeline


def _arg_from_json(v: Any, where: str, depth: int = 0) -> ArgValue:
    if depth > _MAX_DEPTH:
        raise SpecError(f"{where}: nested too deeply")
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        return v
    if isinstance(v, list):
        return tuple(_arg_from_json(x, where, depth + 1) for x in v)
    if isinstance(v, dict):
        return {k: _arg_from_json(x, f"{where}.{k}", depth + 1) for k, x in v.items()}
    raise SpecError(f"{where}: unsupported value {v!r}")


class _Reader:
    """Typed access to one JSON object; ``done`` rejects keys nobody asked for."""

    def __init__(self, doc: Any, where: str) -> None:
        if not isinstance(doc, dict):
            raise SpecError(f"{where}: expected an object")
        self.doc: dict[str, Any] = doc
        self.where = where
        self._seen: set[str] = set()

    def _get(self, key: str, kinds: type | tuple[type, ...], what: str) -> Any:
        self._seen.add(key)
        if key not in self.doc:
            raise SpecError(f"{self.where}.{key}: missing")
        value = self.doc[key]
        if not isinstance(value, kinds) or (kinds is int and isinstance(value, bool)):
            raise SpecError(f"{self.where}.{key}: expected {what}, got {value!r}")
        return value

    def get_str(self, key: str) -> str:
        return self._get(key, str, "a string")  # type: ignore[no-any-return]

    def get_int(self, key: str) -> int:
        return self._get(key, int, "an integer")  # type: ignore[no-any-return]

    def get_obj(self, key: str) -> dict[str, Any]:
        return self._get(key, dict, "an object")  # type: ignore[no-any-return]

    def get_list(self, key: str) -> list[Any]:
        return self._get(key, list, "a list")  # type: ignore[no-any-return]

    def get_str_list(self, key: str) -> list[str]:
        items = self.get_list(key)
        if not all(isinstance(x, str) for x in items):
            raise SpecError(f"{self.where}.{key}: expected a list of strings")
        return items

    def get_str_map(self, key: str) -> dict[str, str]:
        items = self.get_obj(key)
        if not all(isinstance(x, str) for x in items.values()):
            raise SpecError(f"{self.where}.{key}: expected string values")
        return items

    def done(self) -> None:
        extra = sorted(set(self.doc) - self._seen)
        if extra:
            raise SpecError(f"{self.where}: unknown key(s) {', '.join(extra)}")

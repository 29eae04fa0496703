"""The ION YAML schema: composed nodes to an :class:`IonDefinition`, every problem collected.

The reader always builds a definition when the document is a mapping, putting a neutral
placeholder wherever a value was wrong or missing (an empty name, the default of an optional
field), so that the validator can still look at everything else.  Callers that need a trusted
definition use ``ParsedIon.definition``, which is only set when no schema error was found.
List positions never shift: a broken list element still yields a placeholder element, because
locations such as ``edges[#3]`` and ``to[1]`` count positions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import yaml
from yaml.nodes import Node

from ion.authoring import yaml_core
from ion.authoring.locations import child, element_keys, item
from ion.authoring.nodes import NodeReader, Skip, peek_text
from ion.errors import Problem
from ion.model.definition import (
    ArgValue,
    CanaryPolicy,
    Component,
    DriftMetric,
    DriftSettings,
    Edge,
    EdgeKind,
    Endpoint,
    IonDefinition,
    MetricGate,
    ModelPolicy,
    Pipeline,
    PipelineMode,
    PipelineRole,
    Placement,
    PolicyKind,
    PortBinding,
    RestartPolicy,
    TriggerCondition,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

API_VERSION = "ion/v1"
KIND = "ION"

# The keys of every mapping in the format, in the order the documentation and dump use.
TOP_KEYS = ("apiVersion", "kind", "metadata", "pipelines", "edges")
METADATA_KEYS = ("name", "description", "labels", "version")
PIPELINE_KEYS = (
    "name",
    "description",
    "engine",
    "role",
    "mode",
    "schedule",
    "placement",
    "engine_config",
    "restart",
    "components",
)
PLACEMENT_KEYS = ("nodes", "labels")
RESTART_KEYS = ("max_restarts", "window", "backoff", "max_backoff")
COMPONENT_KEYS = ("name", "type", "args", "inputs")
EDGE_KEYS = ("name", "description", "kind", "from", "to", "ttl", "policy", "drift", "trigger")
POLICY_KEYS = ("type", "keep_versions", "gates", "canary")
GATE_KEYS = ("metric", "higher_is_better", "min", "max", "margin_over_active")
CANARY_KEYS = ("share", "nodes", "hold", "max_drift", "max_error_rate")
DRIFT_KEYS = ("metric", "threshold", "window", "min_samples")
TRIGGER_KEYS = ("metric", "above", "min_nodes", "window", "cooldown")

ALL_KEYS: dict[str, tuple[str, ...]] = {
    "document": TOP_KEYS,
    "metadata": METADATA_KEYS,
    "pipeline": PIPELINE_KEYS,
    "placement": PLACEMENT_KEYS,
    "restart": RESTART_KEYS,
    "component": COMPONENT_KEYS,
    "edge": EDGE_KEYS,
    "policy": POLICY_KEYS,
    "gate": GATE_KEYS,
    "canary": CANARY_KEYS,
    "drift": DRIFT_KEYS,
    "trigger": TRIGGER_KEYS,
}


def read_ion(text: str, file: str | None) -> tuple[IonDefinition | None, NodeReader]:
    """Read ``text``; the definition (possibly with placeholders) and the reader's findings."""
    reader = NodeReader(file)
    try:
        root = yaml_core.compose(text)
    except yaml.YAMLError as exc:
        _yaml_problem(reader, exc)
        return None, reader
    if root is None:
        reader.problem("", "the document is empty; expected an ION (apiVersion: ion/v1, kind: ION)")
        return None, reader
    return _Schema(reader).document(root), reader


def _yaml_problem(reader: NodeReader, exc: yaml.YAMLError) -> None:
    line: int | None = None
    message = str(exc)
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else int(mark.line) + 1
        message = ", ".join(str(p) for p in (exc.context, exc.problem) if p)
    reader.problems.append(Problem("error", "", f"not valid YAML: {message}", reader.file, line))


class _Schema:
    def __init__(self, reader: NodeReader) -> None:
        self.r = reader

    def _opt(
        self,
        fields: dict[str, Node],
        loc: str,
        key: str,
        read: Callable[[Node, str], T | None],
        default: T,
    ) -> T:
        node = fields.get(key)
        if node is None:
            return default
        value = read(node, child(loc, key))
        return default if value is None else value

    def _named_items(self, node: Node, loc: str, what: str) -> list[tuple[str, Node]]:
        items = self.r.sequence(node, loc, what) or []
        keys = element_keys(peek_text(n, "name") for n in items)
        located = [(item(loc, key), n) for key, n in zip(keys, items, strict=True)]
        for element_loc, element in located:
            self.r.mark(element_loc, element)
        return located

    # -- document ----------------------------------------------------------------------------

    def document(self, root: Node) -> IonDefinition | None:
        r = self.r
        top = r.fields(
            root,
            "",
            "the ION document",
            TOP_KEYS,
            required=("apiVersion", "kind", "metadata", "pipelines"),
        )
        if top is None:
            return None
        if "apiVersion" in top:
            api = r.text(top["apiVersion"], "apiVersion")
            if api is not None and api != API_VERSION:
                r.problem(
                    "apiVersion",
                    f"unsupported apiVersion {api!r}; expected {API_VERSION!r}",
                    top["apiVersion"],
                )
        if "kind" in top:
            kind = r.text(top["kind"], "kind")
            if kind is not None and kind != KIND:
                r.problem("kind", f"unsupported kind {kind!r}; expected {KIND!r}", top["kind"])
        name, description, version = "", "", 0
        labels: dict[str, str] = {}
        meta = None
        if "metadata" in top:
            meta = r.fields(top["metadata"], "metadata", "metadata", METADATA_KEYS, ("name",))
        if meta is not None:
            name = self._opt(meta, "metadata", "name", r.text, "")
            description = self._opt(meta, "metadata", "description", r.text, "")
            labels = self._opt(meta, "metadata", "labels", self._labels, {})
            version = self._opt(meta, "metadata", "version", self._version, 0)
        pipelines = tuple(
            self.pipeline(n, loc)
            for loc, n in (
                self._named_items(top["pipelines"], "pipelines", "pipelines")
                if "pipelines" in top
                else []
            )
        )
        edges = tuple(
            self.edge(n, loc)
            for loc, n in (
                self._named_items(top["edges"], "edges", "edges") if "edges" in top else []
            )
        )
        return IonDefinition(
            name=name,
            pipelines=pipelines,
            edges=edges,
            version=version,
            description=description,
            labels=labels,
        )

    def _labels(self, node: Node, loc: str) -> dict[str, str]:
        return self.r.text_map(node, loc, "labels")

    def _version(self, node: Node, loc: str) -> int | None:
        version = self.r.integer(node, loc)
        if version is not None and version < 0:
            self.r.problem(loc, "version must not be negative", node)
            return None
        return version

    # -- pipelines ---------------------------------------------------------------------------

    def pipeline(self, node: Node, loc: str) -> Pipeline:
        r = self.r
        f = r.fields(
            node,
            loc,
            "a pipeline",
            PIPELINE_KEYS,
            required=("name", "engine", "mode", "placement", "components"),
        )
        if f is None:
            return Pipeline("", "", PipelineRole.OTHER, PipelineMode.STREAMING, Placement(), ())
        schedule = self._opt(f, loc, "schedule", r.text, "")
        mode: PipelineMode | None = None
        if "mode" in f:
            mode = r.choice(f["mode"], child(loc, "mode"), PipelineMode)
        if mode is None:  # placeholder that does not add a schedule problem on top
            mode = PipelineMode.BATCH if schedule else PipelineMode.STREAMING
        components = tuple(
            self.component(n, c_loc)
            for c_loc, n in (
                self._named_items(f["components"], child(loc, "components"), "components")
                if "components" in f
                else []
            )
        )
        return Pipeline(
            name=self._opt(f, loc, "name", r.text, ""),
            engine=self._opt(f, loc, "engine", r.text, ""),
            role=self._opt(f, loc, "role", self._role, PipelineRole.OTHER),
            mode=mode,
            placement=self._opt(f, loc, "placement", self.placement, Placement()),
            components=components,
            schedule=schedule,
            engine_config=self._opt(f, loc, "engine_config", self._engine_config, {}),
            restart=self._opt(f, loc, "restart", self.restart, RestartPolicy()),
            description=self._opt(f, loc, "description", r.text, ""),
        )

    def _role(self, node: Node, loc: str) -> PipelineRole | None:
        return self.r.choice(node, loc, PipelineRole)

    def _engine_config(self, node: Node, loc: str) -> dict[str, str]:
        return self.r.text_map(node, loc, "engine_config")

    def placement(self, node: Node, loc: str) -> Placement:
        f = self.r.fields(node, loc, "a placement", PLACEMENT_KEYS)
        if f is None:
            return Placement()
        nodes = (
            self.r.text_list(f["nodes"], child(loc, "nodes"), "node ids") if "nodes" in f else []
        )
        return Placement(nodes=tuple(nodes), labels=self._opt(f, loc, "labels", self._labels, {}))

    def restart(self, node: Node, loc: str) -> RestartPolicy:
        r = self.r
        default = RestartPolicy()
        f = r.fields(node, loc, "a restart policy", RESTART_KEYS)
        if f is None:
            return default
        return RestartPolicy(
            max_restarts=self._opt(f, loc, "max_restarts", r.integer, default.max_restarts),
            window_ms=self._opt(f, loc, "window", r.duration, default.window_ms),
            backoff_initial_ms=self._opt(f, loc, "backoff", r.duration, default.backoff_initial_ms),
            backoff_max_ms=self._opt(f, loc, "max_backoff", r.duration, default.backoff_max_ms),
        )

    def component(self, node: Node, loc: str) -> Component:
        r = self.r
        f = r.fields(node, loc, "a component", COMPONENT_KEYS, required=("name", "type"))
        if f is None:
            return Component("", "")
        return Component(
            name=self._opt(f, loc, "name", r.text, ""),
            type=self._opt(f, loc, "type", r.text, ""),
            args=self._opt(f, loc, "args", self._args, {}),
            inputs=self._opt(f, loc, "inputs", self._inputs, ()),
        )

    def _args(self, node: Node, loc: str) -> dict[str, ArgValue]:
        args: dict[str, ArgValue] = {}
        for key, value_node in self.r.pairs(node, loc, "component arguments") or ():
            try:
                args[key] = self.r.value(value_node, child(loc, key))
            except Skip:
                continue
        return args

    def _inputs(self, node: Node, loc: str) -> tuple[PortBinding, ...]:
        bindings: list[PortBinding] = []
        for port, value_node in self.r.pairs(node, loc, "input bindings") or ():
            port_loc = child(loc, port)
            text = self.r.text(value_node, port_loc)
            if text is None:
                continue
            parts = text.split(".")
            if len(parts) != 2 or not all(parts):
                self.r.problem(
                    port_loc,
                    f"bad input binding {text!r}: expected <component>.<port>, e.g. read.data",
                    value_node,
                )
                continue
            bindings.append(PortBinding(port=port, from_component=parts[0], from_port=parts[1]))
        return tuple(bindings)

    # -- edges -------------------------------------------------------------------------------

    def edge(self, node: Node, loc: str) -> Edge:
        r = self.r
        f = r.fields(node, loc, "an edge", EDGE_KEYS, required=("name", "kind", "from", "to"))
        if f is None:
            return Edge("", EdgeKind.DATA, Endpoint(""), ())
        policy = self.policy(f["policy"], child(loc, "policy")) if "policy" in f else None
        drift = self.drift(f["drift"], child(loc, "drift")) if "drift" in f else None
        trigger = self.trigger(f["trigger"], child(loc, "trigger")) if "trigger" in f else None
        kind: EdgeKind | None = None
        if "kind" in f:
            kind = r.choice(f["kind"], child(loc, "kind"), EdgeKind)
        if kind is None:  # placeholder; the validator's findings on this edge are suppressed
            if trigger is not None:
                kind = EdgeKind.TRIGGER
            elif policy is not None or drift is not None:
                kind = EdgeKind.MODEL
            else:
                kind = EdgeKind.DATA
        source = Endpoint("")
        if "from" in f:
            source = self.endpoint(f["from"], child(loc, "from"))
        targets: list[Endpoint] = []
        if "to" in f:
            to_loc = child(loc, "to")
            for index, text in enumerate(r.text_list(f["to"], to_loc, "edge targets")):
                targets.append(self._endpoint_text(text, item(to_loc, index)))
        return Edge(
            name=self._opt(f, loc, "name", r.text, ""),
            kind=kind,
            source=source,
            targets=tuple(targets),
            policy=policy,
            trigger=trigger,
            drift=drift,
            ttl_ms=self._opt(f, loc, "ttl", r.duration, 0),
            description=self._opt(f, loc, "description", r.text, ""),
        )

    def endpoint(self, node: Node, loc: str) -> Endpoint:
        return self._endpoint_text(self.r.text(node, loc) or "", loc)

    def _endpoint_text(self, text: str, loc: str) -> Endpoint:
        if not text:  # already reported, or an empty string the validator names
            return Endpoint("")
        parts = text.split(".")
        if len(parts) > 3 or not all(parts):
            self.r.problem(
                loc,
                f"bad endpoint {text!r}: expected <pipeline>, <pipeline>.<component> or "
                "<pipeline>.<component>.<port>",
            )
            return Endpoint("")
        return Endpoint(*parts)

    def policy(self, node: Node, loc: str) -> ModelPolicy:
        r = self.r
        default = ModelPolicy()
        f = r.fields(node, loc, "a model policy", POLICY_KEYS)
        if f is None:
            return default
        gates: list[MetricGate] = []
        if "gates" in f:
            gates_loc = child(loc, "gates")
            for index, gate_node in enumerate(r.sequence(f["gates"], gates_loc, "gates") or ()):
                r.mark(item(gates_loc, index), gate_node)
                gates.append(self.gate(gate_node, item(gates_loc, index)))
        canary = self.canary(f["canary"], child(loc, "canary")) if "canary" in f else None
        kind: PolicyKind | None = None
        if "type" in f:
            kind = r.choice(f["type"], child(loc, "type"), PolicyKind)
        if kind is None:  # placeholder matching what else was written
            kind = PolicyKind.CANARY if canary else PolicyKind.GATED if gates else default.kind
        return ModelPolicy(
            kind=kind,
            keep_versions=self._opt(f, loc, "keep_versions", r.integer, default.keep_versions),
            gates=tuple(gates),
            canary=canary,
        )

    def gate(self, node: Node, loc: str) -> MetricGate:
        r = self.r
        f = r.fields(node, loc, "a metric gate", GATE_KEYS, required=("metric",))
        if f is None:
            return MetricGate("")
        bounds = {
            key: r.number(f[key], child(loc, key)) if key in f else None
            for key in ("min", "max", "margin_over_active")
        }
        return MetricGate(
            metric=self._opt(f, loc, "metric", r.text, ""),
            higher_is_better=self._opt(f, loc, "higher_is_better", r.boolean, True),
            min=bounds["min"],
            max=bounds["max"],
            margin_over_active=bounds["margin_over_active"],
        )

    def canary(self, node: Node, loc: str) -> CanaryPolicy:
        r = self.r
        default = CanaryPolicy()
        f = r.fields(node, loc, "a canary policy", CANARY_KEYS)
        if f is None:
            return default
        nodes = r.text_list(f["nodes"], child(loc, "nodes"), "node ids") if "nodes" in f else []
        return CanaryPolicy(
            share=self._opt(f, loc, "share", r.number, default.share),
            nodes=tuple(nodes),
            hold_ms=self._opt(f, loc, "hold", r.duration, default.hold_ms),
            max_drift=self._opt(f, loc, "max_drift", r.number, default.max_drift),
            max_error_rate=self._opt(f, loc, "max_error_rate", r.number, default.max_error_rate),
        )

    def drift(self, node: Node, loc: str) -> DriftSettings:
        r = self.r
        default = DriftSettings()
        f = r.fields(node, loc, "drift settings", DRIFT_KEYS)
        if f is None:
            return default
        return DriftSettings(
            metric=self._opt(f, loc, "metric", self._drift_metric, default.metric),
            threshold=self._opt(f, loc, "threshold", r.number, default.threshold),
            window_ms=self._opt(f, loc, "window", r.duration, default.window_ms),
            min_samples=self._opt(f, loc, "min_samples", r.integer, default.min_samples),
        )

    def _drift_metric(self, node: Node, loc: str) -> DriftMetric | None:
        return self.r.choice(node, loc, DriftMetric)

    def trigger(self, node: Node, loc: str) -> TriggerCondition:
        r = self.r
        f = r.fields(node, loc, "a trigger condition", TRIGGER_KEYS, ("metric", "above"))
        if f is None:
            return TriggerCondition("", 0.0)
        default = TriggerCondition("", 0.0)
        return TriggerCondition(
            metric=self._opt(f, loc, "metric", r.text, ""),
            above=self._opt(f, loc, "above", r.number, 0.0),
            min_nodes=self._opt(f, loc, "min_nodes", r.integer, default.min_nodes),
            window_ms=self._opt(f, loc, "window", r.duration, default.window_ms),
            cooldown_ms=self._opt(f, loc, "cooldown", r.duration, default.cooldown_ms),
        )

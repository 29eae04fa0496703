"""Semantic validation of IONs: one passing and one failing case per rule, the broken example,
the inventory, and how schema and semantic problems merge."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ion.authoring import load_ion_file
from ion.catalog import ComponentSpec, builtin_catalog
from ion.errors import InvalidIonError, Problem
from ion.model.definition import Endpoint, PortType
from ion.validate import (
    InvalidInventoryError,
    Inventory,
    InventoryNode,
    ValidationReport,
    load_inventory,
    load_inventory_file,
    validate_file,
    validate_ion,
    validate_text,
)

ROOT = Path(__file__).resolve().parent.parent

INVENTORY = load_inventory(
    """
nodes:
  - {id: cloud-1, layer: cloud, labels: {tier: cloud}}
  - {id: gw-1, layer: gateway, parent: cloud-1, labels: {tier: gateway}}
  - {id: edge-1, layer: edge, parent: gw-1, labels: {tier: edge}}
  - {id: edge-2, layer: edge, parent: gw-1, labels: {tier: edge}}
"""
)


def base() -> dict[str, Any]:
    """A small valid ION: training -> inference by a model edge, events to a sink, retraining
    triggered on drift."""
    return {
        "apiVersion": "ion/v1",
        "kind": "ION",
        "metadata": {"name": "demo"},
        "pipelines": [
            {
                "name": "train",
                "engine": "spark",
                "role": "training",
                "mode": "batch",
                "schedule": "every 1h",
                "placement": {"nodes": ["cloud-1"]},
                "components": [
                    {"name": "read", "type": "csv_source", "args": {"path": "x.csv"}},
                    {"name": "hist", "type": "feature_histograms", "inputs": {"data": "read.data"}},
                    {
                        "name": "fit",
                        "type": "kmeans_train",
                        "inputs": {"data": "read.data"},
                        "args": {"k": 3},
                    },
                    {
                        "name": "publish",
                        "type": "model_publisher",
                        "inputs": {"model": "fit.model", "health": "hist.health"},
                    },
                ],
            },
            {
                "name": "infer",
                "engine": "python",
                "role": "inference",
                "mode": "streaming",
                "placement": {"labels": {"tier": "edge"}},
                "components": [
                    {"name": "src", "type": "mqtt_source", "args": {"topic": "s/#"}},
                    {"name": "sub", "type": "model_subscriber"},
                    {
                        "name": "score",
                        "type": "kmeans_score",
                        "inputs": {"data": "src.data", "model": "sub.model"},
                    },
                ],
            },
            {
                "name": "sink",
                "engine": "python",
                "mode": "streaming",
                "placement": {"nodes": ["cloud-1"]},
                "components": [{"name": "events", "type": "event_sink"}],
            },
        ],
        "edges": [
            {"name": "model", "kind": "model", "from": "train", "to": ["infer"]},
            {"name": "anomalies", "kind": "events", "from": "infer", "to": ["sink"]},
            {
                "name": "retrain",
                "kind": "trigger",
                "from": "infer",
                "to": ["train"],
                "trigger": {"metric": "drift", "above": 0.3},
            },
        ],
    }


Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def _walk(doc: Any, path: str) -> tuple[Any, Any]:
    """The container of the last segment of ``path`` (``/``-separated; list elements by name
    or index) and that segment."""
    *parents, last = path.split("/")
    node = doc
    for segment in parents:
        node = _step(node, segment)
    if isinstance(node, list):
        return node, _index(node, last)
    return node, last


def _index(items: list[Any], segment: str) -> int:
    if segment.isdigit():
        return int(segment)
    return next(i for i, x in enumerate(items) if isinstance(x, dict) and x.get("name") == segment)


def _step(node: Any, segment: str) -> Any:
    if isinstance(node, list):
        return node[_index(node, segment)]
    return node.setdefault(segment, {})


def put(path: str, value: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        container, key = _walk(doc, path)
        container[key] = copy.deepcopy(value)

    return mutate


def drop(path: str) -> Mutation:
    def mutate(doc: Doc) -> None:
        container, key = _walk(doc, path)
        del container[key]

    return mutate


def add(path: str, value: Any) -> Mutation:
    def mutate(doc: Doc) -> None:
        container, key = _walk(doc, path)
        container[key].append(copy.deepcopy(value))

    return mutate


def both(*mutations: Mutation) -> Mutation:
    def mutate(doc: Doc) -> None:
        for m in mutations:
            m(doc)

    return mutate


def check(
    *mutations: Mutation, inventory: Inventory | None = None, **kwargs: Any
) -> ValidationReport:
    doc = base()
    for mutation in mutations:
        mutation(doc)
    return validate_text(
        yaml.safe_dump(doc, sort_keys=False), "ion.yaml", inventory=inventory, **kwargs
    )


def found(report: ValidationReport, severity: str = "error") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in report.problems:
        if p.severity == severity:
            out.setdefault(p.location, []).append(p.message)
    return out


def assert_clean(report: ValidationReport) -> None:
    assert [p for p in report.problems if p.severity != "info"] == []


def test_base_is_valid() -> None:
    report = check()
    assert_clean(report)
    assert report.ok
    report.raise_for_errors()


def test_base_is_valid_with_inventory() -> None:
    assert_clean(check(inventory=INVENTORY))


def test_reference_example_is_valid() -> None:
    parsed = load_ion_file(ROOT / "examples" / "kmeans" / "ion.yaml")
    assert parsed.definition is not None
    report = validate_ion(
        parsed.definition, lines=parsed.lines, file=parsed.file, inventory=INVENTORY
    )
    assert_clean(report)
    assert report.cycles == (("training", "inference", "training"),)
    assert validate_file(ROOT / "examples" / "kmeans" / "ion.yaml").problems == report.problems


# Each case: mutations of the base ION, then the severity, location and a fragment of the
# message expected.  Every rule has at least one case here and a passing variant below.
# fmt: off
CASES: list[tuple[str, list[Mutation], str, str, str]] = [
    # names
    ("ion name", [put("metadata/name", "Demo App")], "error", "metadata.name", "not allowed"),
    ("pipeline name", [put("pipelines/sink/name", "Sink")], "error", "pipelines[Sink].name",
     "not allowed"),
    ("component name", [put("pipelines/sink/components/events/name", "ev.1")], "error",
     "pipelines[sink].components[ev.1].name", "not allowed"),
    ("edge name", [put("edges/anomalies/name", "-x")], "error", "edges[-x].name", "not allowed"),
    ("long name", [put("pipelines/sink/name", "s" * 65)], "error", f"pipelines[{'s' * 65}].name",
     "not allowed"),
    ("duplicate pipeline", [add("pipelines", {"name": "sink", "engine": "python",
                                              "mode": "streaming", "placement": {"nodes": ["n"]},
                                              "components": [{"name": "e",
                                                              "type": "event_sink"}]})],
     "error", "pipelines[#3].name", "duplicate pipeline name 'sink'"),
    ("duplicate component", [add("pipelines/sink/components", {"name": "events",
                                                               "type": "event_sink"})],
     "error", "pipelines[sink].components[#1].name", "duplicate component name 'events'"),
    ("duplicate edge", [add("edges", {"name": "anomalies", "kind": "stats", "from": "infer",
                                      "to": "sink"})],
     "error", "edges[#3].name", "duplicate edge name 'anomalies'"),
    # cycles inside a pipeline
    ("self loop", [put("pipelines/infer/components/score/inputs/data", "score.data")], "error",
     "pipelines[infer].components[score]", "cycle: score -> score"),
    ("two-cycle", [add("pipelines/infer/components",
                       {"name": "again", "type": "kmeans_score",
                        "inputs": {"data": "score.data", "model": "sub.model"}}),
                   put("pipelines/infer/components/score/inputs/data", "again.data")],
     "error", "pipelines[infer].components[score]", "cycle: score -> again -> score"),
    # engines and component types
    ("unknown engine", [put("pipelines/train/engine", "pyspark")], "error",
     "pipelines[train].engine", "did you mean 'spark'"),
    ("unknown type", [put("pipelines/train/components/fit/type", "kmeans_trian")], "error",
     "pipelines[train].components[fit].type", "did you mean 'kmeans_train'"),
    ("type on another engine", [put("pipelines/infer/components/score/type", "kmeans_train")],
     "error", "pipelines[infer].components[score].type", "does not run on engine 'python'"),
    # input bindings
    ("unknown source component", [put("pipelines/train/components/fit/inputs/data",
                                      "reed.data")],
     "error", "pipelines[train].components[fit].inputs.data", "did you mean 'read'"),
    ("unknown source port", [put("pipelines/train/components/fit/inputs/data", "read.dta")],
     "error", "pipelines[train].components[fit].inputs.data", "no output port 'dta'"),
    ("port type mismatch", [put("pipelines/train/components/fit/inputs/data", "hist.health")],
     "error", "pipelines[train].components[fit].inputs.data", "takes data but hist.health"),
    ("unknown input port", [put("pipelines/train/components/fit/inputs", {"dat": "read.data"})],
     "error", "pipelines[train].components[fit].inputs.dat", "no input port 'dat'"),
    ("required input unbound", [drop("pipelines/train/components/fit/inputs")], "error",
     "pipelines[train].components[fit].inputs.data", "required input 'data'"),
    ("edge-fed input unbound", [drop("edges/model")], "error",
     "pipelines[infer].components[sub].inputs.model", "target of an ION model edge"),
    # arguments
    ("unknown arg", [put("pipelines/train/components/fit/args/kk", 1)], "error",
     "pipelines[train].components[fit].args.kk", "did you mean 'k'"),
    ("missing arg", [drop("pipelines/train/components/fit/args/k")], "error",
     "pipelines[train].components[fit].args.k", "missing required argument 'k'"),
    ("arg type", [put("pipelines/train/components/fit/args/k", "3")], "error",
     "pipelines[train].components[fit].args.k", "expects int, got str"),
    ("arg bool for int", [put("pipelines/train/components/fit/args/k", True)], "error",
     "pipelines[train].components[fit].args.k", "expects int, got bool"),
    ("arg choices", [put("pipelines/train/components/hist/args", {"method": "median"})], "error",
     "pipelines[train].components[hist].args.method", "must be one of"),
    ("arg null", [put("pipelines/train/components/fit/args/k", None)], "error",
     "pipelines[train].components[fit].args.k", "must not be null"),
    ("arg too big", [put("pipelines/train/components/fit/args/seed", 2**70)], "error",
     "pipelines[train].components[fit].args.seed", "64 bits"),
    # edge kinds against their ends
    ("model from no model", [put("edges/model/from", "sink")], "error", "edges[model].from",
     "no model output"),
    ("model to no model", [put("edges/model/to", ["sink"])], "error", "edges[model].to[0]",
     "no unbound model input"),
    ("model to a data port", [put("edges/model/to", ["infer.score.data"])], "error",
     "edges[model].to[0]", "is a data input; a model edge needs model"),
    ("model to a bound port", [put("edges/model/to", ["infer.score.model"])], "error",
     "edges[model].to[0]", "already bound inside the pipeline"),
    ("model to unknown component", [put("edges/model/to", ["infer.subb"])], "error",
     "edges[model].to[0]", "did you mean 'sub'"),
    ("model to unknown port", [put("edges/model/to", ["infer.sub.mdl"])], "error",
     "edges[model].to[0]", "no input port 'mdl'"),
    ("data to no data input", [add("edges", {"name": "d", "kind": "data", "from": "train",
                                             "to": ["infer"]})],
     "error", "edges[d].to[0]", "no unbound data input"),
    ("events to no events input", [put("edges/anomalies/to", ["infer"])], "error",
     "edges[anomalies].to[0]", "no unbound events input"),
    ("events from a component without", [put("edges/anomalies/from", "infer.src")], "error",
     "edges[anomalies].from", "component 'src' has no events output"),
    ("trigger to streaming", [put("edges/retrain/to", ["infer"])], "error",
     "edges[retrain].to[0]", "must target a batch pipeline"),
    ("trigger to a component", [put("edges/retrain/to", ["train.fit"])], "error",
     "edges[retrain].to[0]", "starts a whole pipeline"),
    ("trigger on drift without health", [put("edges/retrain/from", "sink")], "error",
     "edges[retrain].from", "needs health"),
    ("trigger from a data port", [put("edges/retrain/from", "infer.score.data")], "error",
     "edges[retrain].from", "is a data output"),
    ("two model edges into one input", [add("edges", {"name": "model2", "kind": "model",
                                                      "from": "train",
                                                      "to": "infer.sub.model"})],
     "error", "edges[model2].to[0]", "already receives models from edge 'model'"),
    ("no targets", [put("edges/anomalies/to", [])], "error", "edges[anomalies].to",
     "at least one target"),
    ("duplicate target", [put("edges/anomalies/to", ["sink", "sink"])], "error",
     "edges[anomalies].to[1]", "listed twice"),
    # ambiguous shorthand
    ("ambiguous source", [add("pipelines/train/components",
                              {"name": "publish2", "type": "model_publisher",
                               "inputs": {"model": "fit.model"}})],
     "error", "edges[model].from", "ambiguous endpoint 'train'"),
    ("ambiguous target", [add("pipelines/infer/components",
                              {"name": "sub2", "type": "model_subscriber"})],
     "error", "edges[model].to[0]", "(sub.model, sub2.model)"),
    # unknown pipelines
    ("edge from unknown", [put("edges/model/from", "trian")], "error", "edges[model].from",
     "did you mean 'train'"),
    ("edge to unknown", [put("edges/model/to", ["infer", "nowhere"])], "error",
     "edges[model].to[1]", "'nowhere' is not a pipeline"),
    # placement
    ("empty placement", [put("pipelines/sink/placement", {})], "error",
     "pipelines[sink].placement", "selects no node"),
    ("bad node id", [put("pipelines/sink/placement", {"nodes": ["Cloud 1"]})], "error",
     "pipelines[sink].placement.nodes[0]", "not a valid node id"),
    # settings that do not fit the edge kind
    ("policy on events", [put("edges/anomalies/policy", {"type": "auto"})], "error",
     "edges[anomalies].policy", "applies to model edges"),
    ("drift on events", [put("edges/anomalies/drift", {"threshold": 0.1})], "error",
     "edges[anomalies].drift", "apply to model edges"),
    ("trigger on model", [put("edges/model/trigger", {"metric": "x", "above": 1})], "error",
     "edges[model].trigger", "applies to trigger edges"),
    ("trigger without condition", [drop("edges/retrain/trigger")], "error",
     "edges[retrain].trigger", "needs a condition"),
    # policy parameters
    ("gated without gates", [put("edges/model/policy", {"type": "gated"})], "error",
     "edges[model].policy.gates", "needs gates"),
    ("canary without settings", [put("edges/model/policy", {"type": "canary"})], "error",
     "edges[model].policy.canary", "needs canary"),
    ("canary without share or nodes", [put("edges/model/policy",
                                           {"type": "canary", "canary": {"hold": "1m"}})],
     "error", "edges[model].policy.canary", "share"),
    ("share above 1", [put("edges/model/policy", {"type": "canary", "canary": {"share": 1.5}})],
     "error", "edges[model].policy.canary.share", "(0, 1]"),
    ("negative share", [put("edges/model/policy",
                            {"type": "canary", "canary": {"share": -0.5}})],
     "error", "edges[model].policy.canary.share", "(0, 1]"),
    ("share and nodes", [put("edges/model/policy",
                             {"type": "canary", "canary": {"share": 0.5, "nodes": ["edge-1"]}})],
     "error", "edges[model].policy.canary", "not both"),
    ("keep_versions", [put("edges/model/policy", {"keep_versions": 0})], "error",
     "edges[model].policy.keep_versions", "at least 1"),
    ("gate without bound", [put("edges/model/policy", {"type": "gated",
                                                       "gates": [{"metric": "silhouette"}]})],
     "error", "edges[model].policy.gates[0]", "at least one bound"),
    ("gate min above max", [put("edges/model/policy",
                                {"type": "gated",
                                 "gates": [{"metric": "m", "min": 2, "max": 1}]})],
     "error", "edges[model].policy.gates[0].min", "above max"),
    ("gate negative margin", [put("edges/model/policy",
                                  {"type": "gated",
                                   "gates": [{"metric": "m", "margin_over_active": -0.1}]})],
     "error", "edges[model].policy.gates[0].margin_over_active", "negative"),
    ("negative hold", [put("edges/model/policy",
                           {"type": "canary", "canary": {"share": 0.5, "hold": "-1m"}})],
     "error", "edges[model].policy.canary.hold", "negative"),
    ("error rate above 1", [put("edges/model/policy",
                                {"type": "canary",
                                 "canary": {"share": 0.5, "max_error_rate": 2}})],
     "error", "edges[model].policy.canary.max_error_rate", "[0, 1]"),
    ("negative max_drift", [put("edges/model/policy",
                                {"type": "canary", "canary": {"share": 0.5, "max_drift": -1}})],
     "error", "edges[model].policy.canary.max_drift", "negative"),
    ("negative ttl", [put("edges/anomalies/ttl", "-1s")], "error", "edges[anomalies].ttl",
     "negative"),
    ("drift threshold", [put("edges/model/drift", {"threshold": 0})], "error",
     "edges[model].drift.threshold", "positive"),
    ("drift window", [put("edges/model/drift", {"window": 0})], "error",
     "edges[model].drift.window", "positive"),
    ("drift samples", [put("edges/model/drift", {"min_samples": 0})], "error",
     "edges[model].drift.min_samples", "at least 1"),
    ("trigger min_nodes", [put("edges/retrain/trigger/min_nodes", 0)], "error",
     "edges[retrain].trigger.min_nodes", "at least 1"),
    ("trigger window", [put("edges/retrain/trigger/window", "-5m")], "error",
     "edges[retrain].trigger.window", "positive"),
    ("trigger cooldown", [put("edges/retrain/trigger/cooldown", -1)], "error",
     "edges[retrain].trigger.cooldown", "negative"),
    ("trigger metric", [put("edges/retrain/trigger/metric", "")], "error",
     "edges[retrain].trigger.metric", "needs the metric"),
    # schedules
    ("schedule on streaming", [put("pipelines/infer/schedule", "every 1h")], "error",
     "pipelines[infer].schedule", "streaming pipeline"),
    ("bad schedule", [put("pipelines/train/schedule", "hourly")], "error",
     "pipelines[train].schedule", "bad schedule 'hourly'"),
    ("zero schedule", [put("pipelines/train/schedule", "every 0s")], "error",
     "pipelines[train].schedule", "must be positive"),
    # restart policy
    ("negative restarts", [put("pipelines/train/restart", {"max_restarts": -1})], "error",
     "pipelines[train].restart.max_restarts", "negative"),
    ("negative window", [put("pipelines/train/restart", {"window": "-1m"})], "error",
     "pipelines[train].restart.window", "negative"),
    ("backoff above max", [put("pipelines/train/restart",
                               {"backoff": "2m", "max_backoff": "1m"})],
     "error", "pipelines[train].restart.backoff", "longer than max_backoff"),
    # hints
    ("gates ignored", [put("edges/model/policy", {"type": "auto",
                                                  "gates": [{"metric": "m", "min": 1}]})],
     "warning", "edges[model].policy.gates", "ignored by the auto policy"),
    ("canary ignored", [put("edges/model/policy",
                            {"type": "manual", "canary": {"share": 0.5}})],
     "warning", "edges[model].policy.canary", "ignored by the manual policy"),
    ("bounded drift metric", [put("edges/model/drift", {"metric": "overlap", "threshold": 2})],
     "warning", "edges[model].drift.threshold", "never fires"),
    ("training without model", [drop("edges/model"), drop("pipelines/train/components/publish"),
                                drop("pipelines/train/components/fit")],
     "warning", "pipelines[train].role", "without a model output"),
    ("batch runs once", [drop("pipelines/train/schedule"), drop("edges/retrain")], "info",
     "pipelines[train].mode", "runs once per apply"),
    ("cross-ION cycle", [], "info", "edges[model]",
     "cycle across the ION (allowed): train -> infer -> train (edges: model, retrain)"),
]
# fmt: on


@pytest.mark.parametrize(
    ("mutations", "severity", "location", "fragment"),
    [pytest.param(m, s, loc, f, id=name) for name, m, s, loc, f in CASES],
)
def test_rule(mutations: list[Mutation], severity: str, location: str, fragment: str) -> None:
    report = check(*mutations)
    at = found(report, severity)
    assert location in at, report.problems
    assert any(fragment in message for message in at[location]), at[location]
    problem = next(p for p in report.problems if p.location == location)
    assert problem.line is not None
    assert problem.file == "ion.yaml"
    if severity == "error":
        assert not report.ok


# Variants that the rules above must accept.
# fmt: off
PASSING: list[tuple[str, list[Mutation]]] = [
    ("optional input unbound", [drop("pipelines/train/components/publish/inputs/health")]),
    ("optional arg null", [put("pipelines/train/components/fit/args/seed", None)]),
    ("int for a float arg", [put("pipelines/train/components/fit/args/threshold_quantile", 1)]),
    ("arg from choices", [put("pipelines/train/components/hist/args", {"method": "uniform"})]),
    ("explicit endpoints", [put("edges/model/from", "train.publish.model"),
                            put("edges/model/to", ["infer.sub.model"])]),
    ("component shorthand", [put("edges/model/from", "train.publish"),
                             put("edges/model/to", ["infer.sub"])]),
    ("events from any pipeline", [put("edges/anomalies/from", "train")]),
    ("events from a component", [put("edges/anomalies/from", "infer.score")]),
    ("events from a port", [put("edges/anomalies/from", "infer.score.events")]),
    ("trigger on a stats metric", [put("edges/retrain/from", "sink"),
                                   put("edges/retrain/trigger/metric", "error_rate")]),
    ("trigger from a health port", [put("edges/retrain/from", "infer.score.health")]),
    ("gated with gates", [put("edges/model/policy",
                              {"type": "gated", "gates": [{"metric": "m", "min": 0.3}]})]),
    ("canary by share", [put("edges/model/policy", {"type": "canary", "canary": {"share": 1}})]),
    ("canary by nodes", [put("edges/model/policy",
                             {"type": "canary", "canary": {"nodes": ["edge-1"]}})]),
    ("manual", [put("edges/model/policy", {"type": "manual", "keep_versions": 1})]),
    ("drift settings", [put("edges/model/drift",
                            {"metric": "jensen_shannon", "threshold": 0.5})]),
    ("ttl", [put("edges/anomalies/ttl", "1h")]),
    ("batch on trigger only", [drop("pipelines/train/schedule")]),
    ("restart policy", [put("pipelines/train/restart", {"max_restarts": 0, "backoff": "1m"})]),
    ("labels placement", [put("pipelines/sink/placement", {"labels": {"tier": "cloud"}})]),
]
# fmt: on


@pytest.mark.parametrize("mutations", [pytest.param(m, id=n) for n, m in PASSING])
def test_rule_accepts(mutations: list[Mutation]) -> None:
    assert_clean(check(*mutations))


def test_two_model_inputs_need_an_explicit_target() -> None:
    report = check(
        add("pipelines/infer/components", {"name": "sub2", "type": "model_subscriber"}),
        put("edges/model/to", ["infer.sub"]),
    )
    assert found(report) == {
        "pipelines[infer].components[sub2].inputs.model": [
            "required input 'model' (model) of 'sub2' is not connected: bind it (inputs: {model: "
            "<component>.<port>}) or make it the target of an ION model edge"
        ]
    }


def test_ambiguous_component_shorthand() -> None:
    twin = ComponentSpec("twin", ("python",), outputs={"a": PortType.MODEL, "b": PortType.MODEL})
    catalog = builtin_catalog().with_specs([twin])
    report = check(
        add(
            "pipelines",
            {
                "name": "two",
                "engine": "python",
                "mode": "streaming",
                "placement": {"nodes": ["n1"]},
                "components": [{"name": "t", "type": "twin"}],
            },
        ),
        put("edges/model/from", "two.t"),
        catalog=catalog,
    )
    assert (
        "ambiguous endpoint 'two.t': component 't' has 2 model outputs (t.a, t.b)"
        in (found(report)["edges[model].from"][0])
    )
    assert_clean(
        check(
            put("edges/model/from", "two.t.b"),
            add(
                "pipelines",
                {
                    "name": "two",
                    "engine": "python",
                    "mode": "streaming",
                    "placement": {"nodes": ["n1"]},
                    "components": [{"name": "t", "type": "twin"}],
                },
            ),
            catalog=catalog,
        )
    )


def test_resolved_edges() -> None:
    report = check()
    model, anomalies, retrain = report.resolved_edges
    assert model.source == Endpoint("train", "publish", "model")  # the open model output
    assert model.targets == (Endpoint("infer", "sub", "model"),)  # the unbound model input
    assert anomalies.source == Endpoint("infer")  # the pipeline's implicit event stream
    assert anomalies.targets == (Endpoint("sink", "events", "events"),)
    assert retrain.source == Endpoint("infer")
    assert retrain.targets == (Endpoint("train"),)
    assert model.policy == check().resolved_edges[0].policy


def test_cycles_across_the_ion() -> None:
    assert check().cycles == (("train", "infer", "train"),)
    assert check(drop("edges/retrain")).cycles == ()
    loop = check(
        add(
            "edges",
            {
                "name": "self",
                "kind": "trigger",
                "from": "train",
                "to": "train",
                "trigger": {"metric": "error_rate", "above": 1},
            },
        )
    )
    assert loop.cycles == (("train", "infer", "train"), ("train", "train"))
    assert loop.ok


def test_unknown_parts_do_not_pile_up() -> None:
    # An unknown engine is one error; its components' types, ports and edges stay unchecked.
    report = check(put("pipelines/infer/engine", "pyhton"))
    assert list(found(report)) == ["pipelines[infer].engine"]
    # An unknown component type is one error; bindings to its ports are not guessed at.
    report = check(put("pipelines/infer/components/sub/type", "model_subscrber"))
    assert list(found(report)) == ["pipelines[infer].components[sub].type"]


# -- inventory -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutations", "severity", "location", "fragment"),
    [
        pytest.param(
            [put("pipelines/sink/placement", {"nodes": ["cloud-2"]})],
            "error",
            "pipelines[sink].placement.nodes[0]",
            "did you mean 'cloud-1'",
            id="unknown",
        ),
        pytest.param(
            [put("pipelines/sink/placement", {"labels": {"tier": "moon"}})],
            "error",
            "pipelines[sink].placement",
            "selects no node of the inventory",
            id="none",
        ),
        pytest.param(
            [put("edges/model/policy", {"type": "canary", "canary": {"nodes": ["edge-9"]}})],
            "error",
            "edges[model].policy.canary.nodes[0]",
            "not in the inventory",
            id="canary-unknown",
        ),
        pytest.param(
            [put("edges/model/policy", {"type": "canary", "canary": {"nodes": ["cloud-1"]}})],
            "error",
            "edges[model].policy.canary.nodes[0]",
            "runs no target",
            id="canary-not-consumer",
        ),
        pytest.param(
            [put("edges/retrain/trigger/min_nodes", 3)],
            "warning",
            "edges[retrain].trigger.min_nodes",
            "can never fire",
            id="min-nodes",
        ),
    ],
)
def test_inventory_rules(
    mutations: list[Mutation], severity: str, location: str, fragment: str
) -> None:
    assert_clean(check(*mutations)) if severity == "warning" else None
    report = check(*mutations, inventory=INVENTORY)
    at = found(report, severity)
    assert location in at, report.problems
    assert any(fragment in message for message in at[location])


def test_inventory_is_only_checked_when_given() -> None:
    assert_clean(check(put("pipelines/sink/placement", {"nodes": ["cloud-2"]})))
    assert_clean(
        check(
            put("edges/model/policy", {"type": "canary", "canary": {"nodes": ["edge-1"]}}),
            inventory=INVENTORY,
        )
    )


def test_load_inventory() -> None:
    assert INVENTORY.ids() == ("cloud-1", "gw-1", "edge-1", "edge-2")
    assert INVENTORY.node("edge-1") == InventoryNode("edge-1", {"tier": "edge"}, "edge", "gw-1")
    assert INVENTORY.node("nope") is None


def test_bad_inventory_lists_every_problem() -> None:
    with pytest.raises(InvalidInventoryError) as caught:
        load_inventory(
            """\
nodes:
  - {id: a, colour: red}
  - {id: a}
  - {id: B}
  - {id: c, parent: zz}
  - {id: d, parent: e}
  - {id: e, parent: d}
  - {labels: {x: 1}}
"""
        )
    problems = [(p.line, p.location) for p in caught.value.problems]
    assert problems == [
        (2, "nodes[a].colour"),
        (3, "nodes[#1]"),
        (4, "nodes[B].id"),
        (5, "nodes[c].parent"),
        (6, "nodes[d].parent"),
        (8, "nodes[#6].id"),
    ]
    assert "parents form a loop: d -> e -> d" in str(caught.value)


@pytest.mark.parametrize("text", ["", "nodes: 5", "[1]", "nodes: [\n"])
def test_inventory_that_is_not_one(text: str) -> None:
    with pytest.raises(InvalidInventoryError):
        load_inventory(text)


def test_load_inventory_file(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    path.write_text("nodes: [{id: n1}]\n")
    assert load_inventory_file(path) == Inventory((InventoryNode("n1"),))
    with pytest.raises(InvalidInventoryError, match="cannot read"):
        load_inventory_file(tmp_path / "missing.yaml")


# -- the report ----------------------------------------------------------------------------------


def test_report_sorts_by_line_and_raises() -> None:
    report = check(put("metadata/name", "X"), put("edges/model/policy", {"keep_versions": 0}))
    lines = [p.line for p in report.problems]
    assert lines == sorted(lines)  # type: ignore[type-var]
    assert not report.ok
    assert len(report.errors) == 2
    assert report.warnings == ()
    with pytest.raises(InvalidIonError) as caught:
        report.raise_for_errors()
    assert caught.value.problems == report.problems


def test_validate_ion_without_lines() -> None:
    parsed = load_ion_file(ROOT / "examples" / "kmeans" / "ion.yaml")
    assert parsed.definition is not None
    bad = validate_ion(parsed.definition.__class__(name="X", pipelines=()))
    assert [(p.location, p.line, p.file) for p in bad.problems] == [
        ("metadata.name", None, None),
        ("pipelines", None, None),
    ]


def test_schema_errors_are_not_echoed() -> None:
    report = check(put("pipelines/train/engine", 5))
    assert found(report) == {
        "pipelines[train].engine": ["expected a string, got integer '5'; quote it"]
    }
    report = check(put("edges/model/kind", "modle"))
    assert list(found(report)) == ["edges[model].kind"]
    report = check(drop("edges/model/from"))
    assert list(found(report)) == ["edges[model].from"]
    report = check(put("pipelines/train/mode", "batsh"))
    assert list(found(report)) == ["pipelines[train].mode"]


def test_text_that_is_not_an_ion() -> None:
    report = validate_text("just text", "x.yaml")
    assert [p.message for p in report.problems] == [
        "expected a mapping (the ION document), got string 'just text'"
    ]
    assert validate_file(ROOT / "nope.yaml").errors[0].message.startswith("cannot read")


# -- the broken example --------------------------------------------------------------------------

BROKEN_EXPECTED = [
    (8, "metadata.name"),
    (10, "metadata.owner"),
    (15, "pipelines[training].role"),
    (17, "pipelines[training].schedule"),
    (19, "pipelines[training].restart.max_restarts"),
    (19, "pipelines[training].restart.backoff"),
    (22, "pipelines[training].components[read].type"),
    (24, "pipelines[training].components[fit]"),
    (26, "pipelines[training].components[fit].inputs.data"),
    (27, "pipelines[training].components[fit].args.k"),
    (27, "pipelines[training].components[fit].args.max_iters"),
    (28, "pipelines[training].components[#2].name"),
    (30, "pipelines[training].components[#2].inputs.data"),
    (36, "pipelines[inference].engine"),
    (39, "pipelines[inference].schedule"),
    (40, "pipelines[inference].placement"),
    (45, "pipelines[#2].name"),
    (50, "pipelines[#2].components[a]"),
    (52, "pipelines[#2].components[a].inputs.model"),
    (55, "pipelines[#2].components[b].inputs.model"),
    (66, "pipelines[scoring].components[score]"),
    (69, "pipelines[scoring].components[score].args.threshold"),
    (75, "edges[model].to[0]"),
    (76, "edges[model].policy.keep_versions"),
    (76, "edges[model].policy.canary.share"),
    (76, "edges[model].policy.canary.hold"),
    (77, "edges[model].drift.threshold"),
    (79, "edges[#1].name"),
    (81, "edges[#1].from"),
    (82, "edges[#1].to[0]"),
    (83, "edges[#1].policy.gates"),
    (85, "edges[Health].name"),
    (87, "edges[Health].from"),
    (88, "edges[Health].to[0]"),
    (89, "edges[Health].policy"),
    (94, "edges[retrain].to[0]"),
    (95, "edges[retrain].trigger.window"),
    (95, "edges[retrain].trigger.min_nodes"),
    (97, "edges[nothing].trigger"),
    (103, "edges[weird].kind"),
]


def test_broken_example_reports_every_mistake_with_its_line() -> None:
    path = ROOT / "examples" / "broken" / "ion.yaml"
    report = validate_file(path)
    errors = report.errors
    assert [(p.line, p.location) for p in errors] == BROKEN_EXPECTED
    assert all(p.file == str(path) for p in errors)
    text = path.read_text().splitlines()
    for problem in errors:  # each line of the file says what is wrong there
        assert problem.line is not None
        line = text[problem.line - 1]
        assert "#" in line or problem.location.endswith(("]", ".name", ".trigger")), problem


def test_problem_text() -> None:
    report = validate_file(ROOT / "examples" / "broken" / "ion.yaml")
    first: Problem = report.problems[0]
    assert str(first).startswith(f"{first.file}:8: error: metadata.name: ION name")

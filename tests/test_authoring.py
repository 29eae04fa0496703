"""The ION YAML format: parsing, schema problems with locations and lines, and the round trip."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ion.authoring import (
    ParsedIon,
    dump_ion,
    format_duration,
    load_ion_file,
    parse_duration,
    parse_ion,
    schedule_interval_ms,
)
from ion.authoring.locations import element_keys, is_within, line_of, parent
from ion.authoring.schema import ALL_KEYS
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
    Signature,
    TriggerCondition,
)

ROOT = Path(__file__).resolve().parent.parent
KMEANS = ROOT / "examples" / "kmeans" / "ion.yaml"

MINIMAL = """\
apiVersion: ion/v1
kind: ION
metadata: {name: demo}
pipelines:
  - name: p
    engine: python
    mode: streaming
    placement: {nodes: [n1]}
    components:
      - {name: src, type: mqtt_source, args: {topic: a/b}}
"""


def parse(text: str) -> ParsedIon:
    return parse_ion(textwrap.dedent(text), "ion.yaml")


def doc(pipeline_extra: str = "", component: str = "", top: str = "") -> str:
    """MINIMAL with extra lines in the pipeline, the component mapping or at the top level."""
    lines = [
        "apiVersion: ion/v1",
        "kind: ION",
        "metadata: {name: demo}",
        "pipelines:",
        "  - name: p",
        "    engine: python",
        "    mode: streaming",
        "    placement: {nodes: [n1]}",
        *[f"    {line}" for line in pipeline_extra.splitlines()],
        "    components:",
        "      - name: src",
        "        type: mqtt_source",
        *[f"        {line}" for line in component.splitlines()],
        *top.splitlines(),
    ]
    return "\n".join(lines) + "\n"


def problems_at(parsed: ParsedIon) -> dict[str, str]:
    return {p.location: p.message for p in parsed.problems}


# -- the reference example ---------------------------------------------------------------------


def test_reference_example_parses_without_problems() -> None:
    parsed = load_ion_file(KMEANS)
    assert parsed.problems == ()
    assert parsed.ok
    ion = parsed.definition
    assert ion is not None
    assert ion.name == "kmeans-anomaly"
    assert [p.name for p in ion.pipelines] == ["training", "inference", "recorder", "alerts"]
    training = ion.pipeline("training")
    assert training is not None
    assert training.mode is PipelineMode.BATCH
    assert training.role is PipelineRole.TRAINING
    assert training.schedule == "every 6h"
    assert training.restart == RestartPolicy(3, 600_000, 1_000, 60_000)
    assert training.engine_config == {"master": "local[*]", "spark.driver.memory": "2g"}
    fit = training.component("fit")
    assert fit is not None
    assert fit.args == {"k": 4, "max_iter": 20, "seed": 7, "threshold_quantile": 0.99}
    assert fit.inputs == (PortBinding("data", "read", "data"),)
    model = ion.edge("model")
    assert model is not None
    assert model.kind is EdgeKind.MODEL
    assert model.source == Endpoint("training")
    assert model.targets == (Endpoint("inference"),)
    assert model.policy == ModelPolicy(
        PolicyKind.CANARY,
        3,
        (MetricGate("silhouette", min=0.2),),
        CanaryPolicy(nodes=("edge-1",), hold_ms=60_000, max_drift=0.3),
    )
    assert model.drift == DriftSettings(DriftMetric.PSI, 0.2, 60_000, 200)
    anomalies = ion.edge("anomalies")
    assert anomalies is not None
    assert anomalies.targets == (Endpoint("alerts"),)  # a single target without brackets
    retrain = ion.edge("retrain")
    assert retrain is not None
    assert retrain.trigger == TriggerCondition("drift", 0.25, 2, 300_000, 1_800_000)


def test_reference_example_round_trips() -> None:
    parsed = load_ion_file(KMEANS)
    assert parsed.definition is not None
    text = dump_ion(parsed.definition)
    again = parse_ion(text)
    assert again.problems == ()
    assert again.definition == parsed.definition
    assert dump_ion(again.definition) == text  # dumping is deterministic


def test_dump_is_readable_and_omits_defaults() -> None:
    parsed = load_ion_file(KMEANS)
    assert parsed.definition is not None
    text = dump_ion(parsed.definition)
    assert "role: other" not in text
    assert "keep_versions" not in text  # 3 is the default
    assert "version:" not in text
    assert "placement: {nodes: [cloud-1]}" in text
    assert "\n\n  - name: inference\n" in text  # a blank line between pipelines


def test_dump_writes_version_only_when_set() -> None:
    parsed = parse(MINIMAL)
    assert parsed.definition is not None
    assert "version" not in dump_ion(parsed.definition)
    versioned = IonDefinition(parsed.definition.name, parsed.definition.pipelines, version=7)
    text = dump_ion(versioned)
    assert "version: 7" in text
    assert parse_ion(text).definition == versioned


def test_dump_leaves_out_apply_fields() -> None:
    parsed = parse(MINIMAL)
    assert parsed.definition is not None
    signed = IonDefinition(
        "demo",
        parsed.definition.pipelines,
        content_sha256="ab" * 32,
        signature=Signature("k", "ed25519", b"x"),
        applied_ms=5,
        applied_by="op",
    )
    text = dump_ion(signed)
    assert "ed25519" not in text
    assert "applied" not in text
    assert parse_ion(text).definition == parsed.definition


def test_empty_optional_blocks_round_trip() -> None:
    base = parse(MINIMAL).definition
    assert base is not None
    edge = Edge(
        "e",
        EdgeKind.MODEL,
        Endpoint("p", "src", "data"),
        (Endpoint("p"),),
        policy=ModelPolicy(canary=CanaryPolicy()),
        drift=DriftSettings(),
    )
    ion = IonDefinition("demo", (), (edge,))
    text = dump_ion(ion)
    assert "pipelines: []" in text
    assert parse_ion(text).definition == ion


# -- schema problems -----------------------------------------------------------------------------


def test_every_schema_problem_is_collected_with_its_line() -> None:
    parsed = parse(
        """\
        apiVersion: ion/v1
        kind: ION
        metadata: {name: demo, colour: blue}
        pipelines:
          - name: p
            engine: python
            mode: sometimes
            placement: {nodes: n1}
            restart: {window: soon}
            components:
              - name: src
                typ: mqtt_source
                args: {topic: a/b}
        edges:
          - name: e
            kind: model
            from: p
            to: [p]
            ttl: 10 seconds
            policy: {type: canary, keep_versions: three}
            drift: {metric: psi, threshold: high}
        """
    )
    assert parsed.definition is None
    found = {(p.location, p.line) for p in parsed.problems}
    assert ("metadata.colour", 3) in found
    assert ("pipelines[p].mode", 7) in found
    assert ("pipelines[p].restart.window", 9) in found
    assert ("pipelines[p].components[src].typ", 12) in found
    assert ("pipelines[p].components[src].type", 11) in found  # missing; line of the component
    assert ("edges[e].ttl", 19) in found
    assert ("edges[e].policy.keep_versions", 20) in found
    assert ("edges[e].drift.threshold", 21) in found
    assert len(parsed.problems) == 8
    assert all(p.file == "ion.yaml" and p.severity == "error" for p in parsed.problems)
    assert [p.line for p in parsed.problems] == sorted(p.line or 0 for p in parsed.problems)
    assert parsed.partial is not None  # best effort, for the validator


@pytest.mark.parametrize(
    ("text", "location", "fragment"),
    [
        (doc(top="edgez: []"), "edgez", "did you mean 'edges'"),
        (doc("engin: spark"), "pipelines[p].engin", "did you mean 'engine'"),
        (doc(component="argz: {}"), "pipelines[p].components[src].argz", "did you mean 'args'"),
        (doc("role: 5"), "pipelines[p].role", "expected a string, got integer '5'"),
        (doc("role: teacher"), "pipelines[p].role", "one of: training, inference"),
        (doc("schedule: 6"), "pipelines[p].schedule", "expected a string"),
        (doc("engine_config: {x: 1.5}"), "pipelines[p].engine_config.x", "quote it"),
        (doc("restart: {max_restarts: 1.5}"), "pipelines[p].restart.max_restarts", "an integer"),
        (doc("restart: {window: true}"), "pipelines[p].restart.window", "a duration"),
        (doc("restart: {window: 10}"), None, ""),  # integer milliseconds are fine
        (doc("restart: {window: '10'}"), "pipelines[p].restart.window", "has no unit"),
        (doc("restart: {backoff: 1.5s}"), "pipelines[p].restart.backoff", "bad duration"),
        (
            doc(top="edges: [{name: e, kind: data, from: a, to: [x, {b: c}]}]"),
            "edges[e].to[1]",
            "a string",
        ),
        (
            doc(component="inputs: {data: nodot}"),
            "pipelines[p].components[src].inputs.data",
            "<component>.<port>",
        ),
        (doc(component="inputs: [a.b]"), "pipelines[p].components[src].inputs", "a mapping"),
        (doc(component="args: [1]"), "pipelines[p].components[src].args", "a mapping"),
        (
            doc(component="args: {when: !!timestamp 2020-01-01}"),
            "pipelines[p].components[src].args.when",
            "unsupported YAML tag",
        ),
        (
            doc(top="edges: [{name: e, kind: data, from: a.b.c.d, to: x}]"),
            "edges[e].from",
            "bad endpoint",
        ),
        (
            doc(top="edges: [{name: e, kind: data, from: a, to: [x, 'y..z']}]"),
            "edges[e].to[1]",
            "bad endpoint",
        ),
        (doc(top="edges: [{name: e, kind: data, from: a}]"), "edges[e].to", "missing required"),
        (
            doc(top="edges: [{name: e, kind: trigger, from: a, to: b, trigger: {above: 1}}]"),
            "edges[e].trigger.metric",
            "missing required",
        ),
        (
            doc(top="edges: [{name: e, kind: model, from: a, to: b, policy: {gates: [{min: 1}]}}]"),
            "edges[e].policy.gates[0].metric",
            "missing required",
        ),
        (
            doc(top="edges: [{name: e, kind: model, from: a, to: b, drift: {metric: kl}}]"),
            "edges[e].drift.metric",
            "one of: psi",
        ),
        (
            doc(top="edges: [{name: e, kind: model, from: a, to: b, drift: {threshold: .nan}}]"),
            "edges[e].drift.threshold",
            ".nan",
        ),
        (doc(top="edges: {e: 1}"), "edges", "a list"),
        (doc(top="x-notes: {anything: [goes]}"), None, ""),
    ],
)
def test_schema_rules(text: str, location: str | None, fragment: str) -> None:
    parsed = parse_ion(text)
    if location is None:
        assert parsed.problems == ()
        assert parsed.definition is not None
        return
    found = problems_at(parsed)
    assert location in found, found
    assert fragment in found[location]
    assert parsed.definition is None


def test_metadata_and_header_rules() -> None:
    parsed = parse(
        """\
        apiVersion: ion/v2
        kind: Pod
        metadata: {description: x, version: -1}
        pipelines: []
        """
    )
    found = problems_at(parsed)
    assert "unsupported apiVersion 'ion/v2'" in found["apiVersion"]
    assert "unsupported kind 'Pod'" in found["kind"]
    assert "missing required key 'name'" in found["metadata.name"]
    assert "must not be negative" in found["metadata.version"]


def test_missing_top_level_keys() -> None:
    found = problems_at(parse_ion("apiVersion: ion/v1\n"))
    assert set(found) == {"kind", "metadata", "pipelines"}


@pytest.mark.parametrize(
    ("text", "fragment", "line"),
    [
        ("", "the document is empty", None),
        ("# only a comment\n", "the document is empty", None),
        ("a: [1, 2\n", "not valid YAML", 2),
        ("a: 1\n---\nb: 2\n", "not valid YAML", 2),
        ("- 1\n- 2\n", "expected a mapping", 1),
        ("key: 'unterminated\n", "not valid YAML", 2),
    ],
)
def test_text_that_is_not_an_ion(text: str, fragment: str, line: int | None) -> None:
    parsed = parse_ion(text, "x.yaml")
    assert parsed.definition is None
    assert len(parsed.problems) == 1
    problem = parsed.problems[0]
    assert fragment in problem.message
    assert problem.line == line
    assert problem.file == "x.yaml"


def test_duplicate_keys_are_problems() -> None:
    parsed = parse_ion(doc("engine: spark"))
    found = problems_at(parsed)
    assert "duplicate key 'engine'" in found["pipelines[p].engine"]
    assert parsed.lines["pipelines[p].engine"] == 6  # the first one's line


def test_yaml_1_2_core_scalars() -> None:
    parsed = parse_ion(
        doc(
            component="args: {a: yes, b: on, c: 1e3, d: 0o17, e: 017, f: 1:30, g: 0x1F, h: ~, "
            "i: .inf, j: 'true', k: TRUE, l: 1_000}"
        )
    )
    assert parsed.problems == ()
    assert parsed.definition is not None
    args = parsed.definition.pipelines[0].components[0].args
    assert args["a"] == "yes"
    assert args["b"] == "on"
    assert args["c"] == 1000.0
    assert isinstance(args["c"], float)
    assert args["d"] == 15
    assert args["e"] == 17
    assert args["f"] == "1:30"
    assert args["g"] == 31
    assert args["h"] is None
    assert args["i"] == math.inf
    assert args["j"] == "true"
    assert args["k"] is True
    assert args["l"] == "1_000"


def test_string_maps_take_integers_and_booleans_as_text() -> None:
    parsed = parse_ion(doc("engine_config: {cores: 4, eventLog: true, name: x}"))
    assert parsed.definition is not None
    assert parsed.definition.pipelines[0].engine_config == {
        "cores": "4",
        "eventLog": "true",
        "name": "x",
    }


def test_anchors_aliases_and_merge_keys() -> None:
    parsed = parse(
        """\
        apiVersion: ion/v1
        kind: ION
        metadata: {name: demo}
        x-defaults: &where {nodes: [n1]}
        pipelines:
          - name: p
            engine: python
            mode: streaming
            placement: *where
            components:
              - &src
                name: src
                type: mqtt_source
                args: &args {topic: a/b, batch: 5}
              - <<: *src
                name: src2
                args: {<<: *args, batch: 6}
        """
    )
    assert parsed.problems == ()
    assert parsed.definition is not None
    pipeline = parsed.definition.pipelines[0]
    assert pipeline.placement == Placement(nodes=("n1",))
    assert pipeline.components[1] == Component("src2", "mqtt_source", {"topic": "a/b", "batch": 6})
    assert "pipelines[p].components[src2]" in parsed.lines


def test_alias_bomb_is_a_problem_not_a_hang() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join(['*a' + str(i - 1)] * 10)}]" for i in range(1, 8)]
    text = doc(component="args:\n" + "\n".join("  " + line for line in levels))
    parsed = parse_ion(text)
    assert any("too large" in p.message for p in parsed.problems)


def test_deep_nesting_is_a_problem() -> None:
    parsed = parse_ion(doc(component="args: {deep: " + "[" * 40 + "]" * 40 + "}"))
    assert any("nested deeper" in p.message for p in parsed.problems)


def test_lines_name_every_location() -> None:
    parsed = load_ion_file(KMEANS)
    text = KMEANS.read_text().splitlines()
    for loc, fragment in [
        ("pipelines[training]", "- name: training"),
        ("pipelines[training].components[fit].args.k", "args: {k: 4"),
        ("pipelines[inference].placement", "placement: {labels"),
        ("edges[model].to[0]", "to: [inference]"),
        ("edges[model].policy.canary.nodes", "canary: {nodes"),
        ("edges[retrain].trigger", "trigger: {metric: drift"),
    ]:
        assert fragment in text[parsed.lines[loc] - 1], loc


def test_element_keys_fall_back_to_index() -> None:
    parsed = parse(
        """\
        apiVersion: ion/v1
        kind: ION
        metadata: {name: demo}
        pipelines:
          - {name: p, engine: python, mode: streaming, placement: {nodes: [n]}, components: []}
          - {name: p, engine: python, mode: banana, placement: {nodes: [n]}, components: []}
          - {engine: python, mode: streaming, placement: {nodes: [n]}, components: []}
        """
    )
    found = problems_at(parsed)
    assert "pipelines[#1].mode" in found
    assert "pipelines[#2].name" in found
    assert parsed.lines["pipelines[#1]"] == 6


# -- files ---------------------------------------------------------------------------------------


def test_load_missing_file_is_a_problem(tmp_path: Path) -> None:
    parsed = load_ion_file(tmp_path / "nope.yaml")
    assert parsed.definition is None
    assert parsed.problems[0].file == str(tmp_path / "nope.yaml")
    assert "cannot read" in parsed.problems[0].message


def test_load_directory_is_a_problem(tmp_path: Path) -> None:
    parsed = load_ion_file(tmp_path)
    assert "cannot read" in parsed.problems[0].message


def test_load_non_utf8_is_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(MINIMAL.replace("demo", "d\xe9mo").encode("latin-1"))
    parsed = load_ion_file(path)
    assert "not UTF-8" in parsed.problems[0].message


def test_load_with_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    parsed = load_ion_file(path)
    assert parsed.problems == ()
    assert parsed.file == str(path)


# -- durations, schedules, locations -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("10m", 600_000),
        ("6h", 21_600_000),
        ("1d", 86_400_000),
        ("1h30m", 5_400_000),
        ("1s500ms", 1_500),
        ("-5s", -5_000),
        ("0", 0),
        (" 2m ", 120_000),
        (250, 250),
        (-1, -1),
    ],
)
def test_parse_duration(text: str | int, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    "text", ["", "5", "1.5s", "5 s", "5sec", "m", "1m1h", "1h1h", "ms5", "--5s", "1e3ms"]
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_boolean_is_not_a_duration() -> None:
    with pytest.raises(TypeError):
        parse_duration(True)


def test_huge_duration_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        parse_duration("999999999999999d")


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_format_duration_round_trips(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


def test_format_duration_is_short() -> None:
    assert [format_duration(ms) for ms in (0, 500, 60_000, 5_400_000, 86_401_000)] == [
        "0s",
        "500ms",
        "1m",
        "1h30m",
        "1d1s",
    ]


@pytest.mark.parametrize(
    ("schedule", "interval"),
    [("", None), ("every 6h", 21_600_000), ("every  30s", 30_000), ("every 1h30m", 5_400_000)],
)
def test_schedule_interval(schedule: str, interval: int | None) -> None:
    assert schedule_interval_ms(schedule) == interval


@pytest.mark.parametrize(
    "schedule", ["6h", "every", "every 0s", "every -1m", "each 6h", "0 * * * *"]
)
def test_bad_schedules(schedule: str) -> None:
    with pytest.raises(ValueError, match="schedule"):
        schedule_interval_ms(schedule)


def test_location_helpers() -> None:
    assert (
        parent("pipelines[a.b].components[c].inputs.data") == "pipelines[a.b].components[c].inputs"
    )
    assert parent("pipelines[a.b].components[c]") == "pipelines[a.b].components"
    assert parent("pipelines[a.b]") == "pipelines"
    assert parent("pipelines") is None
    assert element_keys(["a", "", "a", "b"]) == ("a", "#1", "#2", "b")
    assert is_within("edges[e].to[0]", "edges[e]")
    assert not is_within("edges[ee]", "edges[e]")
    assert line_of({"edges[e]": 4}, "edges[e].policy.canary.share") == 4
    assert line_of({}, "edges") is None


def test_documentation_names_every_key() -> None:
    docs = (ROOT / "docs" / "ion-format.md").read_text()
    for section, keys in ALL_KEYS.items():
        for key in keys:
            assert f"`{key}`" in docs, (section, key)


# -- the round trip, for any definition ----------------------------------------------------------

names = st.from_regex(r"\A[a-z][a-z0-9_-]{0,8}\Z")
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)
durations = st.integers(min_value=-(10**12), max_value=10**12)
numbers = st.floats(allow_nan=False)
arg_values: st.SearchStrategy[ArgValue] = st.recursive(
    st.none() | st.booleans() | st.integers() | numbers | texts,
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple) | st.dictionaries(texts, inner, max_size=3)
    ),
    max_leaves=8,
)
string_maps = st.dictionaries(texts, texts, max_size=3)


@st.composite
def components(draw: st.DrawFn) -> Component:
    ports = draw(st.lists(names, max_size=3, unique=True))
    return Component(
        name=draw(names),
        type=draw(names),
        args=draw(st.dictionaries(texts, arg_values, max_size=3)),
        inputs=tuple(PortBinding(p, draw(names), draw(names)) for p in ports),
    )


pipelines = st.builds(
    Pipeline,
    name=names,
    engine=names,
    role=st.sampled_from(PipelineRole),
    mode=st.sampled_from(PipelineMode),
    placement=st.builds(
        Placement, nodes=st.lists(names, max_size=3).map(tuple), labels=string_maps
    ),
    components=st.lists(components(), max_size=3).map(tuple),
    schedule=texts,
    engine_config=string_maps,
    restart=st.builds(RestartPolicy, st.integers(), durations, durations, durations),
    description=texts,
)


@st.composite
def endpoints(draw: st.DrawFn) -> Endpoint:
    parts = draw(st.lists(names, min_size=1, max_size=3))
    return Endpoint(*parts)


optional_numbers = st.none() | numbers
policies = st.builds(
    ModelPolicy,
    kind=st.sampled_from(PolicyKind),
    keep_versions=st.integers(),
    gates=st.lists(
        st.builds(
            MetricGate, texts, st.booleans(), optional_numbers, optional_numbers, optional_numbers
        ),
        max_size=2,
    ).map(tuple),
    canary=st.none()
    | st.builds(
        CanaryPolicy, numbers, st.lists(names, max_size=2).map(tuple), durations, numbers, numbers
    ),
)
edges = st.builds(
    Edge,
    name=names,
    kind=st.sampled_from(EdgeKind),
    source=endpoints(),
    targets=st.lists(endpoints(), max_size=3).map(tuple),
    policy=st.none() | policies,
    trigger=st.none()
    | st.builds(TriggerCondition, texts, numbers, st.integers(), durations, durations),
    drift=st.none()
    | st.builds(DriftSettings, st.sampled_from(DriftMetric), numbers, durations, st.integers()),
    ttl_ms=durations,
    description=texts,
)
definitions = st.builds(
    IonDefinition,
    name=names,
    pipelines=st.lists(pipelines, max_size=3).map(tuple),
    edges=st.lists(edges, max_size=3).map(tuple),
    version=st.integers(min_value=0, max_value=2**64 - 1),
    description=texts,
    labels=string_maps,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(definitions)
def test_any_definition_round_trips(definition: IonDefinition) -> None:
    text = dump_ion(definition)
    parsed = parse_ion(text)
    assert parsed.problems == (), text
    assert parsed.definition == definition

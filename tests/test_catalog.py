"""The component catalog: builtin entries, argument specs, and plugins from entry points."""

from __future__ import annotations

import importlib.metadata
import textwrap
from pathlib import Path

import pytest

from ion.authoring import load_ion_file
from ion.catalog import (
    ENGINES,
    ENTRY_POINT_GROUP,
    ArgSpec,
    Catalog,
    ComponentSpec,
    builtin_catalog,
    type_matches,
    type_name,
)
from ion.model.definition import PortType

ROOT = Path(__file__).resolve().parent.parent


def test_builtin_catalog_has_what_the_examples_use() -> None:
    catalog = builtin_catalog()
    parsed = load_ion_file(ROOT / "examples" / "kmeans" / "ion.yaml")
    assert parsed.definition is not None
    for pipeline in parsed.definition.pipelines:
        for component in pipeline.components:
            assert catalog.get(component.type, pipeline.engine) is not None, component.type


@pytest.mark.parametrize(
    ("component_type", "engine"),
    [
        ("csv_source", "spark"),
        ("feature_histograms", "spark"),
        ("kmeans_train", "spark"),
        ("model_publisher", "spark"),
        ("mqtt_source", "python"),
        ("data_source", "python"),
        ("model_subscriber", "python"),
        ("kmeans_score", "python"),
        ("health_reporter", "python"),
        ("event_sink", "python"),
        ("keras_autoencoder_train", "tensorflow"),
        ("tflite_export", "tensorflow"),
        ("tflite_score", "tensorflow"),
    ],
)
def test_builtin_components(component_type: str, engine: str) -> None:
    spec = builtin_catalog().get(component_type, engine)
    assert spec is not None
    assert spec.description
    assert set(spec.engines) <= ENGINES
    for arg in spec.args.values():
        assert arg.description


def test_builtin_ports() -> None:
    catalog = builtin_catalog()
    publisher = catalog.get("model_publisher")
    assert publisher is not None
    assert publisher.inputs == {"model": PortType.MODEL, "health": PortType.HEALTH}
    assert publisher.input_required("model")
    assert not publisher.input_required("health")
    assert not publisher.input_required("nonexistent")
    score = catalog.get("kmeans_score")
    assert score is not None
    assert set(score.outputs.values()) == {
        PortType.DATA,
        PortType.STATS,
        PortType.HEALTH,
        PortType.EVENTS,
    }
    train = catalog.get("kmeans_train")
    assert train is not None
    assert train.args["k"].required
    assert set(train.args) >= {"k", "max_iter", "seed", "threshold_quantile"}


def test_lookup_by_engine_and_suggestions() -> None:
    catalog = builtin_catalog()
    assert catalog.get("kmeans_train", "python") is None
    assert catalog.get("kmeans_train") is not None
    assert "kmeans_train" in catalog
    assert "nope" not in catalog
    assert len(catalog) == len(catalog.types())
    assert "kmeans_train" in catalog.types("spark")
    assert "kmeans_train" not in catalog.types("python")
    assert catalog.suggest("kmeans_trian", "spark") == "kmeans_train"
    assert catalog.suggest("kmeans_trian", "python") == "kmeans_score"
    assert catalog.suggest("zzz", "python") is None


def test_documentation_lists_every_builtin_component() -> None:
    docs = (ROOT / "docs" / "ion-format.md").read_text()
    for component_type in builtin_catalog().types():
        assert f"`{component_type}`" in docs, component_type


@pytest.mark.parametrize(
    ("arg_type", "value", "ok"),
    [
        ("int", 3, True),
        ("int", True, False),
        ("int", 3.0, False),
        ("float", 3, True),
        ("float", 3.5, True),
        ("float", False, False),
        ("str", "x", True),
        ("str", 1, False),
        ("bool", True, True),
        ("bool", 1, False),
        ("list", (1, 2), True),
        ("list", "12", False),
        ("map", {"a": 1}, True),
        ("map", (1,), False),
        ("any", None, True),
        ("unknown", 1, False),
    ],
)
def test_type_matches(arg_type: str, value: object, ok: bool) -> None:
    assert type_matches(arg_type, value) is ok  # type: ignore[arg-type]


def test_type_names() -> None:
    assert [type_name(v) for v in (None, True, 1, 1.5, "s", (1,), {"a": 1})] == [
        "null",
        "bool",
        "int",
        "float",
        "str",
        "list",
        "map",
    ]


def test_arg_spec_checks_itself() -> None:
    assert ArgSpec("int", default=3).accepts(4)
    assert ArgSpec("str", choices=("a", "b")).accepts("a")
    assert not ArgSpec("str", choices=("a", "b")).accepts("c")
    with pytest.raises(ValueError, match="unknown argument type"):
        ArgSpec("integer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no default"):
        ArgSpec("int", required=True, default=3)
    with pytest.raises(ValueError, match="not a valid int"):
        ArgSpec("int", default="three")


def test_component_spec_checks_itself() -> None:
    with pytest.raises(ValueError, match="lower_snake_case"):
        ComponentSpec("Bad-Name", ("python",))
    with pytest.raises(ValueError, match="names no engine"):
        ComponentSpec("x", ())
    with pytest.raises(ValueError, match="not inputs"):
        ComponentSpec("x", ("python",), optional_inputs=frozenset({"a"}))


def test_catalog_of_refuses_duplicates() -> None:
    spec = ComponentSpec("x", ("python",))
    with pytest.raises(ValueError, match="twice"):
        Catalog.of([spec, spec])


def test_with_specs_keeps_existing_entries() -> None:
    base = builtin_catalog()
    original = base.get("kmeans_score")
    assert original is not None
    replacement = ComponentSpec("kmeans_score", ("python",))
    extra = ComponentSpec("my_filter", ("python",), inputs={"data": PortType.DATA})
    odd = ComponentSpec("onnx_score", ("onnx",))
    catalog = base.with_specs([replacement, original, extra, odd], origin="test")
    assert catalog.get("kmeans_score") == original
    assert catalog.get("my_filter", "python") == extra
    messages = [p.message for p in catalog.problems]
    assert messages == [
        "component type 'kmeans_score' is already defined; ignored",
        "onnx_score: unknown engine(s) onnx",
    ]
    assert all(p.severity == "warning" and p.location == "test" for p in catalog.problems)
    assert base.get("my_filter") is None  # the original is unchanged


PLUGIN = """
from ion.catalog import ComponentSpec
from ion.model.definition import PortType

SPEC = ComponentSpec("plugin_filter", ("python",), inputs={"data": PortType.DATA},
                     outputs={"data": PortType.DATA}, description="from a plugin")

def make():
    return ComponentSpec("plugin_made", ("python",))

def make_many():
    return [ComponentSpec("plugin_a", ("python",)), ComponentSpec("plugin_b", ("spark",))]

NOT_A_SPEC = 42

def broken():
    raise RuntimeError("boom")
"""


def _entry_point(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)


def test_with_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ion_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    catalog = builtin_catalog().with_entry_points(
        [
            _entry_point("plugin_filter", "ion_test_plugin:SPEC"),
            _entry_point("plugin_made", "ion_test_plugin:make"),
            _entry_point("plugin_many", "ion_test_plugin:make_many"),
            _entry_point("bad_value", "ion_test_plugin:NOT_A_SPEC"),
            _entry_point("bad_call", "ion_test_plugin:broken"),
            _entry_point("missing", "ion_no_such_module:SPEC"),
        ]
    )
    for component_type in ("plugin_filter", "plugin_made", "plugin_a", "plugin_b"):
        assert component_type in catalog
    assert "kmeans_train" in catalog
    problems = {p.location.split()[2]: p.message for p in catalog.problems}
    assert set(problems) == {"bad_value", "bad_call", "missing"}
    assert "expected a ComponentSpec, got int" in problems["bad_value"]
    assert "boom" in problems["bad_call"]
    assert "No module named" in problems["missing"]


def test_with_entry_points_reads_installed_distributions() -> None:
    # Nothing in this environment declares ion.components, so the catalog is unchanged.
    catalog = builtin_catalog().with_entry_points()
    assert catalog.specs.keys() >= builtin_catalog().specs.keys()

"""The python runner's parts in this process: the spec file, argument checks, the registry,
the stop latch and exit statuses (no child processes here; plans: test_runner_graph.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import pytest

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
from node.runner import Args, ArgsError
from node.runner import component as contract
from node.runner.__main__ import _status_from_exit
from node.runner.builtin import BUILTINS
from node.runner.component import StopSignal
from node.runner.registry import ComponentLoadError, Registry, UnknownComponentError
from node.runner.spec import RunnerSpec, SpecError, dumps, loads

# Spec file ---------------------------------------------------------------------------------


def pipeline(mode: PipelineMode, *components: Component) -> Pipeline:
    return Pipeline(
        name="p",
        engine="python",
        role=PipelineRole.INFERENCE,
        mode=mode,
        placement=Placement(nodes=("a", "b"), labels={"tier": "edge"}),
        components=components,
        schedule="*/5 * * * *",
        engine_config={"k": "v"},
        restart=RestartPolicy(2, 3, 4, 5),
        description="d",
    )


def comp(
    name: str, type_: str, args: Mapping[str, ArgValue] | None = None, *inputs: str
) -> Component:
    bindings = []
    for spec in inputs:
        port, _, source = spec.rpartition("=")
        upstream, _, from_port = source.partition(".")
        bindings.append(PortBinding(port or "in", upstream, from_port or "out"))
    return Component(name, type_, dict(args or {}), tuple(bindings))


def test_spec_round_trips_losslessly() -> None:
    args: dict[str, ArgValue] = {
        "i": 3,
        "f": 3.0,
        "b": True,
        "n": None,
        "s": "x",
        "l": (1, 2.5, ("nested",)),
        "m": {"z": 1, "a": {"deep": False}},
    }
    spec = RunnerSpec(
        "ion1",
        7,
        "node-1",
        pipeline(PipelineMode.STREAMING, comp("a", "t", args), comp("b", "u", {}, "x=a.y")),
    )
    back = loads(dumps(spec))
    assert back == spec
    assert type(back.pipeline.components[0].args["f"]) is float
    assert type(back.pipeline.components[0].args["i"]) is int
    assert list(back.pipeline.components[0].args["m"]) == ["z", "a"]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.replace('"format": "ion-runner/1"', '"format": "x"'), "format"),
        (
            lambda d: d.replace('"version": 7', '"version": "7"'),
            "spec.version: expected an integer",
        ),
        (lambda d: d.replace('"version": 7', '"version": true'), "expected an integer"),
        (lambda d: d.replace('"mode": "batch"', '"mode": "sometimes"'), "sometimes"),
        (lambda d: d.replace('"schedule"', '"schedul"'), "schedul"),
        (lambda d: d[:-3], "not valid JSON"),
    ],
)
def test_bad_spec_files_are_rejected_clearly(edit: Any, message: str) -> None:
    text = dumps(RunnerSpec("i", 7, "n", pipeline(PipelineMode.BATCH, comp("a", "t"))))
    with pytest.raises(SpecError, match=message):
        loads(edit(text))


# Arguments ---------------------------------------------------------------------------------


def test_args_typed_getters() -> None:
    a = Args({"i": 3, "f": 2, "s": "x", "b": False, "n": None})
    assert a.get_int("i", min=0, max=3) == 3
    assert a.get_float("f") == 2.0
    assert isinstance(a.get_float("f"), float)
    assert a.get_str("s", choices=("x", "y")) == "x"
    assert a.get_bool("b") is False
    assert a.get_int("n", 5) == 5  # null means "use the default"
    assert a.get_int("missing", None) is None
    assert a.unread() == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda a: a.get_int("s"), "'s' must be an integer, not 'x'"),
        (lambda a: a.get_int("b"), "must be an integer, not True"),
        (lambda a: a.get_float("b"), "must be a number"),
        (lambda a: a.get_int("i", min=5), "at least 5"),
        (lambda a: a.get_float("i", max=1.0), "at most 1.0"),
        (lambda a: a.get_str("s", choices=("y", "z")), "one of y, z"),
        (lambda a: a.get_bool("i"), "true or false"),
        (lambda a: a.get_int("missing"), "'missing' is required"),
    ],
)
def test_args_errors_say_what_is_wrong(call: Any, message: str) -> None:
    with pytest.raises(ArgsError, match=message):
        call(Args({"s": "x", "b": True, "i": 3}))


def test_args_remember_what_was_read() -> None:
    a = Args({"x": 1, "y": 2, "z": 3})
    assert a["x"] == 1
    assert "y" in a  # looking is not reading
    assert a.unread() == ["y", "z"]
    dict(a)  # taking them all counts as reading them
    assert a.unread() == []


# Registry ----------------------------------------------------------------------------------


class FakeEntryPoint:
    def __init__(self, name: str, value: str, loaded: object) -> None:
        self.name = name
        self.value = value
        self._loaded = loaded
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        if isinstance(self._loaded, Exception):
            raise self._loaded
        return self._loaded


class Plugin(contract.Component):
    def run(self, inputs: Mapping[str, Any]) -> int:
        return 1


def test_registry_finds_builtins_and_loads_entry_points_lazily() -> None:
    good = FakeEntryPoint("plugin", "pkg.mod:Plugin", Plugin)
    broken = FakeEntryPoint("broken", "pkg.broken:X", ImportError("no module named pkg.broken"))
    registry = Registry(entry_points=lambda: [good, broken])
    assert registry.resolve("counter_source") is BUILTINS["counter_source"]
    assert "plugin" in registry.names()
    assert "broken" in registry.names()
    assert (good.loads, broken.loads) == (0, 0)
    assert registry.resolve("plugin") is Plugin
    assert registry.resolve("plugin") is Plugin
    assert good.loads == 1
    with pytest.raises(ComponentLoadError, match="cannot be loaded: ImportError"):
        registry.resolve("broken")


def test_registry_refuses_unknown_ambiguous_and_non_class_types(
    caplog: pytest.LogCaptureFixture,
) -> None:
    eps = [
        FakeEntryPoint("twice", "a:X", Plugin),
        FakeEntryPoint("twice", "b:X", Plugin),
        FakeEntryPoint("same", "a:Y", Plugin),
        FakeEntryPoint("same", "a:Y", Plugin),  # one distribution seen twice on the path
        FakeEntryPoint("func", "a:f", lambda args, ctx: None),
        FakeEntryPoint("sleep", "evil:Sleep", Plugin),  # built-in names are reserved
    ]
    registry = Registry(entry_points=lambda: eps)
    with pytest.raises(
        UnknownComponentError, match=r"unknown component type 'nope'.*counter_source"
    ):
        registry.resolve("nope")
    with pytest.raises(ComponentLoadError, match="several installed entry points: a:X, b:X"):
        registry.resolve("twice")
    assert registry.resolve("same") is Plugin
    with pytest.raises(ComponentLoadError, match="is not a class"):
        registry.resolve("func")
    assert registry.resolve("sleep") is BUILTINS["sleep"]
    assert "ignoring entry point sleep = evil:Sleep" in caplog.text


# Small parts -------------------------------------------------------------------------------


def test_stop_signal_wakes_a_sleeping_component_from_another_thread() -> None:
    with StopSignal() as s:
        assert s.wait(0.01) is False
        threading.Timer(0.05, s.set).start()
        began = time.monotonic()
        assert s.wait(10.0) is True
        assert time.monotonic() - began < 2.0
        assert s.wait(10.0) is True  # a latch: stays set


def test_component_exit_statuses() -> None:
    assert _status_from_exit(None) == 0
    assert _status_from_exit(0) == 0
    assert _status_from_exit(4) == 4
    assert _status_from_exit(2) == 1  # 2 means "spec rejected" and nothing else
    assert _status_from_exit(300) == 1
    assert _status_from_exit("bye") == 1

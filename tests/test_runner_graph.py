"""The python runner's plans and execution, in this process with test components: what is
checked before anything runs, batch and streaming wiring, draining, failures."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from test_runner import comp, pipeline

from ion.model.definition import Component, PipelineMode
from node.runner import Args, Context
from node.runner import component as contract
from node.runner.builtin import BUILTINS
from node.runner.component import StopSignal
from node.runner.graph import (
    ComponentFailedError,
    PlanError,
    Terminated,
    build_plan,
    close_all,
    run_batch,
    run_streaming,
    topological_order,
)
from node.runner.registry import Registry
from node.runner.spec import RunnerSpec

# Plans -------------------------------------------------------------------------------------


class Double(contract.Component):
    input_ports = ("in",)

    def run(self, inputs: Mapping[str, Any]) -> list[Any]:
        return [2 * x for x in inputs["in"]]

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Any]:
        for x in inputs["in"]:
            yield 2 * x


class Split(contract.Component):
    """Even numbers to ``even``, odd ones to ``odd``."""

    input_ports = ("in",)
    output_ports = ("even", "odd")

    def run(self, inputs: Mapping[str, Any]) -> dict[str, list[Any]]:
        xs = inputs["in"]
        return {"even": [x for x in xs if x % 2 == 0], "odd": [x for x in xs if x % 2]}

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[tuple[str, Any]]:
        for x in inputs["in"]:
            yield ("odd" if x % 2 else "even"), x


class Collect(contract.Component):
    """A sink that keeps what it got in ``SEEN[name]`` and records when it was closed."""

    input_ports = ("in",)
    optional_input_ports = ("more",)
    output_ports = ()
    SEEN: dict[str, list[Any]] = {}  # noqa: RUF012 - shared on purpose, reset per test
    CLOSED: list[str] = []  # noqa: RUF012

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.SEEN[ctx.component] = []

    def run(self, inputs: Mapping[str, Any]) -> None:
        self.SEEN[self.ctx.component].extend(inputs["in"])

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[None]:
        for x in inputs["in"]:
            self.SEEN[self.ctx.component].append(x)
            yield None

    def close(self) -> None:
        self.CLOSED.append(self.ctx.component)


class Numbers(contract.Component):
    """Emits 0..count-1; stops early (and says so) when the job is stopped."""

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.count = args.get_int("count", 10)
        self.stop_after = args.get_int("stop_after", None)

    def run(self, inputs: Mapping[str, Any]) -> list[int]:
        return list(range(self.count))

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[int]:
        for i in range(self.count):
            if i == self.stop_after:
                self.ctx.stop_signal.set()  # as the SIGTERM handler would
            yield i


class StreamOnly(contract.Component):
    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[int]:
        yield 1


class Boom(contract.Component):
    input_ports = ("in",)

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Any]:
        for x in inputs["in"]:
            if x == 3:
                raise ValueError("three")
            yield x


class BadYield(contract.Component):
    output_ports = ("a", "b")

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Any]:
        yield "not a pair"


class NeedsModel(contract.Component):
    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        raise FileNotFoundError("model.bin")

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Any]:
        yield from ()


TEST_TYPES: dict[str, contract.ComponentFactory] = {
    **BUILTINS,
    "numbers": Numbers,
    "double": Double,
    "split": Split,
    "collect": Collect,
    "stream_only": StreamOnly,
    "boom": Boom,
    "bad_yield": BadYield,
    "needs_model": NeedsModel,
}


@pytest.fixture
def registry() -> Registry:
    Collect.SEEN.clear()
    Collect.CLOSED.clear()
    return Registry(builtins=TEST_TYPES, entry_points=None)


@pytest.fixture
def stop() -> Iterator[StopSignal]:
    with StopSignal() as s:
        yield s


def plan_for(
    registry: Registry, stop: StopSignal, mode: PipelineMode, *components: Component
) -> Any:
    spec = RunnerSpec("ion1", 1, "node-1", pipeline(mode, *components))
    return build_plan(spec, registry, stop, Path("."))


def problems(registry: Registry, stop: StopSignal, mode: PipelineMode, *c: Component) -> str:
    with pytest.raises(PlanError) as failure:
        plan_for(registry, stop, mode, *c)
    return "\n".join(failure.value.problems)


def test_topological_order_keeps_declaration_order_among_equals() -> None:
    cs = [
        comp("sink", "t", {}, "b"),
        comp("a", "t"),
        comp("b", "t", {}, "a"),
        comp("c", "t"),
    ]
    order, cyclic = topological_order(cs)
    assert [c.name for c in order] == ["a", "b", "sink", "c"]
    assert cyclic == []
    _, cyclic = topological_order(
        [comp("x", "t", {}, "y"), comp("y", "t", {}, "x"), comp("z", "t")]
    )
    assert cyclic == ["x", "y"]


def test_plan_reports_every_structural_problem_at_once(
    registry: Registry, stop: StopSignal
) -> None:
    text = problems(
        registry,
        stop,
        PipelineMode.BATCH,
        comp("a", "numbers"),
        comp("a", "numbers"),
        comp("ghost", "nope"),
        comp("d", "double", {}, "a.nope"),
        comp("e", "double", {}, "missing"),
        comp("f", "collect", {}, "wrong=a", "in=a", "in=d"),
        comp("g", "collect"),
        comp("h", "stream_only"),
        comp("x", "double", {}, "y"),
        comp("y", "double", {}, "x"),
    )
    for expected in (
        "component name 'a' is used twice",
        "unknown component type 'nope'",
        "reads a.nope, which is not an output port (outputs: out)",
        "reads unknown component 'missing'",
        "input 'wrong': no such input port (accepted: in, more)",
        "input 'in' is bound twice",
        "component 'g': input port 'in' is not bound",
        "type 'stream_only' has no run(), so it cannot run in a batch pipeline",
        "components form a cycle: x, y",
    ):
        assert expected in text


def test_plan_checks_arguments_only_when_the_structure_is_sound(
    registry: Registry, stop: StopSignal
) -> None:
    text = problems(
        registry,
        stop,
        PipelineMode.STREAMING,
        comp("src", "counter_source", {"rate": -1, "cuont": 3}),
        comp("m", "needs_model"),
        comp("f", "fail", {"code": 2}),
    )
    assert "component 'src' (counter_source): argument 'rate' must be at least 0.0" in text
    assert "component 'm' (needs_model): cannot be created: FileNotFoundError: model.bin" in text
    assert "argument 'code' must not be 2 (reserved)" in text
    text = problems(
        registry, stop, PipelineMode.STREAMING, comp("src", "counter_source", {"cuont": 3})
    )
    assert "unknown argument(s): cuont" in text


def test_plan_refuses_another_engine_and_an_empty_pipeline(
    registry: Registry, stop: StopSignal
) -> None:
    spec = RunnerSpec("i", 1, "n", replace(pipeline(PipelineMode.BATCH), engine="spark"))
    with pytest.raises(PlanError) as failure:
        build_plan(spec, registry, stop, Path("."))
    assert "is for engine 'spark'" in str(failure.value)
    assert "has no components" in str(failure.value)


def test_context_tells_a_component_where_it_runs(registry: Registry, stop: StopSignal) -> None:
    plan = plan_for(
        registry, stop, PipelineMode.BATCH, comp("n", "numbers"), comp("c", "collect", {}, "n")
    )
    ctx: Context = plan.steps[1].instance.ctx
    assert (ctx.ion, ctx.pipeline, ctx.component, ctx.node_id, ctx.version) == (
        "ion1",
        "p",
        "c",
        "node-1",
        1,
    )
    assert ctx.bound_inputs == frozenset({"in"})
    assert ctx.mode is PipelineMode.BATCH
    assert ctx.log.name == "component.c"


# Batch -------------------------------------------------------------------------------------


def test_batch_runs_once_with_upstream_outputs_and_several_output_ports(
    registry: Registry, stop: StopSignal
) -> None:
    plan = plan_for(
        registry,
        stop,
        PipelineMode.BATCH,
        comp("evens", "collect", {}, "split.even"),
        comp("odds", "collect", {}, "in=split.odd"),
        comp("split", "split", {}, "double"),
        comp("double", "double", {}, "n"),
        comp("n", "numbers", {"count": 4}),
        comp("all", "collect", {}, "n"),
    )
    run_batch(plan, stop)
    close_all(plan)
    assert Collect.SEEN == {"evens": [0, 2, 4, 6], "odds": [], "all": [0, 1, 2, 3]}
    assert Collect.CLOSED == ["all", "odds", "evens"]  # last first


def test_batch_stops_between_components_when_asked(registry: Registry, stop: StopSignal) -> None:
    plan = plan_for(
        registry, stop, PipelineMode.BATCH, comp("n", "numbers"), comp("c", "collect", {}, "n")
    )
    stop.set()
    with pytest.raises(Terminated):
        run_batch(plan, stop)
    assert Collect.SEEN == {"c": []}


# Streaming ---------------------------------------------------------------------------------


def test_streaming_fans_out_and_demultiplexes_ports(registry: Registry, stop: StopSignal) -> None:
    plan = plan_for(
        registry,
        stop,
        PipelineMode.STREAMING,
        comp("n", "numbers", {"count": 100}),
        comp("split", "split", {}, "n"),
        comp("evens", "collect", {}, "split.even"),
        comp("odds", "collect", {}, "split.odd"),
        comp("doubled", "collect", {}, "double"),
        comp("double", "double", {}, "n"),
    )
    run_streaming(plan, stop)
    assert Collect.SEEN["evens"] == list(range(0, 100, 2))
    assert Collect.SEEN["odds"] == list(range(1, 100, 2))
    assert Collect.SEEN["doubled"] == [2 * i for i in range(100)]


def test_streaming_stop_ends_sources_and_drains_the_rest(
    registry: Registry, stop: StopSignal
) -> None:
    plan = plan_for(
        registry,
        stop,
        PipelineMode.STREAMING,
        comp("n", "numbers", {"count": 1_000_000, "stop_after": 10}),
        comp("double", "double", {}, "n"),
        comp("c", "collect", {}, "double"),
    )
    run_streaming(plan, stop)
    # Item 10 was already taken from the source when the stop came: it is delivered, no more.
    assert Collect.SEEN["c"] == [2 * i for i in range(11)]


def test_streaming_names_the_component_that_failed(registry: Registry, stop: StopSignal) -> None:
    plan = plan_for(
        registry,
        stop,
        PipelineMode.STREAMING,
        comp("n", "numbers"),
        comp("b", "boom", {}, "n"),
        comp("c", "collect", {}, "b"),
    )
    with pytest.raises(ComponentFailedError) as failure:
        run_streaming(plan, stop)
    assert failure.value.component.name == "b"
    assert str(failure.value) == "component 'b' (boom) failed: ValueError: three"
    assert Collect.SEEN["c"] == [0, 1, 2]


def test_streaming_rejects_a_multi_port_item_that_is_not_a_pair(
    registry: Registry, stop: StopSignal
) -> None:
    plan = plan_for(
        registry,
        stop,
        PipelineMode.STREAMING,
        comp("y", "bad_yield"),
        comp("c", "collect", {}, "y.a"),
    )
    with pytest.raises(ComponentFailedError, match=r"\(port, item\) pairs"):
        run_streaming(plan, stop)


def test_jsonl_sink_keeps_to_the_work_dir(registry: Registry, stop: StopSignal) -> None:
    for bad in ("/etc/passwd", "../x.jsonl", "a/../../x"):
        text = problems(
            registry,
            stop,
            PipelineMode.BATCH,
            comp("n", "numbers"),
            comp("f", "jsonl_sink", {"path": bad}, "n"),
        )
        assert "must be relative, inside the work dir" in text


def test_runner_logs_through_component_loggers(
    registry: Registry, stop: StopSignal, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    plan = plan_for(
        registry,
        stop,
        PipelineMode.BATCH,
        comp("n", "numbers", {"count": 3}),
        comp("s", "log_sink", {}, "n"),
    )
    run_batch(plan, stop)
    close_all(plan)
    assert "3 item(s) received" in caplog.text


class Windowed(contract.Component):
    """A sink that yields once per ``every`` items (as a health reporter yields per window)
    and records, each time, how far the sibling sink "fast" lags behind what it has read."""

    input_ports = ("in",)
    output_ports = ()
    LAGS: list[int] = []  # noqa: RUF012

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.every = args.get_int("every", 100)

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[None]:
        for i, _ in enumerate(inputs["in"], 1):
            if i % self.every == 0:
                self.LAGS.append(i - len(Collect.SEEN.get("fast", [])))
                yield None


def test_a_sink_that_yields_rarely_does_not_leave_its_sibling_behind(
    registry: Registry, stop: StopSignal
) -> None:
    """One source feeds a sink yielding once per 100 items and one yielding per item: the
    fast one keeps pace (its queue is worked off before the source is read again) instead
    of falling 99 items further behind on every round."""
    registry = Registry(builtins={**TEST_TYPES, "windowed": Windowed}, entry_points=None)
    Windowed.LAGS.clear()
    plan = plan_for(
        registry,
        stop,
        PipelineMode.STREAMING,
        comp("n", "numbers", {"count": 5000}),
        comp("window", "windowed", {"every": 100}, "n"),
        comp("fast", "collect", {}, "n"),
    )
    run_streaming(plan, stop)
    assert Collect.SEEN["fast"] == list(range(5000))
    assert len(Windowed.LAGS) == 50
    # Before the fix the lag grew by about 99 per round (to ~4,900); now it stays bounded.
    assert max(Windowed.LAGS) <= 200, Windowed.LAGS[-5:]

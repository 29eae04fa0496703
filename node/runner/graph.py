"""A pipeline's components checked, built in topological order, and run (batch or streaming).

``build_plan`` does every check that needs no running code (types installed, ports bound,
no cycle, the mode supported) and then constructs every component, which checks its
arguments; only when all of that passed does anything run.

Streaming runs in one thread, by pulling: each component's ``stream`` gets iterators over its
upstream outputs, and the runner pulls, in turn, from the components nobody consumes (sinks).
An output consumed by several components is split by ``_Fanout``: each consumer has its own
queue, filled when any consumer pulls a new item.  Sinks do not keep the same pace: one that
yields once per window (a health reporter) takes many items per pull, and every other
consumer of the same source gets them all queued at once.  So after pulling a sink once, the
runner keeps pulling it while anything upstream of it is queued (up to ``DRAIN_LIMIT`` pulls,
so no sink starves the others): each sink works off what is already queued for it before new
items are read from the sources, and queues stay as short as the slowest yield allows.
Stopping closes the sources (no more items pulled from them); downstream sees its inputs end
and drains what is in flight.
"""

from __future__ import annotations

import collections
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ion.model.definition import Component, PipelineMode

from .component import Args, ArgsError, ComponentFactory, Context, StopSignal, ports_of
from .edges import EdgeIO
from .registry import ComponentLoadError, Registry, UnknownComponentError
from .spec import EdgePort, RunnerSpec

log = logging.getLogger(__name__)


class PlanError(Exception):
    """The pipeline cannot run; ``problems`` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class ComponentFailedError(Exception):
    """A component raised; ``__cause__`` is what it raised."""

    def __init__(self, component: Component, cause: BaseException) -> None:
        super().__init__(
            f"component {component.name!r} ({component.type}) failed: "
            f"{type(cause).__name__}: {cause}"
        )
        self.component = component
        self.cause = cause


class Terminated(BaseException):
    """Raised by the SIGTERM handler to interrupt a run (BaseException: components' broad
    ``except Exception`` must not swallow it)."""


@dataclass(frozen=True, slots=True)
class Step:
    component: Component
    instance: Any
    input_ports: tuple[str, ...]
    output_ports: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.component.name


@dataclass(frozen=True, slots=True)
class Plan:
    spec: RunnerSpec
    steps: tuple[Step, ...]
    """In topological order of the input bindings (declaration order among equals)."""


def topological_order(components: Iterable[Component]) -> tuple[list[Component], list[str]]:
    """The components in dependency order, and the names of those on a cycle (if any)."""
    pending = list(components)
    names = {c.name for c in pending}
    placed: set[str] = set()
    order: list[Component] = []
    progress = True
    while pending and progress:
        progress = False
        for c in list(pending):
            needs = {b.from_component for b in c.inputs if b.from_component in names}
            if needs <= placed:
                order.append(c)
                placed.add(c.name)
                pending.remove(c)
                progress = True
                break  # restart from the top: keeps declaration order among the ready ones
    return order, [c.name for c in pending]


def build_plan(
    spec: RunnerSpec, registry: Registry, stop: StopSignal, work_dir: Path, engine: str = "python"
) -> Plan:
    """Check the pipeline and construct its components; PlanError lists every problem.

    ``engine`` is the engine this runner runs for (the spark and tensorflow drivers run the
    same runner with their own components)."""
    pipeline = spec.pipeline
    problems: list[str] = []
    if pipeline.engine != engine:
        problems.append(f"pipeline {pipeline.name!r} is for engine {pipeline.engine!r}")
    edge_fed = {(p.component, p.port) for p in spec.edges if p.direction == "in"}
    if not pipeline.components:
        problems.append(f"pipeline {pipeline.name!r} has no components")
    by_name: dict[str, Component] = {}
    for c in pipeline.components:
        if c.name in by_name:
            problems.append(f"component name {c.name!r} is used twice")
        by_name[c.name] = c

    factories: dict[str, ComponentFactory] = {}
    ports: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {}
    method = "run" if pipeline.mode is PipelineMode.BATCH else "stream"
    for c in pipeline.components:
        try:
            factory = registry.resolve(c.type)
            ports[c.name] = ports_of(factory)
        except (UnknownComponentError, ComponentLoadError, TypeError) as e:
            problems.append(f"component {c.name!r}: {e}")
            continue
        factories[c.name] = factory
        feeds = method == "stream" and callable(getattr(factory, "feeds", None))
        if not callable(getattr(factory, method, None)) and not feeds:
            problems.append(
                f"component {c.name!r}: type {c.type!r} has no {method}(), so it cannot run "
                f"in a {pipeline.mode.value} pipeline"
            )

    for c in pipeline.components:
        required, optional, _ = ports.get(c.name, ((), (), ()))
        bound: set[str] = set()
        for b in c.inputs:
            where = f"component {c.name!r} input {b.port!r}"
            if b.port in bound:
                problems.append(f"{where} is bound twice")
            bound.add(b.port)
            if c.name in ports and b.port not in required + optional:
                accepted = ", ".join(required + optional) or "none"
                problems.append(f"{where}: no such input port (accepted: {accepted})")
            if b.from_component not in by_name:
                problems.append(f"{where} reads unknown component {b.from_component!r}")
            elif b.from_component in ports and b.from_port not in ports[b.from_component][2]:
                outputs = ", ".join(ports[b.from_component][2]) or "none"
                problems.append(
                    f"{where} reads {b.from_component}.{b.from_port}, which is not an output "
                    f"port (outputs: {outputs})"
                )
        problems.extend(
            f"component {c.name!r}: input port {port!r} is not bound"
            for port in required
            if port not in bound and (c.name, port) not in edge_fed
        )

    order, cyclic = topological_order(pipeline.components)
    if cyclic:
        problems.append(f"components form a cycle: {', '.join(cyclic)}")
    if problems:
        raise PlanError(problems)

    steps: list[Step] = []
    for c in order:
        args = Args(c.args)
        ctx = Context(
            ion=spec.ion,
            pipeline=pipeline.name,
            component=c.name,
            node_id=spec.node_id,
            version=spec.version,
            mode=pipeline.mode,
            work_dir=work_dir,
            bound_inputs=frozenset(
                [b.port for b in c.inputs] + [p for n, p in edge_fed if n == c.name]
            ),
            log=logging.getLogger(f"component.{c.name}"),
            stop_signal=stop,
        )
        where = f"component {c.name!r} ({c.type})"
        try:
            instance = factories[c.name](args, ctx)
        except ArgsError as e:
            problems.append(f"{where}: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - any constructor failure rejects the spec
            problems.append(f"{where}: cannot be created: {type(e).__name__}: {e}")
            continue
        if unread := args.unread():
            problems.append(f"{where}: unknown argument(s): {', '.join(unread)}")
        accepted_in, optional_in, declared_out = ports[c.name]
        steps.append(Step(c, instance, accepted_in + optional_in, declared_out))
    if problems:
        raise PlanError(problems)
    return Plan(spec, tuple(steps))


def _edge_ports(plan: Plan, direction: str) -> dict[tuple[str, str], EdgePort]:
    return {(p.component, p.port): p for p in plan.spec.edges if p.direction == direction}


class _Outlet:
    """Sends what leaves through edge ports, and telemetry from ports nobody reads."""

    def __init__(self, plan: Plan, io: EdgeIO | None) -> None:
        self._io = io
        self._out = _edge_ports(plan, "out")
        self._consumed = {
            (b.from_component, b.from_port) for s in plan.steps for b in s.component.inputs
        }
        self.reported = 0

    def __call__(self, step: Step, port: str, value: Any) -> None:
        if self._io is None or value is None:
            return
        key = (step.name, port)
        edge = self._out.get(key)
        try:
            if edge is not None:
                self._io.send(step.name, edge, value)
            elif key not in self._consumed and port in _TELEMETRY_PORTS:
                for item in value if isinstance(value, list | tuple) else (value,):
                    if self._io.telemetry(step.name, item):
                        self.reported += 1
        except Exception as e:
            raise ComponentFailedError(step.component, e) from e


# Output ports whose values are reported as the pipeline's telemetry when nothing reads them.
_TELEMETRY_PORTS = frozenset({"stats", "health", "events"})


def _edge_inputs(
    plan: Plan, step: Step, io: EdgeIO | None, stop: StopSignal, *, streaming: bool
) -> dict[str, Any]:
    """The inputs of ``step`` that ION edges feed."""
    inputs: dict[str, Any] = {}
    for (component, port), edge in _edge_ports(plan, "in").items():
        if component != step.name:
            continue
        if io is None:
            raise ComponentFailedError(
                step.component, RuntimeError(f"input {port!r} reads edge {edge.edge!r}: no SDK")
            )
        if edge.kind == "model":
            feed = io.model_feed(edge, stop)
            if streaming:
                inputs[port] = feed
            else:
                log.info("waiting for a model on edge %s", edge.edge)
                inputs[port] = feed.wait(None)
                if inputs[port] is None:
                    raise Terminated
        elif streaming:
            inputs[port] = io.stream(edge, stop)
        else:
            raise ComponentFailedError(
                step.component,
                RuntimeError(f"a batch pipeline cannot read the {edge.kind} edge {edge.edge!r}"),
            )
    return inputs


def run_batch(plan: Plan, stop: StopSignal, io: EdgeIO | None = None) -> None:
    """Call each component's ``run`` once, in order, passing upstream outputs."""
    consumed = {(b.from_component, b.from_port) for s in plan.steps for b in s.component.inputs}
    outlet = _Outlet(plan, io)
    values: dict[tuple[str, str], Any] = {}
    for step in plan.steps:
        if stop.is_set():
            raise Terminated
        inputs = {b.port: values[(b.from_component, b.from_port)] for b in step.component.inputs}
        inputs.update(_edge_inputs(plan, step, io, stop, streaming=False))
        log.info("running component %s (%s)", step.name, step.component.type)
        result = _call(step, step.instance.run, inputs)
        outputs = step.output_ports
        if len(outputs) == 1:
            values[(step.name, outputs[0])] = result
            outlet(step, outputs[0], result)
        elif len(outputs) > 1:
            if not isinstance(result, Mapping) or not set(result) <= set(outputs):
                raise ComponentFailedError(
                    step.component,
                    TypeError(f"run() must return a mapping of output ports {outputs}"),
                )
            for port in outputs:
                if (step.name, port) in consumed and port not in result:
                    raise ComponentFailedError(
                        step.component, KeyError(f"run() returned no value for port {port!r}")
                    )
                values[(step.name, port)] = result.get(port)
                outlet(step, port, result.get(port))


def run_streaming(plan: Plan, stop: StopSignal, io: EdgeIO | None = None) -> None:
    """Wire the components' iterators together and pull from the sinks until all end.

    A component with a ``feeds(inputs)`` method (``model_subscriber``) provides model feeds,
    not a stream: components bound to its outputs get the feed objects themselves."""
    consumed = {b.from_component for s in plan.steps for b in s.component.inputs}
    outlet = _Outlet(plan, io)
    fanouts: dict[str, _Fanout] = {}
    feeds: dict[tuple[str, str], Any] = {}
    sinks: list[Iterator[Any]] = []
    sink_names: dict[int, str] = {}
    opened: list[Iterator[Any]] = []
    try:
        for step in plan.steps:
            inputs = {
                b.port: feeds[(b.from_component, b.from_port)]
                if (b.from_component, b.from_port) in feeds
                else fanouts[b.from_component].subscribe(b.from_port, step.name)
                for b in step.component.inputs
            }
            inputs.update(_edge_inputs(plan, step, io, stop, streaming=True))
            provide = getattr(step.instance, "feeds", None)
            if callable(provide):
                provided = _call(step, provide, inputs)
                feeds.update({(step.name, port): f for port, f in dict(provided).items()})
                continue
            out = _call(step, step.instance.stream, inputs)
            it: Iterator[Any] = _tap(step, _guard(step, _as_iterator(step, out)), outlet)
            if not step.component.inputs:
                it = _until_stopped(it, stop)
            opened.append(it)
            if step.name in consumed:
                fanouts[step.name] = _Fanout(step, it)
            else:
                sinks.append(it)
                sink_names[id(it)] = step.name
        log.info("streaming: %d component(s), %d sink(s)", len(plan.steps), len(sinks))
        backlog = _backlogs(plan, fanouts, sink_names)
        while sinks:
            for it in list(sinks):
                try:
                    next(it)
                    queued = backlog[id(it)]
                    for _ in range(DRAIN_LIMIT):
                        if not queued():
                            break
                        next(it)
                except StopIteration:
                    sinks.remove(it)
        log.info("streaming: all components finished")
    finally:
        for it in reversed(opened):
            close = getattr(it, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    log.exception("closing a component's stream failed")


DRAIN_LIMIT = 10_000
"""Pulls of one sink in a row while its upstream queues hold items."""


def _backlogs(
    plan: Plan, fanouts: Mapping[str, _Fanout], sink_names: Mapping[int, str]
) -> dict[int, Callable[[], bool]]:
    """Per sink (by iterator id): whether anything upstream of it is queued for it."""
    upstream: dict[str, set[str]] = {}
    for step in plan.steps:  # topological order: a step's inputs are done before it
        names = {b.from_component for b in step.component.inputs}
        upstream[step.name] = names.union(*(upstream.get(n, set()) for n in names))
    out: dict[int, Callable[[], bool]] = {}
    for key, name in sink_names.items():
        # The queues feeding this sink's subgraph: what its own steps subscribed to.
        steps = {name} | upstream.get(name, set())
        queues = [
            q for f in fanouts.values() for consumer, q in f.consumer_queues() if consumer in steps
        ]
        out[key] = functools.partial(_any_queued, queues)
    return out


def _any_queued(queues: list[collections.deque[Any]]) -> bool:
    return any(queues)


def close_all(plan: Plan) -> None:
    """Call every component's ``close()``, last first; errors are logged, not raised."""
    for step in reversed(plan.steps):
        close = getattr(step.instance, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                log.exception("close() of component %s failed", step.name)


def _call(step: Step, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except ComponentFailedError:
        raise
    except Exception as e:
        raise ComponentFailedError(step.component, e) from e


def _as_iterator(step: Step, out: Any) -> Iterator[Any]:
    if out is None:  # a sink that consumed everything in one call
        return iter(())
    if isinstance(out, Iterator):
        return out
    if isinstance(out, Iterable):
        return iter(out)
    raise ComponentFailedError(
        step.component, TypeError(f"stream() must return an iterator, not {type(out).__name__}")
    )


def _guard(step: Step, it: Iterator[Any]) -> Iterator[Any]:
    """Name the component an exception came from (once: the innermost wins)."""
    try:
        yield from it
    except ComponentFailedError:
        raise
    except Exception as e:
        raise ComponentFailedError(step.component, e) from e


def _tap(step: Step, it: Iterator[Any], outlet: _Outlet) -> Iterator[Any]:
    """Hands every item to ``outlet`` (edges, telemetry) on its way downstream."""
    multi = len(step.output_ports) > 1
    single = step.output_ports[0] if len(step.output_ports) == 1 else ""
    for item in it:
        if multi:
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
                outlet(step, item[0], item[1])
        elif single:
            outlet(step, single, item)
        yield item


def _until_stopped(it: Iterator[Any], stop: StopSignal) -> Iterator[Any]:
    """A source's items until the job is asked to stop; then the source is closed."""
    try:
        while not stop.is_set():
            try:
                item = next(it)
            except StopIteration:
                return
            yield item
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


class _Fanout:
    """One component's output iterator, shared by the consumers of its ports."""

    def __init__(self, step: Step, source: Iterator[Any]) -> None:
        self._step = step
        self._source = source
        self._multi = len(step.output_ports) > 1
        self._queues: dict[str, list[collections.deque[Any]]] = {}
        self._consumers: list[tuple[str, collections.deque[Any]]] = []
        self._ended = False

    def subscribe(self, port: str, consumer: str = "") -> Iterator[Any]:
        queue: collections.deque[Any] = collections.deque()
        self._queues.setdefault(port, []).append(queue)
        self._consumers.append((consumer, queue))
        return self._read(queue)

    def consumer_queues(self) -> list[tuple[str, collections.deque[Any]]]:
        return list(self._consumers)

    def _read(self, queue: collections.deque[Any]) -> Iterator[Any]:
        while True:
            while not queue:
                if not self._pull():
                    return
            yield queue.popleft()

    def _pull(self) -> bool:
        if self._ended:
            return False
        try:
            item = next(self._source)
        except StopIteration:
            self._ended = True
            return False
        if self._multi:
            if not (isinstance(item, tuple) and len(item) == 2 and item[0] in self._queues):
                if (
                    isinstance(item, tuple)
                    and len(item) == 2
                    and item[0] in self._step.output_ports
                ):
                    return True  # a port nobody consumes
                raise ComponentFailedError(
                    self._step.component,
                    TypeError(
                        f"stream() must yield (port, item) pairs with a port among "
                        f"{self._step.output_ports}, not {item!r}"
                    ),
                )
            port, item = item
        else:
            port = self._step.output_ports[0] if self._step.output_ports else ""
        for queue in self._queues.get(port, ()):
            queue.append(item)
        return True

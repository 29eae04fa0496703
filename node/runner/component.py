"""The component contract: what a Python pipeline component is, and what the runner gives it.

A component is a class, found by its type name in the registry (``node.runner.registry``)::

    class Scale(Component):
        input_ports = ("in",)          # every binding must name a declared port
        output_ports = ("out",)        # the default; () for a sink

        def __init__(self, args: Args, ctx: Context) -> None:
            super().__init__(args, ctx)
            self.factor = args.get_float("factor", 1.0)   # check arguments here

        def run(self, inputs):                  # batch: called once
            return [x * self.factor for x in inputs["in"]]

        def stream(self, inputs):               # streaming: an iterator over outputs
            for x in inputs["in"]:
                yield x * self.factor

Rules the runner relies on:

- ``__init__(args, ctx)`` checks the arguments and does nothing else (no files, no sockets):
  the runner constructs every component before it runs any, so a bad argument anywhere fails
  the job before anything happened.  An argument the constructor never read is an error.
- Ports: ``input_ports`` must all be bound, ``optional_input_ports`` may be; ``output_ports``
  name what ``run`` returns / ``stream`` yields.  With one output port ``run`` returns the value
  and ``stream`` yields items; with several, ``run`` returns ``{port: value}`` and ``stream``
  yields ``(port, item)`` pairs.  A sink (no output ports) yields once per item it consumed
  (the value is ignored), so the runner can interleave several sinks.
- Batch (``run(inputs)``): ``inputs`` maps each bound input port to the upstream output value.
- Streaming (``stream(inputs)``): ``inputs`` maps each bound input port to an iterator over the
  upstream items.  Sources (no inputs) should wait with ``ctx.sleep``, which returns False as
  soon as the job is asked to stop; the runner then stops pulling from sources, everything
  downstream sees its inputs end, finishes its last items and returns: a drain.
- ``close()``, if defined, is called once at the end, whatever happened.

Why classes with ``run``/``stream`` over plain functions: the constructor gives an argument
check that runs before anything else, and an object is where a later SDK attaches models and
stats (``ctx`` is that attachment point).  Why plain (sync) iterators over async generators:
pipeline code is mostly numpy and library calls, a generator chain is something every Python
programmer can write and test alone, and single-threaded pulling needs no locks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Protocol, overload

from ion.model.definition import ArgValue, PipelineMode


class ArgsError(ValueError):
    """An argument is missing, of the wrong type or out of range."""


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


REQUIRED: Final = _Missing()


class Args(Mapping[str, ArgValue]):
    """A component's arguments, with typed getters; remembers which keys were read."""

    def __init__(self, values: Mapping[str, ArgValue]) -> None:
        self._values = dict(values)
        self._read: set[str] = set()

    def __getitem__(self, key: str) -> ArgValue:
        self._read.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        self._read.update(self._values)  # whoever iterates takes them all
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def unread(self) -> list[str]:
        return sorted(set(self._values) - self._read)

    def _fetch(self, name: str, default: object, kinds: tuple[type, ...], what: str) -> Any:
        self._read.add(name)
        if name not in self._values or self._values[name] is None:
            if isinstance(default, _Missing):
                raise ArgsError(f"argument {name!r} is required")
            return default
        value = self._values[name]
        if isinstance(value, bool) and bool not in kinds:
            raise ArgsError(f"argument {name!r} must be {what}, not {value!r}")
        if not isinstance(value, kinds):
            raise ArgsError(f"argument {name!r} must be {what}, not {value!r}")
        return value

    @overload
    def get_int(
        self,
        name: str,
        default: int | _Missing = ...,
        *,
        min: int | None = ...,
        max: int | None = ...,
    ) -> int: ...
    @overload
    def get_int(
        self, name: str, default: None, *, min: int | None = ..., max: int | None = ...
    ) -> int | None: ...
    def get_int(
        self,
        name: str,
        default: int | _Missing | None = REQUIRED,
        *,
        min: int | None = None,
        max: int | None = None,
    ) -> int | None:
        value: int | None = self._fetch(name, default, (int,), "an integer")
        if value is not None:
            _check_range(name, value, min, max)
        return value

    @overload
    def get_float(
        self,
        name: str,
        default: float | _Missing = ...,
        *,
        min: float | None = ...,
        max: float | None = ...,
    ) -> float: ...
    @overload
    def get_float(
        self, name: str, default: None, *, min: float | None = ..., max: float | None = ...
    ) -> float | None: ...
    def get_float(
        self,
        name: str,
        default: float | _Missing | None = REQUIRED,
        *,
        min: float | None = None,
        max: float | None = None,
    ) -> float | None:
        value = self._fetch(name, default, (int, float), "a number")
        if value is None:
            return None
        _check_range(name, float(value), min, max)
        return float(value)

    @overload
    def get_str(
        self, name: str, default: str | _Missing = ..., *, choices: tuple[str, ...] = ...
    ) -> str: ...
    @overload
    def get_str(
        self, name: str, default: None, *, choices: tuple[str, ...] = ...
    ) -> str | None: ...
    def get_str(
        self, name: str, default: str | _Missing | None = REQUIRED, *, choices: tuple[str, ...] = ()
    ) -> str | None:
        value: str | None = self._fetch(name, default, (str,), "a string")
        if value is not None and choices and value not in choices:
            raise ArgsError(f"argument {name!r} must be one of {', '.join(choices)}, not {value!r}")
        return value

    def get_bool(self, name: str, default: bool | _Missing = REQUIRED) -> bool:
        value: bool = self._fetch(name, default, (bool,), "true or false")
        return value


def _check_range(name: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise ArgsError(f"argument {name!r} must be at least {low}, not {value}")
    if high is not None and value > high:
        raise ArgsError(f"argument {name!r} must be at most {high}, not {value}")


class StopSignal:
    """A latch set when the job is asked to stop, that blocking waits can select on.

    Set from a signal handler: it only flips a flag and writes one byte to a pipe that is never
    read, so every later ``wait`` returns at once, in any thread, with no lock to deadlock on.
    """

    def __init__(self) -> None:
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        self._set = False

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        with contextlib.suppress(OSError):  # full or closed: the flag alone still works
            os.write(self._write_fd, b"x")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if the latch is (or becomes) set."""
        if self._set:
            return True
        if timeout > 0:
            select.select([self._read_fd], [], [], timeout)
        return self._set

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> StopSignal:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class Context:
    """What a component knows about where it runs."""

    ion: str
    pipeline: str
    component: str
    node_id: str
    version: int
    mode: PipelineMode
    work_dir: Path
    bound_inputs: frozenset[str]
    """The input ports that are bound in this pipeline (optional ports may not be)."""
    log: logging.Logger
    stop_signal: StopSignal

    @property
    def stopping(self) -> bool:
        """True once the job was asked to stop; sources should end soon after."""
        return self.stop_signal.is_set()

    def sleep(self, seconds: float) -> bool:
        """Sleep, unless asked to stop first.  False means stop: return from ``stream``."""
        return not self.stop_signal.wait(seconds)


class Component:
    """A convenient base class; components need not inherit from it, only follow the contract."""

    input_ports: tuple[str, ...] = ()
    optional_input_ports: tuple[str, ...] = ()
    output_ports: tuple[str, ...] = ("out",)

    def __init__(self, args: Args, ctx: Context) -> None:
        self.args = args
        self.ctx = ctx
        self.log = ctx.log


class ComponentFactory(Protocol):
    """What the registry hands out: called as ``factory(args, ctx)``."""

    def __call__(self, args: Args, ctx: Context) -> object: ...


def ports_of(factory: object) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(input_ports, optional_input_ports, output_ports) declared by a component class."""
    declared = []
    for attr, default in (
        ("input_ports", ()),
        ("optional_input_ports", ()),
        ("output_ports", ("out",)),
    ):
        value = getattr(factory, attr, default)
        if not isinstance(value, tuple) or not all(isinstance(p, str) for p in value):
            raise TypeError(f"{attr} must be a tuple of port names, not {value!r}")
        declared.append(value)
    return declared[0], declared[1], declared[2]

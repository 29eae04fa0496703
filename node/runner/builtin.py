"""Built-in components: small, real, and enough to build test and example pipelines.

========================  ==========================================================
``counter_source``        integers ``start, start+step, ...``: ``count`` of them
                          (required in batch mode) or until stopped, at most ``rate``
                          per second (0: as fast as pulled)
``scale``                 ``x * factor + offset`` for each number (or list of numbers)
``sleep``                 waits ``seconds`` (per item when an input is bound), passes its
                          input through; a streaming ``sleep`` with no input idles
                          until stopped
``fail``                  ends the job with exit status ``code`` (after ``delay_s``, or
                          after passing ``after_items`` items through), for crash tests
``log_sink``              prints every ``every``-th item to stdout
``jsonl_sink``            appends items as JSON lines to ``path`` in the work directory
========================  ==========================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NoReturn, TextIO

from ion.model.definition import PipelineMode

from .component import Args, ArgsError, Component, ComponentFactory, Context
from .spec import EXIT_SPEC_ERROR


def _items(value: Any) -> list[Any]:
    """A batch value as items: a list or tuple is its elements, anything else is one item."""
    return list(value) if isinstance(value, list | tuple) else [value]


class CounterSource(Component):
    output_ports = ("out",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.count = args.get_int("count", None, min=0)
        self.start = args.get_int("start", 0)
        self.step = args.get_int("step", 1)
        self.rate = args.get_float("rate", 0.0, min=0.0)
        if self.count is None and ctx.mode is PipelineMode.BATCH:
            raise ArgsError("argument 'count' is required in a batch pipeline")

    def run(self, inputs: Mapping[str, Any]) -> list[int]:
        assert self.count is not None
        return [self.start + i * self.step for i in range(self.count)]

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[int]:
        interval = 1.0 / self.rate if self.rate > 0 else 0.0
        due = time.monotonic()
        i = 0
        while self.count is None or i < self.count:
            if interval:
                due += interval
                if not self.ctx.sleep(due - time.monotonic()):
                    return
            elif self.ctx.stopping:
                return
            yield self.start + i * self.step
            i += 1


class Scale(Component):
    input_ports = ("in",)
    output_ports = ("out",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.factor = args.get_float("factor", 1.0)
        self.offset = args.get_float("offset", 0.0)

    def _one(self, x: Any) -> float:
        if isinstance(x, bool) or not isinstance(x, int | float):
            raise TypeError(f"scale takes numbers, got {x!r}")
        return x * self.factor + self.offset

    def run(self, inputs: Mapping[str, Any]) -> Any:
        value = inputs["in"]
        if isinstance(value, list | tuple):
            return [self._one(x) for x in value]
        return self._one(value)

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[float]:
        for x in inputs["in"]:
            yield self._one(x)


class Sleep(Component):
    optional_input_ports = ("in",)
    output_ports = ("out",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.seconds = args.get_float("seconds", min=0.0)

    def run(self, inputs: Mapping[str, Any]) -> Any:
        self.ctx.sleep(self.seconds)
        return inputs.get("in")

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Any]:
        upstream = inputs.get("in")
        if upstream is None:
            while self.ctx.sleep(max(self.seconds, 0.1)):
                pass
            return
        for x in upstream:
            self.ctx.sleep(self.seconds)  # an item already taken is passed on, even when stopping
            yield x


class Fail(Component):
    optional_input_ports = ("in",)
    output_ports = ("out",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.code = args.get_int("code", 1, min=1, max=255)
        if self.code == EXIT_SPEC_ERROR:
            raise ArgsError(f"argument 'code' must not be {EXIT_SPEC_ERROR} (reserved)")
        self.message = args.get_str("message", "failing on purpose")
        self.delay_s = args.get_float("delay_s", 0.0, min=0.0)
        self.after_items = args.get_int("after_items", 0, min=0)

    def _fail(self) -> NoReturn:
        self.log.error("%s (exit status %d)", self.message, self.code)
        raise SystemExit(self.code)

    def run(self, inputs: Mapping[str, Any]) -> NoReturn:
        self.ctx.sleep(self.delay_s)
        self._fail()

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[Any]:
        upstream = inputs.get("in")
        if upstream is not None:
            for i, x in enumerate(upstream):
                if i >= self.after_items:
                    break
                yield x
        if self.ctx.sleep(self.delay_s):
            self._fail()


class LogSink(Component):
    input_ports = ("in",)
    output_ports = ()

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.every = args.get_int("every", 1, min=1)
        self.prefix = args.get_str("prefix", "")
        self.seen = 0

    def _take(self, item: Any) -> None:
        if self.seen % self.every == 0:
            print(f"{self.prefix}{item}", flush=True)
        self.seen += 1

    def run(self, inputs: Mapping[str, Any]) -> None:
        for item in _items(inputs["in"]):
            self._take(item)

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[None]:
        for item in inputs["in"]:
            self._take(item)
            yield None

    def close(self) -> None:
        self.log.info("%d item(s) received", self.seen)


class JsonlSink(Component):
    input_ports = ("in",)
    output_ports = ()

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        # The path comes from the ION, i.e. from the wire: keep it inside the work directory.
        rel = PurePosixPath(args.get_str("path", f"{ctx.component}.jsonl"))
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ArgsError(f"argument 'path' must be relative, inside the work dir: {rel}")
        self.path = ctx.work_dir / Path(*rel.parts)
        self._file: TextIO | None = None

    def _write(self, item: Any) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(json.dumps(item, default=str) + "\n")
        self._file.flush()

    def run(self, inputs: Mapping[str, Any]) -> None:
        for item in _items(inputs["in"]):
            self._write(item)

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[None]:
        for item in inputs["in"]:
            self._write(item)
            yield None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class ModelSubscriber(Component):
    """The target of an ION model edge: hands the model versions the agent activates to the
    components bound to its ``model`` output (a ``ModelFeed`` in streaming pipelines, the
    active model in batch ones)."""

    input_ports = ("model",)
    output_ports = ("model",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        # Accepted for the catalog's sake; the scorer itself loads and checks each version.
        self.warmup = args.get_bool("warmup", False)

    def feeds(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {"model": inputs["model"]}

    def run(self, inputs: Mapping[str, Any]) -> Any:
        return inputs["model"]


BUILTINS: Mapping[str, ComponentFactory] = {
    "model_subscriber": ModelSubscriber,
    "counter_source": CounterSource,
    "scale": Scale,
    "sleep": Sleep,
    "fail": Fail,
    "log_sink": LogSink,
    "jsonl_sink": JsonlSink,
}

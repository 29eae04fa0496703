"""Components for the spark engine's tests, run inside the Spark driver (not by pytest).

Made installable through an entry-point dist-info directory on the child's PYTHONPATH (see
``spark_support.plugin_dir``), exactly how a third-party package provides components.  They
use DataFrame operations only, which run in the JVM: no Python worker processes are needed,
so they also run unchanged on a standalone cluster whose executors cannot import this module.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Mapping
from typing import Any

from node.runner import Args, Component, Context


def _session() -> Any:
    from pyspark.sql import SparkSession

    return SparkSession.builder.getOrCreate()


class SparkSum(Component):
    """Sums ``0..count-1`` in a Spark job over ``partitions`` partitions and prints
    ``<prefix><sum>``; streaming: once every ``interval_s`` until stopped (or ``times`` runs).
    ``echo_conf`` names a Spark property to print as ``conf <key>=<value>``."""

    output_ports = ("out",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.count = args.get_int("count", 100, min=0)
        self.partitions = args.get_int("partitions", 2, min=1)
        self.prefix = args.get_str("prefix", "sum ")
        self.interval_s = args.get_float("interval_s", 1.0, min=0.0)
        self.times = args.get_int("times", None, min=1)
        self.echo_conf = args.get_str("echo_conf", None)

    def _once(self) -> int:
        spark = _session()
        if self.echo_conf:
            value = spark.sparkContext.getConf().get(self.echo_conf, "<unset>")
            print(f"conf {self.echo_conf}={value}", flush=True)
        rows = spark.range(0, self.count, 1, self.partitions).selectExpr("sum(id) AS s").collect()
        total = int(rows[0]["s"] or 0)
        print(f"{self.prefix}{total}", flush=True)
        return total

    def run(self, inputs: Mapping[str, Any]) -> int:
        return self._once()

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[int]:
        done = 0
        while not self.ctx.stopping and (self.times is None or done < self.times):
            yield self._once()
            done += 1
            if not self.ctx.sleep(self.interval_s):
                return


class SparkFail(Component):
    """Runs a Spark job whose tasks fail (``raise_error``): the job, its stage and tasks fail
    in Spark, and the exception ends the pipeline."""

    output_ports = ()

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.message = args.get_str("message", "spark task failed on purpose")

    def run(self, inputs: Mapping[str, Any]) -> None:
        spark = _session()
        spark.range(0, 4, 1, 2).selectExpr(f"raise_error('{self.message}') AS x").collect()


class IgnoresTerm(Component):
    """A streaming sink of nothing that ignores SIGTERM (the stop test's stubborn job)."""

    output_ports = ()

    def stream(self, inputs: Mapping[str, Iterator[Any]]) -> Iterator[None]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring SIGTERM", flush=True)
        while True:
            time.sleep(0.02)
            yield None


ENTRY_POINTS = {
    "spark_sum": "SparkSum",
    "spark_fail": "SparkFail",
    "ignores_term": "IgnoresTerm",
}
"""Component type -> class in this module (written into the test dist-info)."""

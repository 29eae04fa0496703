"""``feature_histograms`` for Spark: the drift baseline of a model, in one or two passes.

Edges: quantiles (``approxQuantile``, one pass for all features) or the uniform split of each
feature's range, with ``-inf``/``+inf`` outer edges (``node.health.histograms.finish_edges``).
Counts: one aggregation with a conditional sum per (feature, bin), all in the JVM.  Spark orders
NaN above every number, so NaN (and null) is tested first and counted as missing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812 - the usual Spark spelling

from ion.model.health import HealthReport, Histogram
from node.components.common import str_list
from node.health.histograms import finish_edges
from node.runner.component import Args, ArgsError, Component, Context

from .sources import numeric_columns

QUANTILE_RELATIVE_ERROR = 1e-3  # bins need not be exact, only the same on both sides


def _value(name: str) -> Column:
    return F.col(name).cast("double")


def _invalid(name: str) -> Column:
    return _value(name).isNull() | F.isnan(_value(name))


def spark_edges(
    df: DataFrame, features: Sequence[str], bins: int, method: str
) -> list[tuple[float, ...]]:
    """Baseline edges per feature (``-inf`` and ``+inf`` outside)."""
    if bins == 1:
        return [finish_edges(()) for _ in features]
    if method == "quantile":
        probs = [i / bins for i in range(1, bins)]
        # approxQuantile leaves out null and NaN.
        quantiles = df.approxQuantile(list(features), probs, QUANTILE_RELATIVE_ERROR)
        return [finish_edges(q) for q in quantiles]
    aggs: list[Column] = []
    for name in features:
        valid = F.when(~_invalid(name), _value(name))
        aggs += [F.min(valid).alias(f"lo_{len(aggs)}"), F.max(valid).alias(f"hi_{len(aggs)}")]
    row = df.agg(*aggs).first()
    assert row is not None
    edges = []
    for j in range(len(features)):
        lo, hi = row[2 * j], row[2 * j + 1]
        if lo is None or hi is None or not math.isfinite(lo) or not math.isfinite(hi):
            edges.append(finish_edges(()))
            continue
        step = (hi - lo) / bins
        edges.append(finish_edges(lo + step * i for i in range(1, bins)))
    return edges


def spark_histograms(
    df: DataFrame, features: Sequence[str], edges: Sequence[Sequence[float]]
) -> tuple[tuple[Histogram, ...], int]:
    """Histograms of ``features`` on ``edges`` (one aggregation), and the row count."""
    aggs: list[Column] = [F.count(F.lit(1)).alias("rows")]
    for name, e in zip(features, edges, strict=True):
        bad = _invalid(name)
        x = _value(name)
        for i in range(len(e) - 1):
            lo, hi = e[i], e[i + 1]
            cond = ~bad
            if lo != -math.inf:
                cond = cond & (x >= F.lit(lo))
            if hi != math.inf:
                cond = cond & (x < F.lit(hi))
            aggs.append(F.sum(F.when(cond, 1).otherwise(0)))
        aggs.append(F.sum(F.when(bad, 1).otherwise(0)))
    row = df.agg(*aggs).first()
    assert row is not None
    values = [int(v or 0) for v in row]
    rows, at = values[0], 1
    out = []
    for name, e in zip(features, edges, strict=True):
        bins = len(e) - 1
        counts = tuple(values[at : at + bins])
        missing = values[at + bins]
        at += bins + 1
        out.append(Histogram(name, tuple(float(v) for v in e), counts, missing))
    return tuple(out), rows


class SparkFeatureHistograms(Component):
    input_ports = ("data",)
    output_ports = ("health",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        self.bins = args.get_int("bins", 10, min=1, max=1000)
        self.method = args.get_str("method", "quantile", choices=("quantile", "uniform"))
        self.columns = str_list(args, "columns")

    def run(self, inputs: Mapping[str, Any]) -> HealthReport:
        df: DataFrame = inputs["data"]
        features = list(self.columns) if self.columns is not None else numeric_columns(df)
        unknown = [c for c in features if c not in df.columns]
        if unknown:
            raise ArgsError(f"columns not in the data: {', '.join(unknown)}")
        if not features:
            raise ValueError("the data has no numeric column to summarise")
        edges = spark_edges(df, features, self.bins, self.method)
        histograms, rows = spark_histograms(df, features, edges)
        self.log.info("baseline: %d feature(s), %d row(s)", len(features), rows)
        return HealthReport(
            pipeline=self.ctx.pipeline,
            component=self.ctx.component,
            name="baseline",
            sample_count=rows,
            histograms=histograms,
        )

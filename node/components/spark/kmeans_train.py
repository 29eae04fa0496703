"""``kmeans_train``: Spark MLlib KMeans on standardised features, as a ``kmeans-json/1`` model.

Steps, all in the JVM:

1. Keep the feature columns (``features``, default: every numeric column) as doubles; drop
   rows with a null or NaN feature.
2. Mean and sample standard deviation per feature (one aggregation); a constant feature gets
   std 1 so it neither divides by zero nor matters.
3. KMeans (``k``, ``max_iter``, ``seed``, ``tol``) on the standardised vectors, ``restarts``
   times with seeds ``seed, seed+1, ...``, keeping the fit with the lowest cost: Spark's
   k-means|| initialisation lands in a poor local optimum (two centroids in one cluster, two
   clusters under one centroid) for about one seed in five even on well separated data.
4. Metrics: ``silhouette`` (``ClusteringEvaluator``, squared Euclidean: Spark's default),
   ``training_cost`` (sum of squared distances to the nearest centroid), ``k``, ``rows``.
5. Threshold: the ``threshold_quantile`` of each training row's Euclidean distance to its
   nearest centroid, computed with column expressions (no Python UDF) and ``approxQuantile``.

The model directory ``<work dir>/models/<component>-<time>`` holds ``model.json`` only; the
artifact carries the metrics (for the edge's gates) and a few annotations.
"""

from __future__ import annotations

import functools
import math
import operator
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F  # noqa: N812 - the usual Spark spelling

from node.components.common import str_list
from node.components.kmeans_model import FORMAT, KMeansModel
from node.models.artifact import ModelArtifact
from node.runner.component import Args, ArgsError, Component, Context

from .sources import numeric_columns

VECTOR = "__ion_features"
CLUSTER = "__ion_cluster"
DISTANCE = "__ion_distance"
THRESHOLD_RELATIVE_ERROR = 1e-4  # rank error n * 1e-4: exact for small data, close for big


def nearest_distance(features: Sequence[str], centroids: np.ndarray[Any, Any]) -> Column:
    """Euclidean distance of the (standardised) feature columns to the nearest centroid."""
    per_centroid = [
        functools.reduce(
            operator.add,
            [(F.col(f) - F.lit(float(c[j]))) ** 2 for j, f in enumerate(features)],
        )
        for c in centroids
    ]
    nearest = per_centroid[0] if len(per_centroid) == 1 else F.least(*per_centroid)
    return F.sqrt(nearest)


class KMeansTrain(Component):
    input_ports = ("data",)
    output_ports = ("model",)

    def __init__(self, args: Args, ctx: Context) -> None:
        super().__init__(args, ctx)
        # Silhouette needs two clusters at least.
        self.k = args.get_int("k", min=2, max=10_000)
        self.max_iter = args.get_int("max_iter", 20, min=1)
        self.seed = args.get_int("seed", 1)
        self.tol = args.get_float("tol", 1e-4, min=0.0)
        self.quantile = args.get_float("threshold_quantile", 0.99, min=0.0, max=1.0)
        self.restarts = args.get_int("restarts", 3, min=1, max=100)
        self.features = str_list(args, "features")

    def run(self, inputs: Mapping[str, Any]) -> ModelArtifact:
        df: DataFrame = inputs["data"]
        features = list(self.features) if self.features is not None else numeric_columns(df)
        unknown = [c for c in features if c not in df.columns]
        if unknown:
            raise ArgsError(f"features not in the data: {', '.join(unknown)}")
        if not features:
            raise ValueError("the data has no numeric column to train on")
        started = time.monotonic()
        data = df.select(*[F.col(f).cast("double").alias(f) for f in features]).dropna()

        aggs = [F.count(F.lit(1))]
        for f in features:
            aggs += [F.avg(f), F.stddev_samp(f)]
        row = data.agg(*aggs).first()
        assert row is not None
        rows = int(row[0])
        if rows < self.k:
            raise ValueError(f"{rows} complete row(s) cannot make {self.k} clusters")
        mean = np.array([float(row[1 + 2 * j]) for j in range(len(features))])
        std = np.array([_usable_std(row[2 + 2 * j]) for j in range(len(features))])

        scaled = data.select(
            *[
                ((F.col(f) - float(m)) / float(s)).alias(f)
                for f, m, s in zip(features, mean, std, strict=True)
            ]
        )
        vectors = VectorAssembler(inputCols=features, outputCol=VECTOR).transform(scaled)
        vectors = vectors.cache()  # KMeans iterates over it; the evaluator reads it again
        try:
            fitted, cost = None, math.inf
            for seed in range(self.seed, self.seed + self.restarts):
                kmeans = KMeans(
                    k=self.k,
                    maxIter=self.max_iter,
                    seed=seed,
                    tol=self.tol,
                    featuresCol=VECTOR,
                    predictionCol=CLUSTER,
                )
                candidate = kmeans.fit(vectors)
                candidate_cost = float(candidate.summary.trainingCost)
                self.log.info("kmeans seed %d: cost %.6g", seed, candidate_cost)
                if candidate_cost < cost:
                    fitted, cost = candidate, candidate_cost
            assert fitted is not None
            centroids = np.array([c.tolist() for c in fitted.clusterCenters()], dtype=np.float64)
            silhouette = ClusteringEvaluator(
                featuresCol=VECTOR,
                predictionCol=CLUSTER,
                metricName="silhouette",
                distanceMeasure="squaredEuclidean",
            ).evaluate(fitted.transform(vectors))
            distances = vectors.select(nearest_distance(features, centroids).alias(DISTANCE))
            (threshold,) = distances.approxQuantile(
                DISTANCE, [self.quantile], THRESHOLD_RELATIVE_ERROR
            )
        finally:
            vectors.unpersist()

        model = KMeansModel.of(features, mean, std, centroids, float(threshold))
        directory = self.ctx.work_dir / "models" / f"{self.ctx.component}-{time.time_ns()}"
        model.save(directory.absolute())
        metrics = {
            "silhouette": float(silhouette),
            "training_cost": cost,
            "k": float(model.k),
            "rows": float(rows),
            "threshold": float(threshold),
        }
        self.log.info(
            "kmeans: k=%d on %d rows x %d features in %.1fs: silhouette %.3f, cost %.4g, "
            "threshold %.4g (q=%g)",
            model.k,
            rows,
            len(features),
            time.monotonic() - started,
            silhouette,
            cost,
            threshold,
            self.quantile,
        )
        return ModelArtifact(
            path=directory.absolute(),
            format=FORMAT,
            metrics=metrics,
            annotations={
                "features": ",".join(features),
                "threshold_quantile": f"{self.quantile:g}",
                "seed": str(self.seed),
                "restarts": str(self.restarts),
            },
        )


def _usable_std(value: object) -> float:
    s = float(value) if isinstance(value, int | float) else math.nan
    return s if math.isfinite(s) and s > 0 else 1.0

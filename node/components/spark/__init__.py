"""Spark components (imported only inside Spark jobs: importing this imports pyspark).

The value between Spark components is a ``pyspark.sql.DataFrame``; each component gets the
job's session with ``SparkSession.builder.getOrCreate()``.  ``kmeans_train`` returns a
``ModelArtifact`` (format ``kmeans-json/1``, see ``node.components.kmeans_model``);
``feature_histograms`` returns a ``HealthReport`` named ``baseline``; ``model_publisher`` is
the engine-agnostic one from ``node.components.common``.

Everything runs in the JVM (column expressions, MLlib): no Python UDF, so no Python worker
processes and no pickled rows between the JVM and Python.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.components.common import ModelPublisher
from node.runner.component import ComponentFactory

from .histograms import SparkFeatureHistograms
from .kmeans_train import KMeansTrain
from .sources import SparkCsvSource

BUILTINS: Mapping[str, ComponentFactory] = {
    "csv_source": SparkCsvSource,
    "feature_histograms": SparkFeatureHistograms,
    "kmeans_train": KMeansTrain,
    "model_publisher": ModelPublisher,
}

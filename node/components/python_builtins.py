"""The python-engine components of this package, by type name (for the runner's registry).

``node.runner.registry.Registry(builtins={**BUILTINS, **PYTHON_BUILTINS})`` makes them
available next to the general-purpose ones of ``node.runner.builtin``.
"""

from __future__ import annotations

from collections.abc import Mapping

from node.runner.component import ComponentFactory

from .common import ModelPublisher
from .csv_source import CsvSource
from .health import FeatureHistograms, HealthReporter
from .kmeans import KMeansScore
from .mqtt_source import MqttSource
from .recording import DataSampler, WindowRecorder
from .sinks import EventSink
from .tflite_score import TfliteScore

PYTHON_BUILTINS: Mapping[str, ComponentFactory] = {
    "csv_source": CsvSource,
    "mqtt_source": MqttSource,
    "feature_histograms": FeatureHistograms,
    "kmeans_score": KMeansScore,
    "health_reporter": HealthReporter,
    "model_publisher": ModelPublisher,
    "event_sink": EventSink,
    "tflite_score": TfliteScore,
    "data_sampler": DataSampler,
    "window_recorder": WindowRecorder,
}

"""TensorFlow components: train a Keras autoencoder, convert it to TensorFlow Lite.

- ``BUILTINS``: the components the tensorflow engine adds to the python ones, by type name:
  ``keras_autoencoder_train``, ``tflite_export`` (``training``) and ``tflite_score``
  (``node.components.tflite_score``, which the python engine runs at the edge too).
- ``model_format``: the ``keras-autoencoder/1`` and ``tflite-autoencoder/1`` layouts.
- ``batches``: the data values the components accept.
- ``keras_ops``: the only module here that imports TensorFlow, loaded by ``run``.

``BUILTINS`` is built on first access (PEP 562): the edge scorer imports ``model_format`` from
this package, and building the mapping imports the scorer, so an eager mapping would be an
import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from node.runner.component import ComponentFactory

    BUILTINS: Mapping[str, ComponentFactory]


def __getattr__(name: str) -> object:
    if name == "BUILTINS":
        from node.components.tflite_score import TfliteScore

        from .training import KerasAutoencoderTrain, TfliteExport

        builtins: Mapping[str, ComponentFactory] = {
            "keras_autoencoder_train": KerasAutoencoderTrain,
            "tflite_export": TfliteExport,
            "tflite_score": TfliteScore,
        }
        return builtins
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

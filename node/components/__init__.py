"""Components shipped with the runtime, beyond the small general-purpose ones in
``node.runner.builtin``.

- ``node.components.python_builtins.PYTHON_BUILTINS``: python-engine components (edge
  inference: ``mqtt_source``, ``kmeans_score``, ``health_reporter``, ``event_sink``, ...).
- ``node.components.spark.BUILTINS``: Spark components, imported only inside Spark jobs.
- ``node.components.values``: the values that flow between them (``Batch``, ``ScoredBatch``)
  and the telemetry types they emit.

Importing this package imports nothing heavy: each registry imports its own modules.
"""

"""Engine adapters: each runs pipelines of one kind as child processes it owns completely.

``base`` holds the one interface (``Engine``, ``RunningJob``) and its values; ``process`` the
child-process ownership every adapter shares; ``python_engine`` the plain-Python adapter
(``node.engines.python_engine.PythonEngine``).  Adapters are imported from their own modules,
so that importing the interface (as the pure lifecycle does) starts no asyncio machinery.
Adapters are added by implementing ``Engine`` and passing ``tests/engine_conformance.py``.
"""

from __future__ import annotations

from .base import (
    Engine,
    JobExit,
    JobSpec,
    JobStartError,
    JobStats,
    Outcome,
    RunningJob,
)

__all__ = [
    "Engine",
    "JobExit",
    "JobSpec",
    "JobStartError",
    "JobStats",
    "Outcome",
    "RunningJob",
]

"""Pipelines on this node: the pure lifecycle of each (``lifecycle``).

The agent keeps one ``Lifecycle`` per (ION, pipeline) placed here.  Its shell feeds it the
reconciler's wishes (``DesireRun``/``DesireStop``), operator commands (``Restart``), schedule
or trigger firings (``Trigger``), the engine's reports (``Started``, ``Exited``,
``StartFailed``) and timer ``Tick``s, and carries out the actions it returns: ``StartJob``
(``Engine.start`` with a ``JobSpec``), ``StopJob`` (``RunningJob.stop``), ``ScheduleTimer``
and ``ReportState`` (into the node's status).
"""

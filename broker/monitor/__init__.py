"""The monitoring subscriber: ``ion monitor`` folds everything under ``ion/v1/#`` into SQLite.

- ``schema``: the store's tables (the contract with every reader; see docs/monitor.md);
- ``core``, ``rows``, ``streams``, ``alerts``: the pure fold and alert rules (no I/O, no clock);
- ``store``, ``retention``: SQLite through sqlite-utils, downsampling and dropping old rows;
- ``service``: the asyncio shell (MQTT link, ticks, alert publishing) around
- ``writer``: the child process that decodes, folds and commits (``writer_process`` starts and
  reaps it, ``handover`` is what the two say to each other);
- ``cli``: the ``ion monitor`` command.
"""

"""The python engine's child side: runs one pipeline's components in this process.

Component authors need only this module: ``Component``, ``Args``, ``ArgsError`` and
``Context`` (the contract is documented in ``node.runner.component``).  The engine starts
``python -m node.runner --spec FILE`` (see ``node.runner.spec`` for the file and exit statuses).
"""

from __future__ import annotations

from .component import Args, ArgsError, Component, Context

__all__ = ["Args", "ArgsError", "Component", "Context"]

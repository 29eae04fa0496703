"""Operator commands and the results nodes send back.

Mirrors ``Command`` and ``CommandResult`` in proto/ion/v1/node.proto.  The wire's ``action``
oneof becomes one value of the ``CommandAction`` union, so code that handles a command matches
on the action's type and mypy checks that every kind is handled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from ion.model.definition import Signature


@dataclass(frozen=True, slots=True)
class ModelRef:
    """A model version along a model edge."""

    ion: str
    edge: str
    version: str = ""  # empty: "the previous one" for rollback


@dataclass(frozen=True, slots=True)
class PipelineRef:
    ion: str
    pipeline: str


@dataclass(frozen=True, slots=True)
class ApproveModel:
    ref: ModelRef


@dataclass(frozen=True, slots=True)
class RejectModel:
    ref: ModelRef


@dataclass(frozen=True, slots=True)
class RollbackModel:
    ref: ModelRef


@dataclass(frozen=True, slots=True)
class PromoteModel:
    """Canary policy: activate the version on every consumer now, without waiting for the
    canary's verdict."""

    ref: ModelRef


@dataclass(frozen=True, slots=True)
class RestartPipeline:
    ref: PipelineRef


@dataclass(frozen=True, slots=True)
class RunPipeline:
    """Start a batch pipeline now."""

    ref: PipelineRef


@dataclass(frozen=True, slots=True)
class Ping:
    """Answered with a CommandResult and nothing else; checks the command path end to end."""


CommandAction: TypeAlias = (
    ApproveModel | RejectModel | RollbackModel | PromoteModel | RestartPipeline | RunPipeline | Ping
)


@dataclass(frozen=True, slots=True)
class Command:
    command_id: str
    action: CommandAction
    issued_by: str = ""
    issued_ms: int = 0
    expires_ms: int = 0  # 0: never
    sequence: int = 0  # kept for compatibility, not checked (replays: id + issued_ms)
    # Over the encoding with `signature` cleared; nodes require an operator key's unless in
    # development mode, and refuse ids already run and issue times out of bounds
    # (node/agent/commands.py).
    signature: Signature | None = None
    reason: str = ""

    def expired(self, now_ms: int) -> bool:
        return self.expires_ms != 0 and now_ms >= self.expires_ms


@dataclass(frozen=True, slots=True)
class CommandResult:
    command_id: str
    node_id: str
    ok: bool
    message: str = ""

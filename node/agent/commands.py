"""Operator commands on a node: who may give them, how fresh they must be, and running them.

A ``Command`` arrives on the node's command topic or on an ION's.  ``CommandGate.admit``
decides, in this order, and the first check that fails is the refusal (a ``CommandResult``
that is not ok and a ``command.refused`` event; nothing is done):

1. **signature**: signed by a key trusted as ``operator`` (``unsigned``, ``bad signature``,
   ``untrusted key``); unsigned ones pass only in development mode.  Checked first, so junk
   can neither run nor fill the replay window.
2. **id**: a command without an id cannot be told apart from its replay (``invalid``).
3. **lifetime**: past its own ``expires_ms`` (``expired``); issued longer ago than
   ``trust.command_max_age`` (``stale``), or further ahead of this node's clock than
   ``trust.clock_skew`` (``from the future``).  A signed command must carry its issue time.
4. **replay**: an id already run here (``replay``), or issued no later than the oldest
   command the window had to forget (``stale``).

Why ids and issue times rather than the per-issuer ``sequence`` of the wire: an operator's
commands come from one-shot CLI runs, on several machines that may share a key, which keep
no counter between them; an issue time bounded by the node's clock plus a remembered window
of ids refuses every replay without any state on the operator's side.

The window (ids with their issue times) is written to ``<data_dir>/commands.json`` *before*
the command runs: a restart does not reopen replays, and a crash between writing and running
loses the command rather than running it twice (the operator, seeing no result, sends a new
one).  Ids older than the age bound are dropped (their replays are stale anyway); past
``trust.command_window`` ids the oldest are dropped and the floor rises to their issue time.

Model commands (approve, reject, promote, rollback) pass the same gate here and are then
decided by the model exchange; the retained per-version decisions on the model topics are
not commands in this sense (the broker hands them out again after every subscribe) and are
checked there (``node.models.rollout_driver``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, assert_never

from ion.errors import DecodeError
from ion.model.command import (
    ApproveModel,
    Command,
    CommandAction,
    Ping,
    PromoteModel,
    RejectModel,
    RestartPipeline,
    RollbackModel,
    RunPipeline,
)
from ion.security.trust import TrustConfig
from node.files import write_atomically

log = logging.getLogger(__name__)

WINDOW_FILE = "commands.json"
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Admission:
    """What the gate decided.  ``reason`` starts with the refusal's name (``unsigned``,
    ``bad signature``, ``untrusted key``, ``invalid``, ``expired``, ``stale``, ``from the
    future``, ``replay``) so results and events can be matched on it."""

    accepted: bool
    reason: str
    signer: str = ""  # the trusted key that signed it ("" when unsigned, development mode)

    @property
    def kind(self) -> str:
        """The refusal's name (``replay``, ``stale`` ...); "" when accepted."""
        if self.accepted:
            return ""
        return self.reason.split(":", 1)[0]


def action_name(action: CommandAction) -> str:
    return {
        Ping: "ping",
        RestartPipeline: "restart",
        RunPipeline: "run",
        ApproveModel: "approve",
        RejectModel: "reject",
        PromoteModel: "promote",
        RollbackModel: "rollback",
    }[type(action)]


def _age(ms: int) -> str:
    return f"{ms / 1000:.1f}s"


@dataclass(slots=True)
class ReplayWindow:
    """The command ids run here, with their issue times (pure; see the module docstring)."""

    seen: dict[str, int] = field(default_factory=dict)
    floor_ms: int = 0  # commands issued at or before this are refused: their ids are forgotten

    def refusal(self, command_id: str, issued_ms: int) -> str:
        if command_id in self.seen:
            return "replay: this command id was already run here"
        if issued_ms <= self.floor_ms:
            return (
                f"stale: issued at {issued_ms}, not after the oldest command this node "
                f"still remembers ({self.floor_ms})"
            )
        return ""

    def record(
        self, command_id: str, issued_ms: int, *, now_ms: int, horizon_ms: int, size: int
    ) -> None:
        """Remember ``command_id``; forget what no longer needs remembering."""
        self.seen[command_id] = issued_ms
        # Ids issued before the horizon are refused as stale whatever the window says.
        old = [i for i, t in self.seen.items() if t < now_ms - horizon_ms]
        for i in old:
            del self.seen[i]
        if len(self.seen) > size:
            by_age = sorted(self.seen.items(), key=lambda it: (it[1], it[0]))
            for i, t in by_age[: len(self.seen) - size]:
                del self.seen[i]
                self.floor_ms = max(self.floor_ms, t)

    def to_json(self) -> dict[str, Any]:
        return {"format": _FORMAT, "floor_ms": self.floor_ms, "seen": self.seen}

    @classmethod
    def from_json(cls, data: Any) -> ReplayWindow:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise DecodeError("not a command window file")
        floor = data.get("floor_ms")
        seen = data.get("seen")
        if not isinstance(floor, int) or not isinstance(seen, dict):
            raise DecodeError("malformed command window file")
        if not all(isinstance(k, str) and isinstance(v, int) for k, v in seen.items()):
            raise DecodeError("malformed command window entries")
        return cls(seen=dict(seen), floor_ms=floor)


def decide(cmd: Command, trust: TrustConfig, window: ReplayWindow, now_ms: int) -> Admission:
    """Whether to run ``cmd`` now (pure: records nothing)."""
    verdict = trust.check(cmd)
    if not verdict.accepted:
        return Admission(False, verdict.reason)
    signer = verdict.signer.describe() if verdict.signer is not None else ""
    if not cmd.command_id:
        return Admission(False, "invalid: the command has no id", signer)
    if cmd.expired(now_ms):
        late = _age(now_ms - cmd.expires_ms)
        return Admission(False, f"expired: {late} ago (expires_ms {cmd.expires_ms})", signer)
    issued = cmd.issued_ms
    if issued == 0 and verdict.unsigned:
        issued = now_ms  # development mode: an unsigned command may omit its time
    elif issued == 0:
        return Admission(False, "stale: a signed command must carry its issue time", signer)
    elif now_ms - issued > trust.command_max_age_ms:
        return Admission(
            False,
            f"stale: issued {_age(now_ms - issued)} ago "
            f"(commands are valid for {_age(trust.command_max_age_ms)})",
            signer,
        )
    elif issued - now_ms > trust.clock_skew_ms:
        return Admission(
            False,
            f"from the future: issued {_age(issued - now_ms)} ahead of this node's clock "
            f"(allowed skew {_age(trust.clock_skew_ms)})",
            signer,
        )
    replayed = window.refusal(cmd.command_id, issued)
    if replayed:
        return Admission(False, replayed, signer)
    return Admission(True, verdict.detail, signer)


class CommandGate:
    """The persisted replay window and the checks of ``decide`` for one node."""

    def __init__(self, path: Path, trust: TrustConfig, *, now_ms: int) -> None:
        self.path = path
        self.trust = trust
        self.refused: Counter[str] = Counter()  # by refusal name
        self.window = self._load(now_ms)

    @classmethod
    def open(cls, data_dir: Path, trust: TrustConfig, *, now_ms: int) -> CommandGate:
        return cls(data_dir / WINDOW_FILE, trust, now_ms=now_ms)

    def _load(self, now_ms: int) -> ReplayWindow:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return ReplayWindow()
        except OSError as exc:
            log.warning("cannot read %s (%s): refusing commands issued before now", self.path, exc)
            return ReplayWindow(floor_ms=now_ms)
        try:
            return ReplayWindow.from_json(json.loads(text))
        except (ValueError, DecodeError) as exc:
            # Never reopen replays: what the lost window held was issued before now.
            log.warning("%s is unreadable (%s): refusing commands issued before now", self.path,
                        exc)  # fmt: skip
            return ReplayWindow(floor_ms=now_ms)

    def admit(self, cmd: Command, now_ms: int) -> Admission:
        """Decide; an accepted command's id is on disk when this returns."""
        admission = decide(cmd, self.trust, self.window, now_ms)
        if not admission.accepted:
            self.refused[admission.kind] += 1
            return admission
        self.window.record(
            cmd.command_id,
            cmd.issued_ms or now_ms,
            now_ms=now_ms,
            horizon_ms=self.trust.command_max_age_ms + self.trust.clock_skew_ms,
            size=self.trust.command_window,
        )
        self._save()
        return admission

    def _save(self) -> None:
        # Written whole (small: at most ``command_window`` ids) and atomically.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(
            self.path, json.dumps(self.window.to_json(), separators=(",", ":")).encode()
        )


class PipelineControl(Protocol):
    def restart(self, key: tuple[str, str]) -> bool: ...
    def trigger(self, key: tuple[str, str]) -> bool: ...


def run_here(cmd: Command, pipelines: PipelineControl) -> tuple[bool, str] | None:
    """Carry out an admitted pipeline command or ping: (ok, message).  None for a model
    command, which the model exchange decides (and answers when done)."""
    action = cmd.action
    match action:
        case Ping():
            return True, "pong"
        case RestartPipeline(ref=ref):
            ok = pipelines.restart((ref.ion, ref.pipeline))
            return ok, "restarting" if ok else f"{ref.ion}/{ref.pipeline} is not here"
        case RunPipeline(ref=ref):
            ok = pipelines.trigger((ref.ion, ref.pipeline))
            return ok, "started" if ok else f"{ref.ion}/{ref.pipeline} is not here"
        case ApproveModel() | RejectModel() | PromoteModel() | RollbackModel():
            return None
        case _:
            assert_never(action)


def refusal_event_text(cmd: Command, issuer: str, admission: Admission) -> str:
    """The message of a ``command.refused`` event: which command, from whom, and why."""
    by = f"{issuer or '?'}" + (f", signed by {admission.signer}" if admission.signer else "")
    what = f"command {cmd.command_id[:40]!r} ({action_name(cmd.action)})"
    return f"{what} from {by}: {admission.reason}"

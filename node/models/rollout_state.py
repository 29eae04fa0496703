"""What a node remembers about the rollout of each model edge it consumes, across restarts.

One small JSON file per edge (``<root>/<ion>/<edge>.json``, replaced atomically):

- ``rulings``: the operators' latest decision per version label (approve, reject, promote,
  rollback target), with who, why, when and the command id.  Decisions arrive as retained
  messages that the receiver's duplicate window drops once seen, so the node must keep their
  effect itself: a restarted agent still knows that version 7 was approved.
- ``canary``: per version label, each canary node's verdict (passed or failed).
- ``pending``: model ids held until an approval or a canary verdict, with why.
- ``refused``: model ids a gate refused, with why (an approval can still activate them).
- ``watch``: this node's own canary trial in progress (survives a restart: the hold goes on).

Bounded: the newest ``MAX_RULINGS`` rulings and ``MAX_CANARY_VERSIONS`` versions of canary
verdicts are kept.  An unreadable file starts the edge afresh (logged): the retained decisions
are published again to a fresh subscription, so little is lost.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from node.files import write_atomically

from .policy import CanaryWatch, Ruling, Verdict, label_key

log = logging.getLogger(__name__)

FORMAT = 1
MAX_RULINGS = 64
MAX_CANARY_VERSIONS = 16


@dataclass(slots=True)
class EdgeRollout:
    rulings: dict[str, Ruling] = field(default_factory=dict)
    canary: dict[str, dict[str, Ruling]] = field(default_factory=dict)  # version -> node ->
    pending: dict[str, str] = field(default_factory=dict)  # model id -> why
    refused: dict[str, str] = field(default_factory=dict)  # model id -> why (a gate)
    watch: CanaryWatch | None = None

    def trim(self) -> None:
        for table, limit in ((self.rulings, MAX_RULINGS), (self.canary, MAX_CANARY_VERSIONS)):
            if len(table) > limit:
                for version in sorted(table, key=label_key)[: len(table) - limit]:
                    del table[version]


class RolloutBook:
    """The ``EdgeRollout`` of every consumed edge, loaded on first use, saved on ``save``."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._edges: dict[tuple[str, str], EdgeRollout] = {}

    def get(self, ion: str, edge: str) -> EdgeRollout:
        state = self._edges.get((ion, edge))
        if state is None:
            state = self._edges[(ion, edge)] = _load(self._path(ion, edge))
        return state

    def save(self, ion: str, edge: str) -> None:
        state = self.get(ion, edge)
        state.trim()
        path = self._path(ion, edge)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, json.dumps(_dump(state), indent=1, sort_keys=True).encode())

    def _path(self, ion: str, edge: str) -> Path:
        # The exchange only asks for edges of active definitions: safe names by their pattern.
        return self._root / ion / f"{edge}.json"


def _dump(s: EdgeRollout) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "rulings": {v: _ruling_out(r) for v, r in s.rulings.items()},
        "canary": {v: {n: _ruling_out(r) for n, r in by.items()} for v, by in s.canary.items()},
        "pending": s.pending,
        "refused": s.refused,
        "watch": asdict(s.watch) if s.watch is not None else None,
    }


def _ruling_out(r: Ruling) -> dict[str, Any]:
    return {**asdict(r), "verdict": r.verdict.value}


def _load(path: Path) -> EdgeRollout:
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return EdgeRollout()
    except (OSError, ValueError) as exc:
        log.warning("rollout state %s unreadable (%s): starting afresh", path, exc)
        return EdgeRollout()
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        log.warning("rollout state %s has an unknown format: starting afresh", path)
        return EdgeRollout()
    try:
        watch = data.get("watch")
        return EdgeRollout(
            rulings={str(v): _ruling_in(r) for v, r in dict(data.get("rulings", {})).items()},
            canary={
                str(v): {str(n): _ruling_in(r) for n, r in dict(by).items()}
                for v, by in dict(data.get("canary", {})).items()
            },
            pending={str(k): str(v) for k, v in dict(data.get("pending", {})).items()},
            refused={str(k): str(v) for k, v in dict(data.get("refused", {})).items()},
            watch=CanaryWatch(**watch) if isinstance(watch, dict) else None,
        )
    except (TypeError, ValueError, KeyError) as exc:
        log.warning("rollout state %s unreadable (%s): starting afresh", path, exc)
        return EdgeRollout()


def _ruling_in(data: Any) -> Ruling:
    if not isinstance(data, dict):
        raise TypeError("a ruling is a mapping")
    return Ruling(
        verdict=Verdict(data["verdict"]),
        by=str(data.get("by", "")),
        reason=str(data.get("reason", "")),
        at_ms=int(data.get("at_ms", 0)),
        command_id=str(data.get("command_id", "")),
    )

"""The ION definitions a node holds, kept on disk so a restart neither forgets nor goes back.

Two things depend on it:

- **No roll-back by replay.**  The definition book refuses a version lower than the one held,
  but only for as long as it remembers; a node restarted while an attacker (or a stale
  retained message on another broker) offers an older signed version would take it.  The
  book is restored from here before the first message arrives.
- **Offline restart.**  A gateway or edge node that restarts while its broker is unreachable
  runs the pipelines of the definitions it last held, instead of nothing until the link
  returns.

Each item is stored as its wire encoding (signature included) in ``<dir>/<ion>.pb``, written
atomically (``node.files.write_atomically``).  On load every item goes through the same trust
check as one from the network: a file edited on disk is refused like a forged message.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ion.errors import DecodeError
from ion.model.definition import IonDefinition, IonDeleted
from ion.model.messages import new_envelope
from ion.wire.codec import decode, encode
from node.files import write_atomically

log = logging.getLogger(__name__)

Held = IonDefinition | IonDeleted


class HeldDefinitions:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def save(self, item: Held, *, node_id: str, now_ms: int) -> None:
        """Keep ``item`` as the one held for its ION (an error is logged, never raised: the
        node keeps working on what it holds in memory)."""
        payload = encode(new_envelope(item, source_node=node_id, now_ms=now_ms))
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            write_atomically(self.directory / f"{item.name}.pb", payload)
        except OSError as exc:
            log.error(  # noqa: TRY400 - the reason is the message; no traceback needed
                "could not keep ION %s version %d on disk: %s", item.name, item.version, exc
            )

    def load(self) -> list[Held]:
        """Every item kept; unreadable files are logged and skipped."""
        if not self.directory.is_dir():
            return []
        out: list[Held] = []
        for path in sorted(self.directory.glob("*.pb")):
            try:
                body = decode(path.read_bytes()).body
            except (OSError, DecodeError) as exc:
                log.warning("ignoring the held definition %s: %s", path.name, exc)
                continue
            if not isinstance(body, IonDefinition | IonDeleted) or f"{body.name}.pb" != path.name:
                log.warning("ignoring the held definition %s: not a definition of that ION", path)
                continue
            out.append(body)
        return out

"""The dashboard's one frozen config value (see ``docs/dashboard.md``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ion.config.broker import BrokerConfig


@dataclass(frozen=True)
class DashboardSettings:
    """Where the store is, where to listen, and what operator actions need.

    ``port`` 0 picks a free port.  Without ``token`` the approve/reject/rollback buttons are
    disabled (and say why); without ``broker`` there is nowhere to publish them.
    ``signing_key`` is a private key file: decisions are signed with it like the CLI's
    ``--key``; without it they are published unsigned (development mode nodes only).
    """

    db_path: Path
    host: str = "127.0.0.1"
    port: int = 8321
    token: str | None = None
    broker: BrokerConfig | None = None
    signing_key: Path | None = None

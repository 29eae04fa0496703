"""Write a ``DeployPlan`` to an output directory: files, the CA, certificates, passwords.

The only part of ``ion deploy`` with side effects: keys and passwords are random, and an
earlier run's certificates and passwords are kept when still right (see ``pki``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import secrets as random_secrets
from dataclasses import dataclass
from pathlib import Path

from ion.errors import ConfigError

from .pki import CertificateAuthority, issue_or_keep, write_secret
from .plan import DeployPlan

log = logging.getLogger(__name__)

MARKER = ".ion-deploy"
# Mosquitto 2.0's password hash: PBKDF2-SHA512, 101 rounds (what mosquitto_passwd writes).
_PBKDF2_ROUNDS = 101
_BUNDLE_KINDS = frozenset({"nodes", "brokers", "operators", "monitors", "devices"})


@dataclass(frozen=True, slots=True)
class WriteResult:
    out: Path
    ca_dir: Path
    ca_created: bool
    files: int
    issued: tuple[str, ...]  # "<bundle>/<stem>"
    reused: tuple[str, ...]
    stale: tuple[str, ...]  # bundles of an earlier run the plan no longer has


def write_plan(
    plan: DeployPlan,
    out: Path,
    *,
    ca_dir: Path | None = None,
    now: dt.datetime,
    force: bool = False,
) -> WriteResult:
    """Write every bundle under ``out``.  ``force``: write into a directory not made by
    ``ion deploy``, and issue every certificate and password anew (the CA is kept)."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists() and not force:
        raise ConfigError(
            f"{out} is not empty and was not written by ion deploy; use --force to write there"
        )
    ca_dir = (ca_dir or out / "ca").resolve()
    ca, created = CertificateAuthority.load_or_create(ca_dir, now=now)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by ion deploy; the bundles below are regenerated\n")
    bundles = {"/".join(p.split("/")[:2]) for p in plan.files if p.count("/") >= 2}
    stale = tuple(
        sorted(
            f"{kind.name}/{d.name}"
            for kind in out.iterdir()
            if kind.is_dir() and kind.name in _BUNDLE_KINDS
            for d in kind.iterdir()
            if f"{kind.name}/{d.name}" not in bundles
        )
    )
    for rel, text in plan.files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for bundle in plan.ca_copies:
        (out / bundle).mkdir(parents=True, exist_ok=True)
        (out / bundle / "ca.crt").write_bytes(ca.cert_pem)
    issued: list[str] = []
    reused: list[str] = []
    for req in plan.certs:
        cert_file = out / req.bundle / f"{req.stem}.crt"
        key_file = out / req.bundle / f"{req.stem}.key"
        got = issue_or_keep(
            ca, cert_file, key_file, req.common_name, now=now,
            server_names=req.server_names, force=force,
        )  # fmt: skip
        (reused if got.reused else issued).append(f"{req.bundle}/{req.stem}")
        cert_file.write_bytes(got.cert_pem)
        write_secret(key_file, got.key_pem)
    _write_passwords(plan, out, force=force)
    for rel in plan.directories:
        (out / rel).mkdir(parents=True, exist_ok=True)
    return WriteResult(out, ca_dir, created, len(plan.files), tuple(issued), tuple(reused), stale)


def _write_passwords(plan: DeployPlan, out: Path, *, force: bool) -> None:
    if not plan.passwords:
        return
    password_of: dict[str, str] = {}
    for rel in sorted(plan.secrets):
        path = out / rel
        identity = rel.split("/")[1]
        old = path.read_text().strip() if path.exists() and not force else ""
        password_of[identity] = old or random_secrets.token_urlsafe(24)
        write_secret(path, (password_of[identity] + "\n").encode())
    for bundle, identities in plan.passwords.items():
        lines = [f"{i}:{hash_password(password_of[i])}" for i in identities if i in password_of]
        write_secret(out / bundle / "passwd", ("\n".join(lines) + "\n").encode())


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A ``mosquitto_passwd`` line's hash part for ``password``."""
    salt = salt if salt is not None else random_secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ROUNDS)
    b64 = base64.b64encode
    return f"$7${_PBKDF2_ROUNDS}${b64(salt).decode()}${b64(digest).decode()}"

"""Signing and verifying ION definitions, tombstones, model manifests and commands (pure).

What is signed: the message's deterministic protobuf encoding with its ``signature`` field
cleared (every other field, the apply stamp and version included), hashed with SHA-256, and
bound to its message type, the key id and the signing time::

    b"ion-signature-v1\\n" + type name + b"\\n" + key id + b"\\n" + signed_ms + b"\\n" + digest

The type name keeps a signature on one kind of message from passing as another; the key id
and time are covered so nobody can re-label a signature.

Verification encodes the *decoded domain value* again and checks the signature over that, so
what is verified is exactly what the node then acts on (the domain values round-trip the
wire losslessly; a field this version does not know is dropped by decoding and makes the
signature fail, never silently accepted).
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, replace
from typing import TypeVar

from google.protobuf.message import Message

from ion.model.command import Command
from ion.model.definition import IonDefinition, IonDeleted, Signature
from ion.model.manifest import ModelManifest
from ion.wire.convert_model import model_manifest_to_proto
from ion.wire.convert_node import command_to_proto
from ion.wire.definition import definition_to_proto, deleted_to_proto

from .keyring import Keyring, Role, TrustedKey
from .keys import ALGORITHM, SigningKey

Signable = IonDefinition | IonDeleted | ModelManifest | Command
S = TypeVar("S", bound=Signable)

_CONTEXT = b"ion-signature-v1\n"


def _wire(msg: Signable) -> Message:
    if isinstance(msg, IonDefinition):
        return definition_to_proto(msg)
    if isinstance(msg, IonDeleted):
        return deleted_to_proto(msg)
    if isinstance(msg, ModelManifest):
        return model_manifest_to_proto(msg)
    return command_to_proto(msg)


def required_role(msg: Signable) -> Role:
    """Who may sign ``msg``: producers sign manifests, operators everything else."""
    return Role.PRODUCER if isinstance(msg, ModelManifest) else Role.OPERATOR


def canonical_bytes(msg: Signable) -> bytes:
    """The deterministic encoding of ``msg`` with its signature cleared."""
    return _canonical(_wire(msg))


def _canonical(m: Message) -> bytes:
    m.ClearField("signature")
    return m.SerializeToString(deterministic=True)


def signed_payload(msg: Signable, *, key_id: str, signed_ms: int) -> bytes:
    """The bytes an Ed25519 signature of ``msg`` covers (see the module docstring)."""
    m = _wire(msg)
    head = f"{m.DESCRIPTOR.full_name}\n{key_id}\n{signed_ms}\n".encode()
    return _CONTEXT + head + hashlib.sha256(_canonical(m)).digest()


def sign(msg: S, key: SigningKey, *, now_ms: int) -> S:
    """``msg`` with a signature by ``key`` (any earlier signature replaced)."""
    payload = signed_payload(msg, key_id=key.key_id, signed_ms=now_ms)
    signature = Signature(
        key_id=key.key_id, algorithm=ALGORITHM, value=key.sign(payload), signed_ms=now_ms
    )
    return replace(msg, signature=signature)


class Refusal(enum.Enum):
    UNSIGNED = "unsigned"
    BAD_SIGNATURE = "bad signature"
    UNTRUSTED_KEY = "untrusted key"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether to act on a message.  ``reason`` starts with the refusal's name
    (``unsigned``, ``bad signature``, ``untrusted key``), so events can be matched on it."""

    accepted: bool
    refusal: Refusal | None = None
    detail: str = ""
    signer: TrustedKey | None = None

    @property
    def unsigned(self) -> bool:
        """Accepted without a signature (development mode)."""
        return self.accepted and self.signer is None

    @property
    def reason(self) -> str:
        if self.refusal is None:
            return self.detail
        return f"{self.refusal.value}: {self.detail}" if self.detail else self.refusal.value

    def __str__(self) -> str:
        return self.reason


def verify(
    msg: Signable, keyring: Keyring, *, development_mode: bool = False, role: Role | None = None
) -> Verdict:
    """Is ``msg`` signed by a key ``keyring`` trusts for ``role`` (by default the role its
    kind needs)?  In development mode an unsigned message is accepted, but a signature that
    is there must still check out: a bad or unknown signature is never waved through."""
    need = role or required_role(msg)
    sig = msg.signature
    if sig is None:
        if development_mode:
            return Verdict(True, detail="unsigned, accepted in development mode")
        detail = f"no signature (this node requires one by a trusted {need.value} key"
        detail += "; it trusts none yet)" if not len(keyring) else ")"
        return Verdict(False, Refusal.UNSIGNED, detail)
    if sig.algorithm != ALGORITHM:
        return Verdict(False, Refusal.BAD_SIGNATURE, f"algorithm {sig.algorithm[:40]!r}")
    trusted = keyring.get(sig.key_id)
    if trusted is None:
        return Verdict(
            False, Refusal.UNTRUSTED_KEY, f"key {sig.key_id[:40]!r} is not among the trusted keys"
        )
    if need not in trusted.roles:
        return Verdict(
            False,
            Refusal.UNTRUSTED_KEY,
            f"key {trusted.describe()} is not trusted as {need.value}",
            trusted,
        )
    payload = signed_payload(msg, key_id=sig.key_id, signed_ms=sig.signed_ms)
    if not trusted.key.verify(sig.value, payload):
        return Verdict(
            False,
            Refusal.BAD_SIGNATURE,
            f"the content does not match the signature of {trusted.describe()}",
            trusted,
        )
    return Verdict(True, detail=f"signed by {trusted.describe()}", signer=trusted)

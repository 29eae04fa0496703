"""Ed25519 key pairs: the values, their text forms and their key ids.

A public key travels as one line of text, ``ed25519:<base64 of the 32 raw bytes>``, easy to
paste into a node config.  Its key id is the first 16 hex digits of the SHA-256 of the raw
bytes: short enough to read in an event, and only a hint for finding the key; verification
always uses the whole key, so a colliding id can never make a forged signature pass.

A private key is stored as unencrypted PKCS#8 PEM (what ``openssl`` and every library reads);
protecting it is the file's mode (0600, see ``ion.security.keystore``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ion.errors import InputError

# ``cryptography`` is imported where a key is used, not here: a node agent parses its trusted
# keys at start-up but verifies only when something signed arrives, and an idle gateway should
# not carry the library's memory.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

ALGORITHM = "ed25519"
KEY_ID_LENGTH = 16
KEY_ID_PATTERN = re.compile(rf"^[0-9a-f]{{{KEY_ID_LENGTH}}}$")
_PREFIX = f"{ALGORITHM}:"
_RAW_BYTES = 32


def key_id_of(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:KEY_ID_LENGTH]


@dataclass(frozen=True, slots=True)
class PublicKey:
    """An Ed25519 public key (the 32 raw bytes)."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != _RAW_BYTES:
            raise InputError(f"an Ed25519 public key has 32 bytes, not {len(self.raw)}")

    @property
    def key_id(self) -> str:
        return key_id_of(self.raw)

    def text(self) -> str:
        """``ed25519:<base64>``."""
        return _PREFIX + base64.b64encode(self.raw).decode("ascii")

    def verify(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def __str__(self) -> str:
        return self.text()


def parse_public_key(text: str) -> PublicKey:
    """``ed25519:<base64>`` to a ``PublicKey``; ``InputError`` for anything else."""
    value = text.strip()
    if not value.startswith(_PREFIX):
        raise InputError(f"a public key looks like 'ed25519:<base64>', not {value[:40]!r}")
    try:
        raw = base64.b64decode(value[len(_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise InputError(f"public key {value[:60]!r}: not valid base64") from None
    return PublicKey(raw)


class SigningKey:
    """An Ed25519 private key.  Its ``repr`` never shows key material."""

    __slots__ = ("_key", "public")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        from cryptography.hazmat.primitives import serialization

        self._key = key
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(raw)

    @classmethod
    def generate(cls) -> SigningKey:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes, *, where: str = "private key") -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            # TypeError: the PEM is encrypted; ValueError: not a key at all.
            raise InputError(f"{where}: not an unencrypted PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InputError(f"{where}: an {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def to_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"

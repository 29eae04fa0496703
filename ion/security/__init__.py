"""Keys and signatures: who may tell nodes what to run, and who may hand them models.

Pure apart from reading and writing key files: no sockets, no asyncio.  ``keys`` holds the
Ed25519 values, ``keyring`` the trusted keys and their roles, ``keystore`` key files,
``signing`` what is signed and how it is checked, ``trust`` a node's ``trust:`` settings.
"""

from __future__ import annotations

from .keyring import Keyring, Role, TrustedKey, load_keyring, parse_trusted_line
from .keys import ALGORITHM, PublicKey, SigningKey, parse_public_key
from .keystore import KeyStore, StoredKey, default_keys_dir, load_signing_key, read_signing_key
from .signing import (
    Refusal,
    Signable,
    Verdict,
    canonical_bytes,
    required_role,
    sign,
    signed_payload,
    verify,
)
from .trust import TrustConfig, trust_from_mapping

__all__ = [
    "ALGORITHM",
    "KeyStore",
    "Keyring",
    "PublicKey",
    "Refusal",
    "Role",
    "Signable",
    "SigningKey",
    "StoredKey",
    "TrustConfig",
    "TrustedKey",
    "Verdict",
    "canonical_bytes",
    "default_keys_dir",
    "load_keyring",
    "load_signing_key",
    "parse_public_key",
    "parse_trusted_line",
    "read_signing_key",
    "required_role",
    "sign",
    "signed_payload",
    "trust_from_mapping",
    "verify",
]

"""Trusted public keys and what each is trusted for.

A trusted key is one line, like an SSH ``authorized_keys`` entry::

    ed25519:<base64> operator,producer alice

the key, then the roles it is trusted for (comma-separated), then a free-text name shown in
events and logs.  ``operator`` keys sign ION definitions, tombstones and commands; ``producer``
keys sign model manifests.  A key trusted for one role is refused for the other, so a leaked
producer key on an edge node cannot publish an ION that tells the fleet what to run.

``ion keys show`` prints exactly this line.  The roles in it are what the key's owner asked
for; the node's operator decides by pasting (or editing) it into the node's ``trust.keys``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ion.errors import ConfigError, InputError

from .keys import PublicKey, parse_public_key


class Role(enum.Enum):
    OPERATOR = "operator"  # ION definitions, tombstones, commands
    PRODUCER = "producer"  # model manifests


ROLE_NAMES = tuple(r.value for r in Role)


def parse_roles(text: str) -> frozenset[Role]:
    """``operator,producer`` to roles; ``InputError`` names an unknown one."""
    roles = set()
    for part in text.split(","):
        name = part.strip()
        try:
            roles.add(Role(name))
        except ValueError:
            raise InputError(
                f"unknown key role {name!r} (roles: {', '.join(ROLE_NAMES)})"
            ) from None
    return frozenset(roles)


def format_roles(roles: Iterable[Role]) -> str:
    return ",".join(r.value for r in Role if r in set(roles))


@dataclass(frozen=True, slots=True)
class TrustedKey:
    key: PublicKey
    roles: frozenset[Role]
    name: str = ""

    @property
    def key_id(self) -> str:
        return self.key.key_id

    def line(self) -> str:
        """The one-line form (see the module docstring)."""
        return " ".join(p for p in (self.key.text(), format_roles(self.roles), self.name) if p)

    def describe(self) -> str:
        """``alice (3f2a...)`` for events and logs."""
        return f"{self.name} ({self.key_id})" if self.name else self.key_id


def _looks_like_roles(token: str) -> bool:
    return all(part in ROLE_NAMES for part in token.split(","))


def parse_trusted_line(line: str) -> TrustedKey:
    """One trusted-key line; ``InputError`` when malformed or when it names no role."""
    tokens = line.split()
    if not tokens:
        raise InputError("an empty trusted-key line")
    key = parse_public_key(tokens[0])
    rest = tokens[1:]
    roles: frozenset[Role] = frozenset()
    if rest and _looks_like_roles(rest[0]):
        roles = parse_roles(rest.pop(0))
    if not roles:
        raise InputError(
            f"trusted key {key.key_id}: say what it is trusted for, e.g. "
            f"'{key.text()} operator' (roles: {', '.join(ROLE_NAMES)})"
        )
    return TrustedKey(key=key, roles=roles, name=" ".join(rest))


def read_trusted_lines(text: str) -> Iterator[str]:
    """The key lines of a keys file: blank lines and ``#`` comments skipped."""
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            yield line


@dataclass(frozen=True, slots=True)
class Keyring:
    """Trusted keys by key id."""

    keys: Mapping[str, TrustedKey] = field(default_factory=dict)

    def get(self, key_id: str) -> TrustedKey | None:
        return self.keys.get(key_id)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def of(cls, trusted: Iterable[TrustedKey]) -> Keyring:
        """A keyring of ``trusted``; the same key twice gets the union of its roles."""
        keys: dict[str, TrustedKey] = {}
        for t in trusted:
            held = keys.get(t.key_id)
            if held is None:
                keys[t.key_id] = t
            elif held.key != t.key:  # 64-bit ids: only a deliberate collision gets here
                raise InputError(f"two different keys share the key id {t.key_id}")
            else:
                keys[t.key_id] = TrustedKey(t.key, held.roles | t.roles, held.name or t.name)
        return cls(keys)


def load_keyring(entries: Iterable[str], *, base_dir: Path | None = None, where: str) -> Keyring:
    """A keyring from config entries: each a key line, or the path of a file of key lines
    (relative paths from ``base_dir``).  Problems are ``ConfigError``s naming ``where``."""
    trusted: list[TrustedKey] = []
    for n, entry in enumerate(entries):
        text = str(entry).strip()
        try:
            if text.startswith("ed25519:"):
                trusted.append(parse_trusted_line(text))
                continue
            path = Path(text).expanduser()
            if not path.is_absolute() and base_dir is not None:
                path = base_dir / path
            try:
                content = path.read_text()
            except OSError as exc:
                raise InputError(
                    f"{text!r} is neither a key line ('ed25519:...') nor a readable file "
                    f"({exc.strerror or exc})"
                ) from None
            for line in read_trusted_lines(content):
                try:
                    trusted.append(parse_trusted_line(line))
                except InputError as exc:
                    raise InputError(f"{path}: {exc}") from None
        except InputError as exc:
            raise ConfigError(f"{where}[{n}]: {exc}") from None
    try:
        return Keyring.of(trusted)
    except InputError as exc:
        raise ConfigError(f"{where}: {exc}") from None

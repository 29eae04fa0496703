"""Key pairs kept as files in a directory (``ion keys``).

``<dir>/<name>.key`` holds the private key (PKCS#8 PEM, mode 0600, the directory 0700) and
``<dir>/<name>.pub`` the trusted-key line (``ed25519:<base64> <roles> <name>``) to paste into
node configs.  The directory is ``$ION_KEYS_DIR`` or ``~/.config/ion/keys``.

A private key file that others can read is refused, as ``ssh`` does: the key is the
authority to tell every node what to run.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ion.errors import InputError, NotFoundError
from ion.model.definition import NAME_PATTERN

from .keyring import Role, TrustedKey, parse_trusted_line
from .keys import SigningKey

ENV_DIR = "ION_KEYS_DIR"
DEFAULT_DIR = Path("~/.config/ion/keys")


def default_keys_dir() -> Path:
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR).expanduser()


def read_signing_key(path: Path) -> SigningKey:
    """The private key in ``path``; ``InputError`` when unreadable, not an Ed25519 key, or
    readable by group or others."""
    try:
        with path.open("rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            data = f.read()
    except OSError as exc:
        raise InputError(f"cannot read private key {path}: {exc.strerror or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(
            f"private key {path} is accessible by others (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    return SigningKey.from_pem(data, where=str(path))


@dataclass(frozen=True, slots=True)
class StoredKey:
    name: str
    trusted: TrustedKey
    public_file: Path
    private_file: Path | None  # None: only the public half is here

    @property
    def key_id(self) -> str:
        return self.trusted.key_id

    def line(self) -> str:
        return self.trusted.line()


class KeyStore:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory if directory is not None else default_keys_dir()

    def _paths(self, name: str) -> tuple[Path, Path]:
        if not re.match(NAME_PATTERN, name):
            raise InputError(
                f"key name {name!r}: 1-64 of [a-z0-9_-], starting and ending with a letter or digit"
            )
        return self.directory / f"{name}.key", self.directory / f"{name}.pub"

    def create(self, name: str, roles: Iterable[Role]) -> StoredKey:
        """A new key pair ``name``; never overwrites an existing one."""
        private, public = self._paths(name)
        wanted = frozenset(roles)
        if not wanted:
            raise InputError("a key needs at least one role (operator, producer)")
        if private.exists() or public.exists():
            raise InputError(f"a key named {name!r} already exists in {self.directory}")
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = SigningKey.generate()
        trusted = TrustedKey(key.public, wanted, name)
        try:
            fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise InputError(f"a key named {name!r} already exists in {self.directory}") from None
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(key.to_pem())
            public.write_text(trusted.line() + "\n")
        except BaseException:
            with contextlib.suppress(OSError):
                private.unlink()
            raise
        return StoredKey(name, trusted, public, private)

    def get(self, name: str) -> StoredKey:
        private, public = self._paths(name)
        try:
            text = public.read_text()
        except FileNotFoundError:
            raise NotFoundError(f"no key named {name!r} in {self.directory}") from None
        except OSError as exc:
            raise InputError(f"cannot read {public}: {exc.strerror or exc}") from None
        try:
            trusted = parse_trusted_line(text.strip())
        except InputError as exc:
            raise InputError(f"{public}: {exc}") from None
        return StoredKey(name, trusted, public, private if private.exists() else None)

    def entries(self) -> tuple[list[StoredKey], list[str]]:
        """Every key here (by name), and a note for each file that could not be read."""
        keys: list[StoredKey] = []
        problems: list[str] = []
        if not self.directory.is_dir():
            return keys, problems
        for public in sorted(self.directory.glob("*.pub")):
            try:
                keys.append(self.get(public.stem))
            except (InputError, NotFoundError) as exc:
                problems.append(str(exc))
        return keys, problems

    def signing_key(self, name: str) -> SigningKey:
        stored = self.get(name)
        if stored.private_file is None:
            raise NotFoundError(f"only the public half of key {name!r} is in {self.directory}")
        key = read_signing_key(stored.private_file)
        if key.public != stored.trusted.key:
            raise InputError(f"{stored.private_file} and {stored.public_file} do not match")
        return key


def load_signing_key(spec: str, store: KeyStore | None = None) -> SigningKey:
    """A private key by name in the key store, or by path (anything with a ``/`` or ending
    in ``.key``/``.pem``)."""
    if "/" in spec or spec.endswith((".key", ".pem")):
        return read_signing_key(Path(spec).expanduser())
    return (store or KeyStore()).signing_key(spec)

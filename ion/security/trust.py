"""A node's trust settings: the ``trust:`` section of its config.

```yaml
trust:
  keys:                        # [[]] trusted public keys: key lines, or files of key lines
    - "ed25519:AAAA... operator alice"
    - /etc/ion/trusted.pub
  development_mode: false      # [false] true: act on unsigned definitions and manifests too
  signing_key: /etc/ion/producer.key  # [none] this node's producer key: signs its manifests
  command_max_age: 10m         # [10m] a command issued longer ago is refused as stale
  clock_skew: 1m               # [1m] a command issued further in the future is refused
  command_window: 10000        # [10000] command ids remembered (persisted) to refuse replays
```

Secure by default: without a ``trust`` section a node trusts no key and refuses every
unsigned definition, manifest and command.  Development mode accepts unsigned ones (with a
warning) but still refuses a signature that does not verify or comes from a key not trusted.

Commands are not retained and carry their issue time, so a node bounds how long one stays
valid (``command_max_age``) and remembers the ids it ran for that long: a replayed command is
refused as a replay while remembered and as stale afterwards.  ``command_max_age`` is also how
long a command may wait for a node that is offline; past it the operator sends it again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ion.config.fields import duration_ms, positive_int
from ion.errors import ConfigError, InputError

from .keyring import Keyring, load_keyring
from .keys import SigningKey
from .keystore import read_signing_key
from .signing import Signable, Verdict, verify

_KEYS = {
    "keys",
    "development_mode",
    "signing_key",
    "command_max_age",
    "clock_skew",
    "command_window",
}
DEFAULT_COMMAND_MAX_AGE_MS = 10 * 60_000
DEFAULT_CLOCK_SKEW_MS = 60_000
DEFAULT_COMMAND_WINDOW = 10_000


@dataclass(frozen=True, slots=True)
class TrustConfig:
    keyring: Keyring = field(default_factory=Keyring)
    development_mode: bool = False
    signing_key: SigningKey | None = None  # signs the model manifests this node produces
    command_max_age_ms: int = DEFAULT_COMMAND_MAX_AGE_MS
    clock_skew_ms: int = DEFAULT_CLOCK_SKEW_MS
    command_window: int = DEFAULT_COMMAND_WINDOW

    def check(self, msg: Signable) -> Verdict:
        """Whether to act on ``msg`` (see ``ion.security.signing.verify``)."""
        return verify(msg, self.keyring, development_mode=self.development_mode)


def trust_from_mapping(
    data: Mapping[str, Any], *, where: str = "trust", base_dir: Path | None = None
) -> TrustConfig:
    """The ``trust`` section; every problem a ``ConfigError`` naming ``where``."""
    unknown = sorted(str(k) for k in set(data) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    entries = data.get("keys") or []
    if isinstance(entries, str) or not isinstance(entries, list):
        raise ConfigError(f"{where}: keys must be a list of key lines or files")
    dev = data.get("development_mode", False)
    if not isinstance(dev, bool):
        raise ConfigError(f"{where}: development_mode must be true or false")
    signing_key = None
    if data.get("signing_key"):
        path = Path(str(data["signing_key"])).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            signing_key = read_signing_key(path)
        except InputError as exc:
            raise ConfigError(f"{where}: signing_key: {exc}") from None
    return TrustConfig(
        keyring=load_keyring(entries, base_dir=base_dir, where=f"{where}: keys"),
        development_mode=dev,
        signing_key=signing_key,
        command_max_age_ms=duration_ms(data, "command_max_age", DEFAULT_COMMAND_MAX_AGE_MS, where),
        clock_skew_ms=duration_ms(data, "clock_skew", DEFAULT_CLOCK_SKEW_MS, where),
        command_window=positive_int(data, "command_window", DEFAULT_COMMAND_WINDOW, where),
    )

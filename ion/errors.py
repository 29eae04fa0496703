"""The error roots of the ``ion`` package, sorted by who is at fault.

``IonError`` is the root.  ``InputError`` means the caller gave us something wrong (a bad file,
a malformed message): fatal for that input, never retryable.  ``UnavailableError`` means an
outside system is not there right now: retryable.  ``RefusedError`` means an outside system
answered "no" (bad credentials, not authorised): fatal until someone changes configuration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal


class IonError(Exception):
    """Root of every error this package raises on purpose."""


class InputError(IonError):
    """Something we were given is wrong; retrying the same input fails the same way."""


class DecodeError(InputError):
    """Bytes from the wire are not a valid ion.v1 message."""


class ConfigError(InputError):
    """A configuration file or flag is wrong."""


class NotFoundError(IonError):
    """The thing asked for does not exist (no such ION on the broker, no such model)."""


class UnavailableError(IonError):
    """An outside system cannot be reached now; trying again later may work."""


class RefusedError(IonError):
    """An outside system refused us (credentials, authorisation, certificate)."""


Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about an input: where it is and what is wrong (or noteworthy)."""

    severity: Severity
    location: str
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        elif self.line:
            where = f"line {self.line}: "
        loc = f"{self.location}: " if self.location else ""
        return f"{where}{self.severity}: {loc}{self.message}"


class InvalidIonError(InputError):
    """An ION definition has errors; ``problems`` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        super().__init__(f"{len(errors)} error(s) in ION definition")

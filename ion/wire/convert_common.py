"""What every ion.wire converter shares: enum tables and the translation of conversion errors.

Bytes from the network are untrusted, so a converter that meets a value it cannot represent
must fail with ``DecodeError`` and nothing else.  Domain values check their own invariants by
raising ``ValueError`` when built; ``decoding`` turns that (and the few other errors a
conversion of hostile input can raise) into ``DecodeError`` naming what was being decoded.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Generic, TypeVar

from ion.errors import DecodeError

D = TypeVar("D", bound=enum.Enum)
W = TypeVar("W", bound=int)


class EnumTable(Generic[D, W]):
    """A domain enum <-> wire enum number table, given as data.

    The wire's 0 (UNSPECIFIED) has no domain member, so decoding it fails like any number this
    version of the schema does not know.
    """

    __slots__ = ("_from_wire", "_to_wire", "what")

    def __init__(self, what: str, pairs: Mapping[D, W]) -> None:
        self.what = what
        self._to_wire = dict(pairs)
        self._from_wire = {int(w): d for d, w in pairs.items()}
        if len(self._from_wire) != len(self._to_wire) or 0 in self._from_wire:
            raise AssertionError(f"{what} table is not a one-to-one map onto non-zero numbers")

    def to_wire(self, member: D) -> W:
        return self._to_wire[member]

    def from_wire(self, number: int) -> D:
        member = self._from_wire.get(number)
        if member is None:
            raise DecodeError(f"invalid {self.what} {number}")
        return member

    @property
    def wire_numbers(self) -> frozenset[int]:
        return frozenset(self._from_wire)


@contextmanager
def decoding(what: str) -> Iterator[None]:
    """Turn a failed conversion of untrusted input into ``DecodeError`` naming ``what``."""
    try:
        yield
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        raise DecodeError(f"invalid {what}: {exc}") from exc

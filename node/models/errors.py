"""Errors of model packing, transfer and storage, by who is at fault.

Everything a peer can get wrong (an unsafe archive, a manifest over the limits, chunks that do
not add up) is an ``InputError``: retrying the same bytes fails the same way.
``ChunkMismatchError`` is the one worth retrying: the chunks it names were bad on disk and are
missing again, so asking for them anew can complete the transfer.
"""

from __future__ import annotations

from collections.abc import Sequence

from ion.errors import InputError


class ModelError(InputError):
    """Root of the model errors."""


class PackError(ModelError):
    """A local artifact cannot be packed (a symlink, a device, not a file or directory)."""


class UnsafeArchiveError(ModelError):
    """A received archive tries something unpacking must never do, or breaks a limit."""


class ManifestError(ModelError):
    """A manifest is malformed or over this node's limits; its model is not fetched."""


class IntegrityError(ModelError):
    """The bytes of a finished transfer do not match their manifest's model id."""


class ChunkMismatchError(IntegrityError):
    """Some chunks on disk no longer match their hashes; they are missing again."""

    def __init__(self, model_id: str, indexes: Sequence[int]) -> None:
        self.model_id = model_id
        self.indexes = tuple(indexes)
        super().__init__(
            f"model {model_id[:12]}: {len(self.indexes)} chunk(s) failed verification on disk "
            "and will be fetched again"
        )

"""The per-node model store: the last few versions per model edge, ready to load.

Layout under the store's root (ION and edge names are safe path components by their pattern,
model ids are hex)::

    <ion>/<edge>/index.json               versions in arrival order, active, history, refusals
    <ion>/<edge>/v/<model_id>/manifest.bin
    <ion>/<edge>/v/<model_id>/artifact/<file_name>   the file, or the unpacked directory
    <ion>/<edge>/v/<model_id>/blob        directory layout only: the tar that travelled

A version directory is built under ``v/.tmp-*`` and renamed into place, then the index is
replaced atomically (write, fsync, rename, fsync the directory).  Opening a shelf repairs what a
crash can leave: temporary directories are removed, index entries without a complete directory
are dropped, complete directories missing from the index are adopted (a crash between the
rename and the index write), and an unreadable index is rebuilt from the directories (the
newest version not refused becomes active).

Invariants: ``active`` is None or one of ``versions``; ``prune`` never removes the active
version; ``history`` lists versions active before, most recent last, for rollback.

Changes and opening shelves take a lock, so that one change may run in a worker thread (the
exchange installs a received version there, off its event loop: the renames and fsyncs of
``install`` take milliseconds, and a process running several nodes would otherwise serialise
them) while the loop reads or changes the store.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from ion.errors import DecodeError
from ion.model.definition import NAME_PATTERN
from ion.model.manifest import ArtifactLayout, ModelManifest
from node.files import fsync_dir, write_atomically

from .artifact import ModelArtifact
from .errors import ModelError
from .pack import UnpackLimits, safe_file_name, unpack
from .policy import next_version, version_key
from .transfer import manifest_bytes, manifest_from_bytes

log = logging.getLogger(__name__)

_NAME = re.compile(NAME_PATTERN)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_INDEX_FORMAT = 1
_MAX_HISTORY = 32

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Lockable(Protocol):
    _lock: threading.RLock


_L = TypeVar("_L", bound=Lockable)


def locked(method: Callable[Concatenate[_L, _P], _R]) -> Callable[Concatenate[_L, _P], _R]:
    """Run ``method`` under its object's ``_lock`` (see the module docstring; the rollout core
    uses it too)."""

    def run(self: _L, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with self._lock:
            return method(self, *args, **kwargs)

    run.__name__, run.__doc__ = method.__name__, method.__doc__
    return run


@dataclass(frozen=True, slots=True)
class StoredVersion:
    manifest: ModelManifest
    directory: Path

    @property
    def model_id(self) -> str:
        return self.manifest.model_id

    @property
    def artifact_path(self) -> Path:
        return self.directory / "artifact" / self.manifest.file_name

    @property
    def blob_path(self) -> Path:
        """The bytes that travel (what chunks are read from)."""
        if self.manifest.layout is ArtifactLayout.FILE:
            return self.artifact_path
        return self.directory / "blob"

    def artifact(self) -> ModelArtifact:
        m = self.manifest
        return ModelArtifact(
            path=self.artifact_path,
            format=m.format,
            metrics={x.name: x.value for x in m.metrics},
            baseline=m.baseline,
            annotations=dict(m.annotations),
            model_id=m.model_id,
            version=m.version,
        )


@dataclass(slots=True)
class _Shelf:
    """One model edge's versions and pointers (see the module docstring)."""

    root: Path
    versions: dict[str, StoredVersion] = field(default_factory=dict)  # arrival order
    active: str | None = None
    history: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    published: list[str] = field(default_factory=list)
    last_version: int = 0

    def save(self) -> None:
        data = {
            "format": _INDEX_FORMAT,
            "versions": list(self.versions),
            "active": self.active,
            "history": self.history[-_MAX_HISTORY:],
            "rejected": self.rejected[-_MAX_HISTORY:],
            "published": [p for p in self.published if p in self.versions],
            "last_version": self.last_version,
        }
        write_atomically(self.root / "index.json", json.dumps(data, indent=1).encode())


class ModelStore:
    def __init__(self, root: Path, limits: UnpackLimits | None = None) -> None:
        self.root = root
        self._limits = limits or UnpackLimits()
        self._shelves: dict[tuple[str, str], _Shelf] = {}
        self._lock = threading.RLock()
        root.mkdir(parents=True, exist_ok=True)

    # -- reading ---------------------------------------------------------------------------

    def edges(self) -> list[tuple[str, str]]:
        """Every (ion, edge) with a shelf on disk."""
        found = {
            (i.name, e.name)
            for i in self.root.iterdir()
            if i.is_dir() and _NAME.match(i.name)
            for e in i.iterdir()
            if e.is_dir() and _NAME.match(e.name)
        }
        return sorted(found | set(self._shelves))

    def versions(self, ion: str, edge: str) -> list[StoredVersion]:
        """Held versions, oldest arrival first."""
        return list(self._shelf(ion, edge).versions.values())

    def get(self, ion: str, edge: str, model_id: str) -> StoredVersion | None:
        return self._shelf(ion, edge).versions.get(model_id)

    def active(self, ion: str, edge: str) -> StoredVersion | None:
        shelf = self._shelf(ion, edge)
        return shelf.versions.get(shelf.active) if shelf.active else None

    def is_rejected(self, ion: str, edge: str, model_id: str) -> bool:
        return model_id in self._shelf(ion, edge).rejected

    def is_published(self, ion: str, edge: str, model_id: str) -> bool:
        return model_id in self._shelf(ion, edge).published

    # -- changing --------------------------------------------------------------------------

    def add(self, manifest: ModelManifest, blob: Path, *, move: bool = True) -> StoredVersion:
        """Store the verified bytes ``blob`` of ``manifest`` (moved in, or copied).

        ``build`` then ``install``; a caller that must not block (the exchange) runs ``build``
        in a thread and ``install`` in its own.  Adding a model id already held returns the
        held version.
        """
        held = self.get(manifest.ion, manifest.edge, manifest.model_id)
        if held is not None:
            if move:
                blob.unlink(missing_ok=True)
            return held
        return self.install(manifest, self.build(manifest, blob, move=move))

    def build(self, manifest: ModelManifest, blob: Path, *, move: bool = True) -> Path:
        """Make the version directory of ``manifest`` under a temporary name; returns it.

        Touches only the file system (no shelf state), so it may run in a worker thread, once
        the shelf is open (``get`` or ``versions`` opens it: opening removes temporary
        directories).  A directory artifact is unpacked safely; ``UnsafeArchiveError`` leaves
        nothing behind.
        """
        if not _HEX64.match(manifest.model_id):
            raise ModelError(f"model id {manifest.model_id[:80]!r} is not a hex sha256")
        name = safe_file_name(manifest.file_name)
        vdir = self._shelf_root(manifest.ion, manifest.edge) / "v"
        vdir.mkdir(parents=True, exist_ok=True)
        tmp = vdir / f".tmp-{manifest.model_id[:16]}-{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            # Nobody looks inside a temporary directory (opening a shelf removes it), so its
            # files are written plainly, every change first, then the fsyncs together: the
            # first one commits the file system's journal with all of them and the others
            # find (nearly) nothing left to do.  Separate fsyncs between changes each wait
            # for a journal commit of their own, and at the end of a rollout, with many
            # nodes' models being written back on one disk, each of those took 0.1-0.2 s.
            (tmp / "manifest.bin").write_bytes(manifest_bytes(manifest))
            (tmp / "artifact").mkdir()
            if manifest.layout is ArtifactLayout.FILE:
                target = tmp / "artifact" / name
                _bring(blob, target, move)
                target.chmod(0o444)  # chunks are served from it: it must not change
                synced = (tmp / "manifest.bin", target, tmp / "artifact", tmp)
            else:
                _bring(blob, tmp / "blob", move)
                (tmp / "blob").chmod(0o444)
                unpack(tmp / "blob", tmp / "artifact" / name, self._limits, durable=True)
                synced = (tmp / "manifest.bin", tmp / "blob", tmp / "artifact", tmp)
            for path in synced:  # the bytes and names on disk before the index names them
                _fsync(path)
        except BaseException:
            _remove(tmp)
            raise
        return tmp

    @locked
    def install(self, manifest: ModelManifest, built: Path) -> StoredVersion:
        """Rename a ``build`` result into place and record it in the index."""
        shelf = self._shelf(manifest.ion, manifest.edge)
        held = shelf.versions.get(manifest.model_id)
        if held is not None:  # built twice (published and received at once): keep one
            _remove(built)
            return held
        final = shelf.root / "v" / manifest.model_id
        _remove(final)  # a directory the index does not list is not trusted
        os.rename(built, final)
        fsync_dir(final.parent)
        stored = StoredVersion(manifest, final)
        shelf.versions[manifest.model_id] = stored
        shelf.save()
        log.info(
            "stored model %s/%s version %s (%s, %d bytes)",
            manifest.ion, manifest.edge, manifest.version, manifest.model_id[:12],
            manifest.size_bytes,
        )  # fmt: skip
        return stored

    @locked
    def activate(self, ion: str, edge: str, model_id: str) -> StoredVersion:
        shelf = self._shelf(ion, edge)
        stored = shelf.versions.get(model_id)
        if stored is None:
            raise ModelError(f"model {model_id[:12]} is not held for {ion}/{edge}")
        if shelf.active != model_id:
            if shelf.active is not None:
                shelf.history = [h for h in shelf.history if h != shelf.active]
                shelf.history.append(shelf.active)
                del shelf.history[:-_MAX_HISTORY]
            shelf.active = model_id
            shelf.save()
        return stored

    @locked
    def rollback(self, ion: str, edge: str) -> StoredVersion | None:
        """Make the most recent earlier active version (still held, not refused) active again;
        with none, nothing is active.  Returns the new active version."""
        shelf = self._shelf(ion, edge)
        while shelf.history:
            candidate = shelf.history.pop()
            if candidate in shelf.versions and candidate not in shelf.rejected:
                shelf.active = candidate
                break
        else:
            shelf.active = None
        shelf.save()
        return self.active(ion, edge)

    @locked
    def reject(self, ion: str, edge: str, model_id: str) -> bool:
        """Remember that a consumer refused ``model_id``; roll back if it is active.  True when
        the active version changed."""
        shelf = self._shelf(ion, edge)
        if model_id not in shelf.rejected:
            shelf.rejected.append(model_id)
            shelf.save()
        if shelf.active == model_id:
            self.rollback(ion, edge)
            return True
        return False

    @locked
    def prune(self, ion: str, edge: str, keep: int) -> list[str]:
        """Remove all but the ``keep`` newest arrivals, never the active version."""
        shelf = self._shelf(ion, edge)
        ids = list(shelf.versions)
        doomed = [i for i in ids[: max(0, len(ids) - max(keep, 1))] if i != shelf.active]
        if not doomed:
            return []
        for model_id in doomed:
            del shelf.versions[model_id]
        shelf.save()  # the index first: a crash after it leaves directories that are adopted
        for model_id in doomed:
            _remove(shelf.root / "v" / model_id)
        return doomed

    @locked
    def next_version(self, ion: str, edge: str, now_ms: int) -> str:
        """The version label for a model this node publishes now (see ``policy``)."""
        shelf = self._shelf(ion, edge)
        shelf.last_version = next_version(shelf.last_version, now_ms)
        shelf.save()
        return str(shelf.last_version)

    @locked
    def mark_published(self, ion: str, edge: str, model_id: str) -> None:
        shelf = self._shelf(ion, edge)
        if model_id not in shelf.published:
            shelf.published.append(model_id)
            shelf.save()

    # -- opening ---------------------------------------------------------------------------

    def _shelf_root(self, ion: str, edge: str) -> Path:
        # Names come from manifests, that is from the network: they become paths only when
        # they match the name pattern (no '/', no '..').
        if not (_NAME.match(ion) and _NAME.match(edge)):
            raise ModelError(f"invalid ION or edge name {ion[:80]!r}/{edge[:80]!r}")
        return self.root / ion / edge

    @locked
    def _shelf(self, ion: str, edge: str) -> _Shelf:
        shelf = self._shelves.get((ion, edge))
        if shelf is None:
            shelf = self._shelves[(ion, edge)] = _open_shelf(self._shelf_root(ion, edge))
        return shelf


def _open_shelf(root: Path) -> _Shelf:
    root.mkdir(parents=True, exist_ok=True)
    vdir = root / "v"
    vdir.mkdir(exist_ok=True)
    (root / ".index.json.tmp").unlink(missing_ok=True)
    on_disk: dict[str, StoredVersion] = {}
    for entry in sorted(vdir.iterdir()):
        if entry.name.startswith("."):
            _remove(entry)  # a version being built when the process died
            continue
        stored = _load_version(entry)
        if stored is None:
            log.warning("removing the incomplete model version %s", entry)
            _remove(entry)
        else:
            on_disk[entry.name] = stored
    shelf = _Shelf(root)
    index = _read_index(root / "index.json")
    if index is None:
        shelf.versions = dict(sorted(on_disk.items(), key=lambda kv: version_key(kv[1].manifest)))
        good = [i for i in shelf.versions if i not in shelf.rejected]
        shelf.active = good[-1] if good else None
        if on_disk or (root / "index.json").exists():
            log.warning("model index %s rebuilt from %d version(s)", root, len(on_disk))
            shelf.save()
        return shelf
    listed = [i for i in index.get("versions", []) if isinstance(i, str)]
    shelf.versions = {i: on_disk[i] for i in listed if i in on_disk}
    adopted = sorted(
        (v for i, v in on_disk.items() if i not in shelf.versions),
        key=lambda v: version_key(v.manifest),
    )
    for stored in adopted:
        shelf.versions[stored.model_id] = stored
    active = index.get("active")
    shelf.active = active if isinstance(active, str) and active in shelf.versions else None
    shelf.history = _strings(index.get("history"))
    shelf.rejected = _strings(index.get("rejected"))
    shelf.published = _strings(index.get("published"))
    last = index.get("last_version", 0)
    shelf.last_version = last if isinstance(last, int) and not isinstance(last, bool) else 0
    if adopted or len(shelf.versions) != len(listed) or shelf.active != active:
        shelf.save()
    return shelf


def _load_version(directory: Path) -> StoredVersion | None:
    try:
        manifest = manifest_from_bytes((directory / "manifest.bin").read_bytes())
        safe_file_name(manifest.file_name)
    except (OSError, DecodeError, ModelError):
        return None
    stored = StoredVersion(manifest, directory)
    if manifest.model_id != directory.name or not stored.artifact_path.exists():
        return None
    if not stored.blob_path.is_file():
        return None
    return stored


def _read_index(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _INDEX_FORMAT:
        return None
    return data


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _bring(source: Path, target: Path, move: bool) -> None:
    """Move or copy ``source`` to ``target`` (not fsynced: ``build`` does that)."""
    if move:
        os.replace(source, target)
    else:
        shutil.copyfile(source, target)


def _fsync(path: Path) -> None:
    """fsync a file or a directory."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        # Read-only files sit in writable directories: rmtree removes them without chmod.
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

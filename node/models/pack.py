"""Deterministic packing of model directories, and safe unpacking of received archives.

A single-file artifact travels as it is.  A directory travels as an uncompressed POSIX (pax)
tar whose bytes depend only on the names and contents of its files: entries sorted by name,
mtime 0, uid/gid 0, no user or group names, mode 0644 for files and 0755 for directories.
The same model therefore always has the same sha256, which is its model id.  Model files are
mostly compressed already (``.npz``, ``.keras``, TFLite), so the tar is not.

Packing refuses anything but regular files and directories (symlinks, devices, sockets,
pipes): a model is data, and a link could point anywhere on the receiving node.

Unpacking treats the archive as hostile.  It accepts regular files and directories only,
with relative names made of plain components (no absolute path, no ``..``, ``.`` or empty
component, no NUL), within limits on entries, bytes per file and bytes in all; modes and owners
in the archive are ignored.  It unpacks into a fresh temporary directory next to the
destination and renames it into place, so the destination either appears complete or not at
all.  Since that directory holds only what unpacking created, and unpacking never creates a
link, no entry can be written outside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from ion.model.manifest import ArtifactLayout
from node.files import fsync_dir

from .errors import PackError, UnsafeArchiveError

log = logging.getLogger(__name__)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
_BLOCK = 1 * MiB
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_MAX_COMPONENT_BYTES = 255


@dataclass(frozen=True, slots=True)
class UnpackLimits:
    """What one received archive may hold."""

    max_entries: int = 100_000  # files and directories together
    max_file_bytes: int = 4 * GiB
    max_total_bytes: int = 8 * GiB
    max_name_bytes: int = 4096


@dataclass(frozen=True, slots=True)
class Packed:
    """An artifact ready to be chunked: ``path`` holds exactly the bytes that travel."""

    path: Path
    layout: ArtifactLayout
    file_name: str  # the artifact's own name (file or directory), restored on the other side
    temporary: bool  # True when ``pack`` created ``path`` (the caller moves or removes it)


def safe_file_name(name: str) -> str:
    """``name`` if it is one plain path component, else ``UnsafeArchiveError``.

    Applied to a manifest's ``file_name``, which names the artifact on the receiving disk.
    """
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\x00" in name
        or len(name.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT_BYTES
    ):
        raise UnsafeArchiveError(f"unsafe artifact name {name[:80]!r}")
    return name


# -- packing ----------------------------------------------------------------------------------


def pack(source: Path, work_dir: Path) -> Packed:
    """The bytes that travel for ``source``: the file itself, or a tar made in ``work_dir``."""
    try:
        st = source.lstat()
    except OSError as exc:
        raise PackError(f"cannot read the artifact {source}: {exc.strerror or exc}") from None
    if stat.S_ISREG(st.st_mode):
        return Packed(source, ArtifactLayout.FILE, safe_name_of(source), temporary=False)
    if not stat.S_ISDIR(st.st_mode):
        raise PackError(f"{source}: a model artifact is a regular file or a directory")
    work_dir.mkdir(parents=True, exist_ok=True)
    dest = work_dir / f"pack-{secrets.token_hex(8)}.tar"
    try:
        pack_directory(source, dest)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return Packed(dest, ArtifactLayout.DIRECTORY, safe_name_of(source), temporary=True)


def safe_name_of(path: Path) -> str:
    try:
        return safe_file_name(path.resolve().name)
    except UnsafeArchiveError:
        return "model"  # e.g. "/" itself; the name is only a convenience for the receiver


def pack_directory(source: Path, dest: Path) -> None:
    """Write the deterministic tar of ``source`` to ``dest`` (which must not exist)."""
    with (
        open(dest, "xb") as out,
        tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, path, kind in _walk(source, ""):
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = _DIR_MODE
                tar.addfile(info)
                continue
            info.type = tarfile.REGTYPE
            info.mode = _FILE_MODE
            with _open_regular(path) as (f, size):
                info.size = size
                tar.addfile(info, f)


def _walk(directory: Path, prefix: str) -> Iterator[tuple[str, Path, str]]:
    """(name in the archive, path, "dir" | "file"), parents before children, sorted by name."""
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        raise PackError(f"cannot list {directory}: {exc.strerror or exc}") from None
    for entry in entries:
        name = prefix + entry.name
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            yield name, Path(entry.path), "dir"
            yield from _walk(Path(entry.path), name + "/")
        elif stat.S_ISREG(st.st_mode):
            yield name, Path(entry.path), "file"
        else:
            raise PackError(
                f"{entry.path}: not a regular file or directory (a symlink, device, socket or "
                "pipe); a model artifact holds plain files only"
            )


@contextlib.contextmanager
def _open_regular(path: Path) -> Iterator[tuple[BinaryIO, int]]:
    # O_NOFOLLOW and fstat: the file may have been swapped for a link since it was listed.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PackError(f"cannot read {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PackError(f"{path}: not a regular file")
        yield f, st.st_size


# -- unpacking --------------------------------------------------------------------------------


def unpack(
    archive: Path, dest: Path, limits: UnpackLimits | None = None, *, durable: bool = False
) -> Path:
    """Unpack the tar ``archive`` to the new directory ``dest``, atomically; returns ``dest``.

    Raises ``UnsafeArchiveError`` (nothing is left behind) for anything refused.  ``durable``
    fsyncs every file before the rename, so the tree survives a power loss once it is in place.
    """
    limits = limits or UnpackLimits()
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    tmp = dest.parent / f".{dest.name}.unpack-{secrets.token_hex(6)}"
    tmp.mkdir(mode=0o700)
    try:
        _unpack_into(archive, tmp, limits, durable)
        tmp.chmod(_DIR_MODE)
        if durable:
            for directory, _, _ in os.walk(tmp):
                fsync_dir(directory)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _unpack_into(archive: Path, root: Path, limits: UnpackLimits, durable: bool) -> None:
    entries = 0
    total = 0
    try:
        # "r:" reads plain tar only: no decompression bombs through gzip or xz.
        with tarfile.open(archive, mode="r:") as tar:
            for member in tar:
                entries += 1
                if entries > limits.max_entries:
                    raise UnsafeArchiveError(
                        f"archive holds more than {limits.max_entries} entries"
                    )
                parts = _checked_name(member.name, limits)
                if member.isdir():
                    _make_dirs(root, parts)
                    continue
                if not member.isreg() or member.issparse():
                    raise UnsafeArchiveError(f"entry {member.name[:200]!r}: {_kind(member)}")
                if member.size > limits.max_file_bytes:
                    raise UnsafeArchiveError(
                        f"entry {member.name[:200]!r} has {member.size} bytes, over the limit "
                        f"of {limits.max_file_bytes} per file"
                    )
                total += member.size
                if total > limits.max_total_bytes:
                    raise UnsafeArchiveError(
                        f"archive holds more than {limits.max_total_bytes} bytes in all"
                    )
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isreg() members always have data
                    raise UnsafeArchiveError(f"entry {member.name[:200]!r} has no data")
                _write_file(root, parts, source, member.size, durable)
    except tarfile.TarError as exc:
        raise UnsafeArchiveError(f"not a valid tar archive: {exc}") from None


def _checked_name(name: str, limits: UnpackLimits) -> tuple[str, ...]:
    shown = repr(name[:200])
    if len(name.encode("utf-8", "surrogateescape")) > limits.max_name_bytes:
        raise UnsafeArchiveError(f"entry name longer than {limits.max_name_bytes} bytes")
    if "\x00" in name:
        raise UnsafeArchiveError(f"entry {shown} has a NUL in its name")
    if name.startswith("/"):
        raise UnsafeArchiveError(f"entry {shown} has an absolute path")
    parts = tuple((name[:-1] if name.endswith("/") else name).split("/"))
    if ".." in parts:
        raise UnsafeArchiveError(f"entry {shown} climbs out with '..'")
    if any(p in ("", ".") for p in parts):
        raise UnsafeArchiveError(f"entry {shown} has an empty or '.' component")
    if any(len(p.encode("utf-8", "surrogateescape")) > _MAX_COMPONENT_BYTES for p in parts):
        raise UnsafeArchiveError(f"entry {shown} has a component over 255 bytes")
    return parts


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return "symbolic links are refused"
    if member.islnk():
        return "hard links are refused"
    if member.isdev():
        return "devices and pipes are refused"
    if member.issparse():
        return "sparse files are refused"
    return f"entry type {member.type!r} is refused"


def _make_dirs(root: Path, parts: tuple[str, ...]) -> Path:
    path = root
    for part in parts:
        path = path / part
        try:
            path.mkdir(mode=_DIR_MODE)
        except FileExistsError:
            if not stat.S_ISDIR(path.lstat().st_mode):
                raise UnsafeArchiveError(
                    f"entry {'/'.join(parts)!r} conflicts with a file of the same name"
                ) from None
        except NotADirectoryError:
            raise UnsafeArchiveError(
                f"entry {'/'.join(parts)!r} is below a file, not a directory"
            ) from None
    return path


def _write_file(
    root: Path, parts: tuple[str, ...], source: IO[bytes], size: int, durable: bool
) -> None:
    parent = _make_dirs(root, parts[:-1])
    target = parent / parts[-1]
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, _FILE_MODE)
    except FileExistsError:
        raise UnsafeArchiveError(f"entry {'/'.join(parts)!r} appears twice") from None
    written = 0
    with os.fdopen(fd, "wb") as out:
        while written < size:
            block = source.read(min(_BLOCK, size - written))
            if not block:
                raise UnsafeArchiveError(f"entry {'/'.join(parts)!r} is truncated")
            out.write(block)
            written += len(block)
        if durable:
            out.flush()
            os.fsync(out.fileno())

"""Deterministic packing of model directories and safe unpacking of hostile archives."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from ion.model.manifest import ArtifactLayout
from node.models.errors import PackError, UnsafeArchiveError
from node.models.pack import UnpackLimits, pack, pack_directory, safe_file_name, unpack


def make_model(root: Path) -> Path:
    (root / "weights").mkdir(parents=True)
    (root / "weights" / "layer1.bin").write_bytes(os.urandom(3000))
    (root / "weights" / "layer0.bin").write_bytes(b"\x00" * 10)
    (root / "empty").mkdir()
    (root / "meta.json").write_text('{"k": 3}')
    return root


def tree(root: Path) -> dict[str, bytes | None]:
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        out[path.relative_to(root).as_posix()] = path.read_bytes() if path.is_file() else None
    return out


def test_packing_is_deterministic_whatever_the_mtimes_modes_and_listing_order(
    tmp_path: Path,
) -> None:
    a = make_model(tmp_path / "a")
    pack_directory(a, tmp_path / "a1.tar")
    pack_directory(a, tmp_path / "a2.tar")
    # The same content built in another order, with other times and permissions.
    b = tmp_path / "b"
    (b / "empty").mkdir(parents=True)
    (b / "meta.json").write_text('{"k": 3}')
    (b / "weights").mkdir()
    for name in ("layer1.bin", "layer0.bin"):
        (b / "weights" / name).write_bytes((a / "weights" / name).read_bytes())
    os.utime(b / "meta.json", (1, 1))
    (b / "meta.json").chmod(0o600)
    (b / "weights").chmod(0o700)
    pack_directory(b, tmp_path / "b.tar")
    first = (tmp_path / "a1.tar").read_bytes()
    assert first == (tmp_path / "a2.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a1.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "empty",
        "meta.json",
        "weights",
        "weights/layer0.bin",
        "weights/layer1.bin",
    ]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    (b / "meta.json").write_text('{"k": 4}')
    pack_directory(b, tmp_path / "b2.tar")
    assert (tmp_path / "b2.tar").read_bytes() != first


def test_round_trip_keeps_files_and_empty_directories(tmp_path: Path) -> None:
    src = make_model(tmp_path / "model")
    packed = pack(src, tmp_path / "work")
    assert packed.layout is ArtifactLayout.DIRECTORY
    assert packed.file_name == "model" and packed.temporary
    out = unpack(packed.path, tmp_path / "out")
    assert tree(out) == tree(src)
    assert (out / "weights" / "layer1.bin").stat().st_mode & 0o777 == 0o644


def test_a_single_file_travels_as_it_is(tmp_path: Path) -> None:
    f = tmp_path / "model.tflite"
    f.write_bytes(b"flatbuffer")
    packed = pack(f, tmp_path / "work")
    assert (packed.path, packed.layout, packed.file_name, packed.temporary) == (
        f,
        ArtifactLayout.FILE,
        "model.tflite",
        False,
    )
    assert not (tmp_path / "work").exists()


def test_packing_refuses_links_and_special_files(tmp_path: Path) -> None:
    src = make_model(tmp_path / "model")
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(PackError, match="symlink"):
        pack(src, tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []  # the half-written tar is gone
    (src / "link").unlink()
    os.mkfifo(src / "pipe")
    with pytest.raises(PackError, match="plain files only"):
        pack(src, tmp_path / "work")
    with pytest.raises(PackError, match="cannot read"):
        pack(tmp_path / "missing", tmp_path / "work")


# -- hostile archives -----------------------------------------------------------------------


def archive(path: Path, *entries: tarfile.TarInfo | tuple[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            if isinstance(entry, tarfile.TarInfo):
                tar.addfile(entry)
            else:
                name, data = entry
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def special(name: str, kind: bytes, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def refused(tmp_path: Path, tar: Path, match: str, limits: UnpackLimits | None = None) -> None:
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError, match=match):
        unpack(tar, dest, limits)
    assert not dest.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".dest")]
    assert leftovers == []  # the temporary directory is gone too
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../evil", r"climbs out"),
        ("a/../../evil", r"climbs out"),
        ("/tmp/evil", r"absolute path"),
        ("a//b", r"empty or '\.' component"),
        ("./a", r"empty or '\.' component"),
        ("a/" + "x" * 256, r"over 255 bytes"),
    ],
)
def test_unpacking_refuses_names_that_escape_or_are_odd(
    tmp_path: Path, name: str, match: str
) -> None:
    tar = archive(tmp_path / "t.tar", ("ok.txt", b"fine"), (name, b"evil"))
    refused(tmp_path, tar, match)


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        (special("link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic links"),
        (special("hard", tarfile.LNKTYPE, "ok.txt"), "hard links"),
        (special("dev", tarfile.CHRTYPE), "devices"),
        (special("fifo", tarfile.FIFOTYPE), "devices and pipes"),
    ],
)
def test_unpacking_refuses_links_and_devices(
    tmp_path: Path, entry: tarfile.TarInfo, match: str
) -> None:
    tar = archive(tmp_path / "t.tar", ("ok.txt", b"fine"), entry)
    refused(tmp_path, tar, match)


def test_unpacking_enforces_size_and_count_limits(tmp_path: Path) -> None:
    tar = archive(tmp_path / "t.tar", ("a", b"x" * 100), ("b", b"y" * 100), ("c", b"z"))
    refused(tmp_path, tar, "over the limit of 99 per file", UnpackLimits(max_file_bytes=99))
    refused(tmp_path, tar, "more than 150 bytes in all", UnpackLimits(max_total_bytes=150))
    refused(tmp_path, tar, "more than 2 entries", UnpackLimits(max_entries=2))
    assert tree(unpack(tar, tmp_path / "dest", UnpackLimits(max_entries=3))) == {
        "a": b"x" * 100,
        "b": b"y" * 100,
        "c": b"z",
    }


def test_unpacking_refuses_duplicates_conflicts_and_garbage(tmp_path: Path) -> None:
    refused(tmp_path, archive(tmp_path / "1.tar", ("a", b"1"), ("a", b"2")), "appears twice")
    refused(
        tmp_path,
        archive(tmp_path / "2.tar", ("a", b"1"), ("a/b", b"2")),
        "below a file|conflicts",
    )
    refused(
        tmp_path,
        archive(tmp_path / "3.tar", ("a", b"1"), special("a", tarfile.DIRTYPE)),
        "conflicts with a file",
    )
    (tmp_path / "junk.tar").write_bytes(os.urandom(2048))
    refused(tmp_path, tmp_path / "junk.tar", "not a valid tar")
    with tarfile.open(tmp_path / "gz.tar", "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("a"), io.BytesIO(b""))
    refused(tmp_path, tmp_path / "gz.tar", "not a valid tar")  # no decompression


def test_a_truncated_archive_is_refused(tmp_path: Path) -> None:
    tar = archive(tmp_path / "t.tar", ("big", os.urandom(50_000)))
    data = tar.read_bytes()
    tar.write_bytes(data[:20_000])
    refused(tmp_path, tar, "truncated|not a valid tar")


def test_unpacking_never_replaces_an_existing_destination(tmp_path: Path) -> None:
    tar = archive(tmp_path / "t.tar", ("a", b"1"))
    (tmp_path / "dest").mkdir()
    with pytest.raises(FileExistsError):
        unpack(tar, tmp_path / "dest")


def test_archive_modes_are_ignored(tmp_path: Path) -> None:
    info = tarfile.TarInfo("run.sh")
    info.mode = 0o4777  # setuid, world-writable
    info.size = 2
    with tarfile.open(tmp_path / "t.tar", "w") as tar:
        tar.addfile(info, io.BytesIO(b"hi"))
    out = unpack(tmp_path / "t.tar", tmp_path / "dest", durable=True)
    assert (out / "run.sh").stat().st_mode & 0o7777 == 0o644


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "a\x00b", "x" * 256])
def test_unsafe_artifact_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeArchiveError):
        safe_file_name(name)


def test_safe_artifact_names_pass() -> None:
    assert safe_file_name("model.keras") == "model.keras"
    assert safe_file_name("..hidden") == "..hidden"

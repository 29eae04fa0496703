"""The per-node model store: versions, the active pointer, rollback, pruning, crash repair."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import pytest

from ion.model.health import Histogram
from ion.model.manifest import ArtifactLayout, ModelManifest
from node.models.errors import ModelError, UnsafeArchiveError
from node.models.pack import Packed, pack
from node.models.store import ModelStore, StoredVersion
from node.models.transfer import build_manifest, digest_file

ION, EDGE = "plant", "model"


def file_version(
    tmp_path: Path, n: int, *, version: str | None = None
) -> tuple[ModelManifest, Path]:
    path = tmp_path / f"src-{n}" / "model.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"n": n}))
    packed = Packed(path, ArtifactLayout.FILE, "model.json", temporary=False)
    m = build_manifest(
        packed,
        digest_file(path, 8),
        version=version or str(100 + n),
        ion=ION,
        edge=EDGE,
        producer_pipeline="training",
        producer_node="cloud-1",
        format="kmeans-json/1",
        created_ms=1_000 + n,
        metrics={"silhouette": n / 10},
        baseline=(Histogram(feature="x", bin_edges=(0.0, 1.0), counts=(3,)),),
    )
    return m, path


def add(store: ModelStore, tmp_path: Path, n: int) -> StoredVersion:
    m, path = file_version(tmp_path, n)
    return store.add(m, path, move=False)


def test_a_file_version_is_ready_to_load(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    stored = add(store, tmp_path, 1)
    art = stored.artifact()
    assert art.path.read_text() == '{"n": 1}'
    assert art.path.name == "model.json"
    assert (art.format, art.version, art.model_id) == ("kmeans-json/1", "101", stored.model_id)
    assert art.metrics == {"silhouette": 0.1}
    assert art.baseline[0].feature == "x"
    assert stored.blob_path == art.path
    assert not os.access(art.path, os.W_OK) or os.geteuid() == 0  # chunks are served from it
    assert (tmp_path / "src-1" / "model.json").exists()  # copied, not moved
    assert store.add(*file_version(tmp_path, 1), move=False) == stored  # content-addressed
    assert store.active(ION, EDGE) is None  # storing is not activating


def test_a_directory_version_is_unpacked_and_its_blob_kept(tmp_path: Path) -> None:
    src = tmp_path / "saved"
    (src / "variables").mkdir(parents=True)
    (src / "variables" / "data").write_bytes(b"\x01" * 100)
    (src / "saved_model.pb").write_bytes(b"pb")
    packed = pack(src, tmp_path / "work")
    m = build_manifest(
        packed, digest_file(packed.path, 512), version="1", ion=ION, edge=EDGE,
        producer_pipeline="t", producer_node="n", format="savedmodel/1", created_ms=1,
    )  # fmt: skip
    stored = ModelStore(tmp_path / "store").add(m, packed.path)
    assert not packed.path.exists()  # moved in
    assert (stored.artifact_path / "variables" / "data").read_bytes() == b"\x01" * 100
    assert stored.artifact_path.name == "saved"
    assert digest_file(stored.blob_path, 512).model_id == m.model_id


def test_an_unsafe_directory_archive_leaves_nothing(tmp_path: Path) -> None:
    blob = tmp_path / "evil.tar"
    with tarfile.open(blob, "w") as tar:
        info = tarfile.TarInfo("../../escape")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    m = build_manifest(
        Packed(blob, ArtifactLayout.DIRECTORY, "model", temporary=True),
        digest_file(blob), version="1", ion=ION, edge=EDGE, producer_pipeline="t",
        producer_node="n", format="f", created_ms=1,
    )  # fmt: skip
    store = ModelStore(tmp_path / "store")
    with pytest.raises(UnsafeArchiveError, match="climbs out"):
        store.add(m, blob)
    assert store.versions(ION, EDGE) == []
    assert list((tmp_path / "store" / ION / EDGE / "v").iterdir()) == []
    assert not (tmp_path / "escape").exists()


def test_activate_rollback_and_reject(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    v1, v2, v3 = (add(store, tmp_path, n) for n in (1, 2, 3))
    for v in (v1, v2, v3):
        store.activate(ION, EDGE, v.model_id)
    assert store.active(ION, EDGE) == v3
    assert store.rollback(ION, EDGE) == v2
    assert store.reject(ION, EDGE, v2.model_id) is True  # the active one: roll back again
    assert store.active(ION, EDGE) == v1
    assert store.is_rejected(ION, EDGE, v2.model_id)
    assert store.reject(ION, EDGE, v3.model_id) is False  # not active: nothing changes
    assert store.rollback(ION, EDGE) is None  # nothing earlier is held
    with pytest.raises(ModelError, match="not held"):
        store.activate(ION, EDGE, "0" * 64)
    reopened = ModelStore(tmp_path / "store")
    assert reopened.active(ION, EDGE) is None
    assert reopened.is_rejected(ION, EDGE, v2.model_id)


def test_keep_n_never_prunes_the_active_version(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    versions = [add(store, tmp_path, n) for n in range(5)]
    store.activate(ION, EDGE, versions[0].model_id)
    removed = store.prune(ION, EDGE, keep=3)
    assert removed == [versions[1].model_id]
    assert [v.model_id for v in store.versions(ION, EDGE)] == [
        versions[i].model_id for i in (0, 2, 3, 4)
    ]
    assert not versions[1].directory.exists()
    store.activate(ION, EDGE, versions[4].model_id)
    store.prune(ION, EDGE, keep=1)
    assert store.versions(ION, EDGE) == [versions[4]]
    assert store.prune(ION, EDGE, keep=0) == []  # never below the active one
    assert ModelStore(tmp_path / "store").versions(ION, EDGE) == [versions[4]]


def test_version_labels_grow_across_restarts_and_clock_steps(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    assert store.next_version(ION, EDGE, 5_000) == "5000"
    assert store.next_version(ION, EDGE, 4_000) == "5001"  # the clock went back
    assert ModelStore(tmp_path / "store").next_version(ION, EDGE, 10) == "5002"


def test_names_from_the_network_must_be_names(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelError, match="invalid ION or edge"):
        store.versions("..", "x")


# -- crash repair ---------------------------------------------------------------------------


def shelf(tmp_path: Path) -> Path:
    return tmp_path / "store" / ION / EDGE


def test_a_version_renamed_but_not_indexed_is_adopted(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    v1 = add(store, tmp_path, 1)
    store.activate(ION, EDGE, v1.model_id)
    index = (shelf(tmp_path) / "index.json").read_bytes()
    v2 = add(store, tmp_path, 2)
    (shelf(tmp_path) / "index.json").write_bytes(index)  # the crash: index still the old one
    reopened = ModelStore(tmp_path / "store")
    assert [v.model_id for v in reopened.versions(ION, EDGE)] == [v1.model_id, v2.model_id]
    assert reopened.active(ION, EDGE) == StoredVersion(v1.manifest, v1.directory)


def test_half_built_versions_and_temporary_files_are_removed(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    v1 = add(store, tmp_path, 1)
    m2, p2 = file_version(tmp_path, 2)
    built = store.build(m2, p2, move=False)  # the crash: built, never installed
    (shelf(tmp_path) / ".index.json.tmp").write_bytes(b"{half")
    incomplete = shelf(tmp_path) / "v" / ("e" * 64)
    incomplete.mkdir()  # a directory without a manifest
    reopened = ModelStore(tmp_path / "store")
    assert reopened.versions(ION, EDGE) == [v1]
    assert not built.exists() and not incomplete.exists()
    assert not (shelf(tmp_path) / ".index.json.tmp").exists()


def test_an_unreadable_index_is_rebuilt_from_the_versions(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    v1, v2 = add(store, tmp_path, 1), add(store, tmp_path, 2)
    store.activate(ION, EDGE, v1.model_id)
    (shelf(tmp_path) / "index.json").write_bytes(b"\x00garbage")
    reopened = ModelStore(tmp_path / "store")
    assert [v.model_id for v in reopened.versions(ION, EDGE)] == [v1.model_id, v2.model_id]
    assert reopened.active(ION, EDGE) == v2  # the newest becomes active
    assert json.loads((shelf(tmp_path) / "index.json").read_bytes())["active"] == v2.model_id


def test_an_indexed_version_whose_directory_is_gone_is_dropped(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    v1, v2 = add(store, tmp_path, 1), add(store, tmp_path, 2)
    store.activate(ION, EDGE, v2.model_id)
    shutil.rmtree(v2.directory)
    (v1.directory / "manifest.bin").write_bytes(b"junk")  # unreadable: not trusted either
    reopened = ModelStore(tmp_path / "store")
    assert reopened.versions(ION, EDGE) == []
    assert reopened.active(ION, EDGE) is None
    assert reopened.edges() == [(ION, EDGE)]

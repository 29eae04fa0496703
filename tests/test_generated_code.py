"""The generated protobuf code in ion/v1 matches proto/ (regenerate with ./dev gen)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ion.wire import generate

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_is_current() -> None:
    assert generate.main(["--check"]) == 0, "ion/v1 is stale: run ./dev gen"


def test_a_stale_copy_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check really compares: edit a .proto in a copy and it fails."""
    proto = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", proto)
    out = tmp_path / "ion" / "v1"
    shutil.copytree(ROOT / "ion" / "v1", out)
    common = proto / "ion" / "v1" / "common.proto"
    common.write_text(common.read_text() + "\nmessage AddedLater { string x = 1; }\n")
    monkeypatch.setattr(generate, "PROTO_DIR", proto)
    monkeypatch.setattr(generate, "OUT_PACKAGE", out)
    assert generate.main(["--check"]) == 1
    assert generate.main([]) == 0  # regenerating fixes it
    assert generate.main(["--check"]) == 0

"""Regenerate the Python code for the wire schema in ``proto/`` (``./dev gen``).

The generator is the protoc bundled in the pinned ``grpcio-tools`` release, which matches the
pinned ``protobuf`` runtime.  ``--check`` exits 1 when the checked-in code is stale, so CI
catches a ``.proto`` edited without regenerating.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "proto"
OUT_PACKAGE = ROOT / "ion" / "v1"
INIT_TEXT = '"""Generated protobuf code for the ion.v1 wire schema: see proto/ and ion.wire."""\n'


def proto_files() -> list[Path]:
    return sorted((PROTO_DIR / "ion" / "v1").glob("*.proto"))


def generate_into(target: Path) -> list[Path]:
    """Run protoc into ``target`` and return the generated files (relative to ``target``)."""
    from grpc_tools import protoc  # dev-only dependency

    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={target}",
        f"--pyi_out={target}",
        *(str(p) for p in proto_files()),
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    out = target / "ion" / "v1"
    (out / "__init__.py").write_text(INIT_TEXT)
    return sorted(p.relative_to(out) for p in out.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the generated code is stale")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate_into(Path(tmp))
        fresh_dir = Path(tmp) / "ion" / "v1"
        current = sorted(
            q.relative_to(OUT_PACKAGE)
            for q in OUT_PACKAGE.glob("*")
            if q.is_file() and (q.name.endswith(("_pb2.py", "_pb2.pyi")) or q.name == "__init__.py")
        )
        stale = [
            str(f)
            for f in fresh
            if not (OUT_PACKAGE / f).exists() or not filecmp.cmp(fresh_dir / f, OUT_PACKAGE / f)
        ]
        extra = [str(c) for c in current if c not in fresh]
        if args.check:
            if stale or extra:
                print(
                    "generated code in ion/v1 is stale; run ./dev gen "
                    f"(differs: {', '.join(stale + extra)})",
                    file=sys.stderr,
                )
                return 1
            print(f"ion/v1 is current ({len(fresh)} files)")
            return 0
        OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
        for name in extra:
            (OUT_PACKAGE / name).unlink()
        for f in fresh:
            shutil.copyfile(fresh_dir / f, OUT_PACKAGE / f)
        print(f"wrote {len(fresh)} files to ion/v1")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

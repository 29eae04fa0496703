"""The agent's malloc settings: after ``tune`` a 300 KiB buffer comes from the heap (reused)
instead of a fresh mapping, in a fresh interpreter each way."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = """
import sys
from node import allocator
if sys.argv[1] == "tuned":
    assert allocator.tune()
buf = bytes(300 * 1024)
heap = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("[heap]")]
low, high = (int(x, 16) for x in heap[0].split("-"))
print("heap" if low <= id(buf) < high else "mapped")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize(("mode", "where"), [("default", "mapped"), ("tuned", "heap")])
def test_large_buffers_come_from_the_heap_once_tuned(mode: str, where: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK, mode], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == where

"""The agent process's malloc settings: large message buffers reused instead of mapped afresh.

glibc serves allocations of 128 KiB and more with a fresh ``mmap`` each and unmaps them on
``free``; its dynamic threshold is raised to the size of a freed block, so a block of exactly
that size is still mapped again.  A node receiving a model handles a few 256 KiB buffers per
chunk (the socket read, the payload, the chunk), and on a virtual machine every page of a
fresh mapping faults in on first touch: measured in a 20-node rollout
(bench/model_rollout.py), the last chunk reached the consumers at 2.4-2.8 s with glibc's
defaults and at 1.8-2.2 s with the settings below (raw paho: 1.6 s).

``tune()`` sets two fixed thresholds (which also switches the dynamic adjustment off):
blocks under ``MMAP_THRESHOLD`` come from the heap and are reused, and the heap keeps up to
``TRIM_THRESHOLD`` of free memory at its top before giving it back.  An idle agent allocates
nothing large, so its footprint does not change; after a burst a process keeps what the burst
needed at its peak (at most ``TRIM_THRESHOLD`` more than before), ready for the next one.
With 32 MiB, a process running ten nodes gave its heap back between bursts of chunks and
faulted it in again (50,000-130,000 page faults a second, ~15 % of its CPU in a rollout);
with 256 MiB, a few hundred.  Elsewhere than glibc, nothing is done.

Called when a node's model machinery is first built (``node.agent.models``): an agent that
never handles a model neither loads ``ctypes`` nor changes its allocator (its idle footprint
is held by tests/test_idle_footprint.py).  Process-wide and idempotent.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 * 1024 * 1024
TRIM_THRESHOLD = 256 * 1024 * 1024


@functools.cache
def tune() -> bool:
    """Set the thresholds (see the module docstring); False when this is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)  # the interpreter's own symbols, libc's among them
        mallopt = libc.mallopt
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only (not musl)
    except (OSError, AttributeError):
        return False
    gnu_get_libc_version.restype = ctypes.c_char_p
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.debug("glibc %s: mmap threshold %d, trim threshold %d: %s",
              gnu_get_libc_version().decode(), MMAP_THRESHOLD, TRIM_THRESHOLD,
              "set" if ok else "refused")  # fmt: skip
    return ok

"""Resource use of a child process, read from Linux's /proc without extra packages.

Every engine reports at least these for its job: CPU seconds used and resident memory.
Elsewhere (no /proc) ``read_process_stats`` returns None.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from .base import JobStats

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def read_process_stats(pid: int, proc: Path = Path("/proc")) -> JobStats | None:
    """CPU seconds (user + system) and resident bytes of ``pid``, or None if it is gone."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        statm = (proc / str(pid) / "statm").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    rss_pages = int(statm.split()[1])
    return JobStats(
        updated_ms=time.time_ns() // 1_000_000,
        values={
            "process.cpu_seconds": (utime + stime) / _CLOCK_TICKS,
            "process.rss_bytes": float(rss_pages * _PAGE_SIZE),
        },
    )

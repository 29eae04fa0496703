"""The monitor's writer: a child process that decodes, folds and commits what the link reads.

    python -m broker.monitor.writer    (started by ``service.Monitor``; stdin and stdout are
                                        its pipes to the parent, see ``handover.py``)

Why a second process: reading MQTT (paho, ~35 us of CPU per message here) and decoding,
folding and committing (~75 us) cannot share one interpreter at 10,000 messages/s on two cores;
with the commit in a thread of the same process it was worse still, as SQLite gives up and
takes back the GIL for every row while the link gives it up for every socket call
(docs/benchmarks.md, "Monitor ingest").  Here one thread does it all, in order: fold a chunk,
commit every ``max_batch`` messages or when the parent asks (every ``flush_interval_s``),
report each commit (with its alert transitions, which the parent publishes only then).

Lifetime: it stops when its stdin ends (the parent closed it, or died: the pipe closes with
it), after committing what it folded; so it ignores SIGINT and SIGTERM, which a terminal or a
process-group kill also sends it, and leaves the order to its parent.  A database it cannot
open or write is reported as ``Failed`` and ends it with exit 1.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from .core import MonitorCore
from .handover import Committed, Failed, FrameBuffer, Ready, WriterConfig, frame
from .retention import apply_retention
from .store import MonitorStore, StoreError, counters_json

log = logging.getLogger(__name__)
_READ = 1 << 20


class _Pipe:
    """Frames in from fd ``rfd``, out to fd ``wfd``; blocking, as this process has nothing
    else to do while it waits."""

    def __init__(self, rfd: int, wfd: int) -> None:
        self._rfd, self._wfd = rfd, wfd
        self._frames = FrameBuffer()
        self.parent_gone = False

    def recv(self) -> object | None:
        """The next frame; None at the end of the input."""
        while True:
            obj = self._frames.next()
            if obj is not None:
                return obj
            data = os.read(self._rfd, _READ)
            if not data:
                if self._frames.partial:
                    log.warning("input ended inside a frame: %d bytes dropped",
                                self._frames.partial)  # fmt: skip
                return None
            self._frames.feed(data)

    def send(self, obj: object) -> None:
        if self.parent_gone:
            return
        data = memoryview(frame(obj))
        try:
            while data:
                data = data[os.write(self._wfd, data) :]
        except OSError:  # BrokenPipeError: the parent is gone; commit and stop all the same
            self.parent_gone = True


class Writer:
    """The store and the pure core, driven by the parent's frames."""

    def __init__(self, cfg: WriterConfig) -> None:
        self.cfg = cfg
        self.store = MonitorStore(cfg.db_path)
        try:
            self.core = MonitorCore(cfg.monitor_id, cfg.bounds, self.store.restore())
            self.store.set_meta({"monitor_id": cfg.monitor_id,
                                 "started_ms": str(cfg.started_ms)})  # fmt: skip
        except BaseException:
            self.store.close()
            raise
        self.folded = 0  # messages folded since start
        self.committed = 0  # of those, committed

    def run(self, pipe: _Pipe) -> None:
        core, max_batch = self.core, self.cfg.max_batch
        ingest = core.ingest
        while (msg := pipe.recv()) is not None:
            assert isinstance(msg, tuple)
            kind = msg[0]
            if kind == "m":
                for topic, payload, retained, now in msg[1]:
                    ingest(topic, payload, now, retained=retained)
                self.folded += len(msg[1])
                if self.folded - self.committed >= max_batch:
                    self.commit(pipe, 0)
            elif kind == "f":
                self.commit(pipe, msg[1])
            elif kind == "t":
                core.tick(msg[1])
            elif kind == "r":
                report = apply_retention(self.store, self.cfg.retention, msg[1])
                if report.folded or report.dropped:
                    log.info("retention: %d rows folded into %d, %d dropped", report.folded,
                             report.written, report.dropped)  # fmt: skip
            else:
                log.error("unknown request %r from the monitor", kind)
        self.commit(pipe, 0)

    def commit(self, pipe: _Pipe, flush_id: int) -> None:
        w = self.core.take()
        if w.row_count or self.folded > self.committed:
            counters = counters_json(dict(self.core.counters))
            w.upserts.setdefault("meta", {})[("counters_json",)] = {
                "key": "counters_json", "value": counters}  # fmt: skip
            self.store.apply(w)
        self.committed = self.folded
        pipe.send(Committed(self.committed, flush_id, tuple(w.alerts), dict(self.core.counters)))

    def close(self) -> None:
        self.store.close()


def main() -> int:
    # The parent says when to stop (end of input); see the module docstring.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print must not corrupt the reports
    pipe = _Pipe(0, out)
    cfg = pipe.recv()
    if not isinstance(cfg, WriterConfig):
        print("broker.monitor.writer: started without its configuration", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=cfg.log_level,
        format=f"%(asctime)s %(levelname)s [{cfg.monitor_id}] %(name)s: %(message)s",
    )
    try:
        writer = Writer(cfg)
    except StoreError as exc:
        pipe.send(Failed(str(exc)))
        return 1
    pipe.send(Ready())
    try:
        writer.run(pipe)
    except StoreError as exc:
        log.error("%s", exc)  # noqa: TRY400 - the message says it all
        pipe.send(Failed(str(exc)))
        return 1
    finally:
        writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

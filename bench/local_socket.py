"""Local component socket throughput: SDK emits through ``LocalServer`` with ``FakeAgentPort``
(pipelined ``emit_nowait`` then ``flush``, 100-byte data bodies) against a raw Unix socket echo
of the very same frames, same run, same machine.  Each server runs in its own process, as the
agent does, so client and server do not share an interpreter lock.

    .venv/bin/python bench/local_socket.py [--count 50000] [--size 100] [--repeat 3]

What the rows mean:

- ``sdk -> LocalServer``: everything a component pays for an emit, and the agent's side of it:
  envelope, encode, socket, decode, port call, reply, reply decoded and matched.
- ``raw echo``: the same frames, already encoded, sent 64 to a system call and echoed back by
  a bare blocking server: the floor set by the socket and the two processes, not reachable by
  any real protocol.  ``one send per frame``: the same with a system call per frame.
- ``envelope codec``: encode + decode of the same envelope in this process, the part of the
  SDK path spent in ``ion.wire.codec`` (no socket involved), for reading the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

from ion.model.event import DataRecords
from ion.model.local import Emit, Hello, LocalFrame
from ion.model.messages import new_envelope
from ion.wire.codec import decode, encode
from ion.wire.local import encode_frame
from node.local import FakeAgentPort, LocalServer
from node.local.framing import FrameDecoder
from node.local.framing import encode as frame
from node.sdk import AgentClient, Identity

TOKEN = "bench"


# Servers (each in a child process) ---------------------------------------------------------


def run_local_server(path: str, ready: MpEvent, stop: MpEvent) -> None:
    async def main() -> None:
        port = FakeAgentPort(token=TOKEN, ion="bench", pipeline="p", keep=False)
        async with LocalServer(Path(path), port):
            ready.set()
            await asyncio.to_thread(stop.wait)

    asyncio.run(main())


def run_echo_server(path: str, ready: MpEvent, stop: MpEvent) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    listener.settimeout(0.1)
    ready.set()
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        with conn:
            conn.settimeout(None)
            while data := conn.recv(256 * 1024):
                conn.sendall(data)
    listener.close()


class Child:
    def __init__(self, target: Callable[[str, MpEvent, MpEvent], None], path: Path) -> None:
        ctx = mp.get_context("spawn")
        self.ready = ctx.Event()
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=target, args=(str(path), self.ready, self.stop))

    def __enter__(self) -> Child:
        self.proc.start()
        if not self.ready.wait(30):
            raise RuntimeError("server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


# Clients -----------------------------------------------------------------------------------


def sdk_rate(path: Path, count: int, size: int) -> float:
    client = AgentClient(path, Identity("bench", "p", "c", "n1"), token=TOKEN)
    body = DataRecords(payload=b"x" * size)
    try:
        for _ in range(1000):  # warm up
            client.emit_nowait("out", body)
        client.flush()
        start = time.perf_counter()
        for _ in range(count):
            client.emit_nowait("out", body)
        client.flush()
        return count / (time.perf_counter() - start)
    finally:
        client.close()


def frames_for(count: int, size: int) -> list[bytes]:
    body = DataRecords(payload=b"x" * size)
    return [
        frame(
            encode_frame(
                LocalFrame(i + 2, Emit("out", new_envelope(body, source_node="n1", now_ms=1)))
            )
        )
        for i in range(count)
    ]


def echo_rate(path: Path, frames: list[bytes], batch: int = 64) -> float:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))
    sock.sendall(frame(encode_frame(LocalFrame(1, Hello("bench", "p", "c", TOKEN)))))
    want = len(frames) + 1
    got = 0

    def reader() -> None:
        nonlocal got
        dec = FrameDecoder()
        while got < want:
            data = sock.recv(256 * 1024)
            if not data:
                return
            got += len(dec.feed(data))

    t = threading.Thread(target=reader)
    start = time.perf_counter()
    t.start()
    for i in range(0, len(frames), batch):
        sock.sendall(b"".join(frames[i : i + batch]))
    t.join()
    elapsed = time.perf_counter() - start
    sock.close()
    if got != want:
        raise RuntimeError(f"echo returned {got} of {want} frames")
    return len(frames) / elapsed


def codec_rate(count: int, size: int) -> float:
    env = new_envelope(DataRecords(payload=b"x" * size), source_node="n1", now_ms=1)
    start = time.perf_counter()
    for _ in range(count):
        decode(encode(env))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000, help="emits per round")
    parser.add_argument("--size", type=int, default=100, help="data body payload bytes")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best one counts")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="ion-bench-") as tmp:
        agent_path = Path(tmp) / "agent.sock"
        echo_path = Path(tmp) / "echo.sock"
        frames = frames_for(args.count, args.size)
        with Child(run_local_server, agent_path), Child(run_echo_server, echo_path):
            sdk = max(sdk_rate(agent_path, args.count, args.size) for _ in range(args.repeat))
            raw = max(echo_rate(echo_path, frames) for _ in range(args.repeat))
            raw1 = max(echo_rate(echo_path, frames, batch=1) for _ in range(args.repeat))
        codec = max(codec_rate(args.count, args.size) for _ in range(args.repeat))

    print(
        f"local socket, {args.count:,} pipelined emits of {args.size}-byte data bodies "
        f"({len(frames[0])}-byte frames), best of {args.repeat}, {os.cpu_count()} CPUs"
    )
    print(f"{'path':34} {'msgs/s':>10} {'vs raw':>8}")
    for name, rate in (
        ("sdk -> LocalServer (fake port)", sdk),
        ("raw echo of the same frames", raw),
        ("raw echo, one send per frame", raw1),
        ("envelope codec (encode+decode)", codec),
    ):
        print(f"{name:34} {rate:10,.0f} {rate / raw:7.3f}x")
    print(f"ratio raw echo / sdk: {raw / sdk:.1f}")


if __name__ == "__main__":
    main()

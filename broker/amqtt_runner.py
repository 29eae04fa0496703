"""Run the pure-Python amqtt broker as a child process: ``python -m broker.amqtt_runner``.

Used by ``broker.embedded`` where Mosquitto is not installed, so both kinds share the same
process semantics (own process group, SIGTERM to stop, log file, exit status).

Limits of this kind, compared with Mosquitto: no persistence across restarts, no queue or packet
limits (queues for offline clients grow in memory), no password file, ACL or TLS here.

Exit status: 0 after SIGTERM/SIGINT, 2 when the address is already in use, 1 on other failures.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from amqtt.broker import Broker
from amqtt.plugins.base import BaseAuthPlugin

log = logging.getLogger("broker.amqtt_runner")

EXIT_ADDRESS_IN_USE = 2
ADDRESS_IN_USE_MESSAGE = "Error: Address already in use"


class AcceptAllAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """Let every client in, without marking its session anonymous.

    amqtt's own ``AnonymousAuthPlugin`` flags every session it admits as anonymous, and amqtt
    then neither queues QoS 1 messages for such a session while it is offline nor keeps the
    session after a disconnect: persistent sessions silently stop working.  This plugin admits
    clients the same way but leaves the session an ordinary, persistent one.
    """

    async def authenticate(self, *, session: Any) -> bool:
        return True


def broker_config(host: str, port: int) -> dict[str, Any]:
    """The amqtt configuration: one TCP listener, our auth plugin and nothing else."""
    return {
        "listeners": {"default": {"type": "tcp", "bind": _bind(host, port)}},
        # By its importable name: run as __main__, amqtt imports this module once more.
        "plugins": {"broker.amqtt_runner.AcceptAllAuthPlugin": {}},
    }


def _bind(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve(host: str, port: int) -> int:
    """Run the broker until SIGTERM or SIGINT; return the process exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(broker_config(host, port))
    try:
        await broker.start()
    except Exception as exc:  # noqa: BLE001 - amqtt wraps every start failure alike
        if _address_in_use(exc):
            print(f"{ADDRESS_IN_USE_MESSAGE}: {host}:{port}", file=sys.stderr, flush=True)
            return EXIT_ADDRESS_IN_USE
        print(f"Error: amqtt broker failed to start: {exc}", file=sys.stderr, flush=True)
        return 1
    log.info("amqtt broker listening on %s:%d", host, port)
    await stop.wait()
    log.info("stopping")
    await broker.shutdown()
    return 0


def _address_in_use(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, configure logging to a file and serve."""
    parser = argparse.ArgumentParser(prog="python -m broker.amqtt_runner", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log-file", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(
        filename=args.log_file,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # amqtt logs each packet at INFO and above through these; keep the file readable.
    for noisy in ("amqtt.mqtt.protocol", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    sys.exit(main())

"""Helpers for every test: waiting without fixed sleeps, unique names, artefacts on failure.

Import as ``from support import wait_until`` (tests/ is on sys.path via tests/conftest.py).

Timeouts are generous because CI may be a loaded 2-core machine; set ``ION_TEST_TIMEOUT_SCALE``
(e.g. 3) to stretch every ``wait_until`` further on slower machines.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0
_SCALE_ENV = "ION_TEST_TIMEOUT_SCALE"


def scaled(seconds: float) -> float:
    """``seconds`` stretched by ``$ION_TEST_TIMEOUT_SCALE`` (default 1)."""
    try:
        factor = float(os.environ.get(_SCALE_ENV, "1"))
    except ValueError:
        factor = 1.0
    return seconds * max(factor, 1.0)


def wait_until(
    predicate: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails the test (``AssertionError``) after ``timeout`` seconds (scaled, see ``scaled``),
    with ``message`` (a string, or a callable evaluated at failure for up-to-date details).
    Exceptions from the predicate propagate: a predicate that may raise should catch.
    """
    deadline = time.monotonic() + scaled(timeout)
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(_timeout_message(predicate, timeout, message))
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T | Awaitable[T]],
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the same signature as wait_until
    *,
    interval: float = 0.02,
    message: str | Callable[[], str] = "",
) -> T:
    """``wait_until`` for async tests: sleeps with ``asyncio.sleep``; the predicate may be async."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + scaled(timeout)
    while True:
        value = predicate()
        if isinstance(value, Awaitable):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(_timeout_message(predicate, timeout, message))
        await asyncio.sleep(interval)


def _timeout_message(
    predicate: Callable[..., object], timeout: float, message: str | Callable[[], str]
) -> str:
    detail = message() if callable(message) else message
    name = getattr(predicate, "__qualname__", repr(predicate))
    text = f"condition {name} not met within {scaled(timeout):.1f}s"
    return f"{text}: {detail}" if detail else text


def unique_name(prefix: str = "t") -> str:
    """A short unique name for topics and client ids on a broker shared by many tests."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Artifacts:
    """Files a failing test leaves for a human: ``test-artifacts/<test id>/``.

    Nothing is created until something is saved, so passing runs leave no directory behind.
    """

    def __init__(self, root: Path, nodeid: str) -> None:
        self.root = root
        self.nodeid = nodeid

    @property
    def path(self) -> Path:
        """This test's directory (created on first use)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.nodeid).strip("_")[:150] or "test"
        path = self.root / safe
        path.mkdir(parents=True, exist_ok=True)
        return path

    def save_text(self, name: str, text: str) -> Path:
        """Write ``text`` to ``name`` in this test's directory."""
        target = self.path / name
        target.write_text(text, encoding="utf-8")
        return target

    def save_file(self, name: str, source: Path) -> Path | None:
        """Copy ``source`` (if it exists) to ``name`` in this test's directory."""
        if not source.exists():
            return None
        target = self.path / name
        shutil.copyfile(source, target)
        return target

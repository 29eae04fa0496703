"""Fixtures for every test: real brokers, a fault proxy, leak checks and failure artefacts.

Brokers (integration tests; Mosquitto missing makes them fail with an install hint, not skip):

- ``mosquitto`` (session): one shared Mosquitto on a free loopback port, no persistence.  Use
  unique topics and client ids (``support.unique_name``); never stop or restart it (the leak
  check restarts it and fails the test that did).
- ``fresh_mosquitto``: a Mosquitto of the test's own, persistence in tmp_path, so
  ``restart()`` keeps retained messages, sessions and queues.
- ``broker_factory``: ``broker_factory(kind="mosquitto"|"amqtt", settings=...)`` starts more.
- ``proxy_factory``: ``proxy_factory(host, port)`` puts a ``FaultProxy`` in front of anything.
- ``artifacts``: where a test may keep files for a human (``test-artifacts/<test id>/``,
  created only when used).  Broker logs land there when a test using a broker fails.

Leak check (autouse, every test): a test fails if it leaves child processes behind (named in
the message, then killed), or, for ``@pytest.mark.asyncio`` tests, tasks still pending in its
event loop after its fixtures are torn down (named, then cancelled).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Literal

# tests/ on sys.path, so "support" imports however pytest was started (rootdir, -p, IDE).
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import pytest  # noqa: E402
import pytest_asyncio  # noqa: E402
from support import Artifacts  # noqa: E402
from support.brokers import BrokerFactory, require_mosquitto, save_broker_logs  # noqa: E402
from support.leaks import (  # noqa: E402
    become_subreaper,
    cancel_and_wait,
    children_of,
    describe_children,
    describe_tasks,
    kill_and_reap,
    leftover_tasks,
    task_snapshot,
    wait_for_no_new_children,
)
from support.proxy import FaultProxy  # noqa: E402

from broker.embedded import EmbeddedBroker, mosquitto_path, start_broker  # noqa: E402
from broker.settings import BrokerSettings  # noqa: E402

# pytester: the leak check's own tests run a pytest inside pytest.
pytest_plugins = ("pytester",)

ARTIFACTS_ENV = "ION_TEST_ARTIFACTS"
_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()
_SUBREAPER = pytest.StashKey[bool]()
# Seconds a test's children get to finish exiting before they count as leaked.
LEAK_GRACE_ENV = "ION_LEAK_GRACE"
LoopScope = Literal["function", "class", "module", "package", "session"]
_LOOP_SCOPES: tuple[LoopScope, ...] = ("function", "class", "module", "package", "session")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SUBREAPER] = become_subreaper()


def pytest_report_header(config: pytest.Config) -> list[str]:
    found = mosquitto_path()
    return [
        f"mosquitto: {found or 'NOT INSTALLED (integration tests will fail)'}",
        f"leak check: child processes (subreaper {'on' if config.stash[_SUBREAPER] else 'off'})"
        ", asyncio tasks",
    ]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def failed_so_far(request: pytest.FixtureRequest) -> bool:
    """Has the test (its setup or its call) failed?  For fixture teardowns."""
    reports = request.node.stash.get(_REPORTS, {})
    return any(report.failed for report in reports.values())


# -- artefacts ------------------------------------------------------------------------------


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Artifacts:
    """``test-artifacts/<test id>/`` (or under ``$ION_TEST_ARTIFACTS``), created on first save."""
    root = Path(os.environ.get(ARTIFACTS_ENV) or request.config.rootpath / "test-artifacts")
    return Artifacts(root, request.node.nodeid)


# -- brokers --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One Mosquitto for the whole session (shared: use unique topics; do not stop it)."""
    require_mosquitto()
    with start_broker(
        kind="mosquitto",
        data_dir=tmp_path_factory.mktemp("mosquitto-session"),
        settings=BrokerSettings(persistence=False),
    ) as broker:
        yield broker


@pytest.fixture
def fresh_mosquitto(
    tmp_path: Path, request: pytest.FixtureRequest, artifacts: Artifacts
) -> Iterator[EmbeddedBroker]:
    """A Mosquitto for this test alone, persistent in tmp_path (restart() keeps state)."""
    require_mosquitto()
    broker = start_broker(kind="mosquitto", data_dir=tmp_path / "fresh-mosquitto")
    try:
        yield broker
    finally:
        if failed_so_far(request):
            save_broker_logs(artifacts, "fresh_mosquitto", broker)
        broker.close()


@pytest.fixture
def broker_factory(
    tmp_path: Path, request: pytest.FixtureRequest, artifacts: Artifacts
) -> Iterator[BrokerFactory]:
    """``broker_factory(kind=..., settings=...)`` -> a started broker; all stopped at the end."""
    factory = BrokerFactory(tmp_path)
    try:
        yield factory
    finally:
        if failed_so_far(request):
            for index, broker in enumerate(factory.brokers):
                save_broker_logs(artifacts, f"broker_factory-{index}-{broker.kind}", broker)
        factory.close_all()


@pytest.fixture
def proxy_factory() -> Iterator[Callable[[str, int], FaultProxy]]:
    """``proxy_factory(host, port)`` -> a ``FaultProxy`` in front of it; all closed at the end."""
    proxies: list[FaultProxy] = []

    def make(host: str, port: int) -> FaultProxy:
        proxy = FaultProxy(host, port)
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()


# -- leak checks ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _leak_check(request: pytest.FixtureRequest, artifacts: Artifacts) -> Iterator[None]:
    """Fail a test that leaves child processes (or, if async, tasks) behind."""
    baseline = set(children_of(os.getpid()))
    shared: EmbeddedBroker | None = None
    if "mosquitto" in request.fixturenames:
        shared = request.getfixturevalue("mosquitto")
        shared_pid = shared.pid
    if pytest_asyncio.is_async_test(request.node):
        # Set up before the test's own async fixtures, so torn down after them.
        request.getfixturevalue(f"_ion_task_guard_{_loop_scope(request.node)}")
    yield
    problems: list[str] = []
    if shared is not None:
        if failed_so_far(request):
            save_broker_logs(artifacts, "mosquitto-session", shared)
        if shared.pid != shared_pid:
            if shared.pid is not None:
                baseline.add(shared.pid)  # reported below, not as a leak
            problems.append(
                "the shared session broker `mosquitto` was stopped or restarted by this test; "
                "use fresh_mosquitto or broker_factory for a broker you stop or restart"
            )
    leaked = wait_for_no_new_children(baseline, float(os.environ.get(LEAK_GRACE_ENV, "3")))
    if leaked:
        kill_and_reap(leaked)
        problems.append(describe_children(leaked))
    if shared is not None and not shared.is_running():
        shared.start()  # after the child check, so the new process is not blamed on this test
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _loop_scope(item: pytest.Item) -> str:
    """The loop scope pytest-asyncio runs this test in (marker, else the ini default)."""
    marker = item.get_closest_marker("asyncio")
    scope = None
    if marker is not None:
        scope = marker.kwargs.get("loop_scope") or marker.kwargs.get("scope")
    return str(scope or item.config.getini("asyncio_default_test_loop_scope") or "function")


def _make_task_guard(loop_scope: LoopScope) -> Any:
    @pytest_asyncio.fixture(loop_scope=loop_scope, name=f"_ion_task_guard_{loop_scope}")
    async def guard() -> AsyncIterator[None]:
        baseline = task_snapshot()
        yield
        left = await leftover_tasks(baseline)
        if left:
            message = describe_tasks(left)
            await cancel_and_wait(left)
            pytest.fail(message, pytrace=False)

    return guard


for _scope in _LOOP_SCOPES:
    globals()[f"_ion_task_guard_{_scope}"] = _make_task_guard(_scope)

"""Engine adapters are imported on first use, and one that cannot be loaded says why."""

from __future__ import annotations

import sys

import pytest

from node.engines.base import JobStartError
from node.engines.lazy import LazyEngines


def test_adapters_load_on_first_lookup() -> None:
    engines = LazyEngines({"python": "node.engines.python_engine:PythonEngine"})
    assert list(engines) == ["python"]
    assert len(engines) == 1
    engine = engines["python"]
    assert engine.name == "python"
    assert engines["python"] is engine
    assert engines.get("spark") is None


@pytest.mark.asyncio
async def test_an_adapter_that_cannot_be_loaded_is_unavailable_with_the_reason() -> None:
    engines = LazyEngines({"odd": "no_such_module_for_ion:Engine"})
    engine = engines["odd"]
    reason = engine.check_available()
    assert reason is not None
    assert "no_such_module_for_ion" in reason
    with pytest.raises(JobStartError):
        await engine.start(None)  # type: ignore[arg-type]


def test_an_idle_agent_does_not_import_the_spark_or_tensorflow_adapters() -> None:
    import subprocess

    code = (
        "import sys, node.agent.service as s; s.default_engines(); "
        "print(any(m in sys.modules for m in "
        "('node.engines.spark_engine', 'node.engines.tensorflow_engine', 'ion.validate.core')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert out.strip() == "False"

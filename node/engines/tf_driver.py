"""The tensorflow engine's child: ``python -m node.engines.tf_driver --spec FILE``.

It is the python runner (``node.runner``) with more built-in components: the general ones
(``node.runner.builtin``), the shipped python components the catalog lists for this engine too
(``csv_source``, ``model_publisher``, ``health_reporter``, ...; ``node.components``) and the
TensorFlow ones (``node.components.tensorflow``).  TensorFlow itself is imported only by
the components that need it, when they run, so a pipeline of plain components starts as fast
as under the python engine.

Before anything else it checks that TensorFlow is installed for *this* interpreter (the engine
may be configured with another one than the agent's), and rejects the job with the fix if not:
exit status 2 and an ``ion-runner: error:`` line, which the engine reports as start_failed.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence

from node.runner.registry import Registry
from node.runner.spec import ERROR_PREFIX, EXIT_SPEC_ERROR

MISSING_TENSORFLOW = "tensorflow is not installed; pip install 'ion-runtime[tensorflow]'"


def tensorflow_installed() -> bool:
    """Whether ``import tensorflow`` would find a module, without importing it (seconds)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        return False


def main(argv: Sequence[str] | None = None) -> int:
    if not tensorflow_installed():
        print(f"{ERROR_PREFIX}{MISSING_TENSORFLOW}", file=sys.stderr, flush=True)
        return EXIT_SPEC_ERROR
    from node.runner.__main__ import main as run_pipeline

    return run_pipeline(argv, registry=registry(), engine="tensorflow")


def registry() -> Registry:
    """The components this engine runs: python built-ins, then the TensorFlow ones."""
    from node.components.python_builtins import PYTHON_BUILTINS
    from node.components.tensorflow import BUILTINS as TENSORFLOW_BUILTINS
    from node.runner.builtin import BUILTINS as RUNNER_BUILTINS

    return Registry({**RUNNER_BUILTINS, **PYTHON_BUILTINS, **TENSORFLOW_BUILTINS})


if __name__ == "__main__":
    sys.exit(main())

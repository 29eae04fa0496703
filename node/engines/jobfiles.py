"""What every engine adapter writes for its child: the runner spec file and the environment.

Shared by the python, spark and tensorflow adapters, so a pipeline's components see the same
identity, socket and spec whatever engine runs them.
"""

from __future__ import annotations

import os
import site
from pathlib import Path

from node.runner import spec as runner_spec

from .base import JobSpec, JobStartError

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The directory holding the ``ion``, ``node`` and ``broker`` packages."""


def write_runner_spec(job: JobSpec, file_name: str) -> Path:
    """Write the job's runner spec into its work dir (atomically); return its absolute path.

    Raises ``JobStartError`` when it cannot be written.  Blocking: call it in a thread.
    """
    spec = runner_spec.RunnerSpec(job.ion, job.version, job.node_id, job.pipeline, job.edges)
    path = (job.work_dir / file_name).absolute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        runner_spec.write(spec, path)
    except (OSError, ValueError) as e:
        raise JobStartError(f"cannot write {path}: {e}") from e
    return path


def child_env(job: JobSpec) -> dict[str, str]:
    """The agent's environment plus the job's identity, its socket, and ``job.env`` on top."""
    env = dict(os.environ)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",  # output reaches the log as it is written
            "ION_ION": job.ion,
            "ION_PIPELINE": job.pipeline.name,
            "ION_NODE_ID": job.node_id,
            "ION_VERSION": str(job.version),
            "ION_WORK_DIR": str(job.work_dir.absolute()),
        }
    )
    if job.agent_socket is not None:
        env["ION_AGENT_SOCKET"] = str(job.agent_socket)
    # The child must run the runner the agent has: a source checkout (not in site-packages) is
    # made importable explicitly, whatever the child's working directory.
    root = str(REPO_ROOT)
    if root not in _site_dirs():
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([root, *(p for p in parts if p != root)])
    env.update(job.env)
    return env


def _site_dirs() -> set[str]:
    dirs = set(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        dirs.add(site.getusersitepackages())
    return {str(Path(d).resolve()) for d in dirs}

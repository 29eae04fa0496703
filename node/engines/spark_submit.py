"""How a Spark job is submitted: where spark-submit and Java are, and the command line.

Nothing here imports pyspark or starts a process: ``check_available`` must stay cheap, and the
agent of a small gateway need not have Spark at all.

- spark-submit: the one the engine was given, else ``$SPARK_HOME/bin/spark-submit``, else the
  one inside the installed pyspark package (``pyspark/bin/spark-submit``, found with
  ``importlib.util.find_spec``, which does not import the package).
- Java: what spark-class runs, ``$JAVA_HOME/bin/java``, else ``java`` on PATH; its version is
  read from the JDK's ``release`` file rather than by running ``java -version``.
- The command: ``spark-submit --master M --conf ... spark_driver.py --spec FILE --info FILE``.
  Settings the engine relies on (the event log's place and format, the master) cannot be
  overridden from ``engine_config``; the others are defaults that ``engine_config`` may change.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MIN_JAVA = 17
DEFAULT_MASTER = "local[*]"
LOG_LEVELS = ("error", "warn", "info", "debug")
DEFAULT_LOG_LEVEL = "warn"
DRIVER = Path(__file__).resolve().with_name("spark_driver.py")
"""The program spark-submit runs: the pipeline runner with the Spark components."""

INSTALL_PYSPARK = "pyspark is not installed; pip install 'ion-runtime[spark]'"

# engine_config keys that are not spark.* properties.
ENGINE_KEYS = {
    "master": f"the Spark master URL [{DEFAULT_MASTER}], e.g. spark://host:7077 or local[2]",
    "log_level": f"the driver's Spark log level [{DEFAULT_LOG_LEVEL}]: {', '.join(LOG_LEVELS)}",
}
# spark.* keys the engine sets itself, and why they cannot be changed.
MANAGED = {
    "spark.master": "use the engine_config key 'master'",
    "spark.submit.deployMode": "the driver always runs on this node (client mode)",
    "spark.eventLog.enabled": "the engine reads its statistics from the event log",
    "spark.eventLog.dir": "the event log is written into the job's work dir",
    "spark.eventLog.compress": "the engine reads the event log uncompressed",
    "spark.eventLog.rolling.enabled": "the engine reads a single event log file",
}


@dataclass(frozen=True, slots=True)
class SparkSettings:
    """A pipeline's ``engine_config``, checked."""

    master: str = DEFAULT_MASTER
    log_level: str = DEFAULT_LOG_LEVEL
    conf: Mapping[str, str] = field(default_factory=dict)
    """The pipeline's own ``spark.*`` properties."""


def parse_engine_config(config: Mapping[str, str]) -> SparkSettings:
    """Check ``engine_config``; ValueError naming every problem."""
    problems = []
    conf: dict[str, str] = {}
    for key, value in config.items():
        if key in MANAGED:
            problems.append(f"engine_config key {key!r} cannot be set: {MANAGED[key]}")
        elif key.startswith("spark.") and len(key) > len("spark."):
            if "\n" in value or "\0" in value:
                problems.append(f"engine_config value of {key!r} must be one line")
            conf[key] = value
        elif key not in ENGINE_KEYS:
            known = ", ".join(sorted(ENGINE_KEYS))
            problems.append(
                f"unknown engine_config key {key!r} for spark (known: {known}, spark.*)"
            )
    master = config.get("master", DEFAULT_MASTER).strip()
    if not master or any(ch.isspace() for ch in master):
        problems.append(f"engine_config 'master' must be a Spark master URL, not {master!r}")
    level = config.get("log_level", DEFAULT_LOG_LEVEL).lower()
    if level not in LOG_LEVELS:
        problems.append(
            f"engine_config 'log_level' must be one of {', '.join(LOG_LEVELS)}, not {level!r}"
        )
    if problems:
        raise ValueError("; ".join(problems))
    return SparkSettings(master=master, log_level=level, conf=conf)


# -- finding spark-submit and Java ---------------------------------------------------------


def find_spark_submit(explicit: str | None, environ: Mapping[str, str]) -> tuple[str | None, str]:
    """(path, "") when spark-submit is found, else (None, why not and the fix)."""
    if explicit is not None:
        found = shutil.which(explicit)
        if found is None:
            return None, f"spark-submit {explicit!r} not found or not executable"
        return found, ""
    spark_home = environ.get("SPARK_HOME")
    if spark_home:
        candidate = Path(spark_home) / "bin" / "spark-submit"
        if not os.access(candidate, os.X_OK):
            return None, (
                f"SPARK_HOME={spark_home} has no executable bin/spark-submit; "
                "point SPARK_HOME at a Spark installation or unset it to use pyspark's"
            )
        return str(candidate), ""
    try:
        spec = importlib.util.find_spec("pyspark")
    except (ImportError, ValueError):  # a broken or half-installed package
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None, INSTALL_PYSPARK
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "spark-submit"
        if os.access(candidate, os.X_OK):
            return str(candidate), ""
    return None, f"pyspark has no executable bin/spark-submit; reinstall it ({INSTALL_PYSPARK})"


def find_java(environ: Mapping[str, str]) -> Path | None:
    """The java spark-class will run (JAVA_HOME first, as spark-class does), or None."""
    java_home = environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        return candidate if os.access(candidate, os.X_OK) else None
    found = shutil.which("java", path=environ.get("PATH", os.defpath))
    return Path(found) if found else None


def java_major_version(java: Path) -> int | None:
    """The major version from the JDK's ``release`` file (None: no such file, or unreadable).
    ``1.8.0_392`` is 8, ``17.0.15`` is 17."""
    home = java.resolve().parent.parent
    try:
        text = (home / "release").read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="?(\d+)(?:\.(\d+))?', text, re.MULTILINE)
    if match is None:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def check_java(environ: Mapping[str, str]) -> str | None:
    """None when a Java that Spark 4 can use is there (or its version cannot be told)."""
    fix = (
        "install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless) "
        "and put it on PATH or set JAVA_HOME"
    )
    java = find_java(environ)
    if java is None:
        where = f"JAVA_HOME={environ['JAVA_HOME']}" if environ.get("JAVA_HOME") else "PATH"
        return f"Java {MIN_JAVA}+ not found (looked in {where}); {fix}"
    major = java_major_version(java)
    if major is not None and major < MIN_JAVA:
        return f"Java {major} at {java} is too old: Spark needs Java {MIN_JAVA}+; {fix}"
    return None


# -- the command line ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Submission:
    """Everything one spark-submit run needs, as plain values."""

    spark_submit: str
    settings: SparkSettings
    app_name: str
    spec_path: Path
    info_path: Path
    event_dir: Path
    log4j_path: Path
    work_dir: Path
    loopback: bool
    """The driver binds to 127.0.0.1 (SPARK_LOCAL_IP is that), so its host defaults to it."""


def spark_conf(sub: Submission) -> dict[str, str]:
    """The ``--conf`` properties: defaults, then the pipeline's, then the managed ones."""
    conf = {
        "spark.app.name": sub.app_name,
        "spark.ui.port": "0",  # any free port; the driver tells us which (see spark_driver)
        "spark.ui.showConsoleProgress": "false",  # carriage-return bars garble the log
    }
    if sub.loopback:
        conf["spark.driver.host"] = "127.0.0.1"
        conf["spark.driver.bindAddress"] = "127.0.0.1"
    conf.update(sub.settings.conf)
    # Our log4j2 file comes first so a pipeline's own java options still apply after it.
    ours = f"-Dlog4j2.configurationFile={sub.log4j_path.as_uri()}"
    theirs = sub.settings.conf.get("spark.driver.defaultJavaOptions", "")
    conf["spark.driver.defaultJavaOptions"] = f"{ours} {theirs}".strip()
    conf.update(
        {
            "spark.eventLog.enabled": "true",
            "spark.eventLog.dir": sub.event_dir.as_uri(),
            "spark.eventLog.compress": "false",
            "spark.eventLog.rolling.enabled": "false",
        }
    )
    return conf


def command(sub: Submission) -> list[str]:
    argv = [sub.spark_submit, "--master", sub.settings.master]
    for key, value in spark_conf(sub).items():
        argv += ["--conf", f"{key}={value}"]
    argv += [
        str(DRIVER),
        "--spec",
        str(sub.spec_path),
        "--info",
        str(sub.info_path),
        "--work-dir",
        str(sub.work_dir),
    ]
    return argv


def driver_env(env: Mapping[str, str], job_env: Mapping[str, str], python: str) -> dict[str, str]:
    """The child environment (``env``, which already has ``job_env`` on top) plus what Spark
    needs: our interpreter for the driver (it must import ``node``), loopback binding unless
    the job or the agent chose an address."""
    out = dict(env)
    if "PYSPARK_DRIVER_PYTHON" not in job_env:
        out["PYSPARK_DRIVER_PYTHON"] = python
    out.setdefault("PYSPARK_PYTHON", python)
    out.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    return out


def log4j_properties(level: str) -> str:
    """The driver's log4j2 configuration: one line per record on stderr, no timestamps (the
    agent stamps every line), ``level`` for Spark, quieter for the chattiest libraries."""
    return "\n".join(
        [
            "# Written by the ION spark engine for this job.",
            f"rootLogger.level = {level}",
            "rootLogger.appenderRef.stderr.ref = console",
            "appender.console.type = Console",
            "appender.console.name = console",
            "appender.console.target = SYSTEM_ERR",
            "appender.console.layout.type = PatternLayout",
            "appender.console.layout.pattern = %p %c{1}: %m%n%ex",
            "logger.hadoop.name = org.apache.hadoop.util.NativeCodeLoader",
            "logger.hadoop.level = error",
            "logger.jetty.name = org.sparkproject.jetty",
            "logger.jetty.level = warn",
            "",
        ]
    )

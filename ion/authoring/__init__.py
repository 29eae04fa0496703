"""The ION authoring format: YAML text to typed definitions and back.

``parse_ion`` and ``load_ion_file`` collect every schema problem with its location and line;
``dump_ion`` writes a definition back as YAML that parses to an equal definition.  The format
is documented in ``docs/ion-format.md``; semantic checks live in ``ion.validate``.

The names are loaded on first use (PEP 562): the node agent needs only ``durations``, and the
YAML reader, schema and writer are not worth their memory on a small gateway.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ion.authoring.dump import dump_ion
    from ion.authoring.durations import format_duration, parse_duration, schedule_interval_ms
    from ion.authoring.schema import API_VERSION, KIND
    from ion.authoring.yaml_loader import ParsedIon, load_ion_file, parse_ion

__all__ = [
    "API_VERSION",
    "KIND",
    "ParsedIon",
    "dump_ion",
    "format_duration",
    "load_ion_file",
    "parse_duration",
    "parse_ion",
    "schedule_interval_ms",
]

_HOME = {
    "dump_ion": "dump",
    "format_duration": "durations",
    "parse_duration": "durations",
    "schedule_interval_ms": "durations",
    "API_VERSION": "schema",
    "KIND": "schema",
    "ParsedIon": "yaml_loader",
    "load_ion_file": "yaml_loader",
    "parse_ion": "yaml_loader",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value

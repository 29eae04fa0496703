"""The ION authoring format: YAML text to typed definitions and back.

``parse_ion`` and ``load_ion_file`` collect every schema problem with its location and line;
``dump_ion`` writes a definition back as YAML that parses to an equal definition.  The format
is documented in ``docs/ion-format.md``; semantic checks live in ``ion.validate``.
"""

from __future__ import annotations

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

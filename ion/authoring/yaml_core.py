"""YAML reading and writing for ION files, with the YAML 1.2 core schema.

PyYAML resolves plain scalars by YAML 1.1, where ``on``, ``no`` and ``yes`` are booleans, ``1:30``
is the integer 90 and ``1e3`` is a string.  ION files are read with the YAML 1.2 core schema
instead: only ``true``/``false`` are booleans, ``null``/``~``/empty is null, integers are decimal,
``0o`` octal or ``0x`` hex, floats are decimal with optional exponent, ``.inf`` or ``.nan``.
Everything else is a string.

We only compose (text to nodes with line marks); turning nodes into values is the schema
reader's job, so every problem gets a location and a line.  The dumper quotes any string that
either schema would read as something else, so what it writes reads back the same here and in
YAML 1.1 tools.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import yaml
from yaml.composer import Composer
from yaml.nodes import Node, ScalarNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

logger = logging.getLogger(__name__)

NULL_TAG = "tag:yaml.org,2002:null"
BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
STR_TAG = "tag:yaml.org,2002:str"
MERGE_TAG = "tag:yaml.org,2002:merge"
SEQ_TAG = "tag:yaml.org,2002:seq"
MAP_TAG = "tag:yaml.org,2002:map"

_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_MERGE = re.compile(r"^(?:<<)$")

_CORE_RESOLVERS: tuple[tuple[str, re.Pattern[str], list[str]], ...] = (
    (NULL_TAG, _NULL, ["~", "n", "N", ""]),
    (BOOL_TAG, _BOOL, list("tTfF")),
    (INT_TAG, _INT, list("-+0123456789")),
    (FLOAT_TAG, _FLOAT, list("-+0123456789.")),
    (MERGE_TAG, _MERGE, ["<"]),
)


class CoreResolver(BaseResolver):
    """Plain-scalar resolution by the YAML 1.2 core schema (plus ``<<`` merge keys)."""


for _tag, _regexp, _first in _CORE_RESOLVERS:
    CoreResolver.add_implicit_resolver(_tag, _regexp, _first)


class CoreComposer(Reader, Scanner, Parser, Composer, CoreResolver):
    """Text to a node tree with marks; no constructor, so nothing is ever instantiated."""

    def __init__(self, text: str) -> None:
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        CoreResolver.__init__(self)


def compose(text: str) -> Node | None:
    """The single document in ``text`` as nodes; ``None`` when empty.

    Raises ``yaml.YAMLError`` (with a mark where PyYAML knows one) for text that is not YAML or
    holds more than one document.
    """
    composer = CoreComposer(text)
    try:
        return composer.get_single_node()
    finally:
        composer.dispose()


def scalar_value(node: ScalarNode) -> bool | int | float | str | None:
    """The value of a scalar node by its (resolved or explicit) tag.

    Raises ``ValueError`` for tags outside the core schema (``!!timestamp``, ``!custom``) and
    for text that does not fit an explicit tag (``!!int abc``).
    """
    text: str = node.value
    tag = node.tag
    if tag == STR_TAG:
        return text
    if tag == NULL_TAG:
        if not _NULL.match(text):
            raise ValueError(f"{text!r} is not null")
        return None
    if tag == BOOL_TAG:
        if not _BOOL.match(text):
            raise ValueError(f"{text!r} is not a boolean (true or false)")
        return text.lower() == "true"
    if tag == INT_TAG:
        return _int(text)
    if tag == FLOAT_TAG:
        return _float(text)
    raise ValueError(f"unsupported YAML tag {tag!r}")


def _int(text: str) -> int:
    if not _INT.match(text):
        raise ValueError(f"{text!r} is not an integer")
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


def _float(text: str) -> float:
    if _INT.match(text) and not text.startswith(("0o", "0x")):
        return float(int(text, 10))
    if not _FLOAT.match(text):
        raise ValueError(f"{text!r} is not a number")
    lowered = text.lower()
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    if lowered == ".nan":
        return math.nan
    return float(text)


class FlowMap(dict[str, Any]):
    """A mapping the dumper writes in flow style: ``{k: 4, seed: 7}``."""


class FlowList(list[Any]):
    """A list the dumper writes in flow style: ``[a, b]``."""


class CoreDumper(yaml.SafeDumper):
    """SafeDumper that also quotes strings the core schema would read as something else, and
    indents list items under their key the way Kubernetes manifests are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, indentless=False)


for _tag, _regexp, _first in _CORE_RESOLVERS:
    CoreDumper.add_implicit_resolver(_tag, _regexp, _first)


def _represent_flow_map(dumper: yaml.SafeDumper, data: FlowMap) -> Node:
    return dumper.represent_mapping(MAP_TAG, data, flow_style=True)


def _represent_flow_list(dumper: yaml.SafeDumper, data: FlowList) -> Node:
    return dumper.represent_sequence(SEQ_TAG, data, flow_style=True)


_LINE_BREAKS = frozenset("\r\n\x85\u2028\u2029")


def _represent_str(dumper: yaml.SafeDumper, data: str) -> Node:
    # PyYAML folds the exotic line breaks (NEL, LS, PS) of plain and single-quoted scalars
    # into spaces on reading; double quotes escape every one of them.
    style = '"' if _LINE_BREAKS.intersection(data) else None
    return dumper.represent_scalar(STR_TAG, data, style=style)


def _represent_tuple(dumper: yaml.SafeDumper, data: tuple[Any, ...]) -> Node:
    return dumper.represent_sequence(SEQ_TAG, list(data))


CoreDumper.add_representer(FlowMap, _represent_flow_map)
CoreDumper.add_representer(FlowList, _represent_flow_list)
CoreDumper.add_representer(tuple, _represent_tuple)
CoreDumper.add_representer(str, _represent_str)


def dump(data: Any) -> str:
    """YAML text for plain data (dicts keep their order)."""
    return yaml.dump(
        data,
        Dumper=CoreDumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=100,
    )

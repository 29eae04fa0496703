"""Typed reading of composed YAML nodes that collects problems instead of raising.

Every accessor takes the node and its location, records the line of what it read, and returns
``None`` (after recording a problem) when the node is not what the schema wants.  The schema
reader builds on these and so never stops at the first problem.
"""

from __future__ import annotations

import difflib
import enum
import logging
import math
from collections.abc import Sequence
from typing import TypeVar

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ion.authoring import yaml_core
from ion.authoring.durations import parse_duration
from ion.authoring.locations import child, item, line_of
from ion.errors import Problem, Severity
from ion.model.definition import ArgValue

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=enum.Enum)

MAX_DEPTH = 32  # as deep as the wire format nests argument values
MAX_NODES = 100_000  # aliases can multiply a small file into a huge value; stop well before


def suggest(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` when a choice is close to ``word``, else empty."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def describe(node: Node) -> str:
    """How a node looks to an author, for 'expected X, got Y' messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    try:
        value = yaml_core.scalar_value(node) if isinstance(node, ScalarNode) else None
    except ValueError:
        return f"{node.tag}"
    if value is None:
        return "null"
    kind = {bool: "boolean", int: "integer", float: "number", str: "string"}[type(value)]
    return f"{kind} {node.value!r}" if kind != "string" else f"string {value!r}"


def peek_text(node: Node, key: str) -> str:
    """The string under ``key`` of a mapping node, read silently (merge keys applied);
    ``""`` when absent or not a string.  Used to name list elements before reading them."""
    for found, value in NodeReader(None).pairs(node, "", "") or ():
        if found == key and isinstance(value, ScalarNode):
            return str(value.value) if value.tag == yaml_core.STR_TAG else ""
    return ""


class NodeReader:
    def __init__(self, file: str | None) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self.lines: dict[str, int] = {}
        self._nodes_left = MAX_NODES

    # -- bookkeeping -------------------------------------------------------------------------

    @staticmethod
    def line(node: Node | None) -> int | None:
        if node is None or node.start_mark is None:
            return None
        return int(node.start_mark.line) + 1

    def mark(self, loc: str, node: Node | None) -> None:
        line = self.line(node)
        if line is not None:
            self.lines.setdefault(loc, line)

    def problem(
        self, loc: str, message: str, node: Node | None = None, severity: Severity = "error"
    ) -> None:
        line = self.line(node) if node is not None else self._nearest_line(loc)
        self.problems.append(Problem(severity, loc, message, self.file, line))

    def _nearest_line(self, loc: str) -> int | None:
        return line_of(self.lines, loc)

    def wrong(self, loc: str, node: Node, expected: str, hint: str = "") -> None:
        self.problem(loc, f"expected {expected}, got {describe(node)}{hint}", node)

    # -- collections -------------------------------------------------------------------------

    def pairs(
        self, node: Node, loc: str, what: str, depth: int = 0
    ) -> list[tuple[str, Node]] | None:
        """The key/value pairs of a mapping, merge keys applied, duplicate keys reported."""
        if not isinstance(node, MappingNode):
            self.wrong(loc, node, f"a mapping ({what})")
            return None
        if depth > MAX_DEPTH:
            self.problem(loc, "nested too deeply", node)
            return None
        inherited: dict[str, Node] = {}
        own: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == yaml_core.MERGE_TAG:
                for source in self._merge_sources(value_node, loc):
                    for key, value in self.pairs(source, loc, what, depth + 1) or ():
                        inherited.setdefault(key, value)
                continue
            if not (isinstance(key_node, ScalarNode) and key_node.tag == yaml_core.STR_TAG):
                self.problem(loc, f"keys must be strings, got {describe(key_node)}", key_node)
                continue
            key = str(key_node.value)
            if key in own:
                self.problem(child(loc, key), f"duplicate key {key!r}", key_node)
                continue
            own[key] = value_node
            self.mark(child(loc, key), key_node)
        merged = dict(inherited)
        merged.update(own)
        return list(merged.items())

    def _merge_sources(self, node: Node, loc: str) -> list[Node]:
        if isinstance(node, MappingNode):
            return [node]
        if isinstance(node, SequenceNode) and all(isinstance(n, MappingNode) for n in node.value):
            return list(node.value)
        self.wrong(loc, node, "a mapping or list of mappings to merge with <<")
        return []

    def fields(
        self,
        node: Node,
        loc: str,
        what: str,
        allowed: Sequence[str],
        required: Sequence[str] = (),
    ) -> dict[str, Node] | None:
        """A mapping with a fixed set of keys; unknown keys and missing required keys reported.

        Keys starting with ``x-`` are ignored: a place for YAML anchors and tooling notes.
        """
        pairs = self.pairs(node, loc, what)
        if pairs is None:
            return None
        found: dict[str, Node] = {}
        for key, value in pairs:
            if key.startswith("x-"):
                continue
            if key not in allowed:
                self.problem(
                    child(loc, key),
                    f"unknown key {key!r} in {what}{suggest(key, allowed)}; "
                    f"allowed: {', '.join(allowed)}",
                    value,
                )
                continue
            found[key] = value
        for key in required:
            if key not in found:
                self.problem(child(loc, key), f"missing required key {key!r} in {what}", node)
        return found

    def sequence(self, node: Node, loc: str, what: str) -> list[Node] | None:
        if not isinstance(node, SequenceNode):
            self.wrong(loc, node, f"a list ({what})")
            return None
        return list(node.value)

    # -- scalars -----------------------------------------------------------------------------

    def _scalar(self, node: Node, loc: str, expected: str) -> bool | int | float | str | None:
        if not isinstance(node, ScalarNode):
            self.wrong(loc, node, expected)
            raise Skip
        try:
            return yaml_core.scalar_value(node)
        except ValueError as exc:
            self.problem(loc, f"expected {expected}: {exc}", node)
            raise Skip from exc

    def text(self, node: Node, loc: str, *, allow_empty: bool = True) -> str | None:
        try:
            value = self._scalar(node, loc, "a string")
        except Skip:
            return None
        if not isinstance(value, str):
            hint = "; quote it" if value is not None else ""
            self.wrong(loc, node, "a string", hint)
            return None
        if not allow_empty and not value:
            self.problem(loc, "must not be empty", node)
            return None
        return value

    def integer(self, node: Node, loc: str) -> int | None:
        try:
            value = self._scalar(node, loc, "an integer")
        except Skip:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong(loc, node, "an integer")
            return None
        return value

    def number(self, node: Node, loc: str) -> float | None:
        try:
            value = self._scalar(node, loc, "a number")
        except Skip:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong(loc, node, "a number")
            return None
        if isinstance(value, float) and math.isnan(value):
            self.problem(loc, "expected a number, got .nan", node)
            return None
        return float(value)

    def boolean(self, node: Node, loc: str) -> bool | None:
        try:
            value = self._scalar(node, loc, "true or false")
        except Skip:
            return None
        if not isinstance(value, bool):
            self.wrong(loc, node, "true or false")
            return None
        return value

    def duration(self, node: Node, loc: str) -> int | None:
        try:
            value = self._scalar(node, loc, "a duration")
        except Skip:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.wrong(loc, node, "a duration such as 30s, 10m, 6h, or integer milliseconds")
            return None
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(loc, str(exc), node)
            return None

    def choice(self, node: Node, loc: str, kind: type[E]) -> E | None:
        values = [str(member.value) for member in kind]
        text = self.text(node, loc)
        if text is None:
            return None
        for member in kind:
            if member.value == text:
                return member
        self.problem(
            loc, f"unknown value {text!r}{suggest(text, values)}; one of: {', '.join(values)}", node
        )
        return None

    def text_list(self, node: Node, loc: str, what: str) -> list[str]:
        """One string or a list of strings.  Positions are kept: an element that is not a
        string (already reported) reads as ``""`` so later elements keep their index."""
        if isinstance(node, ScalarNode):
            self.mark(item(loc, 0), node)
            return [self.text(node, item(loc, 0)) or ""]
        out: list[str] = []
        for index, element in enumerate(self.sequence(node, loc, what) or ()):
            self.mark(item(loc, index), element)
            out.append(self.text(element, item(loc, index)) or "")
        return out

    def text_map(self, node: Node, loc: str, what: str) -> dict[str, str]:
        """A mapping of strings.  Integers and booleans are taken as their text; floats are not,
        because ``1.10`` would silently become ``'1.1'``."""
        out: dict[str, str] = {}
        for key, value_node in self.pairs(node, loc, what) or ():
            key_loc = child(loc, key)
            try:
                value = self._scalar(value_node, key_loc, "a string")
            except Skip:
                continue
            if isinstance(value, bool):
                out[key] = "true" if value else "false"
            elif isinstance(value, int | str):
                out[key] = str(value)
            else:
                self.wrong(key_loc, value_node, "a string", "; quote it")
        return out

    def value(self, node: Node, loc: str, depth: int = 0) -> ArgValue:
        """Any YAML value as an argument value (lists become tuples).  ``Skip`` on failure."""
        self._nodes_left -= 1
        if self._nodes_left < 0:
            if self._nodes_left == -1:
                self.problem(loc, f"document too large (more than {MAX_NODES} values)", node)
            raise Skip
        if depth > MAX_DEPTH:
            self.problem(loc, f"nested deeper than {MAX_DEPTH} levels", node)
            raise Skip
        if isinstance(node, ScalarNode):
            return self._scalar(node, loc, "a YAML scalar")
        if isinstance(node, SequenceNode):
            values: list[ArgValue] = []
            for index, element in enumerate(node.value):
                self.mark(item(loc, index), element)
                values.append(self.value(element, item(loc, index), depth + 1))
            return tuple(values)
        entries: dict[str, ArgValue] = {}
        for key, value_node in self.pairs(node, loc, "a value", depth) or ():
            entries[key] = self.value(value_node, child(loc, key), depth + 1)
        return entries


class Skip(Exception):  # noqa: N818  (control flow between reader and schema, never escapes)
    """Raised by the reader once a problem has been recorded for a value."""

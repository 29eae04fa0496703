"""The outcome of validating an ION, and the collector the rules write their findings to."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ion.authoring.locations import line_of
from ion.errors import InvalidIonError, Problem, Severity
from ion.model.definition import Edge

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """Every finding about one ION, sorted by line.

    ``cycles`` lists the cycles across the ION's pipelines (allowed; each is also an info
    problem) as closed paths of pipeline names, e.g. ``("training", "inference", "training")``.
    ``resolved_edges`` are the ION's edges, in order, with endpoint shorthand resolved to the
    component port it stands for.  An endpoint keeps its shorthand when it names a pipeline as a
    whole: the implicit stats or events stream of a pipeline, a trigger target, or an endpoint
    that could not be resolved (there is an error about it then).
    """

    problems: tuple[Problem, ...]
    cycles: tuple[tuple[str, ...], ...] = ()
    resolved_edges: tuple[Edge, ...] = ()

    @property
    def ok(self) -> bool:
        """No errors (warnings and infos are fine)."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> tuple[Problem, ...]:
        return self._of("error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return self._of("warning")

    def _of(self, severity: Severity) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == severity)

    def raise_for_errors(self) -> None:
        """Raise :class:`InvalidIonError` (carrying every problem) when there are errors."""
        if not self.ok:
            raise InvalidIonError(self.problems)


def sort_problems(problems: Iterable[Problem]) -> tuple[Problem, ...]:
    """By line; problems without a line last; otherwise in the order they were found."""
    return tuple(sorted(problems, key=lambda p: (p.line is None, p.line or 0)))


class Collector:
    """Where rules report: adds the file and the line of each location."""

    def __init__(self, lines: Mapping[str, int] | None, file: str | None) -> None:
        self._lines = lines or {}
        self._file = file
        self.problems: list[Problem] = []

    def add(self, severity: Severity, loc: str, message: str) -> None:
        line = line_of(self._lines, loc) if self._lines else None
        self.problems.append(Problem(severity, loc, message, self._file, line))

    def error(self, loc: str, message: str) -> None:
        self.add("error", loc, message)

    def warning(self, loc: str, message: str) -> None:
        self.add("warning", loc, message)

    def info(self, loc: str, message: str) -> None:
        self.add("info", loc, message)

    def line(self, loc: str) -> int | None:
        return line_of(self._lines, loc) if self._lines else None

"""Loading ION files: text or a path to a :class:`ParsedIon` with every schema problem."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ion.authoring.schema import read_ion
from ion.errors import Problem
from ion.model.definition import IonDefinition

logger = logging.getLogger(__name__)

MAX_FILE_BYTES = 4 * 1024 * 1024
"""ION files are a few kilobytes; anything this big is a mistake (or an attack)."""


@dataclass(frozen=True, slots=True)
class ParsedIon:
    """The result of reading an ION document.

    ``definition`` is set only when the document has no schema error, so it can be trusted.
    ``partial`` is the best-effort definition (placeholders where values were wrong), set
    whenever the document was a mapping; the validator uses it to find semantic problems in
    the same run (see ``ion.validate.validate_text``).  ``lines`` maps every location read
    (``pipelines[training].components[fit].args.k``) to its 1-based line.
    """

    definition: IonDefinition | None
    problems: tuple[Problem, ...]
    lines: Mapping[str, int] = field(default_factory=dict)
    partial: IonDefinition | None = None
    file: str | None = None

    @property
    def ok(self) -> bool:
        return self.definition is not None


def parse_ion(text: str, file: str | None = None) -> ParsedIon:
    """Read ION YAML ``text``; ``file`` only labels problems."""
    partial, reader = read_ion(text, file)
    problems = tuple(sorted(reader.problems, key=_line_key))
    has_error = any(p.severity == "error" for p in problems)
    return ParsedIon(
        definition=None if has_error else partial,
        problems=problems,
        lines=dict(reader.lines),
        partial=partial,
        file=file,
    )


def load_ion_file(path: str | Path) -> ParsedIon:
    """Read and parse an ION file.  An unreadable file is a problem, not an exception."""
    name = str(path)
    try:
        with Path(path).open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        return _unreadable(name, f"cannot read file: {exc.strerror or exc}")
    if len(data) > MAX_FILE_BYTES:
        return _unreadable(name, f"file is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return _unreadable(name, f"file is not UTF-8 text (byte {exc.start})")
    return parse_ion(text, name)


def _unreadable(file: str, message: str) -> ParsedIon:
    return ParsedIon(None, (Problem("error", "", message, file, None),), {}, None, file)


def _line_key(problem: Problem) -> tuple[bool, int]:
    return (problem.line is None, problem.line or 0)

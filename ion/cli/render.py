"""Tables for the operator's views: rich with colour on a terminal, plain aligned text when
piped (so ``grep``/``awk`` see one row per line, no escape codes, no box drawing).

``FORCE_COLOR`` / ``NO_COLOR`` are honoured by rich; ``ION_PLAIN=1`` forces plain text even
on a terminal (for screen readers and copy-paste).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

# Cell values that get a colour, whatever the column: states, severities, check verdicts.
_STYLE = {
    **dict.fromkeys(("online", "running", "succeeded", "ok", "OK", "info"), "green"),
    **dict.fromkeys(
        ("offline", "failed", "crash_loop", "killed", "FAIL", "error", "critical"), "bold red"
    ),
    **dict.fromkeys(
        ("stale", "backoff", "draining", "pending", "starting", "stopping", "WARN", "warning"),
        "yellow",
    ),
    **dict.fromkeys(("stopped", "SKIP", "debug", "-"), "dim"),
}


def rich_output() -> bool:
    """Whether to draw rich tables: stdout is a terminal and plain text was not asked for."""
    return sys.stdout.isatty() and os.environ.get("ION_PLAIN", "") not in {"1", "true", "yes"}


def style_of(value: str) -> str | None:
    return _STYLE.get(value.split(" ", 1)[0])


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str | None = None,
    right: Sequence[str] = (),
) -> None:
    """Print ``rows`` under ``headers``; ``right`` names columns aligned right (numbers)."""
    if rich_output():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, title_justify="left", header_style="bold", box=None)
        for h in headers:
            table.add_column(h, justify="right" if h in right else "left", overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell, style=style_of(cell) or "") for cell in row))
        Console().print(table)
        return
    if title:
        click.echo(title)
    table_rows = [list(headers), *(list(r) for r in rows)]
    widths = [max(len(r[i]) for r in table_rows) for i in range(len(headers))]
    for r in table_rows:
        cells = [
            c.rjust(w) if h in right else c.ljust(w)
            for c, w, h in zip(r, widths, headers, strict=True)
        ]
        click.echo("  ".join(cells).rstrip())


def print_line(text: str, *, style: str | None = None) -> None:
    """One line, coloured on a terminal."""
    if rich_output() and style:
        click.secho(text, fg=_CLICK_COLOUR.get(style.split()[-1]), bold="bold" in style)
    else:
        click.echo(text)


def print_segments(segments: Sequence[tuple[str, str | None]]) -> None:
    """One line made of pieces, each coloured with its rich style on a terminal."""
    if not rich_output():
        click.echo("".join(text for text, _ in segments))
        return
    from rich.console import Console
    from rich.text import Text

    line = Text()
    for text, style in segments:
        line.append(text, style=style or "")
    Console(soft_wrap=True).print(line)


_CLICK_COLOUR = {"green": "green", "red": "red", "yellow": "yellow", "dim": "bright_black"}


def ago(seconds: float | None) -> str:
    """A short age: 4s, 12m, 3h, 2d; ``-`` when unknown; negative ages (a clock ahead of
    ours) keep their sign."""
    if seconds is None:
        return "-"
    sign = "-" if seconds < 0 else ""
    s = abs(seconds)
    if s < 90:
        return f"{sign}{s:.0f}s"
    if s < 90 * 60:
        return f"{sign}{s / 60:.0f}m"
    if s < 36 * 3600:
        return f"{sign}{s / 3600:.0f}h"
    return f"{sign}{s / 86400:.0f}d"

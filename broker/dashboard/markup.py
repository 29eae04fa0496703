"""HTML building blocks (pure).  Everything from the store goes through ``esc``.

Pages are strings assembled from these helpers; ``Html`` marks text that is already markup,
so ``table`` and friends escape plain ``str`` cells and pass ``Html`` through.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from urllib.parse import quote

from .graph import BAD, GOOD


class Html(str):
    """Markup that must not be escaped again."""

    __slots__ = ()


def esc(value: object) -> str:
    if isinstance(value, Html):
        return value
    return escape("" if value is None else str(value), quote=True)


def link(href: str, text: object) -> Html:
    return Html(f'<a href="{esc(href)}">{esc(text)}</a>')


def node_link(node_id: object) -> Html:
    return link(f"/nodes/{quote(str(node_id), safe='')}", node_id)


def ion_link(name: object) -> Html:
    return link(f"/ions/{quote(str(name), safe='')}", name)


NODE_STATES = {"online": "ok", "offline": "bad", "failed": "bad", "draining": "warn"}
SEVERITIES = {"critical": "bad", "error": "bad", "warning": "warn", "info": "", "debug": "muted"}


def badge(state: object, kind: str | None = None) -> Html:
    s = str(state or "unknown")
    if kind is None:
        kind = (
            NODE_STATES.get(s)
            or ("ok" if s in GOOD else "bad" if s in BAD else "")
            or SEVERITIES.get(s, "warn")
        )
    return Html(f'<span class="badge {esc(kind)}" data-state="{esc(s)}">{esc(s)}</span>')


Cell = object


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    numeric: Iterable[int] = (),
    empty: str = "nothing yet",
    cls: str = "",
    row_ids: Sequence[str] | None = None,
) -> Html:
    nums = set(numeric)
    body = []
    for i, r in enumerate(rows):
        rid = f' data-row="{esc(row_ids[i])}"' if row_ids is not None else ""
        cells = "".join(
            f"<td{' class=num' if j in nums else ''}>{esc(c)}</td>" for j, c in enumerate(r)
        )
        body.append(f"<tr{rid}>{cells}</tr>")
    if not body:
        return Html(f'<p class="muted">{esc(empty)}</p>')
    head = "".join(f'<th{" class=num" if j in nums else ""}>{esc(h)}</th>'
                   for j, h in enumerate(headers))  # fmt: skip
    return Html(
        f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def notice(text: object, kind: str = "") -> Html:
    return Html(f'<div class="notice {esc(kind)}">{esc(text)}</div>')


@dataclass(frozen=True, slots=True)
class Page:
    title: str
    body: Html
    status: int = 200
    section: str = ""  # which header link is "here"


NAV = (
    ("fleet", "/", "Fleet"),
    ("ions", "/ions", "IONs"),
    ("models", "/models", "Models"),
    ("events", "/events", "Events"),
    ("charts", "/charts", "Charts"),
    ("queues", "/queues", "Queues"),
)


def document(page: Page, *, user: str, poll_ms: int = 2000) -> str:
    """The whole HTML document around ``page.body``.  ``user`` is the header's right side."""
    nav = "".join(
        f'<a href="{href}"{" class=here" if key == page.section else ""}>{text}</a>'
        for key, href, text in NAV
    )
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page.title)} · ION dashboard</title>"
        '<link rel="stylesheet" href="/static/dashboard.css"></head>'
        f'<body data-poll-ms="{int(poll_ms)}">'
        f'<header><a class="brand" href="/">ION</a>{nav}'
        f'<span class="right"><span id="live-status"></span>{user}</span></header>'
        f'<main id="live">{page.body}</main>'
        '<script src="/static/dashboard.js"></script></body></html>'
    )

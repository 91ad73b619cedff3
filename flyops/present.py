"""Showing results: rich tables on a terminal, one JSON document with --json."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from typing import Any

from rich.box import HEAVY_HEAD
from rich.console import Console
from rich.table import Table

from flyops.secret import RedactingEncoder

ACTION_STYLE = {"create": "green", "change": "yellow", "keep": "dim", "remove": "red"}


#: Without a terminal (a pipe, cron mail, a CI log) there is no width to fit: a table is as
#: wide as its widest cells, so no id or name is ever cut (`inv db.list | cat`). Rich would
#: otherwise assume 80 columns (or $COLUMNS) and cut cells to `2026…`.
UNLIMITED = 1_000_000


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    terminal = stream.isatty()
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=None if terminal else UNLIMITED)


_json_documents = 0  # how many print_json wrote in this process: the error boundary adds one only if none


def json_printed() -> int:
    return _json_documents


def rows_json(rows: Iterable[Any]) -> list[dict[str, Any]]:
    """Table rows (dataclasses) as the list of objects `--json` prints."""
    return [asdict(r) for r in rows]


def print_json(data: Any) -> None:
    """The one JSON object a --json run prints on stdout. Secrets are masked."""
    global _json_documents
    _json_documents += 1
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, cls=RedactingEncoder, default=str) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, styles: dict[int, dict[str, str]] | None = None) -> Table:
    plain = not sys.stdout.isatty()  # a pipe gets columns separated by spaces only: whole cells, no box lines
    t = Table(title=title, title_justify="left", show_edge=False, header_style="bold", box=None if plain else HEAVY_HEAD,
              pad_edge=not plain)
    for c in columns:
        t.add_column(c, overflow="fold")  # on a narrow terminal a long id wraps; it is never cut
    for row in rows:
        cells = ["" if v is None else str(v) for v in row]
        style = None
        if styles:
            for idx, mapping in styles.items():
                style = mapping.get(cells[idx], style)
        t.add_row(*cells, style=style)
    return t

"""Views and their parts, drawn for a terminal (``render``) or written for a pipe (``plain``).

A ``View`` is lines of ``Text``, ``Sheet``s (rows under named columns) and
``Fields`` (one record, a name and a value a line). ``render`` draws a view
with rich for a terminal of a given width; ``plain`` writes it for a pipe: a
sheet is a header line and one tab-separated line per row, with every column,
no colour, no box and nothing cut. What each view shows is ``views.py``.

How a sheet fits a terminal (``layout``): each column has a natural width (its
longest cell, or its header) and a least width. An id or a name (a *key*
column) keeps its natural width, never folded or cut; any other column may be
narrowed down to its header's width or its ``floor``, whichever is wider. The
default columns are laid out first, and while their least widths and the gaps
between them exceed the terminal, the rightmost column that is not a key is
left out. The width that remains is shared out evenly among the narrowed
columns, up to their natural widths; a cell still too long folds onto more
lines, or ends in an ellipsis in an ``ellipsis`` column. ``--wide`` lays out
every column and leaves none out; when they cannot all fit, each takes its
natural width and the lines grow longer than the terminal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich import box
from rich.cells import cell_len
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from app.console.client import JsonObject

#: spaces between two columns on a terminal
GAP = 2
NONE = "-"

#: what a cell holds: text, or nothing (``-`` on a terminal, empty through a pipe)
Cell = Text | None


@dataclass(frozen=True, slots=True)
class Column:
    header: str
    value: Callable[[JsonObject], Cell]
    #: an id or a name: shown whole, never folded, cut, or left out
    key: bool = False
    #: the narrowest this column is worth showing; below it, it is left out
    floor: int = 0
    #: at most this wide on a terminal, even with ``--wide``
    limit: int | None = None
    #: one line ending in '…' rather than folded onto more lines
    ellipsis: bool = False
    justify: Literal["left", "right"] = "left"


@dataclass(frozen=True, slots=True)
class Sheet:
    """Rows under named columns: ``columns`` by default on a terminal, ``wide``
    with ``--wide`` and through a pipe."""

    title: str
    columns: Sequence[Column]
    wide: Sequence[Column]
    rows: Sequence[JsonObject]
    #: a note under the table; through a pipe it goes to standard error
    caption: str = ""


@dataclass(frozen=True, slots=True)
class Fields:
    """One record, a field a line."""

    title: str
    rows: Sequence[tuple[str, Cell]]


Part = Text | Sheet | Fields
View = tuple[Part, ...]


def cell(value: Any, style: str = "") -> Cell:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return Text("yes" if value else "no", style=style)
    if isinstance(value, dict):
        return Text(", ".join(f"{k}={v}" for k, v in value.items()), style=style) or None
    return Text(str(value), style=style)


# -- fitting a sheet to a terminal -----------------------------------------------------


def _width(value: Cell) -> int:
    if value is None:
        return len(NONE)
    return max((cell_len(line) for line in value.plain.splitlines()), default=0)


def layout(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int, *, wide: bool
) -> list[tuple[int, int]]:
    """The columns to show (by index) and the width of each, for ``width`` cells."""
    natural = []
    for i, column in enumerate(columns):
        widest = max([cell_len(column.header), *(_width(row[i]) for row in rows)])
        if column.limit is not None and not column.key:
            widest = max(cell_len(column.header), min(widest, column.limit))
        natural.append(widest)
    least = [
        n if c.key else min(n, max(cell_len(c.header), c.floor))
        for c, n in zip(columns, natural, strict=True)
    ]
    shown = list(range(len(columns)))

    def needed() -> int:
        return sum(least[i] for i in shown) + GAP * (len(shown) - 1)

    if wide and needed() > width:
        # too wide anyway: one line per row, for the terminal to wrap or 'less -S' to scroll
        return [(i, natural[i]) for i in shown]
    while needed() > width:
        optional = [i for i in shown if not columns[i].key]
        if not optional:
            break  # ids and names alone are wider than the terminal: they stay whole
        shown.remove(optional[-1])
    widths = {i: least[i] for i in shown}
    spare = width - needed()
    while spare > 0:
        narrowed = [i for i in shown if widths[i] < natural[i]]
        if not narrowed:
            break
        for i in narrowed[:spare]:
            widths[i] += 1
        spare -= len(narrowed[:spare])
    return [(i, widths[i]) for i in shown]


def _table(sheet: Sheet, width: int, *, wide: bool) -> tuple[Table, int]:
    """The sheet as a rich table, and how wide its lines are."""
    columns = sheet.wide if wide else sheet.columns
    rows = [[column.value(row) for column in columns] for row in sheet.rows]
    placed = layout(columns, rows, width, wide=wide)
    table = Table(
        title=sheet.title or None,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        # one space after each cell and the box's one-space divider: GAP
        padding=(0, 1, 0, 0),
    )
    for i, cells in placed:
        column = columns[i]
        no_wrap = column.key or column.ellipsis
        table.add_column(
            column.header,
            width=cells,
            justify=column.justify,
            no_wrap=no_wrap,
            overflow="ellipsis" if column.ellipsis else "fold",
        )
    for row in rows:
        table.add_row(*(row[i] or Text(NONE, style="dim") for i, _ in placed))
    return table, sum(cells for _, cells in placed) + GAP * (len(placed) - 1)


def _fields_table(fields: Fields) -> Table:
    table = Table(title=fields.title, title_justify="left", show_header=False, box=None)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in fields.rows:
        table.add_row(name, value or Text(NONE, style="dim"))
    return table


def render(view: View, width: int, *, wide: bool) -> tuple[RenderableType, int]:
    """The view for a terminal ``width`` cells wide, and the width it needs
    (more than ``width`` only with ``wide``)."""
    parts: list[RenderableType] = []
    needed = width
    for part in view:
        if parts:
            parts.append(Text())  # a blank line between parts, as through a pipe
        if isinstance(part, Sheet):
            table, table_width = _table(part, width, wide=wide)
            parts.append(table)
            if part.caption:
                # under the table but as wide as the terminal: a cursor in it stays whole
                parts.append(Text(part.caption, style="table.caption"))
            needed = max(needed, table_width)
        elif isinstance(part, Fields):
            parts.append(_fields_table(part))
        else:
            parts.append(part)
    return Group(*parts), needed


def _tsv(value: Cell) -> str:
    text = "" if value is None else value.plain
    # a tab or a line break inside a value would split it; a backslash escapes them
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def plain(view: View) -> tuple[str, list[str]]:
    """The view for a pipe, and the notes that go to standard error instead.

    A sheet is a header line and a line per row, every column (``wide``), its
    cells separated by tabs; fields are a ``field``/``value`` sheet; parts are
    separated by a blank line.
    """
    blocks: list[str] = []
    notes: list[str] = []
    for part in view:
        if isinstance(part, Sheet):
            lines = ["\t".join(_tsv(Text(c.header)) for c in part.wide)]
            lines += ["\t".join(_tsv(c.value(row)) for c in part.wide) for row in part.rows]
            blocks.append("\n".join(lines))
            if part.caption:
                notes.append(part.caption)
        elif isinstance(part, Fields):
            lines = ["field\tvalue", *(f"{name}\t{_tsv(value)}" for name, value in part.rows)]
            blocks.append("\n".join(lines))
        else:
            blocks.append(part.plain)
    return "\n\n".join(blocks) + "\n", notes

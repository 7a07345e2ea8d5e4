"""Plain-text tables and paragraphs that fit a terminal's width (``compare``, ``status``, ``report``).

A table wider than the width is split into blocks of columns, each block repeating the key columns
(the arm, the study), and a header or cell longer than its column wraps onto more lines
(:mod:`textwrap`); no text is cut. The full table, one row per arm and every column, stays in the files
the commands write (``compare --csv``, the report's CSV and ``compare.json``).
"""

from __future__ import annotations

import shutil
import textwrap
from collections.abc import Callable, Sequence

__all__ = ["WIDTH", "fill", "fit_markdown_table", "fit_table", "terminal_width"]

#: The widest line the CLI prints (issue 24): a terminal narrower than this gets its own width.
WIDTH = 100
_SEP = "  "


def terminal_width(limit: int = WIDTH) -> int:
    """The width to print at: the terminal's columns (``COLUMNS`` when set), at most ``limit``, at least 40.

    Output that is not a terminal (a pipe, a file, a test) gets ``limit``.
    """
    columns = shutil.get_terminal_size((limit, 24)).columns
    return max(40, min(limit, columns))


def _wrap(text: str, width: int) -> list[str]:
    """``text`` on lines of at most ``width`` characters (words kept whole where they fit)."""
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def fill(text: str, width: int | None = None, indent: str = "", more: str = "") -> str:
    """A paragraph wrapped to ``width`` (default :func:`terminal_width`): first line ``indent``, the rest
    ``indent + more``; a line that fits is returned as it is."""
    width = width or terminal_width()
    if len(indent + text) <= width:
        return indent + text
    return textwrap.fill(
        text, width, initial_indent=indent, subsequent_indent=indent + more, break_on_hyphens=False
    )


def _widths(cells: list[list[str]], width: int, keys: int) -> tuple[list[int], bool]:
    """Each column's width, and whether the table fits ``width`` as one block with its full headers.

    A column is as wide as its widest cell, its header wrapping down to that (never below the header's
    longest word); key columns share at most half the width, any other column at most what the keys
    leave; a longer cell wraps.
    """
    header, body = cells[0], cells[1:]
    natural = [max((len(r[i]) for r in body), default=0) for i in range(len(header))]
    full = [max(n, len(h)) for n, h in zip(natural, header)]
    if sum(full) + len(_SEP) * (len(full) - 1) <= width:
        return full, True
    words = [max((len(w) for w in h.split()), default=0) for h in header]
    compact = [max(n, w) for n, w in zip(natural, words)]
    out = list(compact)
    if sum(out[:keys]) + len(_SEP) * keys > width // 2:
        key_cap = max(8, width // 2 // max(keys, 1) - len(_SEP))
        out = [min(w, key_cap) if i < keys else w for i, w in enumerate(compact)]
    rest = max(8, width - sum(out[:keys]) - len(_SEP) * keys)
    return [w if i < keys else min(w, rest) for i, w in enumerate(out)], False


def _blocks(widths: Sequence[int], width: int, keys: int, sep: int = len(_SEP)) -> list[list[int]]:
    """Column indices per block: the key columns, then as many others as fit ``width`` with ``sep``
    characters between columns (at least one other column per block)."""
    base = sum(widths[:keys]) + sep * max(keys - 1, 0)
    blocks: list[list[int]] = []
    cur: list[int] = []
    used = base
    for i in range(keys, len(widths)):
        need = widths[i] + (sep if keys or cur else 0)
        if cur and used + need > width:
            blocks.append(cur)
            cur, used = [], base
            need = widths[i] + (sep if keys else 0)
        cur.append(i)
        used += need
    if cur or not blocks:
        blocks.append(cur)
    return [list(range(keys)) + b for b in blocks]


def _render_block(cells: list[list[str]], cols: list[int], widths: Sequence[int]) -> str:
    lines: list[str] = []
    for n, row in enumerate(cells):
        parts = [_wrap(row[i], widths[i]) for i in cols]
        height = max(len(p) for p in parts)
        for j in range(height):
            line = _SEP.join((p[j] if j < len(p) else "").ljust(widths[i]) for p, i in zip(parts, cols))
            lines.append(line.rstrip())
        if n == 0:
            lines.append(_SEP.join("-" * widths[i] for i in cols))
    return "\n".join(lines)


def fit_table(
    header: Sequence[str], rows: Sequence[Sequence[object]], width: int | None = None, keys: int = 1
) -> str:
    """A plain-text table (left-aligned columns two spaces apart, a dashed rule under the header) whose
    lines are at most ``width`` characters wherever its words allow it.

    A table that fits is one block with full headers. Otherwise headers wrap, cells wider than the room
    left wrap, and the columns after the ``keys`` first ones are split into blocks, separated by a blank
    line, that each repeat the key columns, so every row of every block is named.

    Args:
      header: the column names.
      rows: one sequence of cells per row, as long as ``header`` (cells are printed with ``str``).
      width: the widest line (default :func:`terminal_width`).
      keys: how many leading columns name a row and are repeated in every block.

    Returns:
      The blocks, trailing blanks stripped, no final newline.
    """
    width = width or terminal_width()
    cells = [[str(h) for h in header], *([str(c) for c in r] for r in rows)]
    keys = min(keys, len(header) - 1) if len(header) > 1 else 0
    widths, fits = _widths(cells, width, keys)
    if fits:
        return _render_block(cells, list(range(len(header))), widths)
    out = []
    for cols in _blocks(widths, width, keys):
        # the room a block leaves goes to its wrapped headers, left to right: fewer header lines
        room = width - sum(widths[i] for i in cols) - len(_SEP) * (len(cols) - 1)
        own = list(widths)
        for i in cols[keys:]:
            grow = min(max(room, 0), len(cells[0][i]) - own[i])
            if grow > 0:
                own[i] += grow
                room -= grow
        out.append(_render_block(cells, cols, own))
    return "\n\n".join(out)


def fit_markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[object]],
    render: Callable[[Sequence[str], Sequence[Sequence[str]]], str],
    width: int | None = None,
    keys: int = 1,
) -> str:
    """Markdown tables of at most ``width`` characters a line where the cells allow it.

    A Markdown cell cannot wrap, so a wide table is split into tables of fewer columns (each repeating
    the ``keys`` first columns), separated by a blank line; a column wider than ``width`` on its own
    makes a table of its own that stays wider.

    Args:
      header: the column names.
      rows: one sequence of cells per row.
      render: the Markdown renderer of one table
        (:func:`lyaptune.analysis.report.render_markdown_table`).
      width: the widest line wanted (default :func:`terminal_width`).
      keys: how many leading columns name a row and are repeated in every table.

    Returns:
      The tables, no final newline.
    """
    width = width or terminal_width()
    cells = [[str(h) for h in header], *([str(c) for c in r] for r in rows)]
    keys = min(keys, len(header) - 1) if len(header) > 1 else 0
    # a row "| a | b |" is its cells plus 3 characters a cell plus 1: columns 3 apart, 4 more a line
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    blocks = _blocks(widths, width - 4, keys, sep=3)
    tables = [render([cells[0][i] for i in b], [[r[i] for i in b] for r in cells[1:]]) for b in blocks]
    return "\n\n".join(tables)

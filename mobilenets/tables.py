"""Tables as text, CSV or JSON: the one renderer of every report and command (``render_table``),
fitted to ``TABLE_WIDTH`` columns unless ``--wide``.
"""
from __future__ import annotations

from typing import Sequence

#: The output formats of every command that prints a table.
FORMATS = ("table", "csv", "json")
#: The widest line a table or report prints by default (``--wide`` lifts the limit).
TABLE_WIDTH = 100
#: The narrowest a column of prose is wrapped to when a table must fit ``TABLE_WIDTH``.
MIN_WRAP = 24


def render_table(rows: Sequence[dict], fmt: str = "table", right: Sequence[str] = (),
                 width: int | None = TABLE_WIDTH, columns: Sequence[str] | None = None,
                 headers: dict | None = None) -> str:
    """Rows of dicts (the first row's keys are the columns) as an aligned text table, CSV, JSON or
    a Markdown table: the one table renderer of every report and command.

    Args:
        rows: The rows; every row has the first row's keys (others are ignored).
        fmt: ``"table"``, ``"csv"``, ``"json"`` or ``"markdown"`` (a pipe table, every column,
            ``|`` in a cell escaped, for reports written as Markdown). Default ``"table"``.
        right: Columns to right-align besides the numeric ones (e.g. numbers already formatted
            as strings). Default none.
        width: The widest line of a table. A wider table is made to fit, in this order: only
            ``columns`` are kept, columns empty in every row are dropped, the widest columns of
            prose (text with spaces; not the first column) are wrapped onto several lines, down
            to ``MIN_WRAP`` characters, and the columns
            left over are printed as further blocks below, each led by the first column again.
            ``None``: every column, one line per row (``--wide``). Default ``TABLE_WIDTH``.
        columns: The columns of the default, narrow table (default: all). ``width=None``, CSV and
            JSON always give every column.
        headers: Headings for some columns, e.g. shorter ones (CSV and JSON keep the keys).

    Numbers are right-aligned; ``None`` prints as an empty cell.

    Raises:
        ValueError: for an unknown ``fmt``.

    Example:
        >>> print(render_table([{"name": "a", "top1": 70.6}, {"name": "bb", "top1": 9.5}]))
        name  top1
        ----  ----
        a     70.6
        bb     9.5
    """
    import csv
    import io
    import json

    if fmt not in FORMATS and fmt != "markdown":
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "json":
        return json.dumps(list(rows), indent=2)
    if not rows:
        return ""
    keys = list(rows[0])
    if fmt == "markdown":
        def line(cells):
            return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
        return "\n".join([line((headers or {}).get(k, k) for k in keys), "|" + "---|" * len(keys),
                          *(line("" if r.get(k) is None else r.get(k) for k in keys)
                            for r in rows)])
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().rstrip("\n")
    if width is not None:
        keys = [k for k in (columns or keys) if any(r.get(k) not in (None, "") for r in rows)]
    names = [str((headers or {}).get(k, k)) for k in keys]
    cells = [["" if r.get(k) is None else str(r.get(k)) for k in keys] for r in rows]
    numeric = [k in right or all(isinstance(r.get(k), (int, float)) or r.get(k) is None
                                 for r in rows) for k in keys]
    widths = [max(len(n), *(len(c[i]) for c in cells)) for i, n in enumerate(names)]
    if width is not None:
        prose = [i > 0 and not numeric[i] and any(" " in c[i] for c in cells)
                 for i in range(len(keys))]
        _wrap_widths(widths, names, prose, width)
    blocks = _column_blocks(widths, width)
    out = []
    for block in blocks:
        out += [""] if out else []
        out += _table_lines([names[i] for i in block], [[c[i] for i in block] for c in cells],
                            [widths[i] for i in block], [numeric[i] for i in block])
    return "\n".join(out)


def wrap_text(text: str, width: int | None = TABLE_WIDTH) -> list[str]:
    """``text`` as lines of at most ``width`` characters, broken at spaces only (paths and names
    stay whole); ``[text]`` for ``width=None`` (``--wide``)."""
    import textwrap

    if width is None or len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False, break_long_words=False) or [""]


def _wrap_widths(widths: list[int], names: list[str], prose: list[bool], width: int) -> None:
    """Narrow the widest ``prose`` columns, in place, until the table fits ``width`` (or none is
    wider than ``MIN_WRAP`` or its heading's longest word)."""
    while sum(widths) + 2 * (len(widths) - 1) > width:
        text = [i for i, wraps in enumerate(prose)
                if wraps and widths[i] > max(MIN_WRAP, *map(len, names[i].split()))]
        if not text:
            return
        i = max(text, key=lambda j: widths[j])
        excess = sum(widths) + 2 * (len(widths) - 1) - width
        widths[i] = max(widths[i] - excess, MIN_WRAP, *map(len, names[i].split()))


def _column_blocks(widths: list[int], width: int | None) -> list[list[int]]:
    """Column indices per block: all in one, or as many as fit ``width`` per block, each block
    after the first led by column 0 again."""
    if width is None or sum(widths) + 2 * (len(widths) - 1) <= width:
        return [list(range(len(widths)))]
    blocks, block = [], [0]
    for i in range(1, len(widths)):
        if len(block) > 1 and sum(widths[j] + 2 for j in block) + widths[i] > width:
            blocks.append(block)
            block = [0]
        block.append(i)
    return blocks + [block]


def _table_lines(names: list[str], cells: list[list[str]], widths: list[int],
                 numeric: list[bool]) -> list[str]:
    """The heading, the rule and the rows of one block; cells wider than their column wrap."""
    def lines(cs):
        parts = [wrap_text(c, w) for c, w in zip(cs, widths)]
        return ["  ".join((p[n] if n < len(p) else "").rjust(w) if num else
                          (p[n] if n < len(p) else "").ljust(w)
                          for p, w, num in zip(parts, widths, numeric)).rstrip()
                for n in range(max(map(len, parts)))]
    return [*lines(names), "  ".join("-" * w for w in widths)] + [x for c in cells for x in lines(c)]

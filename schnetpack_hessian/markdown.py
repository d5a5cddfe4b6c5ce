"""Markdown tables people can paste into a document or an issue.

One helper for every report of the package (evaluation, study, data cards), in a
module without plotting or torch imports.
"""

from typing import List, Sequence

__all__ = ["table", "table_lines", "table_row"]


def table_row(cells: Sequence[object]) -> str:
    """One table row: ``| a | b | c |`` (each cell through ``str``)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table_lines(
    header: Sequence[object], rows: Sequence[Sequence[object]]
) -> List[str]:
    """The lines of a table: the header, the ``---`` rule and one line per row.

    Raises:
        ValueError: a row with another number of cells than the header.
    """
    bad = [i for i, row in enumerate(rows) if len(row) != len(header)]
    if bad:
        raise ValueError(
            f"markdown table: rows {bad} do not have the header's {len(header)} cells"
        )
    return [table_row(header), table_row(["---"] * len(header))] + [
        table_row(row) for row in rows
    ]


def table(header: Sequence[object], rows: Sequence[Sequence[object]]) -> str:
    """The table as one string (lines joined by newlines, no trailing newline)."""
    return "\n".join(table_lines(header, rows))

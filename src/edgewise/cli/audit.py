"""``edgewise audit verify`` and ``edgewise audit show``: the hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import app, console, fail, print_rows
from edgewise.errors import EdgewiseError

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
        fail(exc)
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
        fail(exc)
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
    print_rows(f"edgewise audit log {cfg.path}",
                ["seq", "time (UTC)", "requester", "level", "entities", "tier", "outcome",
                 "esc/fail", "redacted", "reason"], cells,
                wrap={"entities", "redacted", "reason"})
    console.print(f"{len(entries)} record(s) shown; not verified here (run `edgewise "
                  "audit verify`)", highlight=False)

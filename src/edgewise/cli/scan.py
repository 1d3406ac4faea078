"""``edgewise scan``: what the privacy guard finds in a text, and each tier's verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgewise.cli._app import app, console, fail
from edgewise.errors import EdgewiseError


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
        fail(exc)
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

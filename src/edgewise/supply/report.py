"""Showing a build: the progress bar while it runs, the variant table and profile
choices when it is done (terminal via rich, or Markdown for benchmark results)."""

from __future__ import annotations

import math
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from edgewise.artifacts.manifest import Manifest
from edgewise.supply.recipe import StageSpec

__all__ = ["RichProgress", "markdown_table", "print_report", "variant_rows"]


class RichProgress:
    """A two-line progress display: the stages, and the current stage's steps."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(TextColumn("[progress.description]{task.description}"),
                            BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.fields[note]}"), console=console,
                            transient=True)
        self.stages: TaskID | None = None
        self.current: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def stage_started(self, index: int, total: int, spec: StageSpec, reused: bool) -> None:
        if self.stages is None:
            self.stages = self.bar.add_task("stages", total=total, note="")
        self.bar.update(self.stages, completed=index, note=f"{spec.id} ({spec.kind})")
        if self.current is not None:
            self.bar.remove_task(self.current)
        self.current = self.bar.add_task(f"  {spec.id}", total=None,
                                         note="reused" if reused else "")

    def update(self, done: float, total: float | None, note: str) -> None:
        if self.current is not None:
            self.bar.update(self.current, completed=done, total=total, note=note)

    def stage_finished(self, spec: StageSpec, seconds: float, reused: bool) -> None:
        if self.stages is not None:
            self.bar.advance(self.stages)
        how = "reused" if reused else f"{seconds:.1f} s"
        self.console.print(f"[green]✓[/] {spec.id} ({spec.kind}) {how}", highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)


def _fmt(value: Any, spec: str) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return format(value, spec)
    return "–"


def variant_rows(manifest: Manifest) -> list[dict[str, str]]:
    """One row per variant: the columns of the report."""
    rows = []
    for v in manifest.variants:
        m = v.metrics
        rows.append({
            "variant": v.name, "format": v.format, "quantization": v.quantization,
            "size MB": _fmt(v.size_bytes / 1e6, ".1f"),
            "perplexity": _fmt(m.get("perplexity"), ".2f"),
            "task acc.": _fmt(m.get("task_accuracy"), ".1%"),
            "tokens/s": _fmt(m.get("tokens_per_s"), ".1f"),
            "TTFT ms": _fmt(m.get("ttft_ms"), ".0f"),
            "peak RSS MB": _fmt(m.get("peak_rss_mb"), ".0f")})
    return rows


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|"]
    out += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def print_report(manifest: Manifest, console: Console) -> None:
    table = Table(title=f"{manifest.name}: {len(manifest.variants)} variants "
                        f"({manifest.path.parent})")
    rows = variant_rows(manifest)
    for col in (rows[0] if rows else {"variant": ""}):
        table.add_column(col, justify="left" if col in ("variant", "format",
                                                        "quantization") else "right")
    for r in rows:
        table.add_row(*r.values())
    console.print(table)
    for p in manifest.profiles:
        if p["best"]:
            console.print(f"profile [bold]{p['profile']}[/]: best fit [green]{p['best']}[/] "
                          f"({sum(f['fits'] for f in p['variants'])} of "
                          f"{len(p['variants'])} fit)", highlight=False)
        else:
            smallest = min(p["variants"], key=lambda f: f["memory_mb"], default=None)
            why = f"; the smallest needs {smallest['memory_mb']:.0f} MB" if smallest else ""
            console.print(f"profile [bold]{p['profile']}[/]: [red]no variant fits[/]{why}",
                          highlight=False)

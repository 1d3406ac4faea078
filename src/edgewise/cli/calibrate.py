"""``edgewise calibrate``: the cascade threshold from labelled data."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgewise.cli._app import app, console, fail
from edgewise.errors import EdgewiseError


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
    router_data: Annotated[Path | None, typer.Option(
        "--router-data", help="Also write the learned router's training file here: one "
        "line per example, {id, prompt, small_correct, large_correct} (then: edgewise "
        "router train FILE --out DIR).")] = None,
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

    --router-data FILE also writes, for every example, whether the small and the
    large tier answered it correctly: the training file of `edgewise router train`.

    --write stores routing.cascade.threshold, .scorer and .calibration (target,
    scorer and its settings, n, chosen point, curve, data sha256, date) in the
    config. PyYAML drops the file's comments, so the original is first copied to
    FILE.bak.
    """

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
        if router_data is not None:
            from edgewise.routing.calibrate import write_router_data

            count = write_router_data(router_data, examples, s, lg)
            console.print(f"wrote {count} labelled prompts for the learned router to "
                          f"{router_data} (next: edgewise router train {router_data} "
                          "--out DIR)", highlight=False)
        small_cost = [a + b for a, b in zip(s.tokens, s.sample_tokens, strict=True)]
        result = calibrate_threshold(s.confidence(judge), s.correct, lg.correct,
                                     small_cost, lg.tokens, target=target)
        record = calibration_record(result, scorer=scorer, small=small, large=large,
                                    data=data, settings=_scorer_settings(judge, cascade))
        backup = (write_calibration(config, result.threshold, record, scorer=scorer)
                  if write else None)
    except EdgewiseError as exc:
        fail(exc)
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

"""``edgewise router train | score | eval | threshold``: the learned router."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from edgewise.cli._app import app, console, fail
from edgewise.errors import EdgewiseError

router_app = typer.Typer(
    help="The learned router: train it on your labelled prompts, score, evaluate, and "
    "pick its threshold (routing.router in the config).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(router_app, name="router")

_DATA_HELP = ('JSONL, one object per line: {"id": ..., "prompt": "...", "small_correct": '
              'true|false, "large_correct": true|false} (edgewise calibrate --router-data '
              "writes it).")


@router_app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Argument(help=_DATA_HELP)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Router directory to write.")],
    seed: Annotated[int, typer.Option(help="Seed of the cross-validation folds.")] = 0,
    folds: Annotated[int, typer.Option(min=2, max=20,
                                       help="Cross-validation folds.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")
                       ] = False,
) -> None:
    """Train a router: every candidate head (length baseline, kNN, logistic regression,
    their blend) over MiniLM embeddings is cross-validated on DATA; the one with the best
    APGR is fitted on all of it and written to --out with a manifest (data digest,
    features, metrics of every candidate, library versions)."""
    from edgewise.routing.learned import train

    try:
        report = train(data, out, seed=seed, folds=folds,
                       log=lambda m: console.print(m, highlight=False))
    except EdgewiseError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(report.manifest, indent=2, sort_keys=True))
        return
    table = Table(title=f"{report.n} examples, {report.manifest['cv']['folds']}-fold "
                        "cross-validation (higher APGR, lower CPT = better)")
    for col in ("head", "APGR", "CPT(50%)", "CPT(80%)", "acc vs large at 50% calls", ""):
        table.add_column(col, justify="left" if col == "head" else "right")
    for name, m in report.cv.items():
        table.add_row(name, f"{m['apgr']:.3f}", f"{m['cpt50']:.1%}", f"{m['cpt80']:.1%}",
                      f"{m['acc_ratio_at_50']:.1%}",
                      "[bold green]◀ chosen[/]" if name == report.chosen else "")
    Console().print(table)
    d = report.manifest["data"]
    console.print(f"small {d['small_accuracy']:.1%}, large {d['large_accuracy']:.1%}; "
                  f"trained in {report.seconds:.1f} s (embedding {report.embed_seconds:.1f} "
                  f"s). Next: edgewise router threshold {out} CALIBRATION.jsonl --share 0.5",
                  highlight=False)


@router_app.command("score")
def score_cmd(
    router: Annotated[Path, typer.Argument(help="Router directory (edgewise router train).")],
    prompts: Annotated[Path, typer.Argument(
        help='JSONL, one {"id": ..., "prompt": "..."} per line.')],
    out: Annotated[Path | None, typer.Option("--out", "-o",
                                             help="Write here instead of stdout.")] = None,
) -> None:
    """Score prompts: one {"id": ..., "score": float} line each, higher = more need for
    the larger tier (the format router evaluations read)."""
    from edgewise.routing.learned import LearnedRouter, load_prompts

    try:
        r = LearnedRouter.load(router)
        rows = load_prompts(prompts)
        scores = r.score([p for _, p in rows])
    except EdgewiseError as exc:
        fail(exc)
    lines = "".join(json.dumps({"id": i, "score": round(float(s), 6)}) + "\n"
                    for (i, _), s in zip(rows, scores, strict=True))
    if out is None:
        sys.stdout.write(lines)
    else:
        out.write_text(lines, encoding="utf-8")
        console.print(f"wrote {len(rows)} scores to {out}", highlight=False)


def _labelled_scores(router: Path, data: Path) -> tuple[Any, Any, Any]:
    import numpy as np

    from edgewise.routing.learned import LearnedRouter, load_router_data

    r = LearnedRouter.load(router)
    ex = load_router_data(data)
    scores = r.score([e.prompt for e in ex])
    return (scores, np.array([e.small_correct for e in ex]),
            np.array([e.large_correct for e in ex]))


@router_app.command("eval")
def eval_cmd(
    router: Annotated[Path, typer.Argument(help="Router directory.")],
    data: Annotated[Path, typer.Argument(help="Held-out labelled data. " + _DATA_HELP)],
    threshold: Annotated[float | None, typer.Option(
        help="Also report the share of large calls and accuracy this threshold gives here "
        "(the threshold chosen on a calibration split, checked on new data).")] = None,
    resamples: Annotated[int, typer.Option(min=0, help="Bootstrap resamples (0: none).")
                         ] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")
                       ] = False,
) -> None:
    """The standard router metrics on labelled data: APGR (area under the performance-gap-
    recovered curve), CPT(50%) and CPT(80%) (share of large-model calls that recovers half /
    80% of the gap), accuracy with half the calls large, with bootstrap 95% intervals."""
    from edgewise.routing.router_eval import accuracy_at, bootstrap, metrics, share_at

    started = time.perf_counter()
    try:
        scores, small, large = _labelled_scores(router, data)
        m = metrics(scores, small, large)
        ci, dropped = (bootstrap(scores, small, large, resamples=resamples, seed=seed)
                       if resamples else ({}, 0))
    except (EdgewiseError, ValueError) as exc:
        fail(exc)
    result: dict[str, Any] = {"n": m.n, "metrics": m.as_dict(),
                              "ci95": {k: [v.low, v.high] for k, v in ci.items()},
                              "bootstrap": {"resamples": resamples, "dropped": dropped}}
    if threshold is not None:
        acc = accuracy_at(scores, small, large, threshold)
        result["threshold"] = {"threshold": threshold, "share_large": share_at(scores,
                                                                                threshold),
                               "accuracy": acc,
                               "accuracy_vs_large": acc / m.acc_large if m.acc_large else None}
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"router {router} on {data}: {m.n} examples "
                        f"({time.perf_counter() - started:.1f} s)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% interval", justify="right")
    rows = [("APGR", "apgr", "{:.3f}"), ("CPT(50%)", "cpt50", "{:.1%}"),
            ("CPT(80%)", "cpt80", "{:.1%}"), ("PGR at 50% calls", "pgr_at_50", "{:.3f}"),
            ("accuracy at 50% calls", "acc_at_50", "{:.1%}"),
            ("  vs always-large", "acc_ratio_at_50", "{:.1%}"),
            ("always-small accuracy", "acc_small", "{:.1%}"),
            ("always-large accuracy", "acc_large", "{:.1%}")]
    for label, key, fmt in rows:
        interval = ci.get(key)
        table.add_row(label, fmt.format(getattr(m, key)),
                      f"{fmt.format(interval.low)} – {fmt.format(interval.high)}"
                      if interval is not None and key not in ("acc_small", "acc_large")
                      else "")
    out = Console()
    out.print(table)
    if "threshold" in result:
        t = result["threshold"]
        out.print(f"threshold {threshold:g}: {t['share_large']:.1%} of prompts to the large "
                  f"model, accuracy {t['accuracy']:.1%} ({t['accuracy_vs_large']:.1%} of "
                  "always-large)", highlight=False)


@router_app.command("threshold")
def threshold_cmd(
    router: Annotated[Path, typer.Argument(help="Router directory.")],
    data: Annotated[Path, typer.Argument(help="Calibration data (not the training data). "
                                         + _DATA_HELP)],
    share: Annotated[float | None, typer.Option(
        help="Target share of prompts sent to the large model, in [0, 1].")] = None,
    quality: Annotated[float | None, typer.Option(
        help="Target accuracy as a fraction of always-large's (e.g. 0.95): the fewest "
        "large calls that reach it here.")] = None,
) -> None:
    """Choose routing.router.threshold on a calibration split, for a target share of
    large-model calls (--share) or a target quality (--quality); check it on held-out data
    with: edgewise router eval DIR HELD_OUT.jsonl --threshold T."""
    from edgewise.routing.router_eval import (
        accuracy_at,
        share_at,
        threshold_for_quality,
        threshold_for_share,
    )

    if (share is None) == (quality is None):
        fail(typer.BadParameter("give exactly one of --share or --quality"))
    try:
        scores, small, large = _labelled_scores(router, data)
        if share is not None:
            if not 0 <= share <= 1:
                raise ValueError(f"--share must be in [0, 1], got {share}")
            t = threshold_for_share(scores, share)
        else:
            assert quality is not None
            if not 0 < quality <= 2:
                raise ValueError(f"--quality must be in (0, 2], got {quality}")
            t = threshold_for_quality(scores, small, large, quality)
    except (EdgewiseError, ValueError) as exc:
        fail(exc)
    acc = accuracy_at(scores, small, large, t)
    console.print(f"threshold {t:.6f}: here {share_at(scores, t):.1%} of prompts go to the "
                  f"large model, accuracy {acc:.1%} (always-large {large.mean():.1%}, "
                  f"always-small {small.mean():.1%})", highlight=False)
    typer.echo(f"routing:\n  router:\n    kind: learned\n    path: {router}\n"
               f"    threshold: {t:.6f}")

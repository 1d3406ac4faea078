"""``edgewise control rollout ...``: move a registry version through the fleet step by
step, baked under gates, rolled back on its own (:mod:`edgewise.control.rollouts`).

``control serve`` drives rollouts (it evaluates the gates every second); these commands
start one and look at or steer it, on the control plane's host (``--dir``) or remotely
(``--url`` with an admin token)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import console, fail, print_rows
from edgewise.cli.control import (
    _CA,
    _DB,
    _DIR,
    _JSON,
    _PIN,
    _TOKEN,
    _URL,
    _WHY,
    _admin_call,
    control_app,
)
from edgewise.errors import ConfigError

__all__ = ["rollout_app"]

rollout_app = typer.Typer(help="Canary rollouts: steps, bake, gates, automatic rollback.",
                          no_args_is_help=True)
control_app.add_typer(rollout_app, name="rollout")

_ID = Annotated[int, typer.Argument(help="The rollout's id (`rollout list`).", min=1)]


@rollout_app.command("start")
def start(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION to roll out.")],
    alias: Annotated[str, typer.Option(help="The alias the nodes follow; what it names now "
                                            "is the incumbent.")] = "stable",
    nodes: Annotated[str | None, typer.Option(
        "--nodes", help="Which nodes: names or globs (edge-*), or tier=NAME, comma-"
                        "separated (default: every node following the model).")] = None,
    steps: Annotated[str, typer.Option(help="Shares of the nodes (percent) or counts (3n), "
                                            "e.g. 1,25,100.")] = "1,25,100",
    gate: Annotated[list[str] | None, typer.Option(
        "--gate", help="A gate, repeatable: error_rate<=0.05, ttft_p95<=1.5x, "
                       "tokens_per_s>=0.8x, accuracy_drop<=0.02 (x: relative to the "
                       "incumbent). Default: error_rate<=0.05.")] = None,
    bake: Annotated[float, typer.Option(help="Seconds each step bakes under the gates.",
                                        min=0)] = 600.0,
    probes: Annotated[Path | None, typer.Option(
        help="A labelled probe set (evaluate task JSONL) each canary scores on the new "
             "version and the incumbent (the quality gate).")] = None,
    step_timeout: Annotated[float, typer.Option(
        help="Seconds a step may take to deploy (else it rolls back).", min=1)] = 600.0,
    split: Annotated[float | None, typer.Option(
        help="A/B: each step's nodes serve the new version beside the incumbent to this "
             "percentage of their requesters (by a hash of who asks), and the gates "
             "compare the two under the same traffic.")] = None,
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None, as_json: _JSON = False,
) -> None:
    """Start rolling NAME@VERSION out: the first step's nodes get it at once."""
    text = None
    if probes is not None:
        try:
            text = probes.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:


            fail(ConfigError(f"--probes {probes}: cannot read it: {exc}"))
    plan: dict[str, Any] = {"alias": alias, "nodes": nodes, "steps": steps,
                            "gates": list(gate or []), "bake_s": bake,
                            "probes": text, "step_timeout_s": step_timeout,
                            "split": split}
    r = _admin_call(lambda a: a.rollout_start(ref, **plan), directory, url, token, ca,
                    ca_sha256, database_url)
    if as_json:
        print(json.dumps(r, indent=2))
        return
    console.print(f"rollout [bold]{r['id']}[/]: {r['model']}@{r['version']} replacing "
                  f"v{r['incumbent']} ({r['alias']}) in {r['steps']} step(s) "
                  f"{' → '.join(r['plan']['steps'])}; step 1 on {', '.join(r['assigned'])}; "
                  f"gates {' '.join(r['plan']['gates'])}"
                  + (f"; A/B: {r['plan']['split'] * 100:g}% of each node's requesters"
                     if r["plan"].get("split") else ""), highlight=False)


@rollout_app.command("list")
def list_(
    model: Annotated[str | None, typer.Option(help="Only this model's rollouts.")] = None,
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None, as_json: _JSON = False,
) -> None:
    """Every rollout, newest first (the history)."""
    rs = _admin_call(lambda a: a.rollouts(model), directory, url, token, ca, ca_sha256,
                     database_url)
    if as_json:
        print(json.dumps(rs, indent=2))
        return
    if not rs:
        console.print("no rollouts yet: `edgewise control rollout start NAME@VERSION` "
                      "starts one", highlight=False)
        return
    print_rows("rollouts", ["id", "model", "state", "step", "nodes", "started", "reason"],
               [[str(r["id"]), f"{r['model']}@{r['version']} (was v{r['incumbent']})",
                 r["state"], f"{r['step']}/{r['steps']} {r['phase']}",
                 str(len(r["assigned"])), r["created_at"][:19], r["reason"] or "—"]
                for r in rs], wrap={"reason"})


@rollout_app.command("status")
def status(
    rid: _ID,
    watch: Annotated[bool, typer.Option(help="Refresh every 2 s until it ends.")] = False,
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None, as_json: _JSON = False,
) -> None:
    """One rollout: its step, nodes, gate values and every decision."""
    while True:
        r = _admin_call(lambda a: a.rollout(rid), directory, url, token, ca, ca_sha256,
                        database_url)
        if as_json:
            print(json.dumps(r, indent=2))
        else:
            _show(r)
        if not watch or r["state"] not in ("running", "paused"):
            return
        time.sleep(2)


def _fmt(v: Any) -> str:
    return "—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _show(r: dict[str, Any]) -> None:
    console.print(f"rollout [bold]{r['id']}[/] {r['model']}@{r['version']} (incumbent "
                  f"v{r['incumbent']}, alias {r['alias']}): [bold]{r['state']}[/], step "
                  f"{r['step']}/{r['steps']} {r['phase']} on {', '.join(r['assigned'])}"
                  + (f" — {r['reason']}" if r["reason"] else ""), highlight=False)
    gv = r.get("gate_values") or {}
    gates = gv.get("gates") or {}
    if gates:
        print_rows("gates", ["gate", "value", "verdict"],
                   [[g, _fmt(v.get("value")),
                     {True: "pass", False: "FAIL", None: "no data"}[v.get("pass")]]
                    for g, v in gates.items()], wrap=set())
        new, inc = gv.get("new") or {}, gv.get("incumbent") or {}
        print_rows("telemetry", ["", "requests", "error rate", "TTFT p95 ms", "tokens/s"],
                   [[label, _fmt(side.get("requests")), _fmt(side.get("error_rate")),
                     _fmt(side.get("ttft_p95")), _fmt(side.get("tokens_per_s"))]
                    for label, side in ((f"v{r['version']}", new),
                                        (f"v{r['incumbent']}", inc))], wrap=set())
    if r.get("events"):
        print_rows("decisions", ["when", "what", "by", "detail"],
                   [[e["at"][:19], e["kind"], e["by"], _event(e)] for e in r["events"]],
                   wrap={"detail"})


def _event(e: dict[str, Any]) -> str:
    d = e.get("detail") or {}
    if "reason" in d:
        return str(d["reason"])
    if "nodes" in d:
        return f"nodes {', '.join(d['nodes'])}" + (f" (took {d['took_s']} s)"
                                                   if "took_s" in d else "")
    if d.get("why"):
        return str(d["why"])
    return "—"


def _action(action: str, rid: int, why: str, *flags: Any) -> None:
    r = _admin_call(lambda a: a.rollout_action(rid, action, why), *flags)
    console.print(f"rollout {rid}: {r['state']} (step {r['step']}/{r['steps']})"
                  + (f" — {r['reason']}" if r["reason"] else ""), highlight=False)


@rollout_app.command("pause")
def pause(rid: _ID, why: _WHY = "", directory: _DIR = None, url: _URL = None,
          token: _TOKEN = None, ca: _CA = None, ca_sha256: _PIN = None,
          database_url: _DB = None) -> None:
    """Hold the rollout at its step (its gates still roll it back)."""
    _action("pause", rid, why, directory, url, token, ca, ca_sha256, database_url)


@rollout_app.command("resume")
def resume(rid: _ID, why: _WHY = "", directory: _DIR = None, url: _URL = None,
           token: _TOKEN = None, ca: _CA = None, ca_sha256: _PIN = None,
           database_url: _DB = None) -> None:
    """Go on from the step it was paused at (its bake starts over)."""
    _action("resume", rid, why, directory, url, token, ca, ca_sha256, database_url)


@rollout_app.command("abort")
def abort(rid: _ID, why: _WHY = "", directory: _DIR = None, url: _URL = None,
          token: _TOKEN = None, ca: _CA = None, ca_sha256: _PIN = None,
          database_url: _DB = None) -> None:
    """Stop it and return every node of it to the incumbent."""
    _action("abort", rid, why, directory, url, token, ca, ca_sha256, database_url)

"""``edgewise federate run|status``: federated LoRA fine-tuning on Flower
(:mod:`edgewise.federated`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from edgewise.cli._app import app, console, fail, print_rows
from edgewise.errors import EdgewiseError

__all__ = ["federate_app"]

federate_app = typer.Typer(help="Federated LoRA fine-tuning on data that never leaves its "
                                "node (Flower).", no_args_is_help=True)
app.add_typer(federate_app, name="federate")


def _num(value: float | None, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def _line(status: object) -> str:
    from edgewise.federated.status import RunStatus

    assert isinstance(status, RunStatus)
    if not status.rounds:
        return f"{status.run}: {status.state}"
    r = status.rounds[-1]
    eps = f", ε {r.epsilon:.3f}" if r.epsilon is not None else ""
    failed = f", {len(r.failed)} failed" if r.failed else ""
    return (f"round {r.round}/{status.rounds_planned}: {len(r.replied)}/{len(r.sampled)} "
            f"nodes{failed}, train loss {_num(r.train_loss)}, held-out loss "
            f"{_num(r.eval_loss)}{eps} ({r.seconds:.1f} s)")


@federate_app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="Federated recipe YAML "
                                                "(see edgewise.federated.recipe).")],
    simulate: Annotated[int, typer.Option(
        help="Run on N virtual nodes on this machine (Flower's simulation engine), each "
             "holding its partition of the recipe's simulation dataset.", min=1)] = 0,
    fresh: Annotated[bool, typer.Option(help="Replace an earlier run in the output "
                                             "folder.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final status as "
                                                         "JSON.")] = False,
) -> None:
    """Fine-tune a LoRA adapter of the recipe's base model over many nodes: each trains on
    its own data, only adapter updates leave it; the aggregate becomes an artifact
    (`edgewise control publish RUN_DIR --name NAME`)."""
    from edgewise.federated.recipe import load_federated_recipe
    from edgewise.federated.run import run

    if not simulate:
        fail(EdgewiseError("give --simulate N: deployment runs (SuperLink and SuperNodes "
                           "beside fleet nodes) are not in this version yet"))
    last = [""]

    def on_status(status: object) -> None:
        line = _line(status)
        if line != last[0]:
            console.print(line, highlight=False)
            last[0] = line

    try:
        spec = load_federated_recipe(recipe)
        status = run(spec, simulate=simulate, fresh=fresh, on_status=on_status,
                     say=lambda m: console.print(m, highlight=False))
    except EdgewiseError as exc:
        fail(exc)
    except KeyboardInterrupt:
        console.print("interrupted: Flower stopped; the run folder keeps what was done",
                      highlight=False)
        raise typer.Exit(130) from None
    if as_json:
        typer.echo(json.dumps(asdict(status), indent=2))
    if status.state == "completed":
        console.print(f"[green]completed[/]: {len(status.rounds)} rounds; artifact in "
                      f"{spec.output} (publish: edgewise control publish "
                      f"{spec.output} --name NAME)", highlight=False)
    elif status.state == "stopped":
        console.print(f"[yellow]stopped[/]: {status.error}; the adapter of the rounds done is "
                      f"in {spec.output}", highlight=False)
    else:
        fail(EdgewiseError(f"the run failed: {status.error}"))


@federate_app.command("status")
def status_cmd(
    run_dir: Annotated[Path, typer.Argument(help="The run folder (the recipe's output).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")
                       ] = False,
) -> None:
    """A run's rounds: nodes that took part and failed, losses, ε spent against the
    budget."""
    from edgewise.federated.status import read_status

    try:
        status = read_status(run_dir)
    except EdgewiseError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(asdict(status), indent=2))
        return
    p = status.privacy
    privacy = (f"ε {_num(status.epsilon, '.3f')} of {p.get('max_epsilon') or 'no limit'} at "
               f"δ {p.get('delta')} (z {p.get('noise_multiplier')}, clip "
               f"{p.get('clip_norm')}, {p.get('noise')} noise)" if p else "no differential "
               "privacy")
    active = sum(1 for n in status.nodes.values() if n.state == "active")
    dropped = {k: n.reason for k, n in status.nodes.items() if n.state == "dropped"}
    typer.echo(f"{status.run}: {status.state} ({status.mode}), {len(status.rounds)}/"
               f"{status.rounds_planned} rounds, {status.strategy} + {status.aggregation}, "
               f"{status.clients_per_round} per round ({status.sampling}); {active} nodes "
               f"active, {len(dropped)} dropped; {privacy}")
    if status.initial_eval_loss is not None:
        typer.echo(f"held-out loss of the base model: {status.initial_eval_loss:.4f}")
    if status.error:
        typer.echo(f"why it ended: {status.error}")
    rows = [[str(r.round), f"{len(r.replied)}/{len(r.sampled)}", str(len(r.failed)),
             _num(r.train_loss), _num(r.eval_loss), _num(r.epsilon, ".3f"),
             f"{r.bytes_up / 1024:.1f}", f"{r.seconds:.1f}"] for r in status.rounds]
    if rows:
        print_rows("rounds", ["round", "nodes", "failed", "train loss", "held-out loss", "ε",
                              "KiB up", "s"], rows, wrap=set())
    for node, reason in dropped.items():
        typer.echo(f"node {node} dropped: {reason}")

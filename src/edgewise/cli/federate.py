"""``edgewise federate run|status``: federated LoRA fine-tuning on Flower
(:mod:`edgewise.federated`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edgewise.cli._app import app, console, fail, print_rows
from edgewise.errors import EdgewiseError

if TYPE_CHECKING:
    from collections.abc import Callable

    from edgewise.federated.recipe import FederatedRecipe
    from edgewise.federated.status import RunStatus

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
    sec = r.secure
    secure = (f", securely summed ({sec['masked'] - sec['unmasked']} left after masking)"
              if sec else "")
    return (f"round {r.round}/{status.rounds_planned}: {len(r.replied)}/{len(r.sampled)} "
            f"nodes{failed}{secure}, train loss {_num(r.train_loss)}, held-out loss "
            f"{_num(r.eval_loss)}{_pct(r.eval_exact)}{eps} ({r.seconds:.1f} s)")


def _pct(value: float | None) -> str:
    return "" if value is None else f", exact {100 * value:.1f} %"


@federate_app.command("run")
def run_cmd(
    recipe: Annotated[Path, typer.Argument(help="Federated recipe YAML "
                                                "(see edgewise.federated.recipe).")],
    simulate: Annotated[int, typer.Option(
        help="Run on N virtual nodes on this machine (Flower's simulation engine), each "
             "holding its partition of the recipe's simulation dataset.", min=0)] = 0,
    superlink: Annotated[str | None, typer.Option(
        help="Run on the fleet's SuperNodes through this SuperLink (HOST:PORT, `federate "
             "superlink`).")] = None,
    directory: Annotated[Path | None, typer.Option(
        "--dir", help="The control plane's directory (with --superlink: the fleet CA and the "
                      "release key that signs the app bundle; $EDGEWISE_CA_PASSPHRASE).")
                         ] = None,
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

    if bool(simulate) == bool(superlink):
        fail(EdgewiseError("give --simulate N (virtual nodes here) or --superlink HOST:PORT "
                           "with --dir CONTROL_DIR (the fleet's SuperNodes), one of them"))
    if superlink and directory is None:
        fail(EdgewiseError("--superlink needs --dir CONTROL_DIR: the run's app bundle is "
                           "signed with the fleet's release key"))
    last = [""]

    def on_status(status: object) -> None:
        line = _line(status)
        if line != last[0]:
            console.print(line, highlight=False)
            last[0] = line

    try:
        spec = load_federated_recipe(recipe)
        say = lambda m: console.print(m, highlight=False)  # noqa: E731
        if superlink:
            assert directory is not None
            status = _deployed(spec, superlink, directory, fresh, on_status, say)
        else:
            status = run(spec, simulate=simulate, fresh=fresh, on_status=on_status, say=say)
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


def _deployed(spec: FederatedRecipe, superlink: str, directory: Path, fresh: bool,
              on_status: Callable[[RunStatus], None], say: Callable[[str], None]
              ) -> RunStatus:
    import os

    from edgewise.federated.deploy import submit
    from edgewise.security.keys import load_private_key
    from edgewise.security.pki import CAFiles

    key_file = directory / "tuf" / "keys" / "release.key"
    try:
        data = key_file.read_bytes()
    except OSError as exc:
        raise EdgewiseError(f"{key_file}: {exc.strerror}; is {directory} a control plane "
                            "directory made by `edgewise control init`?") from None
    phrase = os.environ.get("EDGEWISE_CA_PASSPHRASE", "").encode("utf-8") or None
    key = load_private_key(data, passphrase=phrase, source=str(key_file))
    return submit(spec, superlink=superlink, ca=CAFiles.under(directory).root_cert,
                  release_key=key, fresh=fresh, on_status=on_status, say=say,
                  index=directory / "federated")


@federate_app.command("superlink")
def superlink_cmd(
    directory: Annotated[Path, typer.Option("--dir", help="The control plane's directory.")],
    port: Annotated[int, typer.Option(help="The SuperLink's port (loopback).")] = 9098,
    sync_s: Annotated[float, typer.Option(help="Seconds between syncs of registered "
                                               "SuperNode keys with the fleet.")] = 5.0,
) -> None:
    """Run the fleet's Flower SuperLink on this (the control plane's) host: TLS from the
    fleet CA, only enrolled nodes' keys registered (revoked ones unregistered within
    --sync-s), no runtime dependency installation. Ctrl-C stops it."""
    import time

    from edgewise.control.superlink import SuperLink

    try:
        link = SuperLink(directory, port=port, sync_s=sync_s)
        link.start()
    except EdgewiseError as exc:
        fail(exc)
    console.print(f"SuperLink on {link.address} (TLS, fleet CA {link.ca_file}); "
                  f"{len(link.registered)} node(s) registered: "
                  f"{', '.join(sorted(link.registered)) or 'none yet'}", highlight=False)
    link.serve_in_background()
    try:
        while link.proc is not None and link.proc.poll() is None:
            time.sleep(1)
        fail(EdgewiseError(f"flower-superlink exited; see {link.folder / 'superlink.log'}"))
    except KeyboardInterrupt:
        console.print("stopping the SuperLink", highlight=False)
    finally:
        link.stop()


@federate_app.command("supernode")
def supernode_cmd(
    superlink: Annotated[str, typer.Option(help="The SuperLink, HOST:PORT.")],
    data: Annotated[Path, typer.Option(help="This node's JSONL data (never leaves it).")],
    state_dir: Annotated[Path, typer.Option(help="The node's state folder (`edgewise join`'s"
                                                 ").")] = Path(".edgewise/fleet"),
    data_format: Annotated[str, typer.Option("--format", help="chat or completion.")
                           ] = "chat",
    base: Annotated[str, typer.Option(help="This node's copy of the base model (catalogue "
                                           "name or checkpoint folder); its digest must "
                                           "match the run's.")] = "",
) -> None:
    """Run a Flower SuperNode beside this fleet node: it authenticates with the node's
    fleet key, trusts only the fleet CA, and runs only app bundles the fleet's release key
    signed. Ctrl-C stops it."""
    from edgewise.federated.deploy import SuperNode

    if data_format not in ("chat", "completion"):
        fail(EdgewiseError(f"--format {data_format!r}: chat or completion"))
    node = SuperNode(state_dir, superlink, data, data_format=data_format, base=base)
    try:
        node.start(say=lambda m: console.print(m, highlight=False))
    except EdgewiseError as exc:
        fail(exc)
    console.print(f"SuperNode for {state_dir} connected to {superlink}; log in "
                  f"{node.folder / 'supernode.log'}", highlight=False)
    try:
        assert node.proc is not None
        code = node.proc.wait()
        fail(EdgewiseError(f"flower-supernode exited ({code}); see "
                           f"{node.folder / 'supernode.log'}"))
    except KeyboardInterrupt:
        console.print("stopping the SuperNode", highlight=False)
    finally:
        node.stop()


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
    sa = status.secure_aggregation
    typer.echo(f"secure aggregation: {sa['protocol']} (shares {sa['shares']}, threshold "
               f"{sa['threshold']}, range ±{sa['clipping_range']}): the server saw only the "
               "sum of the updates" if sa else "no secure aggregation: the server saw each "
               "node's update")
    if status.initial_eval_loss is not None:
        typer.echo(f"held-out loss of the base model: {status.initial_eval_loss:.4f}"
                   f"{_pct(status.initial_eval_exact)}")
    if status.error:
        typer.echo(f"why it ended: {status.error}")
    rows = [[str(r.round), f"{len(r.replied)}/{len(r.sampled)}", str(len(r.failed)),
             _num(r.train_loss), _num(r.eval_loss),
             "-" if r.eval_exact is None else f"{100 * r.eval_exact:.1f}",
             _num(r.epsilon, ".3f"),
             f"{r.bytes_up / 1024:.1f}", f"{r.seconds:.1f}"] for r in status.rounds]
    if rows:
        print_rows("rounds", ["round", "nodes", "failed", "train loss", "held-out loss",
                              "exact %", "ε",
                              "KiB up", "s"], rows, wrap=set())
    for node, reason in dropped.items():
        typer.echo(f"node {node} dropped: {reason}")

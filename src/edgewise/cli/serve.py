"""``edgewise serve``: a node on this machine, until SIGTERM / Ctrl-C (then it drains)."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from edgewise.cli._app import app, console, fail, setup_logging
from edgewise.errors import ConfigError, EdgewiseError


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
    from edgewise.fleet.member import FleetMember
    from edgewise.node import Node, build_engine, engine_config

    setup_logging(log_level)
    try:
        cfg = load_config(config)
        node_over: dict[str, Any] = {}
        if host is not None:
            node_over["host"] = host
        if port is not None:
            node_over["port"] = port
        member = FleetMember.open(cfg)
        if member is not None:  # a joined node is who its certificate says
            node_over["name"] = member.membership.node
            if not cfg.tiers:
                node_over["tier"] = member.membership.tier
        engine_over: dict[str, Any] = {"model": model} if model else {}
        label = None
        if member is not None and cfg.fleet.update.model and not model:
            from edgewise.fleet.updates import installed_release

            release = installed_release(member.state, cfg.fleet.update.model)
            if release is not None:  # serve the last installed update, not the config's
                engine_over = {"model": "auto", "artifacts": str(release)}
                label = f"{cfg.fleet.update.model}@{release.name}"
        cfg = cfg.replace(node=node_over, engine=engine_over)
        if cfg.serving.tls.enabled and member is None:
            raise ConfigError("serving.tls needs a joined node: run `edgewise join` first "
                              f"(no fleet membership in {cfg.fleet.state_dir})")
        with console.status(f"checking model {cfg.engine.model}…"):
            engine = build_engine(cfg)
        node = Node(cfg, engine, label=label)
        # builds the fleet: checks tier URLs, API-key variables and fleet peers
        asgi = create_app(node, member=member)
    except EdgewiseError as exc:
        fail(exc)
        return
    local = cfg.local_endpoint()
    served = local[1].model if cfg.tiers and local and local[1].model != "auto" \
        else cfg.engine.model
    kind = engine_config(cfg).kind
    if kind != "llamacpp":  # another engine does not serve the model file named
        served = f"the {kind} engine"
    ladder = " → ".join(t.name for t in cfg.ladder())
    scheme = "https" if member is not None and member.server_tls is not None else "http"
    joined = f", fleet {member.membership.fleet} as {member.membership.spiffe_id}" \
        if member is not None else ""
    console.print(
        f"[bold]edgewise[/] node [cyan]{cfg.node.name}[/] (tiers {ladder}{joined}) serving "
        f"[green]{served}[/] on [bold]{scheme}://{cfg.node.host}:{cfg.node.port}[/]"
        "  (Ctrl-C drains and stops)", highlight=False)
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal; make that a clean
    # exit (status 0, no KeyboardInterrupt traceback) once the drain is done.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    failure = None
    with contextlib.suppress(KeyboardInterrupt):
        failure = _run_uvicorn(asgi, cfg, member.server_tls if member else None)
    if failure is not None:

        console.print(f"[bold red]error:[/] {failure}", highlight=False)
        raise typer.Exit(1)
    console.print(f"node {cfg.node.name} stopped", highlight=False)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _run_uvicorn(asgi: Any, cfg: Any, ssl_context: Any = None) -> str | None:
    """Serve until stopped (``None``) or until the node cannot serve (the reason)."""
    from edgewise.serving.server import serve

    # Host, port, lifespan on and the drain timeout come from cfg, and so do the
    # connection limits (header/body/keep-alive timeouts, max_connections).
    return serve(asgi, cfg, ssl_context=ssl_context, log_config=None, access_log=False)

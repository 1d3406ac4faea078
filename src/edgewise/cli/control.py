"""``edgewise control ...``: create and run a fleet's control plane, and administer it
(on its host with ``--dir``, or remotely with ``--url`` and an admin token) — its nodes,
config, access tokens and model registry — and ``edgewise join`` on a node."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from edgewise.cli._app import app, console, fail, print_rows, setup_logging
from edgewise.errors import ConfigError, EdgewiseError

__all__ = ["control_app", "parse_duration"]

T = TypeVar("T")

control_app = typer.Typer(help="The fleet control plane: identity, fleet state, config.",
                          no_args_is_help=True)
token_app = typer.Typer(help="Join tokens (one per node, single use).", no_args_is_help=True)
config_app = typer.Typer(help="Central routing config (tiers, routing, privacy).",
                         no_args_is_help=True)
models_app = typer.Typer(help="The model registry: every artifact, its versions and aliases "
                         "(`models show NAME` for one).", invoke_without_command=True)
alias_app = typer.Typer(help="Registry aliases (stable, canary, …): they move; every move is "
                        "kept.", no_args_is_help=True)
control_app.add_typer(token_app, name="token")
control_app.add_typer(config_app, name="config")
control_app.add_typer(models_app, name="models")
control_app.add_typer(alias_app, name="alias")
app.add_typer(control_app, name="control")

_DIR = Annotated[Path | None, typer.Option("--dir", help="The control plane's directory "
                                           "(on its host).")]
_URL = Annotated[str | None, typer.Option("--url", help="A remote control plane, "
                                          "https://HOST:PORT (needs --token).")]
_TOKEN = Annotated[str | None, typer.Option("--token", envvar="EDGEWISE_ADMIN_TOKEN",
                                            help="Admin access token for --url.")]
_CA = Annotated[Path | None, typer.Option("--ca", help="The fleet's root CA file, for --url.")]
_PIN = Annotated[str | None, typer.Option("--ca-sha256",
                                          help="The fleet CA's sha256, for --url.")]
_DB = Annotated[str | None, typer.Option("--database-url",
                                         help="postgresql://... (default: the directory's "
                                              "SQLite, or control.yaml's database_url).")]
_JSON = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def parse_duration(text: str, *, what: str = "--ttl") -> timedelta:
    """``90s``, ``15m``, ``24h``, ``7d`` (or plain seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise ConfigError(f"{what} {text!r}: expected a number with s, m, h or d (e.g. 15m)")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=float(m.group(1)) * unit)


def _admin_call(call: Callable[[Any], T], directory: Path | None, url: str | None,
                token: str | None, ca: Path | None, pin: str | None,
                database_url: str | None = None) -> T:
    """``call(admin)`` on the admin client the flags name, closed afterwards; an
    EdgewiseError ends the command with its one line (exit status 2)."""
    try:
        with _admin(directory, url, token, ca, pin, database_url) as admin:
            return call(admin)
    except EdgewiseError as exc:
        fail(exc)


def _admin(directory: Path | None, url: str | None, token: str | None, ca: Path | None,
           pin: str | None, database_url: str | None = None) -> Any:
    """The admin client the flags name, as a context manager that closes it."""
    from edgewise.control.client import LocalAdmin, RemoteAdmin

    if (directory is None) == (url is None):
        raise ConfigError("give exactly one of --dir DIR (on the control plane's host) or "
                          "--url URL (a remote control plane, with --token)")
    if directory is not None:
        return contextlib.closing(LocalAdmin(directory, database_url=database_url))
    assert url is not None
    return contextlib.closing(RemoteAdmin(url, token=token or "", ca_file=ca, ca_sha256=pin))


@control_app.command("init")
def init(
    directory: Annotated[Path, typer.Option("--dir", help="Directory to create.")],
    fleet: Annotated[str, typer.Option(help="Fleet name (a DNS label).")] = "fleet",
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="A DNS name or address nodes reach the control plane by, added to "
                       "its certificate (repeatable; localhost, 127.0.0.1 and ::1 always "
                       "are).")] = None,
    port: Annotated[int, typer.Option(help="Port `control serve` listens on.")] = 8443,
) -> None:
    """Create a fleet: root CA (key encrypted with $EDGEWISE_CA_PASSPHRASE), online
    intermediate CA, the control plane's certificate and control.yaml. Prints the CA
    fingerprint that nodes pin with `edgewise join --ca-sha256`."""
    from edgewise.control.release import init_releases
    from edgewise.control.settings import ControlSettings, save_settings
    from edgewise.security.pki import check_name, init_ca

    try:
        check_name("fleet", fleet)
        passphrase = os.environ.get("EDGEWISE_CA_PASSPHRASE", "")
        if not passphrase:
            raise ConfigError("set $EDGEWISE_CA_PASSPHRASE: it encrypts the root CA key")
        hosts = list(dict.fromkeys(["localhost", "127.0.0.1", "::1", *(host or [])]))
        ca = init_ca(directory, fleet=fleet, passphrase=passphrase.encode("utf-8"),
                     hosts=hosts)
        init_releases(directory / "tuf", passphrase=passphrase.encode("utf-8"))
        save_settings(directory, ControlSettings(fleet=fleet, hosts=hosts, port=port))
    except EdgewiseError as exc:
        fail(exc)
        return
    console.print(f"fleet [bold]{fleet}[/] created in {directory}; root CA key "
                  f"{directory / 'ca' / 'root.key'} is encrypted and can be moved offline",
                  highlight=False)
    console.print("nodes join with --ca-sha256 (printed on stdout)", highlight=False)
    print(ca.root_fingerprint)


keys_app = typer.Typer(help="The fleet's TUF signing keys.", no_args_is_help=True)
control_app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate(
    role: Annotated[str, typer.Argument(help="root, targets, snapshot or timestamp.")],
    directory: Annotated[Path, typer.Option("--dir", help="The control plane's directory.")],
) -> None:
    """Replace ROLE's signing key (for root: one of its three). A new root version signed
    by the old root keys' threshold tells nodes; nothing the old key signs is trusted after.
    Needs $EDGEWISE_CA_PASSPHRASE."""
    from edgewise.distribution.repository import FleetRepository

    try:
        phrase = os.environ.get("EDGEWISE_CA_PASSPHRASE", "")
        if not phrase:
            raise ConfigError("set $EDGEWISE_CA_PASSPHRASE: root and targets keys are "
                              "encrypted with it")
        repo = FleetRepository(directory / "tuf", passphrase=phrase.encode("utf-8"))
        repo.rotate(role)
        from edgewise.control.service import ControlPlane

        cp = ControlPlane(directory)
        try:
            cp.record("keys_rotate", by="local-admin", reason=f"rotated the {role} key; root "
                      f"is now version {repo.load('root').signed.version}")
        finally:
            cp.close()
    except EdgewiseError as exc:
        fail(exc)
        return
    console.print(f"{role} key rotated; nodes take the new root at their next update",
                  highlight=False)


@control_app.command("serve")
def serve(
    directory: Annotated[Path, typer.Option("--dir", help="The control plane's directory.")],
    host: Annotated[str | None, typer.Option(help="Address to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to bind.")] = None,
    database_url: _DB = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning or error.")] = "info",
) -> None:
    """Serve the control API and the fleet page over TLS (until Ctrl-C)."""
    from edgewise.config import parse_config
    from edgewise.control.app import create_control_app
    from edgewise.control.service import ControlPlane
    from edgewise.security.pki import server_context
    from edgewise.serving.server import serve as run_server

    setup_logging(log_level)
    try:
        cp = ControlPlane(directory, database_url=database_url)
        h = host or cp.settings.host
        p = cp.settings.port if port is None else port
        ctx = server_context(cp.files.server_cert, cp.files.server_key, cp.files.root_cert,
                             client_certs="optional")
        cfg = parse_config({"node": {"host": h, "port": p, "name": "control"},
                            "serving": {"drain_timeout_s": 1}})
        asgi = create_control_app(cp)
    except EdgewiseError as exc:
        fail(exc)
        return
    console.print(f"[bold]edgewise[/] control plane of fleet [cyan]{cp.fleet}[/] on "
                  f"[bold]https://{h}:{p}[/] (store {cp.store.url_for_display}; CA "
                  f"{cp.ca.root_fingerprint})", highlight=False)
    try:
        run_server(asgi, cfg, ssl_context=ctx, log_config=None, access_log=False)
    except KeyboardInterrupt:
        pass
    finally:
        cp.close()


@token_app.command("create")
def token_create(
    node: Annotated[str, typer.Option(help="The node this token enrols (its name).")],
    tier: Annotated[str, typer.Option(help="The node's tier (device, gateway, cloud...).")],
    ttl: Annotated[str | None, typer.Option(help="Validity, e.g. 15m (default from "
                                            "control.yaml).")] = None,
    host: Annotated[list[str] | None, typer.Option(
        "--host", help="A DNS name or address applications reach the node by over HTTPS; "
                       "goes into its certificate (repeatable).")] = None,
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None, as_json: _JSON = False,
) -> None:
    """A one-time join token for NODE, printed alone on the last line."""
    out = _admin_call(lambda admin: admin.create_token(
        node, tier, parse_duration(ttl) if ttl else None, host or []),
        directory, url, token, ca, ca_sha256, database_url)
    if as_json:
        print(json.dumps(out))
        return
    console.print(f"join token for node [bold]{node}[/] (tier {tier}), single use, valid "
                  f"until {out['expires_at']}:", highlight=False)
    print(out["token"])


@control_app.command("nodes")
def nodes(directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
          ca_sha256: _PIN = None, database_url: _DB = None, as_json: _JSON = False) -> None:
    """The fleet's nodes: identity, status, certificate expiry, last heartbeat."""
    rows = _admin_call(lambda admin: admin.nodes(),
                      directory, url, token, ca, ca_sha256, database_url)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print_rows("fleet nodes", ["node", "tier", "status", "spiffe id", "cert until",
                               "last seen", "model"],
               [[r["name"], r["tier"], r["status"], r["spiffe_id"],
                 r["cert_not_after"][:19], (r["last_seen"] or "—")[:19],
                 str((r["heartbeat"] or {}).get("model") or "—")] for r in rows],
               wrap={"model"})


@control_app.command("revoke")
def revoke(node: Annotated[str, typer.Argument(help="The node to revoke.")],
           directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
           ca_sha256: _PIN = None, database_url: _DB = None) -> None:
    """Revoke NODE: its certificates go on the deny list, which reaches every node with
    its next heartbeat; its renewals are refused."""
    serials = _admin_call(lambda admin: admin.revoke(node),
                      directory, url, token, ca, ca_sha256, database_url)
    console.print(f"node {node} revoked ({len(serials)} certificate(s) denied); nodes "
                  "refuse it from their next heartbeat", highlight=False)


@config_app.command("push")
def config_push(
    file: Annotated[Path, typer.Argument(help="YAML with tiers / routing / privacy.")],
    node: Annotated[str | None, typer.Option(help="For this node.")] = None,
    tier: Annotated[str | None, typer.Option(help="For every node of this tier.")] = None,
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None,
) -> None:
    """Validate FILE and store it as the next config version for a node or a tier;
    nodes apply it at their next heartbeat."""
    from edgewise.config import read_yaml
    from edgewise.control.service import validate_central_config

    try:
        if (node is None) == (tier is None):
            raise ConfigError("give exactly one of --node NAME or --tier TIER")
        _, body = read_yaml(file, ConfigError, "config file")
        validate_central_config(body, source=str(file))
        with _admin(directory, url, token, ca, ca_sha256, database_url) as admin:
            kind, target = ("node", node) if node else ("tier", tier)
            assert target is not None
            out = admin.push_config(kind, target, body, str(file))
    except EdgewiseError as exc:
        fail(exc)
        return
    console.print(f"config v{out['version']} (id {out['id']}) stored for {out['target']}; "
                  "nodes apply it at their next heartbeat", highlight=False)


@config_app.command("list")
def config_list(directory: _DIR = None, url: _URL = None, token: _TOKEN = None,
                ca: _CA = None, ca_sha256: _PIN = None, database_url: _DB = None,
                as_json: _JSON = False) -> None:
    """Every stored config version."""
    rows = _admin_call(lambda admin: admin.configs(),
                      directory, url, token, ca, ca_sha256, database_url)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print_rows("central config", ["id", "target", "version", "created", "by"],
               [[str(r["id"]), r["target"], str(r["version"]), r["created_at"][:19],
                 r["created_by"]] for r in rows], wrap=set())


@control_app.command("access-token")
def access_token(
    subject: Annotated[str, typer.Option(help="Who the token is for (audit name).")],
    scope: Annotated[list[str], typer.Option(help="infer, admin or metrics (repeatable).")],
    ttl: Annotated[str, typer.Option(help="Validity, at most 15m.")] = "15m",
    node: Annotated[str | None, typer.Option(help="Only valid on this node.")] = None,
    sensitivity: Annotated[str | None, typer.Option(
        help="Declared sensitivity of every request made with it.")] = None,
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None,
) -> None:
    """A short-lived scoped access token (JWT), printed alone on the last line."""
    out = _admin_call(lambda admin: admin.access_token(
        subject, scope, parse_duration(ttl), node, sensitivity),
        directory, url, token, ca, ca_sha256, database_url)
    print(out)


# -- the model registry -------------------------------------------------------------------
_WHY = Annotated[str, typer.Option("--why", help="Why (kept in the alias history and the "
                                   "audit log).")]


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _profiles(profiles: dict[str, Any]) -> str:
    return ", ".join(f"{p}: {best or 'none fits'}" for p, best in profiles.items()) or "—"


@control_app.command("publish")
def publish(
    artifact_dir: Annotated[Path, typer.Argument(help="A folder `edgewise build` wrote.")],
    name: Annotated[str, typer.Option(help="The model's name in the registry (a DNS label).")],
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")
                     ] = None,
    kind: Annotated[str | None, typer.Option(help="base, variant or adapter (default: "
                                             "adapter if every variant is one, else "
                                             "variant).")] = None,
    why: _WHY = "",
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None, as_json: _JSON = False,
) -> None:
    """Publish ARTIFACT_DIR as NAME's next version: every file its manifest lists, checked
    against the manifest's sha256 (remotely, only the files the registry lacks are
    uploaded). Prints NAME@VERSION alone on the last line."""
    out = _admin_call(lambda admin: admin.publish(artifact_dir, name, kind, alias, why),
                      directory, url, token, ca, ca_sha256, database_url)
    if as_json:
        print(json.dumps(out, indent=2))
        return
    v, move = out["version"], out["alias"]
    console.print(f"published [bold]{v['ref']}[/] ({v['kind']}, {len(v['files'])} files, "
                  f"{_size(v['total_bytes'])}; manifest sha256 {v['manifest_sha256'][:16]}…)"
                  + (f", parent {v['lineage']['parent']}" if v["lineage"]["parent"] else "")
                  + (f"; alias {move['alias']} -> {move['to_version']}" if move else ""),
                  highlight=False)
    print(v["ref"])


@models_app.callback()
def models(ctx: typer.Context, directory: _DIR = None, url: _URL = None, token: _TOKEN = None,
           ca: _CA = None, ca_sha256: _PIN = None, database_url: _DB = None,
           as_json: _JSON = False) -> None:
    """Every model in the registry: kind, versions, aliases, size and the best variant per
    hardware profile (of its newest version)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = _admin_call(lambda admin: admin.models(),
                      directory, url, token, ca, ca_sha256, database_url)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print_rows("model registry", ["name", "kind", "versions", "aliases", "size", "profiles"],
               [[r["name"], r["kind"], f"{r['versions']} (newest {r['latest']})",
                 " ".join(f"{a}→{v}" for a, v in r["aliases"].items()) or "—",
                 _size(r["size_bytes"]), _profiles(r["profiles"])] for r in rows],
               wrap={"profiles"})


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@VERSION or NAME@ALIAS.")],
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None, as_json: _JSON = False,
) -> None:
    """One version (the newest without @): its files, lineage and manifest, and the
    model's aliases with every move."""
    from edgewise.control.publish import parse_ref

    try:
        name, at = parse_ref(ref)
        with _admin(directory, url, token, ca, ca_sha256, database_url) as admin:
            out = admin.model(name, at)
    except EdgewiseError as exc:
        fail(exc)
        return
    if as_json:
        print(json.dumps(out, indent=2))
        return
    v, lin = out["version"], out["version"]["lineage"]
    points = [a for a, n in out["aliases"].items() if n == v["version"]]
    print(f"{v['ref']}  {v['kind']}, {_size(v['total_bytes'])}, published "
          f"{v['published_at'][:19]} by {v['published_by']}"
          + (f"  (alias {', '.join(points)})" if points else ""))
    print(f"  manifest sha256 {v['manifest_sha256']}")
    print(f"  recipe sha256   {lin['recipe_sha256'] or '—'}")
    src = lin["source"]
    print(f"  source          {src.get('name', '—')} {src.get('format', '')} "
          f"{src.get('sha256', '')}".rstrip())
    for ds, digest in lin["datasets"].items():
        print(f"  dataset         {ds} {digest}")
    print(f"  stages          {' → '.join(lin['stages']) or '—'}")
    print(f"  parent          {lin['parent'] or '—'}")
    print(f"  profiles        {_profiles(v['profiles'])}")
    print_rows(f"files of {v['ref']}", ["path", "size", "sha256"],
               [[f["path"], _size(f["size_bytes"]), f["sha256"]] for f in v["files"]],
               wrap=set())
    print_rows(f"alias history of {v['name']}", ["when", "alias", "from", "to", "by", "why"],
               [[m["moved_at"][:19], m["alias"], str(m["from_version"] or "—"),
                 str(m["to_version"]), m["moved_by"], m["why"] or "—"]
                for m in out["history"]], wrap={"why"})


@alias_app.command("set")
def alias_set(
    ref: Annotated[str, typer.Argument(help="NAME@VERSION the alias is to point at.")],
    alias: Annotated[str, typer.Argument(help="The alias (a DNS label: stable, canary…).")],
    why: _WHY = "",
    directory: _DIR = None, url: _URL = None, token: _TOKEN = None, ca: _CA = None,
    ca_sha256: _PIN = None, database_url: _DB = None, as_json: _JSON = False,
) -> None:
    """Point ALIAS at NAME@VERSION; the move (from, to, who, when, why) is kept forever."""
    from edgewise.control.publish import parse_ref

    try:
        name, version = parse_ref(ref)
        if version is None or not (version.isascii() and version.isdigit()):
            raise ConfigError(f"{ref!r}: give NAME@VERSION with the version number, e.g. "
                              f"{name}@3 (`edgewise control models show {name}` lists them)")
        with _admin(directory, url, token, ca, ca_sha256, database_url) as admin:
            move = admin.alias_set(name, int(version), alias, why)
    except EdgewiseError as exc:
        fail(exc)
        return
    if as_json:
        print(json.dumps(move, indent=2))
        return
    was = "new" if move["from_version"] is None else f"was {move['from_version']}"
    console.print(f"{name} alias [bold]{alias}[/] -> {move['to_version']} ({was})",
                  highlight=False)


@app.command("join")
def join(
    url: Annotated[str, typer.Argument(help="The control plane, https://HOST:PORT.")],
    token: Annotated[str, typer.Option(help="The join token from `control token create`.")],
    ca_sha256: Annotated[str, typer.Option("--ca-sha256",
                                           help="The fleet CA's sha256 (from `control init`).")],
    node: Annotated[str | None, typer.Option(help="This node's name (the token's).")] = None,
    state_dir: Annotated[Path, typer.Option(help="Where to keep the node's identity "
                                            "(fleet.state_dir).")] = Path(".edgewise/fleet"),
) -> None:
    """Join a fleet: pin its CA, make a key pair here, get a short-lived certificate."""
    from edgewise.config import _default_node_name
    from edgewise.fleet.agent import join as do_join

    name = node or _default_node_name().lower()
    try:
        m = do_join(url, token=token, ca_sha256=ca_sha256, state_dir=state_dir, node=name)
    except EdgewiseError as exc:
        fail(exc)
        return
    console.print(f"joined fleet [bold]{m.fleet}[/] as [cyan]{m.spiffe_id}[/] (tier "
                  f"{m.tier}); identity in {state_dir}", highlight=False)
    if state_dir != Path(".edgewise/fleet"):
        console.print(f"set fleet.state_dir: {state_dir} in the node's config", highlight=False)

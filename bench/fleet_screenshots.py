"""The README's fleet screenshots, taken of a real fleet (run by hand, not a test)::

    .venv/bin/python bench/fleet_screenshots.py docs/          # 2-3 minutes

writes ``docs/fleet-page.png`` (the fleet table) and ``docs/fleet-node.png`` (the device
node's page). Everything runs as the README's *Fleet* section says, with the real
command line, in a temporary directory, on free loopback ports:

1. ``edgewise control init`` + ``edgewise control serve`` (fleet ``acme``);
2. three nodes, each ``edgewise control token create`` + ``edgewise join`` +
   ``edgewise serve``, with real models on one thread each: ``clinic-laptop-07``
   (device, SmolLM2-135M), ``clinic-gw-01`` (gateway, Qwen2.5-Coder-0.5B, HTTPS) and
   ``cloud-eu-1`` (cloud, Qwen2.5-Coder-0.5B, HTTPS). The gateway and cloud nodes serve
   with their fleet certificates; the device reaches them over mutual TLS as fleet peers;
3. the device tier's ladder (device → gateway → cloud, with a cascade and a redacting
   cloud tier) is pushed centrally with ``edgewise control config push --tier device``;
   the laptop starts without tiers and applies it at its first heartbeat;
4. two seeded clients send a mix for ``--seconds``: ``auto`` requests (the cascade
   escalates the unsure ones), ``x-edgewise-min-tier: gateway`` / ``cloud``, streams,
   prompts with personal data (redacted before they reach the cloud tier), and requests
   straight to the gateway over HTTPS, each with an ``infer`` access token
   (``edgewise control access-token``);
5. with the load still running and every node's latest heartbeat in, headless Chromium
   signs in with an ``admin`` token and takes the two screenshots. Chromium trusts the
   control plane's key only (``--ignore-certificate-errors-spki-list``, read over a TLS
   connection verified against the fleet root), as in ``tests/test_fleet_page_e2e.py``.

Every child process is stopped in a ``finally`` (SIGINT: drain; then SIGKILL).
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

HOST = "127.0.0.1"
EDGEWISE = str(Path(sys.executable).parent / "edgewise")
FLEET = "acme"
SEED = 20250602
#: Node name -> (tier, model, serves HTTPS)
NODES = {
    "clinic-laptop-07": ("device", "smollm2-135m-instruct", False),
    "clinic-gw-01": ("gateway", "qwen2.5-coder-0.5b-instruct", True),
    "cloud-eu-1": ("cloud", "qwen2.5-coder-0.5b-instruct", True),
}
DEVICE, GATEWAY, CLOUD = NODES
PROMPTS = ["Name three colours.", "What is 12 times 7?", "Say hello in French.",
           "Give one word for happy.", "What is the capital of Italy?",
           "Write a haiku about rain.", "Name a prime number above 20.",
           "How many legs does a spider have?", "Translate 'thank you' to Spanish.",
           "What colour is the sky at noon?"]
PERSONAL = ["Draft a reminder to Ana Lima (ana.lima@example.com) about her appointment.",
            "Call John Carter on +44 20 7946 0958 about the invoice.",
            "Send the lab results to maria.gomez@example.org."]
#: Request class -> share of the mix.
MIX = {"auto": 0.40, "min-gateway": 0.15, "min-cloud": 0.10, "personal-cloud": 0.10,
       "stream": 0.10, "gateway-direct": 0.15}


def progress(msg: str) -> None:
    print(f"[screenshots] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


# -- processes --------------------------------------------------------------------------

@dataclass
class Procs:
    """The child processes, each with its log; ``stop_all`` ends every one."""

    logs: Path
    env: dict[str, str]
    running: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def cli(self, *args: str, cwd: Path) -> str:
        """One ``edgewise`` command; its stdout (the last line is the value printed)."""
        done = subprocess.run([EDGEWISE, *args], cwd=cwd, env=self.env, capture_output=True,
                              text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"edgewise {' '.join(args[:3])} failed ({done.returncode}): "
                               f"{done.stderr.strip()[-800:]}")
        return done.stdout.strip()

    def start(self, name: str, *args: str, cwd: Path) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen([EDGEWISE, *args], cwd=cwd, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((name, proc))
        return proc

    def stop_all(self) -> None:
        for _, proc in reversed(self.running):
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for name, proc in reversed(self.running):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                progress(f"{name} did not drain in 20 s; killing it")
                proc.kill()
                proc.wait()

    def log_tail(self, name: str, lines: int = 15) -> str:
        text = (self.logs / f"{name}.log").read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


class SNITransport(httpx.HTTPTransport):
    """Connects to 127.0.0.1 but checks the node's fleet name (``<node>.node.<fleet>``):
    node certificates carry DNS names, not addresses."""

    def __init__(self, ctx: ssl.SSLContext, sni: str) -> None:
        super().__init__(verify=ctx)
        self.sni = sni

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "sni_hostname": self.sni}
        return super().handle_request(request)


def wait_until(what: str, check: Any, proc: subprocess.Popen[bytes] | None = None,
               timeout: float = 240.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError, OSError, ValueError, KeyError):
            got = check()
            if got:
                return got
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({proc.returncode})")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.5)


# -- the fleet --------------------------------------------------------------------------

@dataclass
class Fleet:
    root: Path
    procs: Procs
    control_port: int
    ca_sha256: str = ""
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def control_url(self) -> str:
        return f"https://{HOST}:{self.control_port}"

    @property
    def ca_file(self) -> Path:
        return self.root / "ctl" / "ca" / "root.pem"

    def ctl(self, *args: str) -> str:
        return self.procs.cli("control", *args, "--dir", "ctl", cwd=self.root)

    def nodes(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = json.loads(self.ctl("nodes", "--json"))
        return out

    def node_url(self, name: str) -> str:
        return f"{'https' if NODES[name][2] else 'http'}://{HOST}:{self.ports[name]}"

    def client(self, name: str, token: str) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"}
        if not NODES[name][2]:
            return httpx.Client(base_url=self.node_url(name), headers=headers, timeout=300)
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        return httpx.Client(base_url=self.node_url(name), headers=headers, timeout=300,
                            transport=SNITransport(ctx, f"{name}.node.{FLEET}"))


def node_config(fleet: Fleet, name: str) -> dict[str, Any]:
    _, model, tls = NODES[name]
    cfg: dict[str, Any] = {
        "node": {"host": HOST, "port": fleet.ports[name]},
        "engine": {"model": model, "n_threads": 1, "n_ctx": 2048},
        "fleet": {"state_dir": ".edgewise/fleet"},
        "serving": {"tls": {"enabled": tls}},
        "sampling": {"temperature": 0.7},
    }
    if name == GATEWAY:  # its own ladder: the local model, then the cloud node
        cfg["tiers"] = [
            {"name": "gateway", "endpoints": [{"engine": "llamacpp", "model": model}],
             "clearance": "pii", "cost_per_1k_tokens": 0.05, "energy_per_token_j": 0.35},
            peer_tier(fleet, CLOUD, clearance="public", cost=0.6, energy=1.2)]
    return cfg


def peer_tier(fleet: Fleet, name: str, *, clearance: str, cost: float,
              energy: float) -> dict[str, Any]:
    return {"name": NODES[name][0], "clearance": clearance, "escalation": "redact",
            "cost_per_1k_tokens": cost, "energy_per_token_j": energy, "timeout": 120,
            "endpoints": [{"url": f"{fleet.node_url(name)}/v1", "peer": f"node:{name}"}]}


def device_ladder(fleet: Fleet) -> dict[str, Any]:
    """The device tier's central config: the laptop's model, then gateway, then cloud."""
    return {
        "tiers": [
            {"name": "device", "clearance": "phi", "cost_per_1k_tokens": 0.0,
             "energy_per_token_j": 0.08,
             "endpoints": [{"engine": "llamacpp", "model": NODES[DEVICE][1]}]},
            peer_tier(fleet, GATEWAY, clearance="pii", cost=0.05, energy=0.35),
            peer_tier(fleet, CLOUD, clearance="public", cost=0.6, energy=1.2),
        ],
        "routing": {"cascade": {"enabled": True, "threshold": 0.2}},
    }


def start_fleet(fleet: Fleet) -> None:
    root = fleet.root
    progress("edgewise control init / control serve")
    fleet.ca_sha256 = fleet.procs.cli("control", "init", "--dir", "ctl", "--fleet", FLEET,
                                      "--port", str(fleet.control_port),
                                      cwd=root).splitlines()[-1]
    ctl = fleet.procs.start("control", "control", "serve", "--dir", "ctl", cwd=root)
    ca = ssl.create_default_context(cafile=str(fleet.ca_file))
    wait_until("the control plane", lambda: httpx.get(
        f"{fleet.control_url}/healthz", verify=ca, timeout=2).status_code == 200, ctl)
    (root / "tiers.yaml").write_text(yaml.safe_dump(device_ladder(fleet), sort_keys=False),
                                     encoding="utf-8")
    progress("edgewise control config push --tier device tiers.yaml")
    fleet.ctl("config", "push", "--tier", "device", "tiers.yaml")
    # The cloud first: the gateway checks its peers when it builds its ladder.
    for name in (CLOUD, GATEWAY, DEVICE):
        tier = NODES[name][0]
        home = root / name
        home.mkdir()
        token = fleet.ctl("token", "create", "--node", name, "--tier", tier).splitlines()[-1]
        progress(f"edgewise join ... --node {name}; edgewise serve ({tier})")
        fleet.procs.cli("join", fleet.control_url, "--token", token, "--ca-sha256",
                        fleet.ca_sha256, "--node", name, cwd=home)
        (home / "node.yaml").write_text(yaml.safe_dump(node_config(fleet, name)),
                                        encoding="utf-8")
        proc = fleet.procs.start(name, "serve", "--config", "node.yaml", cwd=home)
        ready_ctx: Any = False
        if NODES[name][2]:
            ready_ctx = ssl.create_default_context(cafile=str(fleet.ca_file))
            ready_ctx.check_hostname = False  # readiness only; requests check the name
        wait_until(f"{name} ready", lambda n=name, c=ready_ctx: httpx.get(
            f"{fleet.node_url(n)}/readyz", verify=c, timeout=2).status_code == 200, proc)
    # The laptop applies the pushed ladder at its first heartbeat, then loads its guard.
    wait_until("the laptop's central config", lambda: any(
        n["name"] == DEVICE and n["applied_config"] for n in fleet.nodes()), timeout=60)
    wait_until("the laptop's ladder", lambda: {"gateway", "cloud"} <= {
        m["id"] for m in httpx.get(f"{fleet.node_url(DEVICE)}/v1/models",
                                   timeout=5).json()["data"]}
        and httpx.get(f"{fleet.node_url(DEVICE)}/readyz", timeout=5).status_code == 200)


# -- traffic ----------------------------------------------------------------------------

@dataclass
class Traffic:
    fleet: Fleet
    token: str
    stop: threading.Event = field(default_factory=threading.Event)
    seen: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    #: Cascade confidences in route reasons ("confidence 0.41 < 0.3"), for the threshold.
    scores: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def client_loop(self, seed: int) -> None:
        rng = random.Random(seed)
        classes, weights = list(MIX), list(MIX.values())
        with self.fleet.client(DEVICE, self.token) as device, \
                self.fleet.client(GATEWAY, self.token) as gateway:
            while not self.stop.is_set():
                kind = rng.choices(classes, weights)[0]
                prompt = rng.choice(PERSONAL if kind == "personal-cloud" else PROMPTS)
                body: dict[str, Any] = {"model": "auto", "max_tokens": rng.randint(16, 40),
                                        "messages": [{"role": "user", "content": prompt}]}
                headers = {}
                if kind == "min-gateway":
                    headers["x-edgewise-min-tier"] = "gateway"
                elif kind in ("min-cloud", "personal-cloud"):
                    headers["x-edgewise-min-tier"] = "cloud"
                client = gateway if kind == "gateway-direct" else device
                try:
                    if kind == "stream":
                        body["stream"] = True
                        with client.stream("POST", "/v1/chat/completions", json=body,
                                           headers=headers) as r:
                            for _ in r.iter_lines():
                                pass
                    else:
                        r = client.post("/v1/chat/completions", json=body, headers=headers)
                    outcome = r.headers.get("x-edgewise-tier", "?") if r.status_code == 200 \
                        else str(r.status_code)
                    reason = r.headers.get("x-edgewise-route-reason", "")
                except httpx.HTTPError as exc:
                    outcome, reason = type(exc).__name__, ""
                with self.lock:
                    self.seen[(kind, outcome)] += 1
                    self.scores += [float(m) for m in re.findall(r"confidence ([0-9.]+)",
                                                                  reason)]
                    if outcome == "device" and "x-edgewise-confidence" in r.headers:
                        self.scores.append(float(r.headers["x-edgewise-confidence"]))

    @contextlib.contextmanager
    def running(self, clients: int = 2) -> Iterator[None]:
        threads = [threading.Thread(target=self.client_loop, args=(SEED + i,), daemon=True)
                   for i in range(clients)]
        for t in threads:
            t.start()
        try:
            yield
        finally:
            self.stop.set()
            for t in threads:
                t.join(timeout=300)

    def table(self) -> str:
        with self.lock:
            seen = dict(self.seen)
        rows = ["| request | answered by / status | count |", "|---|---|---|"]
        rows += [f"| {k} | {o} | {n} |" for (k, o), n in sorted(seen.items())]
        return "\n".join(rows)


# -- the browser ------------------------------------------------------------------------

def pinned_spki(fleet: Fleet) -> str:
    """Base64 sha256 of the key the control plane serves, read over a connection that
    verified its certificate against the fleet root for 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ctx = ssl.create_default_context(cafile=str(fleet.ca_file))
    with socket.create_connection((HOST, fleet.control_port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname=HOST) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def screenshots(fleet: Fleet, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    admin = fleet.ctl("access-token", "--subject", "screenshots", "--scope", "admin")
    paths = [out / "fleet-page.png", out / "fleet-node.png"]
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  f"--ignore-certificate-errors-spki-list={pinned_spki(fleet)}"])
        try:
            tab = browser.new_page(viewport={"width": 1760, "height": 240})
            def console(m: Any) -> None:
                if m.type == "error":
                    problems.append(m.text)

            def dialog(d: Any) -> None:
                problems.append(d.message)
                d.dismiss()

            tab.on("console", console)
            tab.on("dialog", dialog)
            tab.goto(f"{fleet.control_url}/login")
            tab.locator("#token").fill(admin)
            tab.locator("button[type=submit]").click()
            tab.wait_for_load_state()
            tab.screenshot(path=str(paths[0]), full_page=True)
            tab.get_by_role("link", name=DEVICE, exact=True).click()
            tab.wait_for_load_state()
            tab.set_viewport_size({"width": 1280, "height": 240})
            tab.screenshot(path=str(paths[1]), full_page=True)
        finally:
            browser.close()
    if problems:
        raise RuntimeError(f"the page reported problems: {problems}")
    return paths


def wait_for_fresh_heartbeats(fleet: Fleet, since: float) -> list[dict[str, Any]]:
    """Every node's heartbeat sent after ``since`` (a time.time()) with traffic in it."""
    def fresh() -> list[dict[str, Any]] | None:
        nodes = fleet.nodes()
        ok = all(n["status"] == "online" and n["last_seen"] and n["heartbeat"].get("requests")
                 and _ts(n["last_seen"]) > since for n in nodes)
        return nodes if ok and len(nodes) == len(NODES) else None

    got: list[dict[str, Any]] = wait_until("fresh heartbeats", fresh, timeout=60)
    return got


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for fleet-page.png and fleet-node.png")
    parser.add_argument("--seconds", type=float, default=90,
                        help="traffic before the screenshots (default 90)")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgewise-fleet-") as tmp:
        root = Path(tmp)
        (root / "logs").mkdir()
        env = {**os.environ, "EDGEWISE_CA_PASSPHRASE": "screenshots-not-secret",
               "COLUMNS": "300"}
        procs = Procs(root / "logs", env)
        fleet = Fleet(root, procs, free_port(), ports={n: free_port() for n in NODES})
        t0 = time.monotonic()
        try:
            start_fleet(fleet)
            progress(f"fleet up in {time.monotonic() - t0:.0f} s; traffic for "
                     f"{args.seconds:.0f} s")
            app = fleet.ctl("access-token", "--subject", "app1", "--scope", "infer")
            traffic = Traffic(fleet, app)
            with traffic.running():
                time.sleep(args.seconds)
                nodes = wait_for_fresh_heartbeats(fleet, time.time())
                written = screenshots(fleet, out)
            print(traffic.table())
            if traffic.scores:
                q = statistics.quantiles(traffic.scores, n=4)
                print(f"\ncascade confidences in route reasons: {len(traffic.scores)}, "
                      f"quartiles {q[0]:.2f} {q[1]:.2f} {q[2]:.2f}")
            print()
            print("| node | tier | status | requests | escalations | redactions | tokens/s |")
            print("|---|---|---|---|---|---|---|")
            for n in nodes:
                hb = n["heartbeat"]
                print(f"| {n['name']} | {n['tier']} | {n['status']} | {hb['requests']} | "
                      f"{hb['escalations']} | {hb['redactions']} | "
                      f"{hb['tokens_per_s'] or 0:.1f} |")
            for path in written:
                print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")
        except Exception:
            for name, _ in procs.running:
                progress(f"--- {name} log (last lines) ---\n{procs.log_tail(name)}")
            raise
        finally:
            procs.stop_all()
        progress(f"done in {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()

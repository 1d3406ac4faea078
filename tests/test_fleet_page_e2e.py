"""The fleet page end to end: the real control plane, real joined nodes, a real browser.

Each test starts a control plane (``ControlServer``: ``edgewise control serve``'s app
with its TLS listener, on loopback, in a thread) and joined fake-engine nodes whose
agents heartbeat every 0.5 s to a control plane that expects one a second; chat
requests give them numbers to report. Debian's Chromium (headless, driven by
Playwright) then uses the page as an operator would: it is sent to the login form,
refused with a wrong token or one without the ``admin`` scope (each refusal an audit
record), signs in with an admin token (an HttpOnly, Secure, SameSite=Strict cookie),
reads every node's row, opens a node, and watches the page refresh itself until a
stopped node is ``offline`` and a revoked one ``revoked``. A node that puts markup in
its heartbeat gets it shown as text, no script runs and the CSP blocks nothing.

**How the browser trusts the control plane.** The control plane's certificate comes from
the fleet's own CA, which no browser trusts. ``ignore_https_errors`` would accept any
certificate at all, so the test would not notice a control plane serving the wrong one.
Instead :func:`pinned_spki` makes a TLS connection that verifies the served certificate
against the fleet root (and for ``127.0.0.1``), and Chromium gets exactly that
certificate's key as ``--ignore-certificate-errors-spki-list``: it accepts that key and
nothing else (Chromium honours the flag because Playwright always passes a
``--user-data-dir``). A Chromium without the pin refuses the page
(``ERR_CERT_AUTHORITY_INVALID``), which shows the pin is what lets it in.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from playwright.sync_api import BrowserContext, Page, expect, sync_playwright

from edgewise.fleet.state import FleetState
from fleet_harness import ControlServer, NodeServer, control_dir, join_node

FIX_HINT = "run `make test`, which installs Debian's chromium (apt-get install chromium)"
CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEARTBEAT_S = 1.0  # what the control plane expects; offline after 2 × this
NODE_HEARTBEAT_S = 0.5  # what the nodes send: four beats per offline window
#: node -> (tier, chat requests sent to it)
NODES = {"dev1": ("device", 3), "gw1": ("gateway", 2), "cloud1": ("cloud", 1)}
HOSTILE_MODEL = "<img src=x onerror=alert(1)>"


# -- the fleet ------------------------------------------------------------------------

@dataclass
class Fleet:
    control: ControlServer
    #: Trusts the fleet root only: how the test's own admin calls reach the control plane.
    tls: ssl.SSLContext
    nodes: dict[str, NodeServer] = field(default_factory=dict)
    states: dict[str, FleetState] = field(default_factory=dict)

    def admin(self, ttl_s: float = 300) -> str:
        return self.control.access_token("admin", subject="e2e-admin",
                                         ttl=timedelta(seconds=ttl_s))

    def record(self, name: str) -> Any:
        rec = self.control.cp.node(name)
        assert rec is not None, name
        return rec

    def wait(self, what: str, check: Any, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)


def chat(node: NodeServer, n: int) -> None:
    """``n`` chat requests to ``node`` (plain HTTP: these nodes do not serve TLS)."""
    with httpx.Client(base_url=node.url, timeout=30) as c:
        for i in range(n):
            r = c.post("/v1/chat/completions", json={
                "model": "auto", "max_tokens": 8,
                "messages": [{"role": "user", "content": f"status report {i}"}]})
            assert r.status_code == 200, r.text
            assert r.headers["x-edgewise-node"] == node.name


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    control_dir(tmp_path / "ctl", fleet="acme", heartbeat_s=HEARTBEAT_S)
    with ControlServer(tmp_path / "ctl") as control, contextlib.ExitStack() as stack:
        f = Fleet(control, ssl.create_default_context(cafile=str(control.cp.files.root_cert)))
        for name, (tier, requests) in NODES.items():
            f.states[name] = join_node(control, name, tier, tmp_path / name / "fleet")
            f.nodes[name] = stack.enter_context(NodeServer(
                f.states[name].dir, fleet={"heartbeat_s": NODE_HEARTBEAT_S}))
            chat(f.nodes[name], requests)
        # Every node has reported its requests: the numbers the page should show.
        for name, (_, requests) in NODES.items():
            f.wait(f"{name}'s heartbeat with {requests} requests", lambda n=name, k=requests:
                   (f.record(n).heartbeat or {}).get("requests") == k)
        yield f


# -- the browser ----------------------------------------------------------------------

def chromium_path() -> str:
    """Debian's Chromium (Playwright's own download needs the internet)."""
    for path in ("/usr/bin/chromium", "/usr/lib/chromium/chromium"):
        if Path(path).exists():
            return path
    pytest.fail(f"no chromium on this machine: {FIX_HINT}", pytrace=False)


def pinned_spki(control: ControlServer) -> str:
    """Base64 sha256 of the key the control plane serves, read over a TLS connection
    that verified its certificate against the fleet root for 127.0.0.1."""
    ctx = ssl.create_default_context(cafile=str(control.cp.files.root_cert))
    with socket.create_connection(("127.0.0.1", control.port), timeout=10) as raw, \
            ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


@dataclass
class Watch:
    """What the page did that it must not: dialogs, console errors or warnings (a CSP
    violation is one), uncaught errors, requests that left the control plane."""

    origin: str
    dialogs: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    off_site: list[str] = field(default_factory=list)
    navigations: int = 0

    def attach(self, tab: Page) -> None:
        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        def request(r: Any) -> None:
            if not r.url.startswith(self.origin) and not r.url.startswith("data:"):
                self.off_site.append(r.url)

        def navigated(frame: Any) -> None:
            if frame == tab.main_frame:
                self.navigations += 1

        tab.on("dialog", dialog)
        tab.on("console", lambda m: self.console.append(f"{m.type}: {m.text}")
               if m.type in ("error", "warning") else None)
        tab.on("pageerror", lambda exc: self.errors.append(str(exc)))
        tab.on("request", request)
        tab.on("framenavigated", navigated)

    def assert_quiet(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.console == [], self.console
        assert self.errors == [], self.errors
        assert self.off_site == [], self.off_site


@contextlib.contextmanager
def browser(control: ControlServer, *, pin: bool = True
            ) -> Iterator[tuple[Page, Watch, BrowserContext]]:
    """A fresh headless Chromium tab that trusts the control plane's key (module
    docstring), and what it reported."""
    args = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    if pin:
        args.append(f"--ignore-certificate-errors-spki-list={pinned_spki(control)}")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=args)
        try:
            context = b.new_context(viewport={"width": 1500, "height": 900})
            tab = context.new_page()
            tab.set_default_timeout(15_000)
            watch = Watch(control.url)
            watch.attach(tab)
            yield tab, watch, context
            context.close()
        finally:
            b.close()


def sign_in(tab: Page, token: str) -> Any:
    """Type ``token`` into the login form on screen and submit it; the POST's response."""
    tab.locator("#token").fill(token)
    with tab.expect_response(lambda r: r.request.method == "POST"
                             and urlsplit(r.url).path == "/login") as posted:
        tab.locator("button[type=submit]").click()
    tab.wait_for_load_state()
    return posted.value


def login_refusals(f: Fleet) -> list[Any]:
    return [e.record for e in f.control.cp.audit.query(outcome="refused")
            if e.record.route == "control/login"]


def row(tab: Page, name: str) -> Any:
    return tab.locator("table#fleet tbody tr.node").filter(
        has=tab.get_by_role("link", name=name, exact=True))


# -- the tests ------------------------------------------------------------------------

def test_login_gate_cookie_and_no_open_redirect(fleet: Fleet) -> None:
    ctl = fleet.control
    # Without the pin, Chromium refuses the fleet CA's certificate: the pin is what
    # lets the other tests in, not a blanket "ignore certificate errors".
    with browser(ctl, pin=False) as (tab, _, _ctx), pytest.raises(Exception) as refused:
        tab.goto(ctl.url + "/")
    assert "ERR_CERT_AUTHORITY_INVALID" in str(refused.value)

    with browser(ctl) as (tab, watch, context):
        # No credentials: the page sends the browser to the login form.
        response = tab.goto(ctl.url + "/")
        assert response is not None and response.status == 200
        assert response.request.redirected_from is not None
        assert (urlsplit(tab.url).path, urlsplit(tab.url).query) == ("/login", "next=/")
        assert response.headers["content-security-policy"] == CSP
        assert response.headers["x-content-type-options"] == "nosniff"
        assert tab.locator("#login-error").count() == 0
        assert login_refusals(fleet) == []  # no token sent: nothing to refuse

        # A wrong token: 401, one error line on the form, an audited refusal.
        wrong = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtYWxsb3J5In0.c2lnbmF0dXJl"
        posted = sign_in(tab, wrong)
        assert posted.status == 401
        error = tab.locator("#login-error")
        assert error.inner_text().startswith("access token signature does not verify")
        assert urlsplit(tab.url).path == "/login" and context.cookies() == []
        refusals = login_refusals(fleet)
        assert [(r.outcome, r.requester) for r in refusals] == [
            ("refused:unauthenticated", "127.0.0.1")]
        assert wrong not in refusals[0].reason and "signature" in refusals[0].reason

        # A real token without the admin scope: 403, and audited too.
        infer = ctl.access_token("infer", subject="app1", ttl=timedelta(minutes=5))
        posted = sign_in(tab, infer)
        assert posted.status == 403
        assert "admin" in tab.locator("#login-error").inner_text()
        assert context.cookies() == []
        refusals = login_refusals(fleet)
        assert len(refusals) == 2 and refusals[1].outcome.startswith("refused:")
        assert refusals[1].outcome != "refused:unauthenticated"
        assert all(infer not in r.reason for r in refusals)
        # Chromium logs a refused page load as a console error: these two, and only them.
        assert [m.rsplit("(", 1)[-1] for m in watch.console] == ["Unauthorized)",
                                                                   "Forbidden)"]
        watch.console.clear()

        # An admin token: the fleet page, and the cookie is out of the page's reach.
        admin = fleet.admin(ttl_s=300)
        t0 = time.time()
        posted = sign_in(tab, admin)
        assert posted.status == 303 and posted.headers["location"] == "/"
        assert urlsplit(tab.url).path == "/"
        assert tab.locator("table#fleet tbody tr.node").count() == len(NODES)
        [cookie] = context.cookies()
        assert (cookie["name"], cookie["value"]) == ("edgewise_admin", admin)
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (
            True, True, "Strict")
        assert 290 <= cookie["expires"] - t0 <= 301  # the token's lifetime, not longer
        assert tab.evaluate("document.cookie") == ""
        assert admin not in tab.content()
        assert len(login_refusals(fleet)) == 2
        watch.assert_quiet()

        # A deep link survives the login; an off-site `next` never does.
        context.clear_cookies()
        tab.goto(ctl.url + "/nodes/gw1")
        assert urlsplit(tab.url).query == "next=/nodes/gw1"
        sign_in(tab, admin)
        assert urlsplit(tab.url).path == "/nodes/gw1"
        assert tab.locator("#node-name").inner_text() == "gw1"
        for query in ("next=//evil.example", "next=/\\evil.example",
                      "next=" + quote("/\\evil.example", safe=""), "next=%2F%2Fevil.example",
                      "next=https://evil.example/x"):
            context.clear_cookies()
            tab.goto(f"{ctl.url}/login?{query}")
            assert tab.locator("input[name=next]").get_attribute("value") == "/", query
            sign_in(tab, admin)
            assert tab.url == ctl.url + "/", (query, tab.url)
        watch.assert_quiet()

    # The POST checks `next` itself too (a form edited by hand, or a cross-site form).
    with httpx.Client(base_url=ctl.url, verify=fleet.tls) as c:
        for evil in ("//evil.example", "/\\evil.example", "https://evil.example"):
            r = c.post("/login", data={"token": admin, "next": evil})
            assert (r.status_code, r.headers["location"]) == (303, "/"), evil


def test_fleet_page_lists_every_node_and_opens_one(fleet: Fleet) -> None:
    ctl = fleet.control
    with browser(ctl) as (tab, watch, _):
        tab.goto(ctl.url + "/login")
        sign_in(tab, fleet.admin())
        rows = tab.locator("table#fleet tbody tr.node")
        assert rows.locator("td.name a").all_inner_texts() == sorted(NODES)
        total = sum(n for _, n in NODES.values())
        assert tab.locator("#count-nodes").inner_text() == str(len(NODES))
        assert tab.locator("#count-online").inner_text() == str(len(NODES))
        assert tab.locator("#count-requests").inner_text() == str(total)
        for name, (tier, _) in NODES.items():
            r, ident = row(tab, name), fleet.states[name].identity()
            info = fleet.nodes[name].node.info
            assert r.locator(".badge").inner_text() == "online"
            assert r.locator("td.spiffe").inner_text() == ident.spiffe_id == (
                f"spiffe://acme/node/{name}")
            assert r.locator("td.tier").inner_text() == tier
            assert r.locator("td.model bdi").inner_text() == info.model == "fake-tiny"
            assert r.locator("td.model code.digest").inner_text() == info.sha256[:12]
            # The expiry of the certificate the node holds, as the control plane saw it.
            cert = r.locator("td.cert time")
            assert cert.get_attribute("datetime") == ident.not_after.isoformat(
                timespec="seconds") == fleet.record(name).cert_not_after.isoformat(
                timespec="seconds")
            assert cert.inner_text() == "in 23 h"  # 24 h certificates, just issued
            assert r.locator("td.share .share-text").inner_text() == f"{tier} 100 %"
            assert r.locator("td.seen").inner_text() == "just now"

        # Clicking a node opens its page.
        tab.get_by_role("link", name="dev1", exact=True).click()
        tab.wait_for_load_state()
        assert urlsplit(tab.url).path == "/nodes/dev1"
        facts = {" ".join(dt.split()): " ".join(dd.split()) for dt, dd in zip(
            tab.locator("dt").all_inner_texts(), tab.locator("dd").all_inner_texts(),
            strict=True)}
        assert facts["SPIFFE ID"] == "spiffe://acme/node/dev1"
        assert (facts["Tier"], facts["Status"], facts["Model"]) == ("device", "online",
                                                                    "fake-tiny")
        assert facts["Model digest"] == "sha256:" + fleet.nodes["dev1"].node.info.sha256
        assert facts["Requests"] == "3" and facts["Requests by tier"] == "device 100 %"
        assert facts["edgewise version"] == fleet.record("dev1").heartbeat["version"]
        head = fleet.nodes["dev1"].app.state.router.audit.head()
        assert facts["Audit head"] == f"{head[0]}:{head[1][:16]}" and head[0] == 3
        assert tab.locator("#breakers tbody tr").inner_text().split() == ["device", "closed"]
        assert tab.locator("#admin-actions code").inner_text() == "edgewise control revoke dev1"
        tab.locator("#back").click()
        tab.wait_for_load_state()
        assert urlsplit(tab.url).path == "/"
        watch.assert_quiet()


def test_page_refreshes_to_offline_and_revoked(fleet: Fleet) -> None:
    ctl = fleet.control
    with browser(ctl) as (tab, watch, _):
        tab.goto(ctl.url + "/login")
        sign_in(tab, fleet.admin())
        refresh = tab.locator('meta[http-equiv="refresh"]').get_attribute("content")
        assert refresh == "2"  # max(2, heartbeat_s): the page reloads itself
        assert row(tab, "gw1").locator(".badge").inner_text() == "online"
        loads = watch.navigations

        # Stop gw1: no more heartbeats. The page turns it offline on its own.
        last_beat = fleet.record("gw1").last_seen
        stopped = time.monotonic()
        fleet.nodes["gw1"].stop()
        expect(row(tab, "gw1").locator(".badge")).to_have_text("offline", timeout=15_000)
        took = time.monotonic() - stopped
        print(f"\ngw1 stopped -> offline on the page after {took:.1f} s "
              f"({watch.navigations - loads} refreshes)")
        assert watch.navigations > loads  # the meta refresh reloaded it, not the test
        # Not before two heartbeat intervals had passed since its last heartbeat (it may
        # have sent one while stopping), and within one refresh after that.
        last = fleet.record("gw1").last_seen
        assert last >= last_beat
        assert 2 * HEARTBEAT_S - NODE_HEARTBEAT_S - 0.2 <= took <= 2 * HEARTBEAT_S + 2 + 4, took
        assert tab.locator("#count-offline").inner_text() == "1"
        for other in ("dev1", "cloud1"):
            assert row(tab, other).locator(".badge").inner_text() == "online"

        # Revoke cloud1 through the admin API: `revoked` at the next refresh, and its
        # agent is refused from then on.
        with httpx.Client(base_url=ctl.url, verify=fleet.tls) as c:
            r = c.post("/v1/admin/nodes/cloud1/revoke",
                       headers={"authorization": f"Bearer {fleet.admin()}"})
            assert r.status_code == 200, r.text
            assert r.json()["revoked_serials"] == [fleet.states["cloud1"].identity().serial]
        expect(row(tab, "cloud1").locator(".badge")).to_have_text("revoked", timeout=10_000)
        assert tab.locator("#count-revoked").inner_text() == "1"
        assert row(tab, "dev1").locator(".badge").inner_text() == "online"
        fleet.wait("cloud1's agent to be refused", lambda: fleet.nodes["cloud1"].agent
                   .status.revoked, timeout=10)
        # A refused heartbeat does not bring a revoked node back.
        tab.reload()
        assert row(tab, "cloud1").locator(".badge").inner_text() == "revoked"
        watch.assert_quiet()


def test_hostile_heartbeat_is_text(fleet: Fleet, tmp_path: Path) -> None:
    ctl = fleet.control
    # A node that joined properly and then lies in its heartbeat, sent by hand over
    # mutual TLS with its own certificate.
    mallory = join_node(ctl, "mallory", "device", tmp_path / "mallory" / "fleet")
    ctx = ssl.create_default_context(cafile=str(mallory.ca_file))
    ctx.load_cert_chain(mallory.cert_file, mallory.key_file)
    beat = {"version": '0.1.0"><b>bold</b>', "model": HOSTILE_MODEL,
            "tiers": {"<i>device</i>": {"breaker": "open", "requests": 5}}, "requests": 5}
    with httpx.Client(base_url=ctl.url, verify=ctx) as c:
        r = c.post("/v1/heartbeat", json=beat)
        assert r.status_code == 200, r.text
    with httpx.Client(base_url=ctl.url, verify=fleet.tls) as anonymous:
        assert anonymous.post("/v1/heartbeat", json=beat).status_code == 401
    assert fleet.record("mallory").heartbeat["model"] == HOSTILE_MODEL

    with browser(ctl) as (tab, watch, _):
        tab.goto(ctl.url + "/login")
        sign_in(tab, fleet.admin())
        r = row(tab, "mallory")  # (online, or offline by now: it sent one heartbeat)
        assert r.locator("td.model bdi").inner_text() == HOSTILE_MODEL
        assert r.locator("td.version").inner_text() == '0.1.0"><b>bold</b>'
        assert r.locator("td.share .share-text").inner_text() == "<i>device</i> 100 %"
        assert tab.locator("img, script, b, i").count() == 0
        tab.wait_for_timeout(500)  # time for an onerror that would have fired
        tab.get_by_role("link", name="mallory", exact=True).click()
        tab.wait_for_load_state()
        assert tab.locator("#node-model").inner_text() == HOSTILE_MODEL
        assert tab.locator("#breakers tbody tr").inner_text().split() == ["<i>device</i>",
                                                                          "open"]
        assert tab.locator("img, script, b, i").count() == 0
        tab.wait_for_timeout(500)
        watch.assert_quiet()  # no alert() dialog, no console error (no CSP violation)

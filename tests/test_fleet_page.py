"""The fleet page: its HTML, parsed (fast), and the same pages in a real headless Chromium.

The HTML tests parse the output with :mod:`html.parser` into a small tree and check what
a reader would see: one row per node, an em dash for every missing number, hostile
heartbeat values shown as text (never markup), node links that are one percent-encoded
path segment, relative expiry times, the summary counts and the empty-fleet help.

The browser tests serve the rendered pages from a small Starlette app (uvicorn on a free
loopback port, in a thread) under the control plane's Content-Security-Policy and drive
Debian's Chromium with Playwright: the rows are there, the hostile model name is text and
no dialog fires, nothing is blocked (no console errors), a click opens a node's page, the
refresh tag reloads the page, the login form posts its token, and screenshots are PNGs.

By hand, for the README: ``python -m tests.test_fleet_page --screenshots docs/`` writes
``fleet-page.png`` and ``fleet-node.png`` of a realistic three-node fleet.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from edgewise.control.page import FleetPage, NodeRow, summarize
from edgewise.errors import ConfigError

#: The header the control plane sets (edgewise.control.app); the pages must work under it.
CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
NOW = datetime(2025, 6, 2, 9, 30, tzinfo=UTC)
CA_FP = "sha256:3F:A1:9C:07:5B:E2:44:D0:8A:61:C3:2E:9F:70:B4:15:6D:E8:02:A9:C7:33:5E:F1"
HOSTILE_MODEL = "<script>alert(1)</script>"
#: Quotes, a tag, and the characters that would change a URL if not encoded.
HOSTILE_NAME = 'o\'brien "lab" <b>x</b>/..?y#z'
FIX_HINT = "run `make test`, which installs Debian's chromium (apt-get install chromium)"


# -- fixtures: a realistic fleet --------------------------------------------------------

def realistic_fleet(now: datetime) -> list[NodeRow]:
    """Three nodes, one per tier, with numbers like a small fleet's on a weekday morning."""
    return [
        NodeRow(
            name="clinic-laptop-07", spiffe_id="spiffe://acme-health/node/clinic-laptop-07",
            tier="device", status="online", cert_not_after=now + timedelta(hours=23, minutes=12),
            last_seen=now - timedelta(seconds=3), version="0.1.0",
            model="smollm2-135m-instruct-q8_0",
            model_digest="9c1f0e77a4b2d85e3f6a0c19b7e42d5f8a63c0e1b94d27f5a8c3e6b10d29f47a",
            queue_depth=0, tokens_per_s=48.3, ttft_p50_ms=86, ttft_p95_ms=212,
            error_rate=0.0041, requests=12_480,
            tier_share={"device": 0.81, "gateway": 0.14, "cloud": 0.05},
            escalations=2_371, redactions=318,
            breakers={"gateway": "closed", "cloud": "closed"}, energy_j=5_432.1,
            audit_head="12480:4be1c09a7f3d2e65b8a1f0c4d93e7a26", config_version="v12"),
        NodeRow(
            name="factory-gw-01", spiffe_id="spiffe://acme-health/node/factory-gw-01",
            tier="gateway", status="online", cert_not_after=now + timedelta(hours=17, minutes=40),
            last_seen=now - timedelta(seconds=4), version="0.1.0",
            model="qwen2.5-1.5b-instruct-q4_k_m",
            model_digest="e04d7b9a1c58f2360ab7d4e91f3c6a8b2d5e07f49c1ab836de2f5074c9b1a3e6",
            queue_depth=3, tokens_per_s=31.6, ttft_p50_ms=142, ttft_p95_ms=517,
            error_rate=0.012, requests=4_905, tier_share={"gateway": 0.9, "cloud": 0.1},
            escalations=490, redactions=77, breakers={"cloud": "half_open"}, energy_j=21_870.4,
            audit_head="4905:a3f09d1e6c27b84f5e0d9a13c6b72e48", config_version="v12"),
        NodeRow(
            name="cloud-eu-1", spiffe_id="spiffe://acme-health/node/cloud-eu-1",
            tier="cloud", status="offline", cert_not_after=now + timedelta(hours=2, minutes=5),
            last_seen=now - timedelta(minutes=14), version="0.1.0",
            model="llama-3.1-8b-instruct-q4_k_m",
            model_digest="5b7e2c90d4a13f68e1c05b9d7a2f4e368c0d1b5a79e3f24c6a8d0e1f3b5c7d92",
            queue_depth=None, tokens_per_s=95.2, ttft_p50_ms=61, ttft_p95_ms=188,
            error_rate=0.0, requests=761, tier_share={"cloud": 1.0}, escalations=0,
            redactions=0, breakers={}, energy_j=None,
            audit_head="761:0e9b5c3a1d7f28e4b6a0c9d3f1e5a7b2", config_version="v11",
            config_error="config v12 rejected: routing.max_cost_per_1k must be >= 0, got -1"),
    ]


def hostile_row(now: datetime) -> NodeRow:
    """A compromised node: every heartbeat string tries to be markup."""
    return NodeRow(
        name=HOSTILE_NAME, spiffe_id="spiffe://acme-health/node/o-brien",
        tier='<img src=x onerror="alert(2)">', status="online\"><script>alert(3)</script>",
        cert_not_after=now - timedelta(minutes=5), last_seen=now - timedelta(hours=2),
        version='0.1.0"><b>', model=HOSTILE_MODEL, model_digest="ab" * 32,
        tier_share={"<i>device</i>": 0.5, "cloud\" style=\"x": 0.5},
        breakers={"<u>cloud</u>": "open\"><script>alert(4)</script>"},
        audit_head="1:<script>", config_version="v1<script>",
        config_error='"><script>alert(5)</script>')


# -- a small tree over html.parser ------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
         "source", "track", "wbr"}


@dataclass
class El:
    tag: str
    attrs: dict[str, str]
    children: list[El | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def iter(self) -> Iterator[El]:
        yield self
        for c in self.children:
            if isinstance(c, El):
                yield from c.iter()

    def all(self, tag: str | None = None, *, cls: str | None = None, **attrs: str) -> list[El]:
        return [e for e in self.iter()
                if (tag is None or e.tag == tag) and (cls is None or cls in e.classes)
                and all(e.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())]

    def one(self, tag: str | None = None, *, cls: str | None = None, **attrs: str) -> El:
        found = self.all(tag, cls=cls, **attrs)
        assert len(found) == 1, f"expected one <{tag} class={cls} {attrs}>, found {len(found)}"
        return found[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = El("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = El(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(el)
        if tag not in _VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.stack[-1].children.append(El(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        assert any(e.tag == tag for e in self.stack), f"stray </{tag}>"
        while self.stack.pop().tag != tag:
            pass

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> El:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    assert builder.stack == [builder.root], "unclosed elements: " + ", ".join(
        e.tag for e in builder.stack[1:])
    return builder.root


def cell(row: El, cls: str) -> str:
    return " ".join(row.one("td", cls=cls).text.split())


def node_rows(doc: El) -> list[El]:
    return doc.one("table", id="fleet").one("tbody").all("tr", cls="node")


@pytest.fixture(scope="module")
def page() -> FleetPage:
    return FleetPage(fleet="acme-health")


# -- the HTML ---------------------------------------------------------------------------

def test_one_row_per_node_with_its_numbers(page: FleetPage) -> None:
    doc = parse(page.fleet(realistic_fleet(NOW), now=NOW, ca_fingerprint=CA_FP, admin=False))
    rows = node_rows(doc)
    assert [r.one("a").text for r in rows] == ["clinic-laptop-07", "factory-gw-01", "cloud-eu-1"]
    assert [r.one("a").attrs["href"] for r in rows] == [
        "/nodes/clinic-laptop-07", "/nodes/factory-gw-01", "/nodes/cloud-eu-1"]
    laptop, gateway, cloud = rows
    assert cell(laptop, "spiffe") == "spiffe://acme-health/node/clinic-laptop-07"
    assert cell(laptop, "tier") == "device"
    assert laptop.one("span", cls="badge").classes == {"badge", "status-online"}
    assert cloud.one("span", cls="badge").classes == {"badge", "status-offline"}
    assert cell(laptop, "model") == "smollm2-135m-instruct-q8_0 9c1f0e77a4b2"
    assert laptop.one("code", cls="digest").attrs["title"].endswith("d29f47a")
    assert cell(laptop, "queue") == "0"
    assert cell(gateway, "queue") == "3"
    assert cell(laptop, "tps") == "48.3"
    assert cell(gateway, "ttft") == "142 / 517"
    assert cell(laptop, "errors") == "0.4 %"
    assert cell(gateway, "errors") == "1.2 %"
    assert cell(laptop, "escalations") == "2,371"
    assert cell(laptop, "redactions") == "318"
    assert cell(laptop, "share") == "device 81 % · gateway 14 % · cloud 5 %"
    widths = [s.attrs["style"] for s in laptop.one("td", cls="share").all("span", cls="seg")]
    assert widths == ["width: 81.0%", "width: 14.0%", "width: 5.0%"]
    assert cell(laptop, "seen") == "just now"
    assert cell(cloud, "seen") == "14 min ago"
    assert cell(cloud, "cert") == "in 2 h"
    # A config error shows as a warning mark whose title is the error text.
    assert laptop.one("td", cls="config").all("span", cls="warn") == []
    warn = cloud.one("td", cls="config").one("span", cls="warn")
    assert warn.attrs["title"] == realistic_fleet(NOW)[2].config_error
    assert warn.attrs["title"].startswith("config v12 rejected: routing.max_cost_per_1k")
    assert cell(cloud, "config").startswith("v11")
    # The header: fleet name, CA fingerprint, the time it was rendered.
    assert doc.one("span", cls="fleet-name").text == "acme-health"
    assert doc.one("div", cls="ca").one("code").text == CA_FP
    assert "2025-06-02 09:30:00 UTC" in doc.one("header").text


def test_missing_numbers_show_a_dash(page: FleetPage) -> None:
    bare = NodeRow(name="fresh", spiffe_id="spiffe://f/node/fresh", tier="device",
                   status="enrolled", cert_not_after=None, last_seen=None)
    nan = replace(bare, name="nan", tokens_per_s=float("nan"), error_rate=float("inf"),
                  ttft_p50_ms=12.0)
    (row, nan_row) = node_rows(parse(page.fleet([bare, nan], now=NOW, ca_fingerprint=CA_FP,
                                                admin=False)))
    for cls in ("cert", "version", "model", "queue", "tps", "errors", "share", "escalations",
                "redactions", "config"):
        assert cell(row, cls) == "—", cls
    assert cell(row, "ttft") == "— / —"
    assert cell(row, "seen") == "never"
    assert row.one("span", cls="badge").classes == {"badge", "status-enrolled"}
    assert (cell(nan_row, "tps"), cell(nan_row, "errors"), cell(nan_row, "ttft")) == (
        "—", "—", "12 / —")
    detail = parse(page.node(bare, now=NOW, admin=False))
    dds = [" ".join(dd.text.split()) for dd in detail.all("dd", cls="num")]
    assert dds == ["—"] * 9  # requests ... energy
    assert detail.one("dd", id="node-audit").text == "—"


def test_hostile_heartbeat_values_are_text_not_markup(page: FleetPage) -> None:
    row = hostile_row(NOW)
    shown = (HOSTILE_MODEL, HOSTILE_NAME, '<img src=x onerror="alert(2)">', '0.1.0"><b>',
             "<i>device</i>", 'cloud" style="x')
    for html, values in ((page.fleet([row], now=NOW, ca_fingerprint=CA_FP, admin=True), shown),
                         (page.node(row, now=NOW, admin=True),
                          (*shown, "<u>cloud</u>", '"><script>alert(5)</script>', "1:<script>"))):
        doc = parse(html)
        # Not one element came from a node: no script, no img, no b/i/u.
        tags = {e.tag for e in doc.iter()}
        assert not tags & {"script", "img", "b", "i", "u"}, tags
        # No attribute was opened by a value: the only style attributes are bar widths.
        assert all(e.attrs["style"].startswith("width: ") for e in doc.all() if "style" in e.attrs)
        assert not any(k.startswith("on") for e in doc.iter() for k in e.attrs)
        text = doc.text
        for value in values:
            assert value in text, value
    fleet = node_rows(parse(page.fleet([row], now=NOW, ca_fingerprint=CA_FP, admin=False)))[0]
    assert fleet.one("td", cls="model").one("bdi").text == HOSTILE_MODEL
    # An unknown status or breaker state gets the neutral class, never one made from it.
    assert fleet.one("span", cls="badge").classes == {"badge", "status-unknown"}
    assert fleet.one("span", cls="warn").attrs["title"] == '"><script>alert(5)</script>'
    # The link is the whole name as ONE path segment: quotes, "/", "..", "?", "#" encoded.
    href = fleet.one("a").attrs["href"]
    assert href == "/nodes/" + quote(HOSTILE_NAME, safe="")
    assert href.count("/") == 2 and not set(href) & set("'\"<>?# ")
    assert unquote(href.removeprefix("/nodes/")) == HOSTILE_NAME
    assert fleet.one("a").text == HOSTILE_NAME
    detail = parse(page.node(row, now=NOW, admin=False))
    assert detail.one("table", id="breakers").one("span", cls="badge").classes == {
        "badge", "breaker-unknown"}


def test_long_values_are_clipped_in_the_table(page: FleetPage) -> None:
    row = replace(realistic_fleet(NOW)[0], model="m" * 10_000, config_error="e" * 10_000)
    html = page.fleet([row], now=NOW, ca_fingerprint=CA_FP, admin=False)
    assert len(html) < 20_000
    r = node_rows(parse(html))[0]
    assert r.one("td", cls="model").one("bdi").text == "m" * 47 + "…"
    assert len(r.one("span", cls="warn").attrs["title"]) == 512


@pytest.mark.parametrize(("offset", "expiry", "seen"), [
    (timedelta(hours=23, minutes=30), "in 23 h", "just now"),
    (timedelta(minutes=-5), "expired 5 min ago", "just now"),
    (timedelta(seconds=-30), "expired 30 s ago", "just now"),
    (timedelta(seconds=90), "in 1 min", "just now"),
    (timedelta(days=3, hours=4), "in 3 d", "just now"),
    (timedelta(hours=-50), "expired 2 d ago", "just now"),
])
def test_relative_certificate_expiry(page: FleetPage, offset: timedelta, expiry: str,
                                     seen: str) -> None:
    row = replace(realistic_fleet(NOW)[0], cert_not_after=NOW + offset, last_seen=NOW)
    r = node_rows(parse(page.fleet([row], now=NOW, ca_fingerprint=CA_FP, admin=False)))[0]
    assert cell(r, "cert") == expiry
    assert cell(r, "seen") == seen
    expired = offset.total_seconds() <= 0
    assert ("cert-expired" in r.one("td", cls="cert").classes) is expired
    when = r.one("td", cls="cert").one("time").attrs["datetime"]
    assert when == (NOW + offset).isoformat(timespec="seconds")


def test_naive_times_are_utc_and_last_seen_is_relative(page: FleetPage) -> None:
    naive_now = NOW.replace(tzinfo=None)
    row = replace(realistic_fleet(NOW)[0], cert_not_after=naive_now + timedelta(hours=5),
                  last_seen=NOW - timedelta(hours=3, minutes=2))
    r = node_rows(parse(page.fleet([row], now=naive_now, ca_fingerprint=CA_FP, admin=False)))[0]
    assert (cell(r, "cert"), cell(r, "seen")) == ("in 5 h", "3 h ago")


def test_summary_counts(page: FleetPage) -> None:
    rows = [*realistic_fleet(NOW), hostile_row(NOW),
            replace(realistic_fleet(NOW)[2], name="old", status="revoked", requests=None)]
    s = summarize(rows)
    assert (s.nodes, s.online, s.offline, s.revoked) == (5, 2, 1, 1)
    assert (s.requests, s.escalations, s.redactions) == (
        12_480 + 4_905 + 761, 2_371 + 490, 318 + 77)
    doc = parse(page.fleet(rows, now=NOW, ca_fingerprint=CA_FP, admin=False))
    shown = {e.attrs["id"]: e.text for e in doc.one("section", cls="summary").all("span", cls="n")}
    assert shown == {"count-nodes": "5", "count-online": "2", "count-offline": "1",
                     "count-revoked": "1", "count-requests": "18,146",
                     "count-escalations": "2,861", "count-redactions": "395"}
    assert summarize([]) == type(s)(0, 0, 0, 0, 0, 0, 0)


def test_empty_fleet_says_how_to_add_a_node(page: FleetPage) -> None:
    doc = parse(page.fleet([], now=NOW, ca_fingerprint=CA_FP, admin=False))
    assert node_rows(doc) == []
    empty = doc.one("tr", cls="empty")
    assert empty.one("td").attrs["colspan"] == str(len(doc.one("thead").all("th")))
    text = " ".join(empty.text.split())
    assert "edgewise control token create --node NAME --tier TIER" in text
    assert "edgewise join" in text
    assert doc.one("span", id="count-nodes").text == "0"


def test_refresh_tag_no_script_and_the_inlined_stylesheet(page: FleetPage) -> None:
    quick = FleetPage(fleet="acme-health", refresh_s=7)
    for html in (quick.fleet(realistic_fleet(NOW), now=NOW, ca_fingerprint=CA_FP, admin=False),
                 quick.node(realistic_fleet(NOW)[0], now=NOW, admin=False)):
        doc = parse(html)
        assert doc.one("meta", http_equiv="refresh").attrs["content"] == "7"
        assert doc.all("script") == []
        # Nothing is fetched from elsewhere: the favicon is a data: URL, the CSS inline.
        assert [e.attrs["href"] for e in doc.all("link")] == ["data:,"]
        assert ".badge.status-online" in doc.one("style").text
    login = parse(quick.login())
    assert login.all("meta", http_equiv="refresh") == []  # a half-typed token survives
    with pytest.raises(ConfigError, match="refresh_s"):
        FleetPage(fleet="x", refresh_s=0)


def test_node_page_shows_everything_and_links_back(page: FleetPage) -> None:
    gw = realistic_fleet(NOW)[1]
    doc = parse(page.node(gw, now=NOW, admin=False))
    assert doc.one("a", id="back").attrs["href"] == "/"
    facts = {" ".join(dt.text.split()): " ".join(dd.text.split())
             for dt, dd in zip(doc.all("dt"), doc.all("dd"), strict=True)}
    assert facts["Name"] == "factory-gw-01"
    assert facts["SPIFFE ID"] == "spiffe://acme-health/node/factory-gw-01"
    assert facts["Tier"] == "gateway"
    assert facts["Status"] == "online"
    assert facts["Certificate expires"] == "in 17 h (2025-06-03T03:10:00+00:00)"
    assert facts["Last seen"] == "just now (2025-06-02T09:29:56+00:00)"
    assert facts["edgewise version"] == "0.1.0"
    assert facts["Model"] == "qwen2.5-1.5b-instruct-q4_k_m"
    assert facts["Model digest"] == f"sha256:{gw.model_digest}"
    assert facts["Config version"] == "v12"
    assert facts["Config error"] == "none"
    assert facts["Audit head"] == "4905:a3f09d1e6c27b84f5e0d9a13c6b72e48"
    assert facts["Requests"] == "4,905"
    assert facts["Requests by tier"] == "gateway 90 % · cloud 10 %"
    assert (facts["Escalations"], facts["Redactions"], facts["Queue depth"]) == ("490", "77", "3")
    assert (facts["Tokens/s"], facts["TTFT p50"], facts["TTFT p95"]) == ("31.6", "142 ms",
                                                                         "517 ms")
    assert (facts["Error rate"], facts["Energy"]) == ("1.2 %", "21,870.4 J")
    breakers = doc.one("table", id="breakers").one("tbody").all("tr")
    assert [[td.text for td in r.all("td")] for r in breakers] == [["cloud", "half-open"]]
    assert breakers[0].one("span").classes == {"badge", "breaker-half_open"}
    cloud = parse(page.node(realistic_fleet(NOW)[2], now=NOW, admin=False))
    assert cloud.one("dd", id="node-config-error").text.startswith("⚠ config v12 rejected")


def test_admin_controls_only_for_admins(page: FleetPage) -> None:
    row = replace(realistic_fleet(NOW)[0], name="lab 'b'")
    plain = parse(page.node(row, now=NOW, admin=False))
    assert plain.all(id="admin-actions") == []
    assert "revoke" not in plain.one("main").text
    admin = parse(page.node(row, now=NOW, admin=True))
    # The hint is a command a shell reads back as the same name.
    assert admin.one(id="admin-actions").one("code").text == (
        "edgewise control revoke 'lab '\"'\"'b'\"'\"''")
    assert parse(page.fleet([row], now=NOW, ca_fingerprint=CA_FP, admin=True)).one(
        "span", cls="role").text == "admin"


def test_login_form_posts_a_token(page: FleetPage) -> None:
    doc = parse(page.login(error="that token is expired <b>", next_path="/nodes/a%20b"))
    form = doc.one("form", id="login")
    assert (form.attrs["method"], form.attrs["action"]) == ("post", "/login")
    token = form.one("input", name="token")
    assert token.attrs["type"] == "password"
    assert form.one("input", name="next").attrs["value"] == "/nodes/a%20b"
    assert doc.one("p", id="login-error").text == "that token is expired <b>"
    assert doc.all("b") == []
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:x"):
        form = parse(page.login(next_path=evil)).one("form")
        assert form.one("input", name="next").attrs["value"] == "/", evil


def render_timing(page: FleetPage, n: int = 200, repeat: int = 7) -> tuple[float, str]:
    """Best-of-``repeat`` milliseconds to render an ``n``-node fleet page, and the page."""
    base = realistic_fleet(NOW)
    rows = [replace(base[i % 3], name=f"{base[i % 3].name}-{i:03d}") for i in range(n)]
    best, html = float("inf"), ""
    for _ in range(repeat):
        t0 = time.perf_counter()
        html = page.fleet(rows, now=NOW, ca_fingerprint=CA_FP, admin=True)
        best = min(best, time.perf_counter() - t0)
    return best * 1000, html


def test_two_hundred_nodes(page: FleetPage) -> None:
    ms, html = render_timing(page)
    print(f"\nfleet page, 200 nodes: {ms:.1f} ms to render, {len(html) / 1024:.0f} KiB")
    rows = node_rows(parse(html))
    assert len(rows) == 200
    assert rows[-1].one("a").attrs["href"] == "/nodes/factory-gw-01-199"
    assert parse(html).one("span", id="count-nodes").text == "200"


# -- a real browser ---------------------------------------------------------------------

def chromium_path() -> str:
    """Debian's Chromium (Playwright's own download needs the internet)."""
    found = shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if Path(p).exists()),
        None)
    if found is None:
        pytest.fail(f"no chromium on this machine: {FIX_HINT}", pytrace=False)
    return found


class PageServer:
    """The fleet pages behind a small Starlette app, with the control plane's CSP header,
    served by uvicorn on a free loopback port in a thread."""

    def __init__(self, page: FleetPage, rows: Sequence[NodeRow], *, now: datetime | None = None,
                 admin: bool = False) -> None:
        self.page, self.rows, self.now, self.admin = page, list(rows), now, admin
        self.hits: dict[str, int] = {}
        self.logins: list[dict[str, list[str]]] = []
        app = Starlette(routes=[
            Route("/", self._fleet), Route("/nodes/{name:path}", self._node),
            Route("/login", self._login_form, methods=["GET"]),
            Route("/login", self._login, methods=["POST"])])
        # port 0: the kernel picks a free port and uvicorn keeps it bound (no race).
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def _html(self, path: str, body: str, status: int = 200) -> Response:
        self.hits[path] = self.hits.get(path, 0) + 1
        return HTMLResponse(body, status_code=status, headers={
            "content-security-policy": CSP, "x-content-type-options": "nosniff"})

    def _time(self) -> datetime:
        return self.now or datetime.now(UTC)

    async def _fleet(self, request: Request) -> Response:
        return self._html("/", self.page.fleet(self.rows, now=self._time(),
                                               ca_fingerprint=CA_FP, admin=self.admin))

    async def _node(self, request: Request) -> Response:
        name = request.path_params["name"]
        row = next((r for r in self.rows if r.name == name), None)
        if row is None:
            return self._html("404", "<!doctype html><title>no such node</title>", 404)
        return self._html("/nodes/", self.page.node(row, now=self._time(), admin=self.admin))

    async def _login_form(self, request: Request) -> Response:
        return self._html("/login", self.page.login(next_path=request.query_params.get(
            "next", "/")))

    async def _login(self, request: Request) -> Response:
        self.logins.append(parse_qs((await request.body()).decode()))
        return RedirectResponse("/", status_code=303)

    def __enter__(self) -> PageServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the page server did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def browser_page(*, width: int = 1500, height: int = 900) -> Iterator[tuple[Any, Watch]]:
    """A fresh Chromium page and what it reported (dialogs, console errors, page errors)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=executable, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        try:
            context = browser.new_context(viewport={"width": width, "height": height})
            tab = context.new_page()
            watch = Watch()
            tab.on("dialog", watch.on_dialog)
            tab.on("console", watch.on_console)
            tab.on("pageerror", lambda exc: watch.page_errors.append(str(exc)))
            yield tab, watch
            context.close()
        finally:
            browser.close()


@dataclass
class Watch:
    dialogs: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def on_dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(self, msg: Any) -> None:
        if msg.type in ("error", "warning"):
            self.console_errors.append(f"{msg.type}: {msg.text}")

    def assert_quiet(self) -> None:
        assert self.dialogs == [], self.dialogs
        assert self.console_errors == [], self.console_errors
        assert self.page_errors == [], self.page_errors


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, (path, len(data))


def test_fleet_page_in_chromium(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    rows = [*realistic_fleet(NOW), hostile_row(NOW)]
    with PageServer(FleetPage(fleet="acme-health", refresh_s=60), rows, now=NOW) as server, \
            browser_page() as (tab, watch):
        response = tab.goto(server.url + "/")
        assert response is not None and response.status == 200
        assert response.headers["content-security-policy"] == CSP
        body = tab.locator("table#fleet tbody tr.node")
        assert body.count() == 4
        assert body.locator("td.name a").all_inner_texts() == [
            "clinic-laptop-07", "factory-gw-01", "cloud-eu-1", HOSTILE_NAME]
        # The hostile model name is text on the page, and nothing ran.
        assert tab.locator("td.model bdi").nth(3).inner_text() == HOSTILE_MODEL
        assert tab.locator("script").count() == 0
        assert tab.locator("img").count() == 0
        assert tab.locator('meta[http-equiv="refresh"]').get_attribute("content") == "60"
        assert tab.locator("#count-requests").inner_text() == "18,146"
        # The CSP let the inline stylesheet and the bar widths apply.
        badge = tab.locator("tr.node").first.locator(".badge")
        assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(223, 245, 234)"
        seg = tab.locator("tr.node").first.locator(".seg").first
        bar = tab.locator("tr.node").first.locator(".bar")
        ratio = seg.bounding_box()["width"] / bar.bounding_box()["width"]
        assert abs(ratio - 0.81) < 0.02, ratio
        tab.screenshot(path=str(tmp_path / "fleet.png"), full_page=True)
        watch.assert_quiet()

        # Clicking the hostile name opens that node's page (the link survived quoting).
        tab.locator("td.name a").nth(3).click()
        tab.wait_for_load_state()
        assert unquote(urlsplit(tab.url).path) == "/nodes/" + HOSTILE_NAME
        assert tab.locator("#node-name").inner_text() == HOSTILE_NAME
        assert tab.locator("#node-model").inner_text() == HOSTILE_MODEL
        assert tab.locator("#node-config-error").inner_text() == '⚠ "><script>alert(5)</script>'
        assert tab.locator("script").count() == 0
        tab.screenshot(path=str(tmp_path / "node.png"), full_page=True)
        # ... and a plain one, then back to the fleet.
        tab.goto(server.url + "/")
        tab.get_by_role("link", name="factory-gw-01").click()
        tab.wait_for_load_state()
        assert urlsplit(tab.url).path == "/nodes/factory-gw-01"
        assert tab.locator("#breakers tbody tr").inner_text().split() == ["cloud", "half-open"]
        tab.locator("#back").click()
        tab.wait_for_load_state()
        assert urlsplit(tab.url).path == "/"
        watch.assert_quiet()
        assert server.hits.get("404", 0) == 0
    assert_png(tmp_path / "fleet.png")
    assert_png(tmp_path / "node.png")
    print(f"\nbrowser test (server + chromium + 5 page loads): {time.perf_counter() - t0:.1f} s")


def test_meta_refresh_reloads_in_chromium() -> None:
    with PageServer(FleetPage(fleet="acme-health", refresh_s=1), realistic_fleet(NOW)) as server, \
            browser_page() as (tab, watch):
        tab.goto(server.url + "/")
        deadline = time.monotonic() + 10
        while server.hits.get("/", 0) < 2 and time.monotonic() < deadline:
            tab.wait_for_timeout(100)
        assert server.hits.get("/", 0) >= 2, server.hits
        watch.assert_quiet()


def test_login_form_posts_in_chromium() -> None:
    with PageServer(FleetPage(fleet="acme-health"), realistic_fleet(NOW)) as server, \
            browser_page() as (tab, watch):
        tab.goto(server.url + "/login?next=/nodes/cloud-eu-1")
        tab.locator("#token").fill("ewa_test-token-123")
        tab.locator("button[type=submit]").click()
        tab.wait_for_load_state()
        assert server.logins == [{"token": ["ewa_test-token-123"], "next": ["/nodes/cloud-eu-1"]}]
        assert urlsplit(tab.url).path == "/"
        watch.assert_quiet()


# -- by hand: screenshots for the README ------------------------------------------------

def write_screenshots(out: Path) -> list[Path]:
    """``fleet-page.png`` and ``fleet-node.png`` of the realistic fleet, into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    page = FleetPage(fleet="acme-health", refresh_s=5)
    ms, _ = render_timing(page)
    print(f"fleet page, 200 nodes: {ms:.1f} ms to render")
    paths = [out / "fleet-page.png", out / "fleet-node.png"]
    with PageServer(page, realistic_fleet(NOW), now=NOW, admin=True) as server, \
            browser_page(width=1760, height=240) as (tab, watch):
        tab.goto(server.url + "/")
        tab.screenshot(path=str(paths[0]), full_page=True)
        tab.goto(server.url + "/nodes/factory-gw-01")
        tab.set_viewport_size({"width": 1280, "height": 240})
        tab.screenshot(path=str(paths[1]), full_page=True)
        watch.assert_quiet()
    return paths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshots", type=Path, required=True, metavar="DIR",
                        help="write fleet-page.png and fleet-node.png here")
    for written in write_screenshots(parser.parse_args().screenshots):
        print(f"wrote {written}")


def test_federated_runs_show_rounds_nodes_quality_and_budget(page: FleetPage) -> None:
    from edgewise.federated.status import NodeRecord, RoundRecord, RunStatus

    run = RunStatus(run="clinic-<b>notes</b>", state="stopped", mode="deployment",
                    rounds_planned=5, strategy="fedavg", aggregation="ffa",
                    privacy={"noise_multiplier": 1.0, "delta": 1e-5, "max_epsilon": 8.0},
                    epsilon=7.51, error="round 4 could spend ε = 8.2",
                    nodes={"1": NodeRecord(rounds=3), "2": NodeRecord(rounds=3),
                           "3": NodeRecord(state="dropped", reason="notes.jsonl:7: bad")},
                    rounds=[RoundRecord(round=i, sampled=[1, 2, 3], replied=[1, 2],
                                        eval_loss=2.0 - i / 10, eval_exact=0.2 * i,
                                        epsilon=2.5 * i) for i in (1, 2, 3)])
    html = page.fleet(realistic_fleet(NOW), now=NOW, ca_fingerprint=CA_FP, admin=True,
                      federated=[("clinic-notes", run), ("gone", None)])
    doc = parse(html)
    assert "<b>notes</b>" not in html  # a run's name is text, not markup
    text = " ".join(html.split())
    assert "Federated runs" in text and "3/5" in text and "2 took part, 1 dropped" in text
    assert "r3: 2/3, 1.700, 60%, ε 7.50" in text and "ε 7.51 of 8.0 (δ 1e-05)" in text
    assert "round 4 could spend" in text and "its run folder is gone or unreadable" in text
    assert doc is not None

"""The command line: chat against a live node, models listing, config errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import LiveServer, closed_port

EDGEWISE = str(Path(sys.executable).parent / "edgewise")


def test_chat_streams_answers_and_keeps_history(live_fake: LiveServer) -> None:
    live_fake.node.engine.eos_after = 6  # type: ignore[attr-defined]
    r = subprocess.run(
        [EDGEWISE, "chat", "--url", live_fake.url + "/v1", "--system", "Be brief."],
        input="hello\nand again\n/exit\n", capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "200", "TERM": "dumb"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("assistant>") == 2
    metrics = subprocess.run(["curl", "-s", live_fake.url + "/metrics"], capture_output=True,
                             text=True, check=True).stdout
    assert 'edgewise_requests_total{endpoint="/v1/chat/completions",status="200"} 2.0' in metrics


def test_chat_says_when_the_node_is_unreachable() -> None:
    with closed_port() as port:  # not "port 9 is surely closed"
        url = f"http://127.0.0.1:{port}/v1"
        r = subprocess.run([EDGEWISE, "chat", "--url", url], input="hi\n",
                           capture_output=True, text=True, timeout=60,
                           env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0
    assert f"cannot reach {url}" in r.stdout


def test_help_lists_commands() -> None:
    out = subprocess.run([EDGEWISE, "--help"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "COLUMNS": "200"}).stdout
    for cmd in ("serve", "models", "chat"):
        assert cmd in out

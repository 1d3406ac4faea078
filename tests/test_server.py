"""End to end with real processes and the real default model: the README quick start,
SIGTERM draining, and start-up errors that fit on one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from conftest import free_port

pytestmark = [pytest.mark.model, pytest.mark.slow]

EDGEWISE = str(Path(sys.executable).parent / "edgewise")


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_server_outlives_its_test() -> Iterator[None]:
    """A test that fails half-way must not leave its `edgewise serve` running."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


class Proc:
    def __init__(self, *args: str, port: int | None = None, per_test: bool = True) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [EDGEWISE, "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "COLUMNS": "200"},
        )
        if per_test:  # killed when the test ends, whatever happened
            _STARTED.append(self.proc)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited: {self.proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server never became ready")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return out


@pytest.fixture(scope="module")
def server() -> Iterator[Proc]:
    p = Proc(per_test=False)
    p.wait_ready()
    yield p
    p.stop()


def test_readme_curl_example(server: Proc) -> None:
    out = subprocess.run(
        ["curl", "-s", "-i", server.url + "/v1/chat/completions",
         "-H", "Content-Type: application/json",
         "-d", json.dumps({"model": "auto", "messages": [
             {"role": "user", "content": "Name three colours."}], "max_tokens": 40})],
        capture_output=True, text=True, timeout=300, check=True).stdout
    head, _, payload = out.partition("\n\n")  # text mode folds \r\n
    assert head.startswith("HTTP/1.1 200")
    assert "x-edgewise-tier: device" in head and "x-edgewise-node:" in head
    body = json.loads(payload)
    assert body["choices"][0]["message"]["content"].strip()
    assert body["model"] == "smollm2-135m-instruct"


def test_readme_openai_sdk_example(server: Proc) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    reply = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Say hello in French."}],
        max_tokens=30)
    assert reply.choices[0].message.content
    chunks = list(client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Count to three."}],
        max_tokens=20, stream=True, logprobs=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    lps = [t.logprob for c in chunks if c.choices and c.choices[0].logprobs
           for t in (c.choices[0].logprobs.content or [])]
    assert len(lps) == chunks[-1].usage.completion_tokens
    assert all(lp <= 0 for lp in lps)


def test_sigterm_drains_in_flight_stream() -> None:
    p = Proc()
    p.wait_ready()
    with httpx.stream("POST", p.url + "/v1/completions", timeout=60, json={
            "model": "auto", "prompt": "Once upon a time", "max_tokens": 24,
            "temperature": 0, "stream": True}) as r:
        lines = r.iter_lines()
        next(lines)
        p.proc.send_signal(signal.SIGTERM)  # mid-stream
        rest = list(lines)
    assert "data: [DONE]" in rest  # the in-flight request finished
    out, _ = p.proc.communicate(timeout=30)
    assert p.proc.returncode == 0, out
    assert "Traceback" not in out
    with pytest.raises(httpx.TransportError):  # and the node is gone
        httpx.get(p.url + "/healthz", timeout=1)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EDGEWISE, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "300"})


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("serving: {max_queue: -1}\n")
    r = run_cli("serve", "--config", str(cfg), "--port", str(free_port()))
    assert r.returncode == 2
    assert "serving.max_queue" in r.stderr and "greater than or equal to 0" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_unknown_model_flag_is_one_clear_line() -> None:
    r = run_cli("serve", "--model", "llama-9000", "--port", str(free_port()))
    assert r.returncode == 2
    assert "unknown model 'llama-9000'" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_models_command_reports_install_and_digest() -> None:
    r = run_cli("models", "--json")
    assert r.returncode == 0
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    smol = rows["smollm2-135m-instruct"]
    assert smol["installed"] and smol["verified"] is True
    assert smol["size_bytes"] == 98_362_432
    table = run_cli("models").stdout
    assert "smollm2-135m-instruct" in table and "b179c9523d0e6a0f" in table


def test_missing_api_key_variable_is_one_clear_line(tmp_path: Path) -> None:
    cfg = tmp_path / "fleet.yaml"
    cfg.write_text(
        "tiers:\n"
        "  - {name: device, clearance: phi,\n"
        "     endpoints: [{engine: llamacpp, model: smollm2-135m-instruct}]}\n"
        "  - {name: cloud, endpoints: [{url: 'http://127.0.0.1:9/v1',\n"
        "                               api_key_env: EDGEWISE_TEST_UNSET_KEY}]}\n")
    env = {k: v for k, v in os.environ.items() if k != "EDGEWISE_TEST_UNSET_KEY"}
    r = subprocess.run([EDGEWISE, "serve", "--config", str(cfg), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=60, env={**env, "COLUMNS": "300"})
    assert r.returncode == 2
    assert "environment variable EDGEWISE_TEST_UNSET_KEY (api_key_env) is not set" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout

"""``edgewise serve`` in a child process, for tests that need the node as it really runs:
its own interpreter (so its event loop, GIL and garbage collector are not the test
runner's), its signal handling and its exit status."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from conftest import free_port

EDGEWISE = str(Path(sys.executable).parent / "edgewise")


class NodeProcess:
    """A node on a free loopback port, serving ``config`` (YAML text), its output
    (stdout and stderr) in a file of ``directory``, which is also its working
    directory."""

    def __init__(self, directory: Path, config: str, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        path = directory / f"node-{self.port}.yaml"
        path.write_text(config)
        self.log = directory / f"node-{self.port}.log"
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [EDGEWISE, "serve", "--config", str(path), "--port", str(self.port), *args],
                stdout=out, stderr=subprocess.STDOUT, cwd=directory,
                env={**os.environ, "COLUMNS": "200"})

    def wait_ready(self, timeout: float = 60) -> NodeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the node exited ({self.proc.returncode}):\n"
                                     + self.output())
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("the node never became ready:\n" + self.output())

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def terminate(self) -> None:
        """SIGTERM (the node drains, then exits)."""
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout=timeout)

    def __enter__(self) -> NodeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

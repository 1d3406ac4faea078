"""A federated run's record: ``status.json`` in its run folder.

The server writes it after every round (atomically: a reader never sees half a file);
``edgewise federate status``, the run command's progress lines and the artifact's
lineage read it. It holds what the server knows and nothing a node did not send: node
ids, counts, losses, ε — never examples or file contents.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgewise.errors import FederatedError

__all__ = ["RUNS_INDEX", "STATUS", "NodeRecord", "RoundRecord", "RunStatus", "index_run",
           "indexed_runs", "read_status"]

STATUS = "status.json"
#: In a control directory's ``federated/``: the deployment runs started with ``--dir``
#: (name → run folder), what the fleet page lists.
RUNS_INDEX = "runs.json"


@dataclass
class RoundRecord:
    round: int
    sampled: list[int] = field(default_factory=list)
    replied: list[int] = field(default_factory=list)
    #: node id → the one-line reason it gave (or ``timed out``).
    failed: dict[str, str] = field(default_factory=dict)
    train_loss: float | None = None
    eval_loss: float | None = None
    #: Share of held-out examples whose completion the model gets exactly (teacher-forced).
    eval_exact: float | None = None
    #: node id → its held-out loss with this round's global adapter.
    eval_by_node: dict[str, float] = field(default_factory=dict)
    #: ε after this round (None: no differential privacy).
    epsilon: float | None = None
    noise_multiplier: float | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0
    #: Under secure aggregation: how many nodes sent keys, shares and a masked vector,
    #: answered the unmask stage, the ring's shares and threshold, saturated coordinates.
    secure: dict[str, int] = field(default_factory=dict)


@dataclass
class NodeRecord:
    state: str = "active"  # active | dropped
    reason: str = ""
    rounds: int = 0
    examples: int = 0


@dataclass
class RunStatus:
    run: str
    state: str = "starting"  # starting | running | completed | stopped | failed
    mode: str = "simulation"  # simulation | deployment
    error: str = ""
    started: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    finished: float | None = None
    rounds_planned: int = 0
    strategy: str = ""
    aggregation: str = ""
    clients_per_round: int = 0
    sampling: str = "fixed"
    nodes_total: int = 0
    base: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] = field(default_factory=dict)
    #: Secure aggregation's settings (empty: the server sees each update).
    secure_aggregation: dict[str, Any] = field(default_factory=dict)
    epsilon: float | None = None
    initial_eval_loss: float | None = None
    initial_eval_exact: float | None = None
    rounds: list[RoundRecord] = field(default_factory=list)
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    #: Where the final adapter is (relative to the run folder), once written.
    adapter: str | None = None

    def save(self, run_dir: Path) -> None:
        self.updated = time.time()
        text = json.dumps(asdict(self), indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".status.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, run_dir / STATUS)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunStatus:
        rounds = [RoundRecord(**r) for r in d.pop("rounds", [])]
        nodes = {k: NodeRecord(**v) for k, v in d.pop("nodes", {}).items()}
        return cls(**d, rounds=rounds, nodes=nodes)


def read_status(run_dir: str | Path) -> RunStatus:
    """The run folder's status (FederatedError, one line, when there is none)."""
    p = Path(run_dir) / STATUS
    try:
        return RunStatus.from_json(json.loads(p.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise FederatedError(f"{Path(run_dir)} is not a federated run folder (no {STATUS}); "
                             "`edgewise federate run` writes one") from None
    except (OSError, ValueError, TypeError) as exc:
        raise FederatedError(f"{p} cannot be read: {exc}") from exc


def index_run(folder: Path, name: str, run_dir: Path) -> None:
    """Add a run to ``folder``'s index (newest last; a name run again moves to the end)."""
    folder.mkdir(parents=True, exist_ok=True)
    runs = [r for r in _index(folder) if r["name"] != name]
    runs.append({"name": name, "run_dir": str(run_dir.resolve()), "added": time.time()})
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".runs.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(runs[-100:], f, indent=2)
    os.replace(tmp, folder / RUNS_INDEX)


def _index(folder: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads((folder / RUNS_INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, dict) and isinstance(r.get("name"), str)
            and isinstance(r.get("run_dir"), str)] if isinstance(data, list) else []


def indexed_runs(folder: Path, *, limit: int = 10) -> list[tuple[str, RunStatus | None]]:
    """The newest ``limit`` indexed runs, newest first, with their status (None: the run
    folder is gone or unreadable)."""
    out: list[tuple[str, RunStatus | None]] = []
    for r in reversed(_index(folder)[-limit:]):
        try:
            out.append((r["name"], read_status(r["run_dir"])))
        except FederatedError:
            out.append((r["name"], None))
    return out

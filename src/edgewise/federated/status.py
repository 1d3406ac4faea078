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

__all__ = ["STATUS", "NodeRecord", "RoundRecord", "RunStatus", "read_status"]

STATUS = "status.json"


@dataclass
class RoundRecord:
    round: int
    sampled: list[int] = field(default_factory=list)
    replied: list[int] = field(default_factory=list)
    #: node id → the one-line reason it gave (or ``timed out``).
    failed: dict[str, str] = field(default_factory=dict)
    train_loss: float | None = None
    eval_loss: float | None = None
    #: node id → its held-out loss with this round's global adapter.
    eval_by_node: dict[str, float] = field(default_factory=dict)
    #: ε after this round (None: no differential privacy).
    epsilon: float | None = None
    noise_multiplier: float | None = None
    bytes_down: int = 0
    bytes_up: int = 0
    seconds: float = 0.0


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
    epsilon: float | None = None
    initial_eval_loss: float | None = None
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

"""Heartbeats without a database round trip each.

A fleet of N nodes heartbeating every ``heartbeat_s`` asks for N/``heartbeat_s`` answers a
second, each needing the deny list and the node's newest config, and each leaving a
write. Done naively (four queries and one committed write per heartbeat) that is one
disk sync per heartbeat: ~100 heartbeats/s on a small SQLite machine before they queue.
:class:`HeartbeatDesk` answers from memory and writes in batches instead:

* **Reads** — the deny list, the newest config of every target and the enrolled names —
  are refreshed from the store every ``refresh_s`` (1 s) by one background thread, and at
  once after this replica revokes a node or pushes a config. So a revocation made on
  another replica of a shared PostgreSQL store reaches this replica's heartbeat answers
  within ``refresh_s``, and the nodes within one heartbeat after that.
* **Writes** — each node's latest heartbeat — are kept (one per node, the newest wins)
  and written every ``flush_s`` (0.5 s) in one transaction. A control plane killed
  between two flushes loses at most that half second of ``last_seen``; nothing a node
  depends on (its certificate, the deny list, configs) goes through this path.

A node unknown to the cached names (enrolled on another replica since the last refresh)
is looked up in the store directly; a revoked node is refused from the cached deny list.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from edgewise.control.store import ConfigVersion, ControlStore, DenyList, HeartbeatWrite
from edgewise.errors import EdgewiseError, ForbiddenError
from edgewise.security.pki import NodeIdentity

__all__ = ["HeartbeatDesk"]

log = logging.getLogger("edgewise.control")


@dataclass
class _View:
    deny: DenyList = field(default_factory=lambda: DenyList(version=0, nodes=(), serials=()))
    serials: frozenset[str] = frozenset()
    revoked: frozenset[str] = frozenset()
    enrolled: frozenset[str] = frozenset()
    configs: dict[tuple[str, str], ConfigVersion] = field(default_factory=dict)


class HeartbeatDesk:
    def __init__(self, store: ControlStore, *, fleet: str, flush_s: float = 0.5,
                 refresh_s: float = 1.0) -> None:
        self.store = store
        self.fleet = fleet
        self.flush_s = flush_s
        self.refresh_s = refresh_s
        self._view = _View()
        self._pending: dict[str, HeartbeatWrite] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    # -- the background thread ------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="heartbeat-desk",
                                            daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        next_refresh = 0.0
        while not self._stop.is_set():
            self._stop.wait(timeout=self.flush_s)
            try:
                self.flush()
                if time.monotonic() >= next_refresh:
                    self.refresh()
                    next_refresh = time.monotonic() + self.refresh_s
            except EdgewiseError as exc:  # the store is down: keep answering from memory
                log.error("heartbeat desk: %s", exc)

    def changed(self) -> None:
        """Something the answers depend on changed here (a revocation, a config push, an
        enrolment): refresh now, in the caller's thread, rather than at the next
        ``refresh_s`` — the very next heartbeat answer already says it."""
        self.refresh()

    # -- reads and writes ---------------------------------------------------------------------
    def refresh(self) -> None:
        deny = self.store.deny_list()
        newest: dict[tuple[str, str], ConfigVersion] = {}
        for c in self.store.configs():
            key = (c.target_kind, c.target)
            if key not in newest or c.version > newest[key].version:
                newest[key] = c
        names = self.store.node_names()
        self._view = _View(deny=deny, serials=frozenset(s.lower() for s in deny.serials),
                           revoked=frozenset(deny.nodes), enrolled=frozenset(names),
                           configs=newest)

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = list(self._pending.values()), {}
        if not batch:
            return
        try:
            self.store.heartbeats(batch)
        except EdgewiseError:
            with self._lock:  # keep them for the next flush (newer ones win)
                for h in batch:
                    self._pending.setdefault(h.node, h)
            raise

    def accept(self, peer: NodeIdentity, body: dict[str, Any], *, applied_config: int | None,
               config_error: str | None) -> tuple[DenyList, ConfigVersion | None]:
        """Take one heartbeat: refuse a revoked or unknown node (``ForbiddenError``),
        else queue its write and return the deny list and its newest config."""
        view = self._view
        if peer.serial.lower() in view.serials or peer.node in view.revoked:
            raise ForbiddenError(f"node {peer.node} is revoked; its certificate "
                                 f"{peer.serial[:16]} is no longer accepted")
        if peer.node not in view.enrolled:
            rec = self.store.node(peer.node)  # enrolled on another replica meanwhile?
            if rec is None:
                raise ForbiddenError(f"node {peer.node} is not enrolled in fleet {self.fleet}")
            if rec.revoked_at is not None:
                raise ForbiddenError(f"node {peer.node} is revoked")
        with self._lock:
            self._pending[peer.node] = HeartbeatWrite(
                node=peer.node, body=body, now=datetime.now(UTC),
                applied_config=applied_config, config_error=config_error)
        config = view.configs.get(("node", peer.node)) or view.configs.get(("tier", peer.tier))
        return view.deny, config

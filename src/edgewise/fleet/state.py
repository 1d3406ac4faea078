"""What a joined node keeps on disk: its identity, the fleet's trust anchors, the last
deny list and the last good central config — everything it needs to keep serving while
the control plane is unreachable (offline first).

Layout of ``fleet.state_dir`` (default ``.edgewise/fleet``)::

    fleet.json      fleet, node, tier, SPIFFE ID, control plane URL, pinned CA digest
    node.key        the node's private key (0600; made here, never sent anywhere)
    node.pem        its certificate + the intermediate CA (what it presents in TLS)
    ca.pem          the fleet's root CA (the only certificate the node trusts)
    token-key.pem   the control plane's public key for access tokens (verified offline)
    deny.json       revoked nodes and certificate serials, as of the last heartbeat
    config.json     the last central config that validated and was applied
    tuf-root.json   the fleet's TUF root at join: what model updates are verified against
    release.pub     the public key model-signing signatures of releases are checked with

Every file is replaced atomically (write a temporary file, then rename), so a node killed
mid-write keeps the previous version, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from edgewise.errors import FleetError
from edgewise.security.peers import DenyList
from edgewise.security.pki import NodeIdentity, identity_of, load_chain, write_private

__all__ = ["FleetState", "Membership", "StoredConfig"]


@dataclass(frozen=True)
class Membership:
    """``fleet.json``: which fleet this node belongs to, as who, and where its control
    plane is."""

    fleet: str
    node: str
    tier: str
    spiffe_id: str
    control_url: str
    ca_sha256: str
    heartbeat_s: float
    token_issuer: str
    joined_at: str


@dataclass(frozen=True)
class StoredConfig:
    """``config.json``: a central config version (its global ``id``, per-target
    ``version`` and the ``tiers``/``routing``/``privacy`` sections)."""

    id: int
    version: int
    target: str
    body: dict[str, Any] = field(default_factory=dict)


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class FleetState:
    """The files of one node's state directory (module docstring)."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.membership_file = self.dir / "fleet.json"
        self.key_file = self.dir / "node.key"
        self.cert_file = self.dir / "node.pem"
        self.ca_file = self.dir / "ca.pem"
        self.token_key_file = self.dir / "token-key.pem"
        self.deny_file = self.dir / "deny.json"
        self.config_file = self.dir / "config.json"
        self.tuf_root_file = self.dir / "tuf-root.json"
        self.release_key_file = self.dir / "release.pub"

    @property
    def joined(self) -> bool:
        return self.membership_file.is_file()

    def membership(self) -> Membership:
        self.recover()
        try:
            data = json.loads(self.membership_file.read_text(encoding="utf-8"))
            return Membership(**data)
        except FileNotFoundError:
            raise FleetError(f"{self.dir} holds no fleet membership (no fleet.json): run "
                             "`edgewise join https://CONTROL --token T --ca-sha256 FPR "
                             f"--state-dir {self.dir}` first") from None
        except (OSError, ValueError, TypeError) as exc:
            raise FleetError(f"{self.membership_file} is unreadable or corrupt ({exc}); "
                             "join again") from exc

    def save_membership(self, m: Membership) -> None:
        _write_json(self.membership_file, asdict(m))

    def identity(self) -> NodeIdentity:
        """The identity in the node's current certificate."""
        try:
            chain = load_chain(self.cert_file.read_bytes())
        except OSError as exc:
            raise FleetError(f"cannot read the node certificate {self.cert_file}: "
                             f"{exc.strerror or exc}; join again") from exc
        return identity_of(chain[0])

    def save_pair(self, key_pem: bytes, chain_pem: bytes) -> None:
        """Replace the key and certificate together. Both are written in full to
        ``*.next`` files first, then renamed key first: a crash between the two renames
        leaves ``node.pem.next``, which :meth:`recover` (run when the state is opened)
        renames too, so the key and certificate on disk always belong together."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_next = self.dir / "node.key.next"
        cert_next = self.dir / "node.pem.next"
        write_private(key_next, key_pem)
        fd, tmp = tempfile.mkstemp(prefix=".node.pem.", dir=self.dir)
        with os.fdopen(fd, "wb") as f:
            f.write(chain_pem)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, cert_next)
        os.replace(key_next, self.key_file)
        os.replace(cert_next, self.cert_file)

    def recover(self) -> None:
        """Finish a key/certificate replacement a crash interrupted (see
        :meth:`save_pair`), or drop one that never got as far as renaming the key."""
        key_next = self.dir / "node.key.next"
        cert_next = self.dir / "node.pem.next"
        if cert_next.exists() and not key_next.exists():
            os.replace(cert_next, self.cert_file)  # the key was already renamed
        else:
            key_next.unlink(missing_ok=True)
            cert_next.unlink(missing_ok=True)

    # -- the deny list and the central config: kept across restarts --------------------
    def load_deny_list(self, into: DenyList) -> None:
        try:
            data = json.loads(self.deny_file.read_text(encoding="utf-8"))
            into.update(int(data["version"]), data["serials"], data["nodes"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FleetError(f"{self.deny_file} is corrupt ({exc}); delete it to fetch the "
                             "deny list again at the next heartbeat") from exc

    def save_deny_list(self, deny: DenyList) -> None:
        _write_json(self.deny_file, {"version": deny.version, "serials": sorted(deny.serials),
                                     "nodes": sorted(deny.nodes)})

    def last_config(self) -> StoredConfig | None:
        try:
            data = json.loads(self.config_file.read_text(encoding="utf-8"))
            return StoredConfig(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise FleetError(f"{self.config_file} is corrupt ({exc}); delete it to take the "
                             "config from the control plane again") from exc

    def save_config(self, cfg: StoredConfig) -> None:
        _write_json(self.config_file, asdict(cfg))

    def certificate_expiry(self) -> datetime:
        return self.identity().not_after

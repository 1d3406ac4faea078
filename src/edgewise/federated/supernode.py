"""A SuperNode that runs only app bundles the fleet signed.

Runs inside Flower's environment (``.venv-federated``), started by
:mod:`edgewise.federated.deploy`. It is Flower 1.42's own ``flower-supernode`` with one
check added before a run's app bundle (FAB) is installed: an ECDSA P-256 signature over
``sha256(FAB)`` by the fleet's release key — the key nodes already check model releases
with (``release.pub`` in the node's state folder) — given in the run's config as
``fab-signature`` (:func:`edgewise.federated.deploy.sign_fab`). A FAB without a valid one
gets Flower's own answer for an unverified FAB ("The FAB could not be verified"), and
nothing of it is installed or run on the node.

Written here, by replacing one function of ``flwr.supernode.start_client_internal`` (the
message pull, to wrap its ``get_fab``), because Flower verifies FABs only against Flower
Hub's signatures: a SuperNode started with ``--trusted-entities`` refuses every bundle
``flwr run`` submits (they carry no Hub verification), and Hub is not reachable offline
nor the fleet's authority. Runtime dependency installation stays off (Flower's default
for a SuperNode; the deploy module never passes the flag that allows it).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import logging
import sys
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["FAB_CONTEXT", "fab_message", "install_check", "main"]

log = logging.getLogger("edgewise.federated")

#: Domain separation: a release key signature over a FAB is never one over anything else.
FAB_CONTEXT = b"edgewise-fab-v1\0"
VERIFIED = "edgewise-release"


def fab_message(digest_hex: str) -> bytes:
    return FAB_CONTEXT + bytes.fromhex(digest_hex)


def verify(public: ec.EllipticCurvePublicKey, content: bytes, signature: str) -> bool:
    try:
        sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        public.verify(sig, fab_message(hashlib.sha256(content).hexdigest()),
                      ec.ECDSA(hashes.SHA256()))
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def install_check(release_pub: Path) -> None:
    """Make this process's SuperNode refuse FABs the release key did not sign."""
    import flwr.supernode.start_client_internal as sci
    from flwr.supercore.fab import Fab

    public = serialization.load_pem_public_key(release_pub.read_bytes())
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise SystemExit(f"{release_pub}: not an EC public key")
    pull = sci._pull_and_store_message

    def checked_pull(*args: Any, **kwargs: Any) -> Any:
        get_fab, get_run = kwargs["get_fab"], kwargs["get_run"]

        def get_checked_fab(fab_hash: str, run_id: int) -> Any:
            fab = get_fab(fab_hash, run_id)
            signature = str(get_run(run_id).override_config.get("fab-signature") or "")
            if signature and verify(public, fab.content, signature):
                return Fab(fab.hash_str, fab.content, {"valid_license": "Valid",
                                                       VERIFIED: "verified"})
            log.error("run %s: its app bundle (sha256 %s) is not signed by the fleet's "
                      "release key; refused", run_id, hashlib.sha256(fab.content).hexdigest())
            return Fab(fab.hash_str, fab.content, {})

        kwargs["get_fab"] = get_checked_fab
        kwargs["trusted_entities"] = {VERIFIED: "the fleet's release key"}
        return pull(*args, **kwargs)

    sci._pull_and_store_message = checked_pull
    sci._verify_fab = lambda fab, _trusted: fab.verifications.get(VERIFIED) == "verified"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgewise.federated.supernode",
                                 description="flower-supernode, running only FABs the "
                                             "fleet's release key signed")
    ap.add_argument("--release-pub", type=Path, required=True)
    ap.add_argument("flower_args", nargs=argparse.REMAINDER,
                    help="after --: flower-supernode's arguments")
    args = ap.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    install_check(args.release_pub)
    from flwr.supernode.cli.flower_supernode import flower_supernode

    rest = args.flower_args[1:] if args.flower_args[:1] == ["--"] else args.flower_args
    sys.argv = ["flower-supernode", *rest]
    flower_supernode()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Provenance of a released model: a model-signing (OpenSSF ``model-signing``) signature
over every file of the release, made with the fleet's release key (ECDSA P-256; the
package's Sigstore mode needs online services this fleet cannot reach).

TUF (:mod:`.repository`) says which files are current and what their digests are; the
model-signing signature says who released those files, and travels with them, so a
release copied off a node is still checkable. Neither is enough alone: model-signing has
no freshness (an old signature verifies for ever), TUF's targets key is an online
service's. A node installs a release only when both agree.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgewise.errors import PKIError

__all__ = ["SignatureRefused", "sign_release", "verify_release"]

# model-signing logs each file it hashes at INFO.
logging.getLogger("model_signing").setLevel(logging.WARNING)


class SignatureRefused(PKIError):
    """A release's files do not match its model-signing signature, or it was signed by
    another key."""


def sign_release(model_dir: Path, signature: Path, *, private_key: Path,
                 password: bytes | None = None) -> None:
    """Sign every file under ``model_dir`` into ``signature`` (a Sigstore bundle, JSON;
    keep it outside ``model_dir``)."""
    from model_signing import signing

    config = signing.Config()  # type: ignore[no-untyped-call]  # unannotated upstream
    # 1.1 annotates ``password`` as str but hands it to cryptography, which needs bytes.
    config.use_elliptic_key_signer(private_key=private_key,
                                   password=password).sign(model_dir, signature)  # type: ignore[arg-type]


def verify_release(model_dir: Path, signature: Path, *, public_key: Path) -> None:
    """Check ``model_dir`` against ``signature``; SignatureRefused in one line if a file
    was changed, added or removed, or the signature is not the release key's."""
    from model_signing import verifying

    try:
        config = verifying.Config()  # type: ignore[no-untyped-call]  # unannotated upstream
        config.use_elliptic_key_verifier(public_key=public_key).verify(model_dir, signature)
    except ValueError as exc:
        text = " ".join(str(exc).split())
        if "Hash mismatch for " in text:
            changed = text.split("Hash mismatch for ", 1)[1].split(":", 1)[0].strip("'\"\\")
            raise SignatureRefused(f"the release in {model_dir} does not match its "
                                   f"model-signing signature ({changed} changed)") from exc
        if text.startswith("Signature mismatch"):
            raise SignatureRefused(f"the release in {model_dir} does not match its "
                                   "model-signing signature (files added or removed)") from exc
        raise SignatureRefused(f"the model-signing signature of {model_dir} does not verify "
                               f"with the fleet's release key: {text[:200]}") from exc
    except Exception as exc:  # a bundle that does not parse, a wrong key type
        raise SignatureRefused(f"the model-signing signature of {model_dir} cannot be "
                               f"checked: {type(exc).__name__}: {str(exc)[:200]}") from exc

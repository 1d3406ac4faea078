"""Keys and the files that hold them: ECDSA P-256 keys, PEM, atomic 0600 writes.

Every key of the fleet (root and intermediate CA, the control plane's TLS key, node keys,
the access-token signing key) is ECDSA P-256: small, fast, accepted by every TLS stack
and the curve of JWT's ES256. Private keys are PKCS#8 PEM; the root CA's is encrypted
with a passphrase (``BestAvailableEncryption``: PBES2, PBKDF2-HMAC-SHA256 and AES-256;
cryptography uses few PBKDF2 rounds, so the passphrase must be long and random to resist
guessing if the file leaks).

A file is written to a temporary file in the same directory, created with its final mode
(``os.open(..., 0o600)``: there is no moment when a private key is readable by others),
fsynced, and renamed over the target (``os.replace`` is atomic on POSIX), so a crash
leaves the old file or the new one, never half of one. Directories the writer creates
are 0700. Re-exported by :mod:`edgewise.security.pki`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgewise.errors import PKIError

__all__ = ["generate_key", "load_private_key", "private_pem", "public_pem", "write_private",
           "write_public"]


def generate_key() -> ec.EllipticCurvePrivateKey:
    """A new ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: ec.EllipticCurvePrivateKey, passphrase: bytes | None = None) -> bytes:
    """PKCS#8 PEM of ``key``, encrypted with ``passphrase`` when one is given."""
    if passphrase is not None and not passphrase:
        raise PKIError("an empty passphrase cannot encrypt a key: set "
                       "$EDGEWISE_CA_PASSPHRASE to a non-empty passphrase")
    enc: serialization.KeySerializationEncryption = (
        serialization.NoEncryption() if passphrase is None
        else serialization.BestAvailableEncryption(passphrase))
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             enc)


def public_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of ``key``."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(data: bytes, *, passphrase: bytes | None = None,
                     source: str = "key") -> ec.EllipticCurvePrivateKey:
    """The EC private key in PEM ``data`` (``source`` names it in errors; the passphrase
    never appears in one)."""
    encrypted = b"ENCRYPTED PRIVATE KEY" in data or b"Proc-Type: 4,ENCRYPTED" in data
    if encrypted and not passphrase:
        raise PKIError(f"{source} is encrypted (set $EDGEWISE_CA_PASSPHRASE to its "
                       "passphrase)")
    try:
        key = serialization.load_pem_private_key(data, password=passphrase if encrypted
                                                 else None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        if encrypted:
            raise PKIError(f"wrong passphrase for {source} (set $EDGEWISE_CA_PASSPHRASE to "
                           "the passphrase given to `edgewise control init`)") from None
        raise PKIError(f"{source} is not a PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PKIError(f"{source} is not an ECDSA private key")
    return key


def _make_dirs(directory: Path) -> None:
    """Create ``directory`` and missing parents with mode 0700 (``mkdir -p`` would not)."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        directory = directory.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)  # whatever the umask


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    # The temporary file is created with its final mode (no window where a key is
    # world-readable) in the same directory, so os.replace is an atomic rename.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        _make_dirs(path.parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # exactly ``mode``, whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise PKIError(f"cannot write {path}: {exc.strerror or exc}; check the directory's "
                       "permissions and free space") from exc


def write_private(path: Path, data: bytes) -> None:
    """Write a private key (or other secret) atomically with mode 0600."""
    _write_atomic(Path(path), data, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Write a certificate or public key atomically with mode 0644."""
    _write_atomic(Path(path), data, 0o644)

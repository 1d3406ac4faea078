"""A node: one engine, its admission queue, its metrics — the thing ``edgewise serve`` runs.

The model file is resolved and its digest checked before the HTTP listener starts (so a
wrong name fails in one line at once); the weights load in the background so ``/healthz``
answers immediately and ``/readyz`` turns 200 when the engine is ready.

**Versions.** What serves requests is a :class:`Serving` (an engine with its worker
threads and admission queue, and the version ``label`` metrics report it under). A
request takes one when it starts and keeps it to its last token, so changing what the
node serves never fails a request nor mixes two models' tokens:

- :meth:`Node.swap` replaces everything with one new version.
- :meth:`Node.split` serves a second version "b" beside the current one "a" (A/B): a
  request whose *split key* hashes below ``share`` goes to "b", every other to "a";
  :meth:`Node.unsplit` keeps one of them. A version replaced or dropped finishes its
  in-flight requests and is then freed.

**Split keys** (:func:`split_key`): who asks, so the same requester always lands on the
same version while the split stands — the requester's identity (API key name, token
subject) when known; else the OpenAI ``user`` field; else the request's first user
message (a conversation keeps its version from turn to turn). ``anonymous`` and peer
nodes (``spiffe://…``, which relay other people's requests) are not requesters here.
The key is hashed (:func:`split_point`: sha256 → a float in [0, 1)) and never stored
or reported. Because the point of a key never changes, raising ``share`` only moves
requesters from "a" to "b", never back and forth. The router sets
:data:`request_split_key` for the request it is handling; a caller of
:meth:`Node.current` without a key gets a fresh random draw (one per request, at the
same ``share``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from edgewise.chat import Message
from edgewise.config import EdgewiseConfig, EngineConfig
from edgewise.engines import Engine, EngineInfo, engine_factory
from edgewise.errors import ConfigError, EdgewiseError, ShuttingDownError, UnavailableError
from edgewise.models import ResolvedModel, resolve_model
from edgewise.serving import Admission
from edgewise.telemetry import NodeMetrics

__all__ = ["Node", "Serving", "SplitState", "Version", "build_engine", "engine_config",
           "request_split_key", "resolve_engine_model", "split_key", "split_point"]

log = logging.getLogger("edgewise.node")

#: Which side of an A/B split: "a" (the version served before the split) or "b".
Version = Literal["a", "b"]

#: The split key of the request the current task is handling (:func:`split_key`), set
#: by the router; ``None`` outside a routed request.
request_split_key: ContextVar[str | None] = ContextVar("edgewise_split_key", default=None)

#: The requester of a request sent without a credential (``api.auth.ANONYMOUS``).
_ANONYMOUS = "anonymous"
#: A peer node's identity (its certificate's SPIFFE id): it relays other people's
#: requests, so it says nothing about who asks.
_PEER = "spiffe://"


def split_key(*, requester: str | None = None, user: str | None = None,
              messages: Sequence[Message] = ()) -> str:
    """The key an A/B split sends a request by (see the module docstring): the
    requester when known, else the OpenAI ``user`` field, else the first user message
    (the first message when none is a user's). Kinds are prefixed, so a requester and a
    ``user`` value that are the same string are still two keys."""
    if requester and requester != _ANONYMOUS and not requester.startswith(_PEER):
        return "requester:" + requester
    if user:
        return "user:" + user
    first = next((m for m in messages if m.role == "user"), messages[0] if messages else None)
    return "messages:" + (first.content if first is not None else "")


def split_point(key: str) -> float:
    """``key``'s stable place in [0, 1): the first 53 bits of its sha256 over 2**53
    (53 bits: every value is exact in a double, and the largest is below 1)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") >> 11) / float(1 << 53)


@dataclass(frozen=True)
class SplitState:
    """An A/B split in force: ``share`` of the split keys go to version ``b``."""

    a: str
    b: str
    share: float

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "share": self.share}


def engine_config(config: EdgewiseConfig) -> EngineConfig:
    """The ``engine`` section as the local tier uses it: with a tier ladder, the local
    endpoint's ``engine`` kind and ``model`` (unless ``auto``) replace the section's."""
    ec = config.engine
    local = config.local_endpoint()
    if config.tiers and local is not None:
        ep = local[1]
        ec = dataclasses.replace(ec, kind=ep.engine or ec.kind,
                                 model=ec.model if ep.model == "auto" else ep.model)
    return ec


def resolve_engine_model(ec: EngineConfig) -> ResolvedModel:
    """The model file ``ec`` names: a catalogue name, a ``.gguf`` path, or ``auto`` (the
    best variant built by ``edgewise build`` that fits this machine), digest-checked.
    Sets ``lora_adapter`` for an ``auto`` variant served as base + adapter."""
    if ec.model != "auto":
        return resolve_model(ec.model, verify=ec.verify_digest)
    from edgewise.artifacts import choose_variant

    choice = choose_variant(ec.artifacts, ec.profile)
    log.info("model auto: %s for profile %s", choice.name, choice.profile.name)
    return ResolvedModel(name=choice.name, path=choice.path, sha256=choice.sha256,
                         size_bytes=choice.size_bytes, spec=None,
                         adapter=choice.adapter)


def build_engine(config: EdgewiseConfig) -> Engine:
    """Construct (not load) the engine a config asks for: the factory registered as
    ``engine.kind`` (``ConfigError`` listing the registered ones otherwise), given the
    engine settings and a resolver for its model file (called only by engines that
    serve one, so ``fake`` needs no file)."""
    ec = engine_config(config)
    factory = engine_factory(ec.kind)
    return factory(ec, lambda: resolve_engine_model(ec))


@dataclass(eq=False)
class Serving:
    """One loaded engine with its worker threads and admission queue. A request takes
    the node's current one once, when it starts, and uses it to its last token — so a
    model swap (:meth:`Node.swap`) never mixes one model's tokens with another's."""

    engine: Engine
    executor: ThreadPoolExecutor
    admission: Admission
    info: EngineInfo
    #: The version label metrics report (``model`` label), e.g. ``smollm2@4``: a name
    #: from config or the registry, so two builds of one model file are told apart.
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.info.model


class Node:
    def __init__(self, config: EdgewiseConfig, engine: Engine, *,
                 label: str | None = None) -> None:
        """``label``: the version label ``engine`` is reported under (default: its
        model id), e.g. the registry's ``NAME@VERSION`` of an installed release."""
        self.config = config
        self._engine = engine  # loaded by start(); then the current Serving's
        self._label = label  # what start()'s Serving is reported as (default: model id)
        self.metrics = NodeMetrics()
        #: The engine requests are served by now (``None`` until loaded); during an A/B
        #: split, version "a".
        self.serving: Serving | None = None
        #: Version "b" of an A/B split (``None``: no split).
        self.serving_b: Serving | None = None
        self.metrics.watch_batches(self._batch_stats)
        self._share = 0.0
        self._loaded_labels: set[str] = set()  # labels edgewise_model_loaded shows as 1
        self.load_error: str | None = None
        self.started_at = time.time()
        #: Set by :meth:`drain`: new requests get 503 while in-flight ones finish.
        self.draining = False
        #: Set when the drain timeout passes with requests still running: their streams
        #: end with an error event (the answer is incomplete) instead of just stopping.
        self.drain_expired = asyncio.Event()

    @property
    def name(self) -> str:
        return self.config.node.name

    @property
    def tier(self) -> str:
        """The tier this node's own engine serves."""
        local = self.config.local_endpoint()
        return local[0] if local is not None else self.config.node.tier

    @property
    def engine(self) -> Engine:
        return self.serving.engine if self.serving is not None else self._engine

    def _batch_stats(self) -> list[tuple[str, Any]]:
        """(label, BatchStats) of every loaded engine that batches, for ``/metrics``."""
        out = []
        for serving in self.servings:
            stats = getattr(serving.engine, "batch_stats", None)
            st = stats() if stats is not None else None
            if st is not None:
                out.append((serving.label, st))
        return out

    @property
    def admission(self) -> Admission | None:
        return self.serving.admission if self.serving is not None else None

    @property
    def executor(self) -> ThreadPoolExecutor | None:
        return self.serving.executor if self.serving is not None else None

    @property
    def servings(self) -> tuple[Serving, ...]:
        """Every version serving requests now: none, one, or "a" and "b" of a split."""
        return tuple(s for s in (self.serving, self.serving_b) if s is not None)

    @property
    def ready(self) -> bool:
        return self.serving is not None

    @property
    def info(self) -> EngineInfo:
        """The model the node serves (during a split: version "a", the incumbent)."""
        return self._primary().info

    @property
    def split_state(self) -> SplitState | None:
        """The A/B split in force (labels of "a" and "b", and b's share), or ``None``."""
        if self.serving is None or self.serving_b is None:
            return None
        return SplitState(self.serving.label, self.serving_b.label, self._share)

    def _primary(self) -> Serving:
        if self.serving is None:
            reason = self.load_error or "the model is still loading"
            raise UnavailableError(f"{reason}; check GET /readyz", retry_after=2)
        return self.serving

    def current(self, key: str | None = None) -> Serving:
        """The engine to serve a request with (held by the request until it ends).
        During an A/B split, "b" when ``key``'s :func:`split_point` is below the share,
        else "a"; without a key, a random draw at the same share (pass
        :func:`split_key` of the request so a requester keeps its version)."""
        a = self._primary()
        b = self.serving_b
        if b is None:
            return a
        point = split_point(key) if key is not None else random.random()
        return b if point < self._share else a

    @property
    def model_id(self) -> str:
        return self.info.model

    async def _load(self, engine: Engine, label: str | None = None) -> Serving:
        """Load ``engine`` on a worker thread of its own; its Serving (raises EdgewiseError)."""
        loop = asyncio.get_running_loop()
        # Loading happens on the same single worker that will later run generations.
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgewise-engine")
        try:
            await loop.run_in_executor(executor, engine.load)
            info = engine.info()
        except BaseException:
            executor.shutdown(wait=False)
            raise
        slots = max(1, info.slots)
        if slots > 1:
            executor.shutdown(wait=False)
            executor = ThreadPoolExecutor(slots, thread_name_prefix="edgewise-engine")
        s = self.config.serving
        admission = Admission(slots=slots, max_queue=s.max_queue,
                              queue_timeout_s=s.queue_timeout_s)
        return Serving(engine=engine, executor=executor, admission=admission, info=info,
                       label=label or info.model)

    def _switched(self) -> None:
        """Metrics after what serves changed: ``edgewise_model_loaded`` is 1 for the
        labels serving now and 0 for the ones just replaced (they only finish their
        in-flight requests); ``edgewise_ab_split`` has one series while a split is on."""
        live = {s.label for s in self.servings}
        for label in self._loaded_labels - live:
            self.metrics.model_loaded.labels(label).set(0)
        for label in live:
            self.metrics.model_loaded.labels(label).set(1)
        self._loaded_labels = live
        self.metrics.ab_split.clear()
        state = self.split_state
        if state is not None:
            self.metrics.ab_split.labels(state.a, state.b).set(state.share)

    async def _retire(self, old: Sequence[Serving], finish_timeout_s: float) -> None:
        """Free versions no new request reaches, once their in-flight requests finish
        (or ``finish_timeout_s`` passes)."""

        async def free(s: Serving) -> None:
            finished = await s.admission.idle(finish_timeout_s)
            if not finished:
                log.warning("%d request(s) still on %s after %.0f s; freeing it",
                            s.admission.active, s.label, finish_timeout_s)
            s.executor.shutdown(wait=True, cancel_futures=True)
            s.engine.close()

        await asyncio.gather(*(free(s) for s in old))

    async def start(self) -> None:
        """Create the worker threads and load the engine (in a thread)."""
        try:
            serving = await self._load(self._engine, self._label)
        except EdgewiseError as exc:
            self.load_error = f"model failed to load: {exc}"
            log.error("%s", self.load_error)
            return
        self.serving = serving
        self._switched()
        info = serving.info
        log.info("model %s ready (n_ctx=%d, sha256=%s…)", info.model, info.n_ctx, info.sha256[:12])

    async def swap(self, engine: Engine, *, label: str | None = None,
                   finish_timeout_s: float = 600.0) -> EngineInfo:
        """Serve ``engine`` (reported as ``label``, default its model id) from now on,
        without a failed request: it loads beside the current one (both in memory
        meanwhile); then new requests go to it, requests in flight finish on the old one
        (up to ``finish_timeout_s``), and the old one is freed. During an A/B split the
        swap replaces the whole split: both "a" and "b" finish their requests and are
        freed, and the new engine serves everything. A load failure raises
        (EdgewiseError) and changes nothing."""
        new = await self._load(engine, label)
        old = self.servings
        self.serving, self.serving_b, self._share = new, None, 0.0
        self._switched()
        log.info("now serving %s (%s, sha256=%s…)", new.label, new.info.model,
                 new.info.sha256[:12])
        await self._retire(old, finish_timeout_s)
        return new.info

    async def split(self, engine: Engine, *, share: float, label: str,
                    finish_timeout_s: float = 600.0) -> EngineInfo:
        """Serve ``engine`` as version "b" (reported as ``label``) to ``share`` of the
        split keys, the current version "a" to the rest. It loads beside "a"; a load
        failure raises (EdgewiseError) and changes nothing. Called during a split, it
        replaces "b" (the old "b" finishes its in-flight requests, up to
        ``finish_timeout_s``, and is freed) and sets the new share. ConfigError for a
        share outside [0, 1] or a label equal to a's; UnavailableError before a model
        serves or while the node drains."""
        _check_share(share)
        self._check_splittable(label)
        new = await self._load(engine, label)
        try:  # what serves may have changed while it loaded (a swap, a stop)
            self._check_splittable(label)
        except EdgewiseError:
            await self._retire([new], 0)
            raise
        old, self.serving_b, self._share = self.serving_b, new, share
        self._switched()
        log.info("A/B split: %s serves %.1f%% of requesters, %s the rest", new.label,
                 share * 100, self._primary().label)
        if old is not None:
            await self._retire([old], finish_timeout_s)
        return new.info

    def set_split_share(self, share: float) -> None:
        """Send ``share`` of the split keys to version "b" from now on (requests in
        flight keep their version); a requester moves only from "a" to "b" when the
        share grows, from "b" to "a" when it shrinks. ConfigError when no split is on."""
        _check_share(share)
        if self.split_state is None:
            raise ConfigError("no A/B split is on; start one with Node.split(engine, "
                              "share=..., label=...)")
        self._share = share
        self._switched()

    async def unsplit(self, keep: Version, *, finish_timeout_s: float = 600.0
                      ) -> EngineInfo:
        """End the A/B split: version ``keep`` ("a" or "b") serves every request from
        now on, the other finishes its in-flight requests (up to ``finish_timeout_s``)
        and is freed. Returns what serves now. With no split on, ``keep="a"`` changes
        nothing (so a repeated command is harmless) and ``keep="b"`` is a ConfigError."""
        if keep not in ("a", "b"):
            raise ConfigError(f"unsplit keep={keep!r}: keep must be 'a' or 'b'")
        a, b = self._primary(), self.serving_b
        if b is None:
            if keep == "a":
                return a.info
            raise ConfigError("unsplit keep='b': no A/B split is on, so there is no "
                              "version b; the node serves " + a.label)
        kept, dropped = (a, b) if keep == "a" else (b, a)
        self.serving, self.serving_b, self._share = kept, None, 0.0
        self._switched()
        log.info("A/B split ended: %s serves everything; %s is freed", kept.label,
                 dropped.label)
        await self._retire([dropped], finish_timeout_s)
        return kept.info

    def _check_splittable(self, label: str) -> None:
        if self.draining:
            raise ShuttingDownError("the node is shutting down; no A/B split can start")
        a = self._primary()
        if not label or label == a.label:
            raise ConfigError(f"split label {label!r}: version b needs a label of its own "
                              f"(version a is {a.label!r}), so metrics tell them apart")

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Refuse new requests (503) and wait up to ``timeout_s`` (default
        ``serving.drain_timeout_s``) for in-flight ones — on every version serving;
        True if they all finished. On timeout, :attr:`drain_expired` tells the streams
        still running to end with an error event. Idempotent."""
        timeout = self.config.serving.drain_timeout_s if timeout_s is None else timeout_s
        self.draining = True
        admissions = [s.admission for s in self.servings]
        if not admissions:
            return True
        active = sum(a.active + a.waiting for a in admissions)
        if active:
            log.info("draining %d in-flight request(s)…", active)
        done = all(await asyncio.gather(*(a.drain(timeout) for a in admissions)))
        if not done:
            log.warning("drain timed out after %.0f s with %d request(s) still running; "
                        "ending them", timeout, sum(a.active for a in admissions))
            self.drain_expired.set()
            # Give the cut streams a moment to send their error event and engine
            # threads to stop (each checks between tokens).
            await asyncio.gather(*(a.drain(2.0) for a in admissions))
        return done

    async def stop(self) -> None:
        """Drain in-flight requests (up to ``serving.drain_timeout_s``), then free the
        model (both versions of an A/B split)."""
        await self.drain()
        servings = self.servings
        self.serving, self.serving_b, self._share = None, None, 0.0
        self._switched()
        for serving in servings:
            serving.executor.shutdown(wait=True, cancel_futures=True)
            serving.engine.close()
        if not servings:
            self._engine.close()


def _check_share(share: float) -> None:
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"split share {share!r}: must be between 0 and 1 (the fraction "
                          "of requesters version b serves, e.g. 0.1)")

"""A node: one engine, its admission queue, its metrics — the thing ``edgewise serve`` runs.

The model file is resolved and its digest checked before the HTTP listener starts (so a
wrong name fails in one line at once); the weights load in the background so ``/healthz``
answers immediately and ``/readyz`` turns 200 when the engine is ready.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from edgewise.config import EdgewiseConfig, EngineConfig
from edgewise.engines import Engine, EngineInfo, engine_factory
from edgewise.errors import EdgewiseError, UnavailableError
from edgewise.models import ResolvedModel, resolve_model
from edgewise.serving import Admission
from edgewise.telemetry import NodeMetrics

__all__ = ["Node", "Serving", "build_engine", "engine_config", "resolve_engine_model"]

log = logging.getLogger("edgewise.node")


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


class Node:
    def __init__(self, config: EdgewiseConfig, engine: Engine) -> None:
        self.config = config
        self._engine = engine  # loaded by start(); then the current Serving's
        self.metrics = NodeMetrics()
        #: The engine requests are served by now (``None`` until loaded).
        self.serving: Serving | None = None
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

    @property
    def admission(self) -> Admission | None:
        return self.serving.admission if self.serving is not None else None

    @property
    def executor(self) -> ThreadPoolExecutor | None:
        return self.serving.executor if self.serving is not None else None

    @property
    def ready(self) -> bool:
        return self.serving is not None

    @property
    def info(self) -> EngineInfo:
        return self.current().info

    def current(self) -> Serving:
        """The engine to serve a request with (held by the request until it ends)."""
        if self.serving is None:
            reason = self.load_error or "the model is still loading"
            raise UnavailableError(f"{reason}; check GET /readyz", retry_after=2)
        return self.serving

    @property
    def model_id(self) -> str:
        return self.info.model

    async def _load(self, engine: Engine) -> Serving:
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
        return Serving(engine=engine, executor=executor, admission=admission, info=info)

    async def start(self) -> None:
        """Create the worker threads and load the engine (in a thread)."""
        try:
            serving = await self._load(self._engine)
        except EdgewiseError as exc:
            self.load_error = f"model failed to load: {exc}"
            log.error("%s", self.load_error)
            return
        self.serving = serving
        info = serving.info
        self.metrics.model_loaded.labels(info.model).set(1)
        log.info("model %s ready (n_ctx=%d, sha256=%s…)", info.model, info.n_ctx, info.sha256[:12])

    async def swap(self, engine: Engine, *, finish_timeout_s: float = 600.0) -> EngineInfo:
        """Serve ``engine`` from now on, without a failed request: it loads beside the
        current one (both in memory meanwhile); then new requests go to it, requests in
        flight finish on the old one (up to ``finish_timeout_s``), and the old one is
        freed. A load failure raises (EdgewiseError) and changes nothing."""
        new = await self._load(engine)
        old, self.serving = self.serving, new
        self.metrics.model_loaded.labels(new.info.model).set(1)
        log.info("now serving %s (sha256=%s…)", new.info.model, new.info.sha256[:12])
        if old is not None:
            if old.info.model != new.info.model:
                self.metrics.model_loaded.labels(old.info.model).set(0)
            finished = await old.admission.idle(finish_timeout_s)
            if not finished:
                log.warning("%d request(s) still on %s after %.0f s; freeing it",
                            old.admission.active, old.info.model, finish_timeout_s)
            old.executor.shutdown(wait=True, cancel_futures=True)
            old.engine.close()
        return new.info

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Refuse new requests (503) and wait up to ``timeout_s`` (default
        ``serving.drain_timeout_s``) for in-flight ones; True if they all finished. On
        timeout, :attr:`drain_expired` tells the streams still running to end with an
        error event. Idempotent."""
        timeout = self.config.serving.drain_timeout_s if timeout_s is None else timeout_s
        self.draining = True
        if self.admission is None:
            return True
        active = self.admission.active + self.admission.waiting
        if active:
            log.info("draining %d in-flight request(s)…", active)
        done = await self.admission.drain(timeout)
        if not done:
            log.warning("drain timed out after %.0f s with %d request(s) still running; "
                        "ending them", timeout, self.admission.active)
            self.drain_expired.set()
            # Give the cut streams a moment to send their error event and engine
            # threads to stop (each checks between tokens).
            await self.admission.drain(2.0)
        return done

    async def stop(self) -> None:
        """Drain in-flight requests (up to ``serving.drain_timeout_s``), then free the model."""
        await self.drain()
        serving, self.serving = self.serving, None
        if serving is not None:
            serving.executor.shutdown(wait=True, cancel_futures=True)
            self.metrics.model_loaded.labels(serving.info.model).set(0)
            serving.engine.close()
        else:
            self._engine.close()

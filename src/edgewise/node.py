"""A node: one engine, its admission queue, its metrics — the thing ``edgewise serve`` runs.

The model file is resolved and its digest checked before the HTTP listener starts (so a
wrong name fails in one line at once); the weights load in the background so ``/healthz``
answers immediately and ``/readyz`` turns 200 when the engine is ready.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from edgewise.config import EdgewiseConfig
from edgewise.engines import Engine, EngineInfo
from edgewise.engines.base import engine_factory
from edgewise.errors import EdgewiseError, UnavailableError
from edgewise.serving import Admission
from edgewise.telemetry import NodeMetrics

__all__ = ["Node", "build_engine"]

log = logging.getLogger("edgewise.node")


def build_engine(config: EdgewiseConfig) -> Engine:
    """Construct (not load) the engine a config asks for."""
    import edgewise.engines.fake
    import edgewise.engines.llamacpp  # noqa: F401  (registers "llamacpp")

    ec = config.engine
    kind, model_name = ec.kind, ec.model
    local = config.local_endpoint()
    if config.tiers and local is not None:  # the tier's endpoint names the local model
        kind = local[1].engine or kind
        model_name = model_name if local[1].model == "auto" else local[1].model
    factory = engine_factory(kind)
    if kind == "fake":
        return factory(n_ctx=ec.n_ctx)
    from edgewise.models import ResolvedModel, resolve_model

    lora = ec.lora_adapter
    if model_name == "auto":  # the best built variant for this machine (edgewise build)
        from edgewise.artifacts import choose_variant

        choice = choose_variant(ec.artifacts, ec.profile)
        log.info("model auto: %s for profile %s", choice.name, choice.profile.name)
        model = ResolvedModel(name=choice.name, path=choice.path, sha256=choice.sha256,
                              size_bytes=choice.size_bytes, spec=None)
        lora = str(choice.adapter) if choice.adapter else lora
    else:
        model = resolve_model(model_name, verify=ec.verify_digest)
    return factory(model, n_ctx=ec.n_ctx, n_threads=ec.n_threads, n_batch=ec.n_batch,
                   **({"lora_path": lora} if lora else {}))


class Node:
    def __init__(self, config: EdgewiseConfig, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self.metrics = NodeMetrics()
        self.admission: Admission | None = None
        self.executor: ThreadPoolExecutor | None = None
        self._info: EngineInfo | None = None
        self.load_error: str | None = None
        self.started_at = time.time()

    @property
    def name(self) -> str:
        return self.config.node.name

    @property
    def tier(self) -> str:
        """The tier this node's own engine serves."""
        local = self.config.local_endpoint()
        return local[0] if local is not None else self.config.node.tier

    @property
    def ready(self) -> bool:
        return self._info is not None

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            reason = self.load_error or "the model is still loading"
            raise UnavailableError(f"{reason}; check GET /readyz", retry_after=2)
        return self._info

    @property
    def model_id(self) -> str:
        return self.info.model

    async def start(self) -> None:
        """Create the worker threads and load the engine (in a thread)."""
        loop = asyncio.get_running_loop()
        # Loading happens on the same single worker that will later run generations.
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgewise-engine")
        try:
            await loop.run_in_executor(self.executor, self.engine.load)
            info = self.engine.info()
        except EdgewiseError as exc:
            self.load_error = f"model failed to load: {exc}"
            log.error("%s", self.load_error)
            return
        slots = max(1, info.slots)
        if slots > 1:
            self.executor = ThreadPoolExecutor(slots, thread_name_prefix="edgewise-engine")
        s = self.config.serving
        self.admission = Admission(
            slots=slots, max_queue=s.max_queue, queue_timeout_s=s.queue_timeout_s
        )
        self._info = info
        self.metrics.model_loaded.labels(info.model).set(1)
        log.info("model %s ready (n_ctx=%d, sha256=%s…)", info.model, info.n_ctx, info.sha256[:12])

    async def stop(self) -> None:
        """Drain in-flight requests (up to ``serving.drain_timeout_s``), then free the model."""
        if self.admission is not None:
            active = self.admission.active + self.admission.waiting
            if active:
                log.info("draining %d in-flight request(s)…", active)
            done = await self.admission.drain(self.config.serving.drain_timeout_s)
            if not done:
                log.warning("drain timed out with %d request(s) still running",
                            self.admission.active)
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        if self._info is not None:
            self.metrics.model_loaded.labels(self._info.model).set(0)
        self.engine.close()
        self._info = None

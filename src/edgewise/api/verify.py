"""``POST /v1/edgewise/verify``: check a peer's drafted tokens with this node's model.

Speculative decoding across tiers: a lower node drafts ``k`` tokens with its small model
and asks an upper node, whose model has the same vocabulary, to verify them — one
forward pass over the drafted positions (after the part of the context its prefix cache
does not hold) instead of ``k`` decode steps. The body carries token ids of this node's
model: ``prompt`` (the context so far: prompt and accepted tokens) and ``draft``; the
answer says how many drafted tokens the model keeps (``accepted``), its own next token,
and the logprobs of every returned token under this model — by the greedy rule at
``temperature`` 0, else by the speculative sampling rule for a deterministic draft with
the request's ``top_k`` / ``top_p`` / ``min_p`` / ``temperature`` chain and ``seed``
(``edgewise.decoding.verify``).

Authenticated like any ``/v1`` call (API key, fleet certificate or access token). The
privacy guard reads the detokenised context and draft as it reads a prompt: text this
node's tier is not cleared for is refused (403) and audited, like ``/v1/completions``.
``usage.forward_passes`` counts this node's decode calls for the verification.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import AsyncExitStack
from typing import Any

from fastapi import APIRouter, Request

from edgewise.api.requests import ParsedOffLoop, context, screen_here
from edgewise.api.schemas import VerifyRequest
from edgewise.engines.base import SamplingParams
from edgewise.errors import (
    ContextLengthError,
    EngineError,
    InvalidRequestError,
    UnknownModelError,
)
from edgewise.node import Node
from edgewise.routing.service import Router
from edgewise.tiers.local import admitted, precheck_queue

__all__ = ["router"]

router = APIRouter(route_class=ParsedOffLoop)


@router.post("/v1/edgewise/verify", response_model=None)
async def verify(body: VerifyRequest, request: Request) -> dict[str, Any]:
    node: Node = request.app.state.node
    rt: Router = request.app.state.router
    precheck_queue(node)
    serving = node.serving  # the primary version: the peer's ids are its model's
    assert serving is not None
    engine = serving.engine
    info = serving.info
    if body.model not in ("auto", "default", info.model):
        raise UnknownModelError(f"node {node.name!r} verifies with {info.model!r} only",
                                param="model")
    verifier = getattr(engine, "verify", None)
    if verifier is None:
        raise InvalidRequestError(f"this node's engine ({info.kind}) cannot verify drafts; "
                                  "serve a llama.cpp model", param="model",
                                  code="unsupported_parameter")
    for name, ids in (("prompt", body.prompt), ("draft", body.draft)):
        bad = next((i for i, t in enumerate(ids) if t >= info.n_vocab), None)
        if bad is not None:
            raise InvalidRequestError(f"{name}[{bad}] is not a token id of {info.model} "
                                      f"({info.n_vocab} tokens)", param=f"{name}[{bad}]")
    if len(body.prompt) + len(body.draft) >= info.n_ctx:
        raise ContextLengthError(
            f"this model's context window is {info.n_ctx} tokens and the prompt and draft "
            f"use {len(body.prompt) + len(body.draft)}", param="prompt")
    ctx = context(request, rt, user=body.user)

    def text(ids: list[int]) -> str:
        return b"".join(engine.token_bytes(t) for t in ids).decode("utf-8", "replace")

    await screen_here(rt, node, [text(body.prompt), text(body.draft)], ctx,
                      route="verify", path="/v1/edgewise/verify")
    params = SamplingParams(max_tokens=len(body.draft) + 1, temperature=body.temperature,
                            top_p=body.top_p, top_k=body.top_k, min_p=body.min_p,
                            seed=None if body.seed is None else body.seed % (1 << 32),
                            top_logprobs=body.top_logprobs)

    async def audit(outcome: str) -> None:
        await rt.record(request_id=ctx.request_id, requester=ctx.requester, guard=None,
                        decision=None, outcome=outcome, route="verify",
                        reason=f"{node.tier}: this node's engine", tier=node.tier)

    started = time.perf_counter()
    async with AsyncExitStack() as stack:
        await admitted(node, stack, serving)
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(serving.executor, verifier, body.prompt,
                                                body.draft, params)
        except EngineError:
            await audit("failed:engine_error")
            raise
    steps = result.steps
    await audit("answered")
    accepted = sum(s.accepted for s in steps)
    return {
        "object": "edgewise.verification", "model": info.model,
        "accepted": accepted,
        "tokens": [s.token for s in steps],
        "next_token": steps[-1].token if steps and not steps[-1].accepted else None,
        "finish_reason": "stop" if steps and steps[-1].end_of_generation else None,
        "logprobs": [{"token": s.token, "logprob": s.logprob,
                      "top_logprobs": [{"token": t, "logprob": lp} for t, lp in s.top]}
                     for s in steps],
        "usage": {"prompt_tokens": len(body.prompt), "draft_tokens": len(body.draft),
                  "completion_tokens": len(steps), "forward_passes": result.passes,
                  "seconds": round(time.perf_counter() - started, 6)},
    }

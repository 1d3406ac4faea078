"""A tier endpoint that is any OpenAI-compatible server: another edgewise node, vLLM,
Ollama, llama.cpp's server or a cloud API. The network hop goes through an injectable
httpx transport (tests use ``httpx.ASGITransport`` or ``MockTransport``)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from edgewise.chat import ChatAnswer, ChatRequest, Delta
from edgewise.config import EndpointConfig, HealthConfig
from edgewise.errors import ConfigError, InvalidRequestError
from edgewise.tiers.base import EndpointError
from edgewise.tiers.breaker import CircuitBreaker, LatencyEstimate
from edgewise.wire import answer_from_body, error_message, request_body

__all__ = ["RemoteEndpoint"]


def _transport_failure(exc: httpx.HTTPError) -> str:
    """One line for a failed connection; TLS identity failures say which (a fleet peer
    with the wrong certificate is not just "unreachable")."""
    text = " ".join(str(exc).split())
    if "refused fleet peer" in text:
        return text[text.index("refused fleet peer"):][:240]
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        why = text.split("certificate verify failed:")[-1].split("(_ssl.c")[0].strip(" .")
        return f"TLS handshake failed: {why[:200] or 'peer certificate not accepted'}"
    return f"unreachable ({type(exc).__name__})"


class RemoteEndpoint:
    def __init__(self, tier: str, cfg: EndpointConfig, health: HealthConfig, *,
                 timeout: float | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        assert cfg.url is not None
        self.tier = tier
        self.cfg = cfg
        self.label = cfg.label
        self.breaker = CircuitBreaker(failure_threshold=health.failure_threshold,
                                      cooldown_s=health.probe_interval_s)
        self.latency = LatencyEstimate(alpha=health.ewma_alpha)
        self.probe_timeout = health.probe_timeout_s
        headers = {}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise ConfigError(f"tier {tier!r}: environment variable {cfg.api_key_env} "
                                  "(api_key_env) is not set")
            headers["Authorization"] = f"Bearer {key}"
        self.client = httpx.AsyncClient(
            base_url=cfg.url.rstrip("/"), headers=headers, transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout or 5.0, 5.0)),
        )

    @property
    def models(self) -> tuple[str, ...]:
        return () if self.cfg.model == "auto" else (self.cfg.model,)

    @property
    def tools(self) -> bool:
        return True  # passed through: the upstream decides

    def ready(self) -> bool:
        return self.breaker.available()

    def _model_for(self, req: ChatRequest) -> str:
        return req.model if self.cfg.model == "auto" else self.cfg.model

    def _failed(self, what: str) -> EndpointError:
        err = EndpointError(f"tier {self.tier!r} endpoint {self.label}: {what}")
        self.breaker.record_failure(what)
        return err

    async def _post(self, body: dict[str, Any], path: str = "/chat/completions"
                    ) -> httpx.Response:
        try:
            r = await self.client.post(path, json=body)
        except httpx.TimeoutException:
            raise self._failed("timed out") from None
        except httpx.TransportError as exc:
            raise self._failed(_transport_failure(exc)) from None
        self._check_status(r.status_code, r.headers, r.content)
        return r

    def _check_status(self, status: int, headers: httpx.Headers, content: bytes) -> None:
        if status >= 500 or status == 429:
            raise self._failed(f"answered HTTP {status}")
        if status in (401, 403):
            # The upstream refuses this node (a wrong key, a revoked or not-allowed fleet
            # identity): the tier is unusable from here, whatever the request says.
            message = error_message(content, "")[:200]
            raise self._failed(f"refused this node (HTTP {status}"
                               + (f": {message})" if message else ")"))
        if status >= 400:
            # The upstream judged the request itself bad: not a health problem.
            message = error_message(content, "rejected the request")[:300]
            raise InvalidRequestError(f"tier {self.tier!r} {message}")

    async def chat(self, req: ChatRequest) -> ChatAnswer:
        started = time.perf_counter()
        r = await self._post(request_body(req, self._model_for(req)))
        try:
            answer = answer_from_body(r.json(), default_model=self._model_for(req))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise self._failed("answered with a malformed completion") from None
        answer.total_s = time.perf_counter() - started
        self.breaker.record_success()
        n = max(answer.completion_tokens, 1)
        self.latency.observe(None, n / answer.total_s if answer.total_s > 0 else None)
        return answer

    async def stream(self, req: ChatRequest) -> AsyncIterator[Delta]:
        """Proxy the upstream's SSE stream as :class:`Delta` s."""
        body = request_body(req, self._model_for(req)) | {
            "stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        answer = ChatAnswer("", "stop", self._model_for(req))
        text: list[str] = []
        try:
            async with self.client.stream("POST", "/chat/completions", json=body) as r:
                if r.status_code >= 400:
                    await r.aread()
                    self._check_status(r.status_code, r.headers, r.content)
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        raise self._failed("failed mid-stream")
                    if event.get("usage"):
                        answer.prompt_tokens = int(event["usage"].get("prompt_tokens", 0))
                        answer.completion_tokens = int(
                            event["usage"].get("completion_tokens", 0))
                    for choice in event.get("choices") or []:
                        delta = choice.get("delta") or {}
                        items = tuple(((choice.get("logprobs") or {}).get("content")) or ())
                        piece = delta.get("content") or ""
                        if choice.get("finish_reason"):
                            answer.finish_reason = choice["finish_reason"]
                        if piece or items:
                            first = answer.ttft_s is None
                            if first:
                                answer.ttft_s = time.perf_counter() - started
                                answer.model = str(event.get("model") or answer.model)
                            text.append(piece)
                            answer.logprob_items.extend(items)
                            yield Delta(piece, items, model=answer.model if first else None)
        except httpx.TimeoutException:
            raise self._failed("timed out") from None
        except httpx.TransportError as exc:
            raise self._failed(_transport_failure(exc)) from None
        except (ValueError, KeyError, TypeError):
            raise self._failed("sent a malformed stream") from None
        answer.text = "".join(text)
        answer.total_s = time.perf_counter() - started
        self.breaker.record_success()
        decode = answer.total_s - (answer.ttft_s or 0.0)
        self.latency.observe(answer.ttft_s, answer.completion_tokens / decode
                             if decode > 0 and answer.completion_tokens > 1 else None)
        yield Delta("", final=answer)

    async def probe(self) -> None:
        try:
            r = await self.client.get("/models", timeout=self.probe_timeout)
        except httpx.HTTPError as exc:
            raise EndpointError(f"{self.label}: probe failed: {_transport_failure(exc)}") from None
        if r.status_code >= 500:
            raise EndpointError(f"{self.label}: probe answered HTTP {r.status_code}")
        # A server that lists no models is up but cannot answer yet (an edgewise node
        # still loading its model answers `{"data": []}`): not healthy.
        with contextlib.suppress(ValueError, AttributeError):
            if r.json().get("data") == []:
                raise EndpointError(f"{self.label}: probe found no model loaded yet")

    async def aclose(self) -> None:
        await self.client.aclose()

"""Turning exceptions into OpenAI-shaped HTTP errors (the only place that does).

Shape: ``{"error": {"message", "type", "param", "code"}}``. Messages are written for a
person and never echo request content; unexpected exceptions are logged with their
traceback on the node and answered with one line and a request id.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgewise.errors import EngineError, RequestError, UnavailableError

__all__ = ["error_body", "error_response", "install_error_handlers", "validation_message"]

log = logging.getLogger("edgewise.api")

_STATUS_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status,
                        headers=headers)


_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _param(loc: tuple[Any, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif str(p) not in _UNION_TAGS and "[" not in str(p):  # skip union member tags
            out += ("." if out else "") + str(p)
    return out or None


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable line for pydantic's errors, plus the offending ``param``."""
    errors = exc.errors()
    if not errors:
        return "invalid request body", None
    # Unions report one error per member; the most specific one is the useful one:
    # a missing field, then a violated constraint, then a plain type mismatch.
    def rank(e: Any) -> int:
        kind = str(e.get("type", ""))
        return 0 if kind in ("missing", "json_invalid") else 2 if kind.endswith("_type") else 1

    first = min(errors, key=rank)
    kind = first.get("type", "")
    if kind == "json_invalid":
        ctx = first.get("ctx") or {}
        return (f"request body is not valid JSON ({ctx.get('error', 'parse error')}); "
                "send a JSON object with Content-Type: application/json"), None
    param = _param(tuple(first.get("loc", ())))
    if kind == "missing" and param is None:
        msg = "request body is empty; send a JSON object (see GET /docs)"
    elif kind == "missing":
        msg = f"missing required parameter '{param}'"
    elif kind == "model_attributes_type" and param is None:
        msg = "request body must be a JSON object"
    else:
        msg = f"invalid value for '{param}': {first.get('msg', 'invalid')}"
    extra = len({_param(tuple(e.get('loc', ()))) for e in errors}) - 1
    if extra > 0:
        msg += f" (and {extra} more problem{'s' if extra > 1 else ''})"
    return msg, param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        request.state.error_type = exc.code or exc.error_type
        return error_response(exc.status, exc.message, exc.error_type, exc.param, exc.code)

    @app.exception_handler(UnavailableError)
    async def _unavailable(request: Request, exc: UnavailableError) -> JSONResponse:
        request.state.error_type = exc.code or exc.error_type
        headers = {"Retry-After": str(int(exc.retry_after))} if exc.retry_after else None
        return error_response(exc.status, exc.message, exc.error_type, None, exc.code,
                              headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.error_type = "invalid_value"
        msg, param = validation_message(exc)
        return error_response(400, msg, "invalid_request_error", param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        if status == 404:
            msg = f"no route {request.method} {request.url.path}; see GET /docs for the API"
        elif status == 405:
            msg = f"method {request.method} is not allowed on {request.url.path}"
        elif status == 400 and "parsing the body" in str(exc.detail):
            msg = "request body could not be read as JSON; send valid UTF-8 JSON"
        else:
            msg = str(exc.detail)
        return error_response(status, msg, _STATUS_TYPES.get(status, "api_error"),
                              code=None, headers=getattr(exc, "headers", None))

    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError) -> JSONResponse:
        request.state.error_type = "engine_error"
        log.error("engine error: %s", exc)
        return error_response(500, f"the inference engine failed: {exc}", "engine_error",
                              code="engine_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request.state.error_type = "internal_error"
        rid = uuid.uuid4().hex[:12]
        log.exception("unexpected error (request %s)", rid)
        return error_response(500, f"internal error; the node log has details under id {rid}",
                              "api_error", code="internal_error")


def sse_error(message: str, type_: str, code: str | None) -> bytes:
    """An error event for a stream whose 200 headers were already sent."""
    return b"data: " + json.dumps(error_body(message, type_, None, code)).encode() + b"\n\n"

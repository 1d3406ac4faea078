"""Turning exceptions into OpenAI-shaped HTTP errors (the only place that does).

Shape: ``{"error": {"message", "type", "param", "code"}}``. Messages are written for a
person and never echo request content; unexpected exceptions are logged with their
traceback on the node and answered with one line and a request id.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgewise.errors import EngineError, RequestError, UnavailableError
from edgewise.wire import error_body

__all__ = ["error_response", "install_error_handlers", "public_message",
           "validation_message"]

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


def public_message(text: str) -> str:
    """``text`` with absolute filesystem paths cut to their file name: error bodies go
    to unauthenticated clients, who need not learn the node's directory layout."""
    import re

    # a path: "/" not inside a word, a URL or an API route, then directories and a name
    return re.sub(r"(?<![\w.:/])/(?!v1/|docs|openapi)(?:[^\s/:'\"]+/)+([^\s/:'\"]*)",
                  r"\1", text)


def error_response(status: int, message: str, type_: str, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status,
                        headers=headers)


_UNION_TAGS = {"str", "int", "float", "bool", "none", "list", "dict"}


def _param(loc: tuple[Any, ...]) -> str | None:
    # FastAPI puts the request body first as "body"; a field named body stays.
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif str(p) not in _UNION_TAGS and "[" not in str(p):  # skip union member tags
            out += ("." if out else "") + str(p)
    return out or None


def validation_message(exc: RequestValidationError, content_type: str | None = None
                       ) -> tuple[str, str | None]:
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
    if content_type is not None and "json" not in content_type.lower():
        return ("request body must be JSON, sent with Content-Type: application/json "
                "(this request's Content-Type is not JSON)"), None
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
        return error_response(exc.status, public_message(exc.message), exc.error_type,
                              exc.param, exc.code, headers=exc.headers or None)

    @app.exception_handler(UnavailableError)
    async def _unavailable(request: Request, exc: UnavailableError) -> JSONResponse:
        request.state.error_type = exc.code or exc.error_type
        headers = dict(exc.headers)
        if exc.retry_after:
            headers["Retry-After"] = str(max(1, int(exc.retry_after)))
        return error_response(exc.status, public_message(exc.message), exc.error_type, None,
                              exc.code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        request.state.error_type = "invalid_value"
        msg, param = validation_message(exc, request.headers.get("content-type"))
        return error_response(400, msg, "invalid_request_error", param, "invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = exc.status_code
        if status == 404:
            msg = f"no route {request.method} {request.url.path}; see GET /docs for the API"
        elif status == 405:
            msg = f"method {request.method} is not allowed on {request.url.path}"
        elif status == 400 and "parsing the body" in str(exc.detail):
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, RecursionError):
                msg = ("request body JSON is nested too deeply to parse; send an object "
                       "nested at most a few hundred levels")
            elif isinstance(cause, UnicodeDecodeError):
                msg = "request body is not valid UTF-8; send UTF-8 encoded JSON"
            else:
                msg = "request body could not be read as JSON; send valid UTF-8 JSON"
        else:
            msg = str(exc.detail)
        return error_response(status, msg, _STATUS_TYPES.get(status, "api_error"),
                              code=None, headers=getattr(exc, "headers", None))

    @app.exception_handler(EngineError)
    async def _engine(request: Request, exc: EngineError) -> JSONResponse:
        request.state.error_type = "engine_error"
        log.error("engine error: %s", exc)
        return error_response(500, public_message(f"the inference engine failed: {exc}"),
                              "engine_error", code="engine_error")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request.state.error_type = "internal_error"
        rid = uuid.uuid4().hex[:12]
        log.exception("unexpected error (request %s)", rid)
        return error_response(500, f"internal error; the node log has details under id {rid}",
                              "api_error", code="internal_error")



"""Structured outputs: OpenAI's ``response_format`` as a llama.cpp grammar (GBNF).

``{"type": "json_object"}`` is llama.cpp's JSON grammar (any JSON object);
``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` is the schema
converted by llama-cpp-python's JSON-Schema-to-GBNF converter (a port of llama.cpp's
own). The engine's sampler then only emits tokens the grammar allows
(:mod:`edgewise.engines.batching`), so a completed answer always parses and matches
the schema; one cut short by ``max_tokens`` ends with ``finish_reason: "length"`` and
is incomplete JSON, as with OpenAI.

The converter ignores keywords it cannot express — which would make a schema promise
something the answer does not keep — so schemas are checked first against the keywords
it does enforce, and anything else is refused with the keywords named
(:func:`check_schema`). Not enforced (refused): numeric bounds (``minimum``,
``maximum``, ``exclusiveMinimum``, ``exclusiveMaximum``, ``multipleOf``), ``not``,
``if``/``then``/``else``, ``patternProperties``, ``propertyNames``, ``uniqueItems``,
``contains``, ``minProperties``/``maxProperties``, ``dependentRequired``/
``dependentSchemas``, remote ``$ref``, string ``format`` other than ``date``,
``time``, ``date-time`` and ``uuid``, ``oneOf`` (the grammar cannot rule out an answer
that matches two alternatives; ``anyOf`` is enforced), and keywords beside ``$ref``,
``anyOf`` or a list of types, which the converter drops (bench/structured.py found
``{"type": ["string", "null"], "maxLength": 30}`` answered with a longer string).
"""

from __future__ import annotations

import json
from typing import Any

from edgewise.errors import InvalidRequestError

__all__ = ["check_response_format", "check_schema", "grammar_for"]

#: Keywords the converter enforces, or that only describe (title, description…).
_ENFORCED = frozenset({
    "type", "properties", "required", "additionalProperties", "items", "prefixItems",
    "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions", "minLength", "maxLength", "pattern", "format",
})
_DESCRIPTIVE = frozenset({
    "title", "description", "default", "examples", "$schema", "$id", "$comment",
    "deprecated", "readOnly", "writeOnly",
})
_FORMATS = frozenset({"date", "time", "date-time", "uuid"})
_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})
#: Keywords whose value is a map of name → schema, a list of schemas, or one schema.
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties")


def check_schema(schema: Any, where: str = "schema") -> list[str]:
    """The unsupported keywords of ``schema`` and its subschemas, as JSON-pointer-ish
    paths (empty: the grammar enforces all of it)."""
    bad: list[str] = []
    if isinstance(schema, bool):
        return bad
    if not isinstance(schema, dict):
        return [f"{where} (a schema must be an object or a boolean)"]
    # The converter turns these into the alternatives (or the referenced schema) alone
    # and drops every keyword beside them: {"type": ["string", "null"], "maxLength": 9}
    # would not bound the string. Such siblings are refused; anyOf can say it.
    lone = ("$ref" if "$ref" in schema else "anyOf" if "anyOf" in schema else
            "type" if isinstance(schema.get("type"), list) else None)
    if lone is not None:
        keep = _DESCRIPTIVE | {lone, "$defs", "definitions"}
        bad += [f"{where}.{k} (beside {lone}: use anyOf of complete schemas)"
                for k in schema if k not in keep]
    for key, value in schema.items():
        path = f"{where}.{key}"
        if key in _DESCRIPTIVE:
            continue
        if key not in _ENFORCED:
            bad.append(path)
        elif key == "oneOf":  # the grammar allows any alternative, even several at once
            bad.append(f"{path} (the grammar cannot rule out matching two; use anyOf)")
        elif key == "format" and value not in _FORMATS:
            bad.append(f"{path}={value}")
        elif key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
            bad.append(f"{path} (only local references, #/...)")
        elif key == "type":
            types = value if isinstance(value, list) else [value]
            if not all(isinstance(t, str) and t in _TYPES for t in types):
                bad.append(f"{path}={value}")
        elif key in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                bad += check_schema(sub, f"{path}.{name}")
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            for i, sub in enumerate(value):
                bad += check_schema(sub, f"{path}[{i}]")
        elif key in _SCHEMA_ONE and isinstance(value, dict):
            bad += check_schema(value, path)
    return bad


def check_response_format(fmt: dict[str, Any] | None) -> None:
    """Refuse a ``response_format`` the node cannot honour (400, naming what)."""
    if not fmt:
        return
    kind = fmt.get("type", "text")
    if kind in ("text", "json_object"):
        return
    if kind != "json_schema":
        raise InvalidRequestError(
            f"response_format type {kind!r} is not supported; send 'text', 'json_object' "
            "or 'json_schema'", param="response_format.type", code="unsupported_parameter")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise InvalidRequestError(
            "response_format json_schema needs {'name': ..., 'schema': {...}}",
            param="response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequestError("response_format.json_schema.name is required",
                                  param="response_format.json_schema.name")
    bad = check_schema(spec.get("schema", {}))
    if bad:
        raise InvalidRequestError(
            "response_format.json_schema uses keywords the local model's constrained "
            f"decoding cannot enforce: {', '.join(bad[:8])}"
            f"{' …' if len(bad) > 8 else ''}; drop them (and check the answer yourself) "
            "or route the request to a tier that supports them",
            param="response_format.json_schema.schema", code="unsupported_parameter")
    try:
        grammar_for(fmt)
    except InvalidRequestError:
        raise
    except Exception as exc:  # the converter asserts on what it cannot read
        raise InvalidRequestError(
            f"response_format.json_schema could not be turned into a grammar: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}",
            param="response_format.json_schema.schema") from exc


def grammar_for(fmt: dict[str, Any] | None) -> str | None:
    """The GBNF grammar for a (checked) ``response_format``; None for plain text."""
    if not fmt or fmt.get("type", "text") == "text":
        return None
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    if fmt["type"] == "json_object":
        return str(JSON_GBNF)
    schema = fmt["json_schema"].get("schema") or {"type": "object"}
    return str(json_schema_to_gbnf(json.dumps(schema)))

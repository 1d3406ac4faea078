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
import re
from dataclasses import dataclass
from typing import Any

from edgewise.errors import InvalidRequestError

__all__ = [
    "TOOL_CALL_CLOSE",
    "TOOL_CALL_OPEN",
    "ToolGrammar",
    "check_response_format",
    "check_schema",
    "check_tools",
    "grammar_for",
    "parse_tool_calls",
    "tool_grammar",
    "tool_triggers",
]

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
    return _strict_strings(str(json_schema_to_gbnf(json.dumps(schema))))


#: The converter's string character rule lets raw control characters (a newline) into
#: a string, which JSON forbids (``json.loads`` refuses them); llama.cpp's own
#: converter excludes them, as here.
_LOOSE_CHAR = 'char ::= [^"\\\\]'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F]'


def _strict_strings(gbnf: str) -> str:
    return gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR)


# -- tool calling -------------------------------------------------------------------------

#: The tags a tool call is written between (the Hermes format Qwen2.5 is trained on;
#: :mod:`edgewise.engines.tools` prompts models without a tool template to use it too).
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CALL_RULE = "edgewise-tool-call"


@dataclass(frozen=True)
class ToolGrammar:
    """The grammar of a tool-calling answer: ``gbnf`` (root ``root``) and, for
    ``tool_choice: "auto"``, the ``triggers`` that switch it on (a lazy grammar: free
    text until the output matches one — :attr:`SamplingParams.grammar_triggers`; empty:
    constrained from the first token)."""

    gbnf: str
    triggers: tuple[str, ...] = ()


#: JSON whitespace in a call: none, a space, or a new line and an indent — what models
#: write when they pretty-print a call (the converter's own rule is ``" "?``), and the
#: same as a trigger's regular expression.
_SPACE_RULE = 'space ::= | " " | "\\n" [ \\t]{0,20}'
_WS_RE = r"(?: |\n[ \t]{0,20})?"
#: A bare call in a Markdown code block, as Qwen2.5-Coder-1.5B writes one.
_FENCE = "```json\n"
_FENCE_RE = r"```json\n"


def _prefixes(atoms: list[str]) -> str:
    """A regex for any non-empty prefix of the atoms' sequence, by whole atoms:
    ``a(?:b(?:c)?)?``."""
    out = atoms[-1]
    for atom in reversed(atoms[:-1]):
        out = f"{atom}(?:{out})?"
    return out


def tool_triggers(names: list[str]) -> tuple[str, ...]:
    """The lazy grammar's triggers for functions ``names``: an opened ``<tool_call>``
    anywhere, or an answer that starts as a bare call object (small models drop the
    tags: Qwen2.5-Coder-0.5B answers ``{"name": "get_weather", "arguments": …}``).

    llama.cpp replays the output from the trigger's first group through the grammar
    the moment a trigger matches, and text the grammar cannot take there aborts the
    whole process (``Unexpected empty grammar stack``, a C++ exception through the C
    API). So each trigger is anchored (``^…$``: llama.cpp then matches the whole
    output so far) and its group ends where the grammar can still go on: the opening
    tag, or the call's start ``{"name": "`` up to a prefix of one of the names, with
    only the optional spaces the grammar allows. An output whose token runs past such
    a point is not constrained at all (it stays text) — never replayed into a grammar
    that would reject it."""
    name = "(?:" + "|".join(_prefixes(['"', *(re.escape(c) for c in n), '"'])
                            for n in names) + ")"
    ws = _WS_RE
    call = [r"\{", ws, '"', "n", "a", "m", "e", '"', ws, ":", ws, name]
    tagged = _prefixes([re.escape(TOOL_CALL_OPEN), r"\n", *call])
    start = rf'\{{{ws}"name"{ws}:'
    bare = _prefixes([start, ws, name])
    fenced = _prefixes([rf"{_FENCE_RE}{start}", ws, name])
    return (rf"^[\s\S]*?({tagged})$", rf"^\s*({bare})$", rf"^\s*({fenced})$")


def check_tools(tools: list[Any] | None, tool_choice: Any,
                parallel_tool_calls: bool | None = None) -> None:
    """Refuse malformed ``tools`` / ``tool_choice`` (400 naming the part), before any
    tier is asked: OpenAI's shapes, function names of ``[A-Za-z0-9_-]{1,64}``, and for a
    ``strict`` function the same schema check as a ``json_schema`` response format."""
    if tools is None:
        if parallel_tool_calls is not None or tool_choice is not None:
            which = "tool_choice" if tool_choice is not None else "parallel_tool_calls"
            raise InvalidRequestError(f"{which} needs tools", param=which)
        return
    names: list[str] = []
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        if tool.get("type", "function") != "function":
            raise InvalidRequestError(
                f"{where}.type {tool.get('type')!r} is not supported; only 'function' tools "
                "are", param=f"{where}.type", code="unsupported_parameter")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise InvalidRequestError(f"{where} needs a function object: "
                                      "{'type': 'function', 'function': {'name': ...}}",
                                      param=f"{where}.function")
        name = fn.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise InvalidRequestError(
                f"{where}.function.name must be 1 to 64 letters, digits, '_' or '-'",
                param=f"{where}.function.name")
        if name in names:
            raise InvalidRequestError(f"two tools are named {name!r}",
                                      param=f"{where}.function.name")
        names.append(name)
        if not isinstance(fn.get("description", ""), str):
            raise InvalidRequestError(f"{where}.function.description must be a string",
                                      param=f"{where}.function.description")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, dict):
            raise InvalidRequestError(f"{where}.function.parameters must be a JSON Schema "
                                      "object", param=f"{where}.function.parameters")
        if fn.get("strict"):
            bad = check_schema(params, "parameters")
            if bad:
                raise InvalidRequestError(
                    f"{where} is strict and its parameters use keywords the local model's "
                    f"constrained decoding cannot enforce: {', '.join(bad[:8])}"
                    f"{' …' if len(bad) > 8 else ''}; drop them or send strict: false "
                    "(the arguments then parse and keep the rest of the schema)",
                    param=f"{where}.function.parameters", code="unsupported_parameter")
    if tool_choice is None or tool_choice in ("auto", "none", "required"):
        return
    if isinstance(tool_choice, str):
        raise InvalidRequestError(
            f"tool_choice {tool_choice!r} is not one of 'auto', 'none', 'required' or "
            "{'type': 'function', 'function': {'name': ...}}", param="tool_choice")
    chosen = tool_choice.get("function", {}).get("name") if isinstance(
        tool_choice, dict) and isinstance(tool_choice.get("function"), dict) else None
    if chosen is None:
        raise InvalidRequestError(
            "tool_choice must be 'auto', 'none', 'required' or {'type': 'function', "
            "'function': {'name': ...}}", param="tool_choice")
    if chosen not in names:
        raise InvalidRequestError(f"tool_choice names {chosen!r}, which is not in tools",
                                  param="tool_choice.function.name")


def _prefixed_refs(schema: Any, prefix: str) -> Any:
    """``schema`` with its local ``$ref``s pointing at ``#/$defs/<prefix>…`` (its own
    ``$defs`` / ``definitions`` are moved under the combined grammar's root)."""
    if isinstance(schema, list):
        return [_prefixed_refs(s, prefix) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("$defs", "definitions"):
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#"):
            tail = value[1:]
            for head in ("/$defs/", "/definitions/"):
                if tail.startswith(head):
                    value = f"#/$defs/{prefix}-{tail[len(head):]}"
                    break
            else:
                value = f"#/$defs/{prefix}" if tail in ("", "/") else value
            out[key] = value
        elif key in ("properties",) and isinstance(value, dict):
            out[key] = {k: _prefixed_refs(v, prefix) for k, v in value.items()}
        else:
            out[key] = _prefixed_refs(value, prefix)
    return out


def tool_grammar(tools: list[dict[str, Any]], tool_choice: Any,
                 parallel: bool = True) -> ToolGrammar | None:
    """The grammar of the answer to a request with (checked) ``tools``: one call, or
    several separated by newlines when ``parallel``, each
    ``<tool_call>\\n{"name": NAME, "arguments": ARGS}\\n</tool_call>`` with ARGS in the
    function's parameters schema. ``tool_choice``: ``"required"`` or a named function
    constrain from the first token (the named one alone is allowed); ``"auto"`` (or
    None) is lazy — free text until the model opens a call; ``"none"``: no grammar."""
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    if tool_choice == "none" or not tools:
        return None
    named = tool_choice.get("function", {}).get("name") if isinstance(tool_choice,
                                                                       dict) else None
    alternatives: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for i, tool in enumerate(tools):
        fn = tool["function"]
        if named is not None and fn["name"] != named:
            continue
        params = fn.get("parameters") or {"type": "object"}
        prefix = f"fn{i}"
        for key in ("$defs", "definitions"):
            for name, sub in (params.get(key) or {}).items():
                defs[f"{prefix}-{name}"] = _prefixed_refs(sub, prefix)
        defs[prefix] = _prefixed_refs(params, prefix)
        alternatives.append({
            "type": "object",
            "properties": {"name": {"const": fn["name"]},
                           "arguments": {"$ref": f"#/$defs/{prefix}"}},
            "required": ["name", "arguments"], "additionalProperties": False})
    schema = {"anyOf": alternatives, "$defs": defs}
    try:
        call = _strict_strings(str(json_schema_to_gbnf(json.dumps(schema))))
    except Exception as exc:  # the converter asserts on what it cannot read
        raise InvalidRequestError(
            "a tool's parameters could not be turned into a grammar: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}",
            param="tools") from exc
    call = re.sub(r"^root ::= ", f"{_CALL_RULE} ::= ", call, count=1, flags=re.M)
    block = (f'edgewise-tool-block ::= "{TOOL_CALL_OPEN}\\n" {_CALL_RULE} '
             f'"\\n{TOOL_CALL_CLOSE}"')
    root = ('root ::= edgewise-tool-block ("\\n" edgewise-tool-block)*' if parallel
            else "root ::= edgewise-tool-block")
    if tool_choice in (None, "auto"):  # lazy: also a bare call (fenced or not), the answer
        # and the whitespace of a pretty-printed call, which the triggers match (a
        # forced call keeps the converter's compact form: SmolLM2 then stops after its
        # calls instead of repeating them)
        call = re.sub(r"^space ::= .*$", lambda _: _SPACE_RULE, call, count=1, flags=re.M)
        names = [t["function"]["name"] for t in tools]
        fenced = f'"{_FENCE[:-1]}\\n" {_CALL_RULE} "\\n```"'
        return ToolGrammar(f"{root} | {_CALL_RULE} | {fenced}\n{block}\n{call}",
                           tool_triggers(names))
    return ToolGrammar(f"{root}\n{block}\n{call}")


def parse_tool_calls(text: str) -> tuple[str, list[tuple[str, str]]]:
    """The content before the first tool call (stripped) and the calls, as (name,
    arguments JSON text), of an answer written in the tool-call format — tagged calls,
    or one bare ``{"name": …, "arguments": {…}}`` that is the whole answer; no calls
    when the text has none, or when the first is incomplete (an answer cut by
    ``max_tokens`` is returned as text)."""
    decoder = json.JSONDecoder()
    start = text.find(TOOL_CALL_OPEN)
    if start < 0:  # a bare call object (in a ```json block or not), the whole answer
        bare = text.strip()
        if bare.startswith(_FENCE) and bare.endswith("```"):
            bare = bare[len(_FENCE):-3].strip()
        try:
            obj, end = decoder.raw_decode(bare)
        except ValueError:
            return text, []
        if (end == len(bare) and isinstance(obj, dict) and set(obj) == {
                "name", "arguments"} and isinstance(obj["name"], str)
                and isinstance(obj["arguments"], dict)):
            return "", [(obj["name"], json.dumps(obj["arguments"], ensure_ascii=False))]
        return text, []
    calls: list[tuple[str, str]] = []
    pos = start
    while True:
        pos = text.find(TOOL_CALL_OPEN, pos)
        if pos < 0:
            break
        body = pos + len(TOOL_CALL_OPEN)
        while body < len(text) and text[body].isspace():
            body += 1
        try:
            obj, end = decoder.raw_decode(text, body)
        except ValueError:
            break
        if not (isinstance(obj, dict) and isinstance(obj.get("name"), str)):
            break
        args = obj.get("arguments", {})
        calls.append((obj["name"], args if isinstance(args, str)
                      else json.dumps(args, ensure_ascii=False)))
        close = text.find(TOOL_CALL_CLOSE, end)
        pos = end if close < 0 else close + len(TOOL_CALL_CLOSE)
    if not calls:
        return text, []
    return text[:start].strip(), calls

"""Tool calling on the local model: how tools, tool calls and tool results reach the
prompt.

A chat template that knows tools (Qwen2.5's: it mentions ``tools``) renders them itself
— the function list in its system prompt, an assistant's calls as
``<tool_call>{"name": …, "arguments": …}</tool_call>``, results as
``<tool_response>`` turns — from :func:`template_messages`. A model whose template
does not (SmolLM2, Gemma 3) is given the same Hermes format as plain conversation
(:func:`generic_messages`): the function list and the calling instructions are
prepended to the system prompt, an assistant's calls are written into its content, and
tool results become a user turn of ``<tool_response>`` blocks. Either way the model
answers in that format, which the grammar of :func:`edgewise.engines.grammar.tool_grammar`
enforces and :func:`edgewise.engines.grammar.parse_tool_calls` reads back.

Written here rather than taken from a library: llama-cpp-python's chat handlers render
tools only inside its own ``create_chat_completion`` (with ``logits_all`` and no
batching), and transformers' ``apply_chat_template`` would need the model's HF
tokenizer files, which the GGUF packages do not ship.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from edgewise.chat import Message
from edgewise.engines.grammar import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

__all__ = ["generic_messages", "has_tool_traffic", "template_messages", "tool_texts",
           "tools_system_prompt"]


def has_tool_traffic(messages: Sequence[Message]) -> bool:
    return any(m.tool_calls or m.role == "tool" for m in messages)


def _arguments(text: str) -> Any:
    """A call's arguments for a template: the parsed object (templates write it with
    ``tojson``; a string would be encoded twice), or the text if it does not parse."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def tools_system_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """The function list and calling instructions (Qwen2.5's wording, which its template
    writes; used as is for models without a tool template)."""
    listed = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return ("# Tools\n\nYou may call one or more functions to assist with the user query."
            "\n\nYou are provided with function signatures within <tools></tools> XML "
            f"tags:\n<tools>\n{listed}\n</tools>\n\nFor each function call, return a json "
            "object with function name and arguments within "
            f"{TOOL_CALL_OPEN}{TOOL_CALL_CLOSE} XML tags:\n{TOOL_CALL_OPEN}\n"
            '{"name": <function-name>, "arguments": <args-json-object>}\n'
            f"{TOOL_CALL_CLOSE}")


def _call_text(name: str, arguments: str) -> str:
    args = _arguments(arguments)
    return (f"{TOOL_CALL_OPEN}\n"
            f"{json.dumps({'name': name, 'arguments': args}, ensure_ascii=False)}\n"
            f"{TOOL_CALL_CLOSE}")


def generic_messages(messages: Sequence[Message],
                     tools: Sequence[dict[str, Any]]) -> list[Message]:
    """``messages`` with tools, calls and results written as plain conversation, for a
    template that knows none of them (module docstring). Every tool text ends up in
    message content, which is tokenized as plain text."""
    out: list[Message] = []
    if tools:
        intro = tools_system_prompt(tools)
        if messages and messages[0].role == "system":
            out.append(Message("system", f"{messages[0].content}\n\n{intro}"))
            messages = messages[1:]
        else:
            out.append(Message("system", intro))
    for m in messages:
        if m.role == "tool":
            block = f"<tool_response>\n{m.content}\n</tool_response>"
            if out and out[-1].role == "user" and out[-1].content.startswith(
                    "<tool_response>"):
                out[-1] = Message("user", f"{out[-1].content}\n{block}")
            else:
                out.append(Message("user", block))
        elif m.tool_calls:
            calls = "\n".join(_call_text(c.name, c.arguments) for c in m.tool_calls)
            out.append(Message("assistant", f"{m.content}\n{calls}" if m.content else calls))
        else:
            out.append(Message(m.role, m.content, name=m.name))
    return out


def template_messages(messages: Sequence[Message],
                      contents: Sequence[str]) -> list[dict[str, Any]]:
    """``messages`` as a tool-aware template reads them (OpenAI's shape, arguments
    parsed), with ``contents`` in place of their content (the marker render)."""
    out: list[dict[str, Any]] = []
    for m, content in zip(messages, contents, strict=True):
        d: dict[str, Any] = {"role": m.role, "content": content}
        if m.tool_calls:
            d["tool_calls"] = [{"id": c.id, "type": "function",
                                "function": {"name": c.name,
                                             "arguments": _arguments(c.arguments)}}
                               for c in m.tool_calls]
        if m.tool_call_id is not None:
            d["tool_call_id"] = m.tool_call_id
        if m.name is not None:
            d["name"] = m.name
        out.append(d)
    return out


def tool_texts(messages: Sequence[Message],
               tools: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(where, text) of every client text a tool-aware template writes outside message
    content — the function list and each call's name and arguments — which the engine
    checks holds no control-token text before rendering."""
    out = [(f"tools[{i}]", json.dumps(t, ensure_ascii=False)) for i, t in enumerate(tools)]
    for i, m in enumerate(messages):
        for j, c in enumerate(m.tool_calls):
            out.append((f"messages[{i}].tool_calls[{j}]", c.name))
            out.append((f"messages[{i}].tool_calls[{j}]",
                        json.dumps(_arguments(c.arguments), ensure_ascii=False)))
        if m.name is not None:
            out.append((f"messages[{i}].name", m.name))
    return out

"""LangChain against a local-only node, as a new user would point it there: chat,
structured output (``json_schema``, ``json_mode`` and ``function_calling``), tools
(``bind_tools`` and a two-step tool loop) and embeddings, offline.

(``OpenAIEmbeddings`` needs ``check_embedding_ctx_length=False``: otherwise it counts
tokens with tiktoken, which downloads its encoding from the internet on first use.)
"""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel

from conftest import LiveServer

pytestmark = pytest.mark.model


class Person(BaseModel):
    name: str
    age: int


def chat(server: LiveServer) -> object:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(base_url=server.url + "/v1", api_key="not-needed", model="auto",
                      temperature=0, max_tokens=80, max_retries=0, timeout=120)


def test_invoke_and_stream(real_node_server: LiveServer) -> None:
    llm = chat(real_node_server)
    reply = llm.invoke("Say hello.")  # type: ignore[attr-defined]
    assert reply.content
    parts = [c.content for c in llm.stream("Say hello.")]  # type: ignore[attr-defined]
    assert "".join(parts) == reply.content


@pytest.mark.parametrize("method", ["json_schema", "json_mode", "function_calling"])
def test_with_structured_output_returns_the_model(real_node_server: LiveServer,
                                                  method: str) -> None:
    llm = chat(real_node_server)
    structured = llm.with_structured_output(  # type: ignore[attr-defined]
        Person if method != "json_mode" else Person.model_json_schema(), method=method)
    out = structured.invoke("Ann is 31 years old. Reply in JSON with her name and age.")
    if method in ("json_schema", "function_calling"):
        assert isinstance(out, Person) and out.name
    else:  # json_mode promises a JSON object, not the schema
        assert isinstance(out, dict)


def test_bind_tools_and_a_two_step_tool_loop(real_node_server: LiveServer) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"Sunny and 21 degrees in {city}."

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    tools = {"get_weather": get_weather, "add": add}
    llm = chat(real_node_server)
    # step 1: the model must call one of the tools
    caller = llm.bind_tools(list(tools.values()), tool_choice="required")  # type: ignore[attr-defined]
    messages: list[object] = [HumanMessage("What is the weather in Paris?")]
    first = caller.invoke(messages)
    assert first.tool_calls, first
    messages.append(first)
    for call in first.tool_calls:  # LangChain parsed the arguments: they are JSON
        assert call["name"] in tools and isinstance(call["args"], dict)
        result = tools[call["name"]].invoke(call["args"])
        messages.append(ToolMessage(str(result), tool_call_id=call["id"]))
    # step 2: the results go back; the model may answer or call again, validly
    final = llm.bind_tools(list(tools.values())).invoke(messages)  # type: ignore[attr-defined]
    assert final.content or final.tool_calls
    for call in final.tool_calls:
        assert call["name"] in tools and isinstance(call["args"], dict)


def test_openai_embeddings(real_node_server: LiveServer) -> None:
    from langchain_openai import OpenAIEmbeddings

    emb = OpenAIEmbeddings(model="all-minilm-l6-v2", base_url=real_node_server.url + "/v1",
                           api_key="not-needed", check_embedding_ctx_length=False)
    docs = emb.embed_documents(["The clinic opens at eight.", "Bread rises with yeast."])
    query = emb.embed_query("When does the clinic open?")
    assert [len(d) for d in docs] == [384, 384] and len(query) == 384
    sims = [sum(a * b for a, b in zip(query, d, strict=True)) for d in docs]
    assert math.isclose(sum(x * x for x in query), 1.0, rel_tol=1e-4)
    assert sims[0] > sims[1]  # the clinic sentence is the nearer one

"""Structured outputs on the local model: ``response_format`` as a llama.cpp grammar.

Every answer of a schema suite (nested objects, arrays, enums, required and optional
properties, ``$defs``/``$ref``, ``anyOf``, string lengths, ``const``) parses and
validates, greedy and sampled, through the whole node; logprobs are those of the
constrained distribution; constrained requests batch with unconstrained ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest

from conftest import LiveServer
from edgewise.chat import Message
from edgewise.engines.base import SamplingParams
from edgewise.engines.generation import Generation
from edgewise.engines.grammar import check_response_format, check_schema, grammar_for
from edgewise.testing import schemas

SUITE = schemas.SUITE
PERSON = schemas.PERSON


fmt = schemas.response_format


def test_the_schema_check_names_every_keyword_the_grammar_cannot_enforce() -> None:
    schema = {"type": "object", "properties": {
        "n": {"type": "number", "minimum": 0, "maximum": 9},
        "xs": {"type": "array", "uniqueItems": True, "items": {"not": {"type": "null"}}},
        "d": {"type": "string", "format": "email"},
        "o": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "t": {"type": ["string", "null"], "maxLength": 30},
        "r": {"$ref": "#/$defs/x", "minItems": 1}},
        "patternProperties": {"^x": {}}}
    beside = "(beside {}: use anyOf of complete schemas)"
    assert sorted(check_schema(schema)) == sorted([
        "schema.properties.n.minimum", "schema.properties.n.maximum",
        "schema.properties.xs.uniqueItems", "schema.properties.xs.items.not",
        "schema.properties.d.format=email", "schema.patternProperties",
        "schema.properties.o.oneOf (the grammar cannot rule out matching two; use anyOf)",
        f"schema.properties.t.maxLength {beside.format('type')}",
        f"schema.properties.r.minItems {beside.format('$ref')}"])
    for _, s in SUITE.values():
        assert check_schema(s) == []
        check_response_format(fmt(s))
    assert grammar_for({"type": "text"}) is None
    assert "root" in (grammar_for({"type": "json_object"}) or "")


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    e = LlamaCppEngine(resolve_model("smollm2-135m-instruct"), n_ctx=1024, parallel=4)
    e.load()
    yield e
    e.close()


def answer(engine: Any, question: str, grammar: str | None, *, temperature: float = 0.0,
           seed: int = 0, top_logprobs: int = 0, max_tokens: int = 160) -> Generation:
    prompt = engine.chat_prompt([Message("system", "Answer in JSON."),
                                 Message("user", question)])
    gen = Generation(engine, prompt, SamplingParams(
        max_tokens=max_tokens, temperature=temperature, seed=seed, grammar=grammar,
        top_logprobs=top_logprobs), n_ctx=engine.info().n_ctx)
    gen.text = "".join(c.text for c in gen)  # type: ignore[attr-defined]
    return gen


@pytest.mark.model
@pytest.mark.parametrize("case", sorted(SUITE))
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_every_answer_of_the_schema_suite_validates(engine: Any, case: str,
                                                    temperature: float) -> None:
    question, schema = SUITE[case]
    gen = answer(engine, question, grammar_for(fmt(schema)), temperature=temperature,
                 seed=11)
    assert gen.outcome.finish_reason == "stop", gen.text  # type: ignore[attr-defined]
    jsonschema.validate(json.loads(gen.text), schema)  # type: ignore[attr-defined]


@pytest.mark.model
def test_json_object_mode_answers_a_json_object(engine: Any) -> None:
    gen = answer(engine, "Describe a cat as JSON.", grammar_for({"type": "json_object"}),
                 max_tokens=400)
    if gen.outcome.finish_reason == "stop":
        assert isinstance(json.loads(gen.text), dict)  # type: ignore[attr-defined]
    else:  # ran out of tokens: still the start of an object
        assert gen.text.lstrip().startswith("{")  # type: ignore[attr-defined]


@pytest.mark.model
def test_logprobs_are_those_of_the_constrained_distribution(engine: Any) -> None:
    """Each reported alternative is a token the grammar allowed, and the logprobs of the
    allowed tokens sum to 1: the model's softmax renormalised over what the grammar
    allows (an enum of two words: the first token is one of very few)."""
    import math

    schema = {"type": "object", "properties": {"ok": {"enum": ["yes", "no"]}},
              "required": ["ok"], "additionalProperties": False}
    steps = list(engine.steps(
        engine.chat_prompt([Message("user", "Is the sky blue?")]),
        SamplingParams(max_tokens=20, temperature=0.0, top_logprobs=5,
                       grammar=grammar_for(fmt(schema))), lambda: False))
    assert engine.token_bytes(steps[0].token).lstrip().startswith(b"{")
    for s in steps:  # alternatives are allowed tokens only, their mass at most 1
        assert all(math.isfinite(lp) for _, lp in s.top)
        assert sum(math.exp(lp) for _, lp in s.top) <= 1.0 + 1e-6
    # where the grammar leaves one choice (the `"ok"` key after `{`), it has probability 1
    assert any(abs(s.logprob) < 1e-6 and len(s.top) == 1 for s in steps)


@pytest.mark.model
@pytest.mark.parametrize("logprobs", [True, False])
def test_skipping_the_whole_vocabulary_mask_changes_no_answer(
        engine: Any, monkeypatch: pytest.MonkeyPatch, logprobs: bool) -> None:
    """The fast paths against masking the whole vocabulary for every token, on every
    schema of the suite: the same greedy answers; with logprobs read, logprobs within
    1e-4 and the same alternatives (the grammar over the 32 likeliest tokens, when the
    rest cannot matter); unread, the token picked first and checked alone — taken for
    nearly every token."""
    from edgewise.engines.batching import BatchScheduler

    def run(question: str, grammar: str) -> list[Any]:
        prompt = engine.chat_prompt([Message("user", question)])
        return list(engine.steps(prompt, SamplingParams(
            max_tokens=60, temperature=0.0, top_logprobs=2 if logprobs else 0,
            logprobs=logprobs, grammar=grammar), lambda: False))

    name = "_sample_top" if logprobs else "_sample_unscored"
    taken: list[bool] = []
    fast_path = getattr(BatchScheduler, name)

    def counted(self: Any, seq: Any, row: Any) -> Any:
        out = fast_path(self, seq, row)
        taken.append(out is not None)
        return out

    cases = [(q, grammar_for(fmt(s)) or "") for q, s in SUITE.values()]
    monkeypatch.setattr(BatchScheduler, name, counted)
    fast = [run(q, g) for q, g in cases]
    monkeypatch.setattr(BatchScheduler, name, lambda *a: None)
    full = [run(q, g) for q, g in cases]
    for a, b in zip(fast, full, strict=True):
        assert [s.token for s in a] == [s.token for s in b]
        if logprobs:
            for x, y in zip(a, b, strict=True):
                assert abs(x.logprob - y.logprob) < 1e-4
                assert [t for t, _ in x.top] == [t for t, _ in y.top]
    assert any(taken)
    if not logprobs:
        assert sum(taken) > 0.7 * len(taken), (sum(taken), len(taken))


@pytest.mark.model
def test_sampled_answers_without_logprobs_still_validate(engine: Any) -> None:
    """Pick-then-check sampling (logprobs unread) keeps every answer in the schema."""
    for case in ("nested", "array_enum", "defs_ref", "any_of"):
        question, schema = SUITE[case]
        grammar = grammar_for(fmt(schema))
        for seed in range(3):
            prompt = engine.chat_prompt([Message("user", question)])
            gen = Generation(engine, prompt, SamplingParams(
                max_tokens=160, temperature=0.9, seed=seed, grammar=grammar,
                logprobs=False), n_ctx=engine.info().n_ctx)
            text = "".join(c.text for c in gen)
            if gen.outcome.finish_reason != "length":
                jsonschema.validate(json.loads(text), schema)


@pytest.mark.model
def test_constrained_and_free_requests_batch_together(engine: Any) -> None:
    question, schema = SUITE["nested"]
    grammar = grammar_for(fmt(schema))
    alone_json = answer(engine, question, grammar).text  # type: ignore[attr-defined]
    alone_free = answer(engine, "Tell me about bread.", None, max_tokens=40).text  # type: ignore[attr-defined]
    start = threading.Barrier(4)

    def one(i: int) -> str:
        start.wait()
        if i % 2:
            return str(answer(engine, "Tell me about bread.", None, max_tokens=40).text)  # type: ignore[attr-defined]
        return str(answer(engine, question, grammar).text)  # type: ignore[attr-defined]

    with ThreadPoolExecutor(4) as pool:
        out = list(pool.map(one, range(4)))
    assert out[0] == out[2] == alone_json
    assert out[1] == out[3] == alone_free
    jsonschema.validate(json.loads(out[0]), schema)


@pytest.mark.model
def test_the_node_answers_response_format_over_http(real_node_server: LiveServer) -> None:
    question, schema = SUITE["flat"]
    body = {"model": "auto", "temperature": 0, "max_tokens": 120, "response_format": fmt(schema),
            "messages": [{"role": "user", "content": question}]}
    r = httpx.post(real_node_server.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), schema)
    bad = {**body, "response_format": fmt({"type": "object", "properties": {
        "n": {"type": "integer", "minimum": 1}}})}
    r = httpx.post(real_node_server.url + "/v1/chat/completions", json=bad, timeout=30)
    assert r.status_code == 400
    assert "schema.properties.n.minimum" in r.json()["error"]["message"]

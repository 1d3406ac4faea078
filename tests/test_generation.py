"""The shared decode loop: budgets, stop strings, UTF-8 assembly, logprob alignment."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from edgewise.chat import Message
from edgewise.engines import EngineInfo, Generation, SamplingParams, Step
from edgewise.engines.fake import FakeEngine


class ScriptedEngine:
    """Emits a fixed list of byte pieces, one token each, then end-of-generation."""

    def __init__(self, pieces: list[bytes], *, eos: bool = True) -> None:
        self.pieces = pieces
        self.eos = eos
        self.stopped_early = False

    def load(self) -> None: ...
    def close(self) -> None: ...

    def info(self) -> EngineInfo:
        return EngineInfo("scripted", "scripted", 4096, len(self.pieces) + 1, "0" * 64, "", 0)

    def tokenize(self, text: str, *, special: bool = False, add_bos: bool = True) -> list[int]:
        return [0] * max(1, len(text))

    def token_bytes(self, token: int) -> bytes:
        return self.pieces[token] if token < len(self.pieces) else b""

    def chat_prompt(self, messages: Sequence[Message],
                    tools: Sequence[dict[str, Any]] = ()) -> list[int]:
        return [0]

    def steps(self, prompt: Sequence[int], params: SamplingParams,
              should_stop: Callable[[], bool]) -> Iterator[Step]:
        for i in range(len(self.pieces)):
            yield Step(i, -0.1 * (i + 1))
        if self.eos:
            yield Step(len(self.pieces), -0.01, end_of_generation=True)

    def score(self, tokens: Sequence[int]) -> list[Step]:
        return []


def run(pieces: list[bytes], *, eos: bool = True, **kw: object) -> tuple[list, Generation]:
    params = SamplingParams(**{"max_tokens": 100, **kw})  # type: ignore[arg-type]
    gen = Generation(ScriptedEngine(pieces, eos=eos), [0], params, n_ctx=4096)
    return list(gen), gen


def text(chunks: list) -> str:
    return "".join(c.text for c in chunks)


def test_plain_text_and_eos() -> None:
    chunks, gen = run([b"Hello", b",", b" world"])
    assert text(chunks) == "Hello, world"
    assert gen.outcome.finish_reason == "stop"
    assert gen.outcome.completion_tokens == 3
    assert gen.outcome.logprobs == pytest.approx([-0.1, -0.2, -0.3])


def test_budget_gives_length() -> None:
    chunks, gen = run([b"a", b"b", b"c", b"d"], max_tokens=2)
    assert text(chunks) == "ab"
    assert gen.outcome.finish_reason == "length"
    assert gen.outcome.completion_tokens == 2


def test_context_window_bounds_the_budget() -> None:
    params = SamplingParams(max_tokens=100)
    gen = Generation(ScriptedEngine([b"x"] * 50, eos=False), [0] * 10, params, n_ctx=15)
    assert text(list(gen)) == "xxxxx"
    assert gen.outcome.finish_reason == "length"


def test_utf8_split_across_tokens_is_never_sent_half_way() -> None:
    cafe = "café 🙂".encode()
    pieces = [cafe[i : i + 1] for i in range(len(cafe))]  # one byte per token
    chunks, _ = run(pieces)
    assert text(chunks) == "café 🙂"
    for c in chunks:
        assert "\ufffd" not in c.text  # no replacement characters mid-stream
    # Every token is reported exactly once, in order, with its exact bytes.
    toks = [t for c in chunks for t in c.tokens]
    assert b"".join(bytes(t.bytes) for t in toks) == cafe


def test_invalid_utf8_from_the_model_becomes_replacement_chars() -> None:
    chunks, gen = run([b"ok", b"\xff", b"\xc3"])  # a lone byte and a truncated sequence
    assert text(chunks) == "ok\ufffd\ufffd"
    assert gen.outcome.finish_reason == "stop"


def test_stop_string_inside_a_token_cuts_there() -> None:
    chunks, gen = run([b"The answer", b" is 4.\nQ:", b" next"], stop=("\nQ:",))
    assert text(chunks) == "The answer is 4."
    assert gen.outcome.finish_reason == "stop"


def test_stop_string_split_across_tokens_is_held_back_then_cut() -> None:
    streamed: list[str] = []
    params = SamplingParams(max_tokens=100, stop=("END",))
    gen = Generation(ScriptedEngine([b"abc E", b"N", b"D tail"]), [0], params, n_ctx=4096)
    for c in gen:
        streamed.append(c.text)
    assert "".join(streamed) == "abc "
    assert all("E" not in s for s in streamed)  # the held-back prefix never leaked


def test_partial_stop_prefix_is_released_when_it_does_not_complete() -> None:
    chunks, gen = run([b"abc E", b"N", b"X"], stop=("END",))
    assert text(chunks) == "abc ENX"
    assert gen.outcome.finish_reason == "stop"  # ended by EOS, not by the stop string


def test_earliest_of_several_stops_wins() -> None:
    chunks, _ = run([b"one two three"], stop=("three", "two"))
    assert text(chunks) == "one "


def test_logprobs_line_up_with_streamed_text() -> None:
    chunks, _ = run([b"a", b"b", b"c"])
    for c in chunks:
        assert c.text == "".join(t.token for t in c.tokens)


def test_cancel_stops_generation() -> None:
    engine = FakeEngine(eos_after=10_000)
    engine.load()
    stop = {"now": False}
    params = SamplingParams(max_tokens=1000)
    gen = Generation(engine, engine.tokenize("hi"), params, n_ctx=512,
                     should_stop=lambda: stop["now"])
    for i, _ in enumerate(gen):
        if i == 5:
            stop["now"] = True
    assert gen.outcome.finish_reason == "cancelled"
    assert gen.outcome.completion_tokens <= 7


def test_seed_makes_sampling_reproducible() -> None:
    engine = FakeEngine()
    engine.load()
    prompt = engine.tokenize("Hello")

    def sample(seed: int) -> str:
        p = SamplingParams(max_tokens=20, temperature=1.0, seed=seed)
        return text(list(Generation(engine, prompt, p, n_ctx=512)))

    assert sample(7) == sample(7)
    assert len({sample(s) for s in range(5)}) > 1

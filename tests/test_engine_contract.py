"""One contract every Engine must pass; run against the fake and the real llama.cpp."""

from __future__ import annotations

import math
from collections.abc import Iterator
from itertools import islice

import pytest

from edgewise.chat import Message
from edgewise.engines import Engine, Generation, SamplingParams
from edgewise.engines.fake import FakeEngine


class EngineContract:
    """Subclasses provide an ``engine`` fixture (loaded)."""

    def test_satisfies_protocol(self, engine: Engine) -> None:
        assert isinstance(engine, Engine)
        info = engine.info()
        assert info.n_ctx > 0 and info.n_vocab > 0 and len(info.sha256) == 64

    def test_tokenize_round_trips_through_token_bytes(self, engine: Engine) -> None:
        text = "Edge nodes answer locally, café 東京 🙂."
        ids = engine.tokenize(text, add_bos=False)
        n_vocab = engine.info().n_vocab
        assert ids and all(0 <= t < n_vocab for t in ids)
        assert b"".join(engine.token_bytes(t) for t in ids).decode() == text

    def test_chat_prompt_depends_on_messages(self, engine: Engine) -> None:
        a = engine.chat_prompt([Message("user", "Hello")])
        b = engine.chat_prompt([Message("system", "Be brief."), Message("user", "Hello")])
        assert a and b and a != b

    def test_greedy_is_deterministic_and_picks_the_top_token(self, engine: Engine) -> None:
        prompt = engine.chat_prompt([Message("user", "Count to five.")])
        params = SamplingParams(max_tokens=12, temperature=0.0, top_logprobs=3)
        first = list(islice(engine.steps(prompt, params, lambda: False), 12))
        second = list(islice(engine.steps(prompt, params, lambda: False), 12))
        assert [s.token for s in first] == [s.token for s in second]
        for s in first:
            assert s.logprob <= 0
            assert s.top[0][0] == s.token  # greedy = argmax
            assert s.top[0][1] == pytest.approx(s.logprob, abs=1e-5)
            lps = [lp for _, lp in s.top]
            assert lps == sorted(lps, reverse=True)
            assert sum(math.exp(lp) for lp in lps) <= 1.0 + 1e-6

    def test_seeded_sampling_is_reproducible(self, engine: Engine) -> None:
        prompt = engine.chat_prompt([Message("user", "Tell me a story.")])

        def sample(seed: int) -> list[int]:
            p = SamplingParams(max_tokens=16, temperature=1.0, top_p=1.0, top_k=0, min_p=0.0,
                               seed=seed)
            return [s.token for s in islice(engine.steps(prompt, p, lambda: False), 16)]

        assert sample(1234) == sample(1234)
        assert len({tuple(sample(s)) for s in range(4)}) > 1

    def test_score_agrees_with_generation_logprobs(self, engine: Engine) -> None:
        prompt = engine.chat_prompt([Message("user", "Name a colour.")])
        params = SamplingParams(max_tokens=6, temperature=0.0)
        steps = list(islice(engine.steps(prompt, params, lambda: False), 6))
        steps = [s for s in steps if not s.end_of_generation]
        scored = engine.score(prompt + [s.token for s in steps])
        assert len(scored) == len(prompt) + len(steps) - 1
        tail = scored[-len(steps):]
        for got, want in zip(tail, steps, strict=True):
            assert got.token == want.token
            # llama.cpp decodes a batch with other matmul kernels than one token at a
            # time, so the two paths differ by ~1e-2 nats on a Q4 model.
            assert got.logprob == pytest.approx(want.logprob, abs=0.05)

    def test_should_stop_ends_the_stream(self, engine: Engine) -> None:
        prompt = engine.chat_prompt([Message("user", "Write a long essay.")])
        count = 0

        def stop() -> bool:
            return count >= 3

        for _ in engine.steps(prompt, SamplingParams(max_tokens=500), stop):
            count += 1
            assert count <= 4

    def test_generation_runs_to_a_clean_end(self, engine: Engine) -> None:
        prompt = engine.chat_prompt([Message("user", "Say hello.")])
        gen = Generation(engine, prompt, SamplingParams(max_tokens=400, temperature=0.0),
                         n_ctx=engine.info().n_ctx)
        text = "".join(c.text for c in gen)
        assert gen.outcome.finish_reason in ("stop", "length")
        assert gen.outcome.completion_tokens == len(gen.outcome.logprobs) > 0
        assert text.strip()


class TestFakeEngine(EngineContract):
    @pytest.fixture
    def engine(self) -> Iterator[Engine]:
        e = FakeEngine(n_ctx=1024)
        e.load()
        yield e
        e.close()


@pytest.fixture(scope="module")
def llamacpp_engine() -> Iterator[Engine]:
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    e = LlamaCppEngine(resolve_model("smollm2-135m-instruct"), n_ctx=1024)
    e.load()
    yield e
    e.close()


@pytest.mark.model
class TestLlamaCppEngine(EngineContract):
    @pytest.fixture
    def engine(self, llamacpp_engine: Engine) -> Engine:
        return llamacpp_engine

    def test_logprobs_equal_llama_cpp_logits_all(self, engine: Engine) -> None:
        """Our fast path reports the same numbers as llama-cpp-python's slow path."""
        import llama_cpp

        info = engine.info()
        prompt = engine.chat_prompt([Message("user", "What is the capital of France?")])
        ref = llama_cpp.Llama(model_path=info.path, n_ctx=1024, logits_all=True, verbose=False)
        try:
            out = ref.create_completion(prompt, max_tokens=8, temperature=0.0, logprobs=1)
        finally:
            ref.close()
        want = [float(x) for x in out["choices"][0]["logprobs"]["token_logprobs"]]
        params = SamplingParams(max_tokens=8, temperature=0.0)
        got = [s.logprob for s in islice(engine.steps(prompt, params, lambda: False), len(want))]
        assert got == pytest.approx(want, abs=1e-4)

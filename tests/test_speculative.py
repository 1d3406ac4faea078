"""Speculative decoding (edgewise/decoding, engines/batching.py): drafters, the
acceptance rules, the policy that turns speculation off where it does not pay, and the
llama.cpp engine verifying drafts — greedy output token for token the same as plain
decoding, sampled output distributed as the model's.
"""

from __future__ import annotations

import ctypes
import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from edgewise.chat import Message
from edgewise.decoding import (
    ChainParams,
    CostModel,
    PromptLookup,
    Speculation,
    SpeculativeOptions,
    accept_greedy,
    accept_sampled,
    chain_probs,
    make_drafter,
)
from edgewise.engines.base import SamplingParams

# -- drafters ----------------------------------------------------------------------------


def test_prompt_lookup_copies_what_followed_the_latest_match() -> None:
    d = PromptLookup(ngram_max=3, ngram_min=1)
    d.extend([1, 2, 3, 4, 5, 9, 2, 3, 7, 8, 1, 2, 3])
    # the trigram 1 2 3 occurred at the start: 4 5 9 followed it
    assert d.draft(3).tokens == [4, 5, 9]
    d.extend([4])
    # now 2 3 4 → its one earlier occurrence is followed by 5 9 2 3
    assert d.draft(4).tokens == [5, 9, 2, 3]


def test_prompt_lookup_prefers_the_longest_ngram_then_the_latest() -> None:
    d = PromptLookup(ngram_max=2, ngram_min=1)
    d.extend([5, 1, 6, 7, 1, 8, 7, 1])
    # the bigram 7 1 occurred once before (followed by 8); the unigram 1 twice
    assert d.draft(1).tokens == [8]
    d2 = PromptLookup(ngram_max=2, ngram_min=1)
    d2.extend([3, 1, 6, 4, 1, 8, 9, 1])  # no earlier "9 1": the latest "1" → 8
    assert d2.draft(2).tokens == [8, 9]


def test_prompt_lookup_drafts_nothing_without_a_match() -> None:
    d = PromptLookup()
    d.extend([1, 2, 3, 4])
    assert d.draft(5).tokens == []
    d = PromptLookup(ngram_min=2)
    d.extend([1, 2, 1])  # only a unigram repeats
    assert d.draft(5).tokens == []


def test_drafters_are_made_by_name() -> None:
    assert isinstance(make_drafter("prompt_lookup", {"ngram_max": 4}), PromptLookup)
    with pytest.raises(ValueError, match=r"unknown drafter .nope.; known: .*prompt_lookup"):
        make_drafter("nope", {})


# -- the acceptance rules ---------------------------------------------------------------


def test_greedy_keeps_the_draft_up_to_the_first_disagreement() -> None:
    assert accept_greedy([4, 5, 6, 7], [4, 5, 9]) == 2
    assert accept_greedy([4, 5, 6, 7], [4, 5, 6]) == 3
    assert accept_greedy([1], []) == 0


def _llama_chain(logits: np.ndarray, c: ChainParams) -> dict[int, float]:
    """What llama.cpp's own samplers keep, and the softmax they would draw from."""
    import llama_cpp

    n = logits.size
    data = (llama_cpp.llama_token_data * n)()
    for i in range(n):
        data[i].id, data[i].logit, data[i].p = i, float(logits[i]), 0.0
    arr = llama_cpp.llama_token_data_array(
        data=ctypes.cast(data, llama_cpp.llama_token_data_p), size=n, selected=-1,
        sorted=False)
    for s in (llama_cpp.llama_sampler_init_top_k(c.top_k),
              llama_cpp.llama_sampler_init_top_p(c.top_p, 1),
              llama_cpp.llama_sampler_init_min_p(c.min_p, 1),
              llama_cpp.llama_sampler_init_temp(c.temperature)):
        llama_cpp.llama_sampler_apply(s, ctypes.byref(arr))
        llama_cpp.llama_sampler_free(s)
    kept = [(arr.data[i].id, arr.data[i].logit) for i in range(arr.size)]
    z = np.array([lg for _, lg in kept], dtype=np.float64)
    p = np.exp(z - z.max())
    p /= p.sum()
    return {int(t): float(q) for (t, _), q in zip(kept, p, strict=True)}


@pytest.mark.parametrize("c", [
    ChainParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05),
    ChainParams(temperature=1.3, top_k=5, top_p=1.0, min_p=0.0),
    ChainParams(temperature=0.5, top_k=0, top_p=0.5, min_p=0.2),
])
def test_the_chain_keeps_and_weighs_tokens_as_llama_cpp_does(c: ChainParams) -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        logits = (rng.standard_normal(300) * 3).astype(np.float32)
        ids, p = chain_probs(logits, c)
        ours = {int(t): float(q) for t, q in zip(ids, p, strict=True)}
        theirs = _llama_chain(logits, c)
        assert ours.keys() == theirs.keys()
        for t, q in ours.items():
            assert q == pytest.approx(theirs[t], abs=1e-6)


def _frequencies(draws: list[int], n: int) -> np.ndarray:
    counts = Counter(draws)
    return np.array([counts[i] for i in range(n)], dtype=np.float64) / len(draws)


@pytest.mark.parametrize("drafter_q", [False, True])
def test_speculative_sampling_draws_each_token_from_the_targets_distribution(
        drafter_q: bool) -> None:
    """Two drafted positions; the first and second output tokens, over many trials,
    are distributed as the target's rows say (within 4 standard errors)."""
    rng = np.random.default_rng(0)
    n = 6
    p0 = np.array([0.1, 0.4, 0.2, 0.05, 0.15, 0.1])
    p1 = np.array([0.3, 0.1, 0.1, 0.3, 0.1, 0.1])
    p2 = np.full(n, 1 / n)
    rows = [(np.arange(n), p) for p in (p0, p1, p2)]
    trials = 40_000
    first, second = [], []
    for _ in range(trials):
        if drafter_q:  # a model drafter: draw the draft from q
            q0 = np.array([0.05, 0.1, 0.5, 0.05, 0.2, 0.1])
            q1 = np.array([0.2, 0.2, 0.2, 0.2, 0.1, 0.1])
            d0, d1 = int(rng.choice(n, p=q0)), int(rng.choice(n, p=q1))
            draft, q = [d0, d1], [q0, q1]
        else:  # prompt lookup: always the same guess
            draft, q = [2, 3], []
        m, nxt = accept_sampled(rows, draft, q, rng)
        out = [*draft[:m], nxt]
        first.append(out[0])
        if len(out) > 1 and out[0] == draft[0]:
            second.append(out[1])
    sigma = np.sqrt(p0 * (1 - p0) / trials)
    assert np.all(np.abs(_frequencies(first, n) - p0) < 4 * sigma + 1e-3)
    # given the first token was the drafted one, the second follows row 1
    sigma = np.sqrt(p1 * (1 - p1) / len(second))
    assert np.all(np.abs(_frequencies(second, n) - p1) < 4 * sigma + 1e-3)


def test_a_drafted_token_outside_the_chain_is_always_rejected() -> None:
    rng = np.random.default_rng(1)
    rows = [(np.array([3, 1]), np.array([0.7, 0.3])), (np.array([0]), np.array([1.0]))]
    for _ in range(200):
        m, nxt = accept_sampled(rows, [5], [], rng)
        assert m == 0 and nxt in (3, 1)


# -- when to speculate -------------------------------------------------------------------


def test_the_policy_drafts_long_when_drafts_are_kept_and_cheap() -> None:
    costs = CostModel()
    costs.plain(0.02)
    for r in range(2, 10):
        costs.verify(r, 0.02 * (1 + 0.1 * (r - 1)))
    s = Speculation(costs, k_max=8, alpha=0.95)
    assert s.length(room=100) == 8
    assert s.length(room=3) == 3  # the budget or the cells left bound it
    assert s.length(room=0) == 0


def test_the_policy_stops_below_break_even_and_probes_later() -> None:
    costs = CostModel()
    costs.plain(0.02)
    for r in range(2, 10):
        costs.verify(r, 0.02 * r)  # verifying costs as much as decoding: never pays
    s = Speculation(costs, k_max=8, alpha=0.9, probe_after=4)
    assert s.length(room=100) == 0
    waits = [s.length(room=100) for _ in range(4)]
    assert waits == [0, 0, 0, 0]
    assert s.length(room=100) == 1  # a one-token probe
    s.update(1, 0)
    assert all(s.length(room=100) == 0 for _ in range(8))  # the wait doubled


def test_acceptance_moves_towards_what_the_target_keeps() -> None:
    s = Speculation(CostModel(), alpha=0.6)
    for _ in range(20):
        s.update(8, 8)
    assert s.alpha > 0.95
    for _ in range(20):
        s.update(8, 0)
    assert s.alpha < 0.05
    assert (s.drafted, s.accepted, s.passes) == (320, 160, 40)


# -- the llama.cpp engine verifying drafts (the real default model) ----------------------

PASSAGE = (
    "The clinic opens at eight in the morning and closes at six in the evening. "
    "Patients must bring their insurance card and a list of current medicines. "
    "The pharmacy is on the ground floor, radiology on the first floor, and the "
    "laboratory in the basement. Parking is free for the first two hours.")
GROUNDED = [Message("user", f"Here is a notice:\n\n{PASSAGE}\n\nCopy the notice word for "
                            "word, then say which floor radiology is on.")]
OPEN = [Message("user", "Write a short poem about autumn leaves.")]


def _engine(speculative: SpeculativeOptions | None, parallel: int = 2) -> Any:
    """The default model; flash attention in both (what ``speculative.exact`` turns on),
    so the plain engine is the same engine without speculation."""
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    e = LlamaCppEngine(resolve_model("smollm2-135m-instruct"), n_ctx=1024, n_threads=1,
                       parallel=parallel, speculative=speculative, flash_attn=True)
    e.load()
    return e


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Any, Any]]:
    plain = _engine(None)
    # margin 0: speculate whenever there is a draft (the policy is tested on its own;
    # measured costs on a loaded machine must not decide whether these tests draft)
    spec = _engine(SpeculativeOptions("prompt_lookup", {}, k_max=6, margin=0.0))
    yield plain, spec
    plain.close()
    spec.close()


def steps(engine: Any, messages: list[Message], params: SamplingParams) -> list[Any]:
    return list(engine.steps(engine.chat_prompt(messages), params, lambda: False))


@pytest.mark.model
@pytest.mark.parametrize("messages", [GROUNDED, OPEN], ids=["grounded", "open"])
def test_greedy_output_and_logprobs_are_the_models_own(engines: tuple[Any, Any],
                                                       messages: list[Message]) -> None:
    plain, spec = engines
    params = SamplingParams(max_tokens=120, temperature=0.0, top_logprobs=2)
    before = spec.batch_stats()
    a, b = steps(plain, messages, params), steps(spec, messages, params)
    assert [s.token for s in b] == [s.token for s in a]
    for x, y in zip(a, b, strict=True):
        assert y.logprob == pytest.approx(x.logprob, abs=1e-4)
        assert [t for t, _ in y.top] == [t for t, _ in x.top]
    after = spec.batch_stats()
    if messages is GROUNDED:  # it did speculate, and most drafts were kept
        kept = after.spec_accepted - before.spec_accepted
        assert kept > 30 and sum(s.accepted for s in b) == kept
        assert sum(s.drafted for s in b) == after.spec_drafted - before.spec_drafted


@pytest.mark.model
def test_budgets_and_the_end_of_the_slot_hold_while_speculating(
        engines: tuple[Any, Any]) -> None:
    plain, spec = engines
    for n in (1, 2, 7, 33):
        out = steps(spec, GROUNDED, SamplingParams(max_tokens=n, temperature=0.0,
                                                   ignore_eos=True))
        assert len(out) == n
    # a prompt that leaves 40 cells: the sequence ends at the slot's end (its last
    # token needs no cell), as without speculation, and drafts never overrun it
    prompt = spec.chat_prompt(GROUNDED)
    filler = spec.tokenize(PASSAGE * 30, add_bos=False)[:1024 - 40 - len(prompt)]
    long = filler + prompt
    params = SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)
    before = spec.batch_stats().spec_passes
    out = [s.token for s in spec.steps(long, params, lambda: False)]
    assert spec.batch_stats().spec_passes > before
    assert out == [s.token for s in plain.steps(long, params, lambda: False)]
    assert len(long) + len(out) == 1024 + 1


@pytest.mark.model
def test_sampled_output_is_distributed_as_without_speculation(
        engines: tuple[Any, Any]) -> None:
    """The first three tokens after a prompt the drafter can copy from, sampled at
    temperature 1 with 150 seeds each way: every token's share agrees within a few
    standard errors (seeded, so the test is reproducible)."""
    plain, spec = engines
    prompt = [Message("user", "Repeat exactly: red green blue, red green blue, red green")]
    counts: dict[str, list[Counter[int]]] = {}
    for label, engine in (("plain", plain), ("spec", spec)):
        pos: list[Counter[int]] = [Counter(), Counter(), Counter()]
        for seed in range(150):
            out = steps(engine, prompt, SamplingParams(
                max_tokens=3, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed,
                ignore_eos=True))
            for i, s in enumerate(out):
                pos[i][s.token] += 1
        counts[label] = pos
    assert spec.batch_stats().spec_passes > 0
    for i in range(3):
        a, b = counts["plain"][i], counts["spec"][i]
        for token in set(a) | set(b):
            pa, pb = a[token] / 150, b[token] / 150
            se = np.sqrt(max(pa * (1 - pa), pb * (1 - pb), 0.01) * 2 / 150)
            assert abs(pa - pb) < 4.5 * se, (i, token, pa, pb)


@pytest.mark.model
def test_no_speculation_while_another_sequence_decodes(engines: tuple[Any, Any]) -> None:
    """max_batch 1: two requests at once decode plainly, and match plain decoding."""
    from concurrent.futures import ThreadPoolExecutor

    plain, spec = engines
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    want = [s.token for s in steps(plain, GROUNDED, params)]
    before = spec.batch_stats().spec_passes
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda m: steps(spec, m, params), [GROUNDED, GROUNDED]))
    assert all([s.token for s in o] == want for o in outs)
    # the two ran side by side, so none (or only the odd step alone) speculated
    assert spec.batch_stats().spec_passes - before <= 4


@pytest.mark.model
def test_grammar_and_penalties_decode_plainly(engines: tuple[Any, Any]) -> None:
    _, spec = engines
    before = spec.batch_stats().spec_passes
    steps(spec, GROUNDED, SamplingParams(max_tokens=30, temperature=0.0, repeat_penalty=1.2))
    steps(spec, GROUNDED, SamplingParams(max_tokens=30, temperature=0.0,
                                         grammar='root ::= [a-z ]+'))
    assert spec.batch_stats().spec_passes == before


# -- the node: config, usage, metrics ----------------------------------------------------


def test_exact_speculation_needs_flash_attention() -> None:
    from edgewise.config import parse_config
    from edgewise.errors import ConfigError

    with pytest.raises(ConfigError, match=r"speculative\.exact needs flash attention"):
        parse_config({"engine": {"flash_attn": "off",
                                 "speculative": {"drafter": "prompt_lookup"}}})
    with pytest.raises(ConfigError, match="ngram_min must not exceed ngram_max"):
        parse_config({"engine": {"speculative": {"drafter": "prompt_lookup",
                                                 "ngram_min": 4, "ngram_max": 2}}})
    cfg = parse_config({"engine": {"speculative": {"drafter": "prompt_lookup",
                                                   "exact": False}, "flash_attn": "off"}})
    assert cfg.engine.speculative.drafter == "prompt_lookup"
    # YAML reads bare on / off as booleans
    import yaml

    cfg = parse_config(yaml.safe_load("engine:\n  flash_attn: on\n  speculative:\n"
                                      "    drafter: off\n"))
    assert (cfg.engine.flash_attn, cfg.engine.speculative.drafter) == ("on", "off")


@pytest.mark.model
def test_the_node_reports_drafted_and_kept_tokens(tmp_path: Any) -> None:
    import httpx

    from conftest import LiveServer
    from edgewise.config import parse_config
    from edgewise.node import Node, build_engine

    cfg = parse_config({"node": {"name": "spec"},
                        "engine": {"n_ctx": 1024, "parallel": 1,
                                   "speculative": {"drafter": "prompt_lookup",
                                                   "min_speedup": 0}},
                        "audit": {"path": str(tmp_path / "audit.sqlite")},
                        "routing": {"jobs_path": str(tmp_path / "jobs.sqlite")}})
    body = {"model": "auto", "temperature": 0, "max_tokens": 80,
            "messages": [{"role": m.role, "content": m.content} for m in GROUNDED]}
    with LiveServer(Node(cfg, build_engine(cfg))) as server:
        r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        details = r.json()["usage"]["completion_tokens_details"]
        assert details["accepted_prediction_tokens"] > 20
        assert details["rejected_prediction_tokens"] >= 0
        streamed = httpx.post(server.url + "/v1/chat/completions", timeout=120, json={
            **body, "stream": True, "stream_options": {"include_usage": True}}).text
        assert '"accepted_prediction_tokens"' in streamed
        metrics = httpx.get(server.url + "/metrics").text
        assert 'edgewise_speculative_tokens_total{kind="accepted",model=' in metrics
        assert "edgewise_speculative_passes_total" in metrics


# -- every catalogue model, and the model drafter -----------------------------------------

COPY = f"Notice: {PASSAGE}\nThe same notice, copied word for word: "


@pytest.mark.model
@pytest.mark.parametrize("model, drafter, draft_model", [
    ("smollm2-135m-instruct", "prompt_lookup", None),
    ("gemma3-270m", "prompt_lookup", None),
    ("qwen2.5-coder-0.5b-instruct", "prompt_lookup", None),
    ("qwen2.5-coder-1.5b-instruct", "prompt_lookup", None),
    ("qwen2.5-coder-1.5b-instruct", "model", "qwen2.5-coder-0.5b-instruct"),
    ("smollm2-135m-instruct", "model", "smollm2-135m-instruct"),
])
def test_greedy_speculation_is_lossless_on_every_catalogue_model(
        model: str, drafter: str, draft_model: str | None) -> None:
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    options = {} if draft_model is None else {"path": str(resolve_model(draft_model).path)}
    out, kept = {}, 0
    for label, spec in (("plain", None),
                        ("spec", SpeculativeOptions(drafter, options, k_max=6,
                                                              margin=0.0))):
        e = LlamaCppEngine(resolve_model(model), n_ctx=512, n_threads=1, parallel=1,
                           speculative=spec, flash_attn=True)
        e.load()
        try:
            prompt = e.tokenize(COPY)
            out[label] = [(s.token, s.logprob) for s in e.steps(
                prompt, SamplingParams(max_tokens=60, temperature=0.0), lambda: False)]
            kept = e.batch_stats().spec_accepted
        finally:
            e.close()
    assert [t for t, _ in out["spec"]] == [t for t, _ in out["plain"]]
    # SmolLM2 (Q4_1) and Gemma: the same logprobs to the last bit; Qwen's Q4_K matmuls
    # round a several-row pass slightly differently from one row (|Δ| ≤ 0.011 measured)
    tolerance = 0.02 if model.startswith("qwen") else 1e-6
    assert all(abs(a - b) <= tolerance for (_, a), (_, b) in zip(out["spec"], out["plain"],
                                                                  strict=True))
    assert kept >= 10  # it did speculate


@pytest.mark.model
def test_a_draft_model_with_another_vocabulary_is_refused_in_one_line() -> None:
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.errors import EngineError
    from edgewise.models import resolve_model

    spec = SpeculativeOptions(
        "model", {"path": str(resolve_model("qwen2.5-coder-0.5b-instruct").path)})
    e = LlamaCppEngine(resolve_model("smollm2-135m-instruct"), n_ctx=256, parallel=1,
                       speculative=spec, flash_attn=True)
    with pytest.raises(EngineError, match="does not share the target's vocabulary") as exc:
        e.load()
    assert "\n" not in str(exc.value)


def test_the_model_drafter_needs_its_model() -> None:
    from edgewise.config import parse_config
    from edgewise.errors import ConfigError

    with pytest.raises(ConfigError, match="drafter: model needs model:"):
        parse_config({"engine": {"speculative": {"drafter": "model"}}})


# -- verifying a peer's draft ----------------------------------------------------------------


@pytest.mark.model
def test_a_peers_draft_is_verified_as_the_engine_would_decode(
        engines: tuple[Any, Any]) -> None:
    plain, _ = engines  # a node without speculation of its own verifies too
    greedy = SamplingParams(max_tokens=40, temperature=0.0)
    prompt = plain.chat_prompt(GROUNDED)
    want = [s.token for s in plain.steps(prompt, greedy, lambda: False)]
    # a draft right for 5 tokens, then wrong: 5 kept, then the model's 6th token
    draft = [*want[:5], (want[5] + 1) % 1000, *want[6:9]]
    out = plain.verify(prompt, draft, greedy).steps
    assert [s.token for s in out] == want[:6]
    assert [s.accepted for s in out] == [True] * 5 + [False]
    # all right: every token kept, plus the next one
    out = plain.verify(prompt + want[:3], want[3:10], greedy).steps
    assert [s.token for s in out] == want[3:11] and sum(s.accepted for s in out) == 7
    # an empty draft: just the next token; a wrong first guess: the model's own
    assert [s.token for s in plain.verify(prompt, [], greedy).steps] == want[:1]
    assert [s.token for s in plain.verify(prompt, [(want[0] + 1) % 1000],
                                            greedy).steps] == want[:1]
    # logprobs are the model's own
    ref = list(plain.steps(prompt, dataclasses.replace(greedy, max_tokens=6), lambda: False))
    got = plain.verify(prompt, want[:5], greedy).steps
    for a, b in zip(got, ref, strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)


@pytest.mark.model
def test_a_sampled_verification_follows_the_models_distribution(
        engines: tuple[Any, Any]) -> None:
    """The first token after a fixed one-token draft, sampled 300 times: kept with the
    model's probability of it, and otherwise another token."""
    plain, _ = engines
    prompt = plain.chat_prompt(OPEN)
    params = SamplingParams(max_tokens=1, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    [top] = plain.steps(prompt, dataclasses.replace(params, temperature=0.0), lambda: False)
    p = float(np.exp(top.logprob))  # the chain keeps the whole softmax at temperature 1
    kept = sum(plain.verify(prompt, [top.token], dataclasses.replace(params, seed=i))
               .steps[0].accepted for i in range(300))
    assert abs(kept / 300 - p) < 4 * np.sqrt(p * (1 - p) / 300) + 0.01


async def _verify_node(tmp_path: Any, **extra: Any) -> Any:
    from edgewise.config import parse_config
    from edgewise.node import Node, build_engine

    data: dict[str, Any] = {
        "node": {"name": "upper", "tier": "regional"},
        "engine": extra.pop("engine", {"n_ctx": 1024, "parallel": 1}),
        "tiers": [{"name": "regional", "endpoints": [{"engine": "llamacpp"}],
                   "clearance": "internal"}],
        "audit": {"path": str(tmp_path / "audit.sqlite")},
        "routing": {"jobs_path": str(tmp_path / "jobs.sqlite")}, **extra}
    cfg = parse_config(data)
    node = Node(cfg, build_engine(cfg))
    await node.start()
    return node


@pytest.mark.model
async def test_the_verify_endpoint_answers_a_peer_and_counts_its_passes(tmp_path: Any) -> None:
    import httpx

    from edgewise.api.app import create_app
    from fake_detector import FakeDetector

    node = await _verify_node(tmp_path)
    app = create_app(node, manage_lifecycle=False, detector=FakeDetector())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://upper", timeout=120) as c:
            engine = node.engine
            prompt = engine.chat_prompt(GROUNDED)
            want = [s.token for s in engine.steps(
                prompt, SamplingParams(max_tokens=12, temperature=0.0), lambda: False)]
            r = await c.post("/v1/edgewise/verify", json={"prompt": prompt,
                                                           "draft": want[:4]})
            assert r.status_code == 200, r.text
            v = r.json()
            assert v["accepted"] == 4 and v["tokens"] == want[:5]
            assert v["next_token"] == want[4] and len(v["logprobs"]) == 5
            # the next round: the context grew by the kept tokens, which the node has
            # cached — one forward pass for the whole verification
            r = await c.post("/v1/edgewise/verify", json={
                "prompt": prompt + want[:5], "draft": [want[5], want[6], 7]})
            v = r.json()
            assert v["tokens"][:2] == want[5:7] and v["accepted"] >= 2
            assert v["usage"]["forward_passes"] == 1
            # what a peer may not send
            for body, param in (({"prompt": [10**7], "draft": []}, "prompt[0]"),
                                ({"prompt": prompt, "draft": [1] * 65}, "draft"),
                                ({"prompt": [1] * 1020, "draft": [1] * 10}, "prompt")):
                r = await c.post("/v1/edgewise/verify", json=body)
                assert r.status_code == 400, r.text
                assert r.json()["error"]["param"] == param
            # text this tier is not cleared for is refused, as a prompt would be
            secret = engine.tokenize("Patient Jane Doe, SSN 078-05-1120, asks", add_bos=False)
            r = await c.post("/v1/edgewise/verify", json={"prompt": prompt, "draft": secret})
            assert r.status_code == 403
            assert "Jane" not in r.text and "078-05" not in r.text
    finally:
        await node.stop()


@pytest.mark.model
async def test_the_verify_endpoint_needs_credentials_like_any_tier_call(
        tmp_path: Any) -> None:
    import hashlib

    import httpx

    from edgewise.api.app import create_app
    from fake_detector import FakeDetector

    key = "sk-upper"
    node = await _verify_node(tmp_path, auth={"keys": [
        {"name": "lower", "sha256": hashlib.sha256(key.encode()).hexdigest()}]})
    app = create_app(node, manage_lifecycle=False, detector=FakeDetector())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://upper", timeout=120) as c:
            body = {"prompt": node.engine.tokenize("Hello"), "draft": []}
            assert (await c.post("/v1/edgewise/verify", json=body)).status_code == 401
            r = await c.post("/v1/edgewise/verify", json=body,
                             headers={"authorization": f"Bearer {key}"})
            assert r.status_code == 200 and len(r.json()["tokens"]) == 1
    finally:
        await node.stop()


# -- across tiers: the lower node drafts, the upper verifies --------------------------------


@pytest.mark.model
async def test_a_tier_answers_by_drafting_here_and_verifying_above(tmp_path: Any) -> None:
    """The answer is the upper model's greedy output, token for token, streamed or not,
    while the upper node runs fewer forward passes than it produced tokens."""
    import httpx

    from edgewise.api.app import create_app
    from edgewise.config import parse_config
    from edgewise.node import Node, build_engine
    from fake_detector import FakeDetector

    (tmp_path / "up").mkdir()
    upper = await _verify_node(tmp_path / "up", engine={"n_ctx": 1024, "parallel": 1,
                                                        "flash_attn": "on"})
    upper_app = create_app(upper, manage_lifecycle=False, detector=FakeDetector())
    cfg = parse_config({
        "node": {"name": "lower", "tier": "device"},
        "engine": {"n_ctx": 1024, "parallel": 1},
        "tiers": [{"name": "device", "endpoints": [{"engine": "llamacpp"}],
                   "clearance": "phi"},
                  {"name": "regional", "clearance": "internal", "endpoints": [
                      {"url": "http://upper.test/v1", "verify": True, "draft_tokens": 6}]}],
        "audit": {"path": str(tmp_path / "audit.sqlite")},
        "routing": {"jobs_path": str(tmp_path / "jobs.sqlite")}})
    lower = Node(cfg, build_engine(cfg))
    await lower.start()
    class Counting(httpx.ASGITransport):
        verifies = 0

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/verify"):
                Counting.verifies += 1
            return await super().handle_async_request(request)

    app = create_app(lower, manage_lifecycle=False, detector=FakeDetector(),
                     transports={"http://upper.test/v1": Counting(app=upper_app)})
    router = app.state.router
    router.start()
    try:
        messages = [{"role": m.role, "content": m.content} for m in GROUNDED]
        engine = upper.engine
        want = b"".join(engine.token_bytes(s.token) for s in engine.steps(
            engine.chat_prompt(GROUNDED), SamplingParams(max_tokens=60, temperature=0.0),
            lambda: False) if not s.end_of_generation).decode()
        body = {"model": "auto", "temperature": 0, "max_tokens": 60, "messages": messages}
        headers = {"x-edgewise-min-tier": "regional"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://lower", timeout=300) as c:
            r = await c.post("/v1/chat/completions", json=body, headers=headers)
            assert r.status_code == 200, r.text
            assert r.headers["x-edgewise-tier"] == "regional"
            out = r.json()
            assert out["choices"][0]["message"]["content"] == want
            assert out["usage"]["completion_tokens_details"]["accepted_prediction_tokens"] > 10
            r = await c.post("/v1/chat/completions", json={**body, "stream": True},
                             headers=headers)
            text, _ = sse_pieces(r.text)
            assert text == want
            # what the upper tier is not cleared for never reaches it to be verified
            sent = Counting.verifies
            r = await c.post("/v1/chat/completions", headers=headers, json={
                **body, "messages": [{"role": "user", "content":
                                      "Patient Jane Doe, SSN 078-05-1120: summarise"}]})
            assert r.status_code == 403 and Counting.verifies == sent
        [ep] = router.fleet.endpoints["regional"]
        assert 0 < ep.upper_passes < ep.upper_tokens
    finally:
        await router.stop()
        await lower.stop()
        await upper.stop()


def sse_pieces(raw: str) -> tuple[str, int]:
    import json

    pieces = [json.loads(line[6:]) for line in raw.splitlines()
              if line.startswith("data: {")]
    return "".join(c["delta"].get("content") or "" for p in pieces
                   for c in p.get("choices", [])), len(pieces)


def test_a_verify_endpoint_needs_a_url() -> None:
    from edgewise.config import parse_config
    from edgewise.errors import ConfigError

    with pytest.raises(ConfigError, match="`verify` needs a `url`"):
        parse_config({"tiers": [{"name": "device", "endpoints": [
            {"engine": "llamacpp", "verify": True}]}]})

"""Confidence scorers with hand-computed numbers, the scorer registry, and the
`routing.cascade` keys they read."""

from __future__ import annotations

import math
import re
from typing import Any

import pytest

from edgewise.chat import ChatAnswer, ChatRequest
from edgewise.config import parse_config
from edgewise.errors import ConfigError
from edgewise.routing.confidence import (
    SCORERS,
    Scorer,
    ScorerOptions,
    answer_span,
    build_scorer,
    final_answer,
    register_scorer,
    sample_requests,
    score,
    span_items,
)


def item(token: str, logprob: float, top: list[tuple[str, float]] | None = None,
         *, with_bytes: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"token": token, "logprob": logprob,
                           "top_logprobs": [{"token": t, "logprob": lp, "bytes": None}
                                            for t, lp in (top or [])]}
    if with_bytes:
        out["bytes"] = list(token.encode())
    return out


def answer(items: list[dict[str, Any]], text: str | None = None) -> ChatAnswer:
    return ChatAnswer("".join(i["token"] for i in items) if text is None else text,
                      "stop", "m", logprob_items=items)


def reply(text: str) -> ChatAnswer:
    return ChatAnswer(text, "stop", "m")


# A GSM8K-style reply: reasoning, then "#### 12". Reasoning tokens are sure (-0.01),
# the answer digits are not (-0.7, -0.5).
GSM = [item("3", -0.01), item(" *", -0.01), item(" 4", -0.01), item(" =", -0.01),
       item(" 12", -0.01), item("\n", -0.01), item("####", -0.01), item(" 1", -0.7),
       item("2", -0.5)]


# -- the logprob scorers ---------------------------------------------------------------

def test_whole_answer_scorers_by_hand() -> None:
    a = answer(GSM)
    n = len(GSM)
    assert build_scorer("mean_prob")(a) == pytest.approx(math.exp((-0.07 - 1.2) / n))
    assert build_scorer("min_prob")(a) == pytest.approx(math.exp(-0.7))
    assert build_scorer("tail_mean_prob")(a) == pytest.approx(math.exp(-0.7))  # k = 1


def test_answer_prob_scores_only_the_final_answer_tokens() -> None:
    a = answer(GSM)
    # Span "12" after the last ####: tokens " 1" and "2" -> exp((-0.7 - 0.5) / 2).
    assert build_scorer("answer_prob")(a) == pytest.approx(math.exp(-0.6))  # 0.548812
    # Lined up by token strings when the items carry no bytes: same tokens.
    plain = answer([{k: v for k, v in i.items() if k != "bytes"} for i in GSM])
    assert build_scorer("answer_prob")(plain) == pytest.approx(math.exp(-0.6))
    # No ####: the whole answer, i.e. mean_prob.
    short = answer([item("Paris", -0.2), item(".", -0.4)])
    assert build_scorer("answer_prob")(short) == pytest.approx(math.exp(-0.3))
    # Tokens that do not line up with the text (an upstream that rewrote it): the whole
    # answer again, rather than a guess.
    odd = answer(GSM, text="3 * 4 = 12\n#### 12!")
    assert build_scorer("answer_prob")(odd) == pytest.approx(build_scorer("mean_prob")(odd))


def test_answer_pattern_picks_the_last_match_and_its_group() -> None:
    items = [item("It", -0.1), item(" is", -0.1), item(" B", -0.9), item(",", -0.1),
             item(" answer", -0.1), item(":", -0.1), item(" C", -1.6), item(".", -0.2)]
    a = answer(items)
    assert a.text == "It is B, answer: C."
    opts = ScorerOptions(answer_pattern=r"answer:\s*([A-D])")
    assert build_scorer("answer_prob", opts)(a) == pytest.approx(math.exp(-1.6))
    # Without a group the whole match is the span: " answer", ":", " C".
    opts = ScorerOptions(answer_pattern=r"answer:\s*[A-D]")
    assert build_scorer("answer_prob", opts)(a) == pytest.approx(math.exp(-1.8 / 3))
    # A pattern that does not match falls back to #### (none here), then everything.
    opts = ScorerOptions(answer_pattern=r"final: (\d+)")
    assert build_scorer("answer_prob", opts)(a) == pytest.approx(build_scorer("mean_prob")(a))


def test_answer_span_strips_whitespace_and_handles_multibyte_tokens() -> None:
    assert answer_span("x\n####  42 \n") == (8, 10)
    assert answer_span("#### ") is None  # an empty span: use the whole answer
    assert answer_span("no marker") is None
    # "é" split over two byte tokens: lined up by bytes, both tokens are in the span.
    items = [{"token": "####", "logprob": -0.1, "bytes": list(b"####")},
             {"token": " caf", "logprob": -0.2, "bytes": list(b" caf")},
             {"token": "\ufffd", "logprob": -0.3, "bytes": [0xC3]},
             {"token": "\ufffd", "logprob": -0.4, "bytes": [0xA9]}]
    a = ChatAnswer("#### café", "stop", "m", logprob_items=items)
    assert [i["logprob"] for i in span_items(a)] == [-0.2, -0.3, -0.4]


def test_margin_is_top1_minus_top2_over_the_answer_span() -> None:
    lp = math.log
    items = [item("####", -0.01, [("####", -0.01), ("###", -5.0)]),
             item(" 7", lp(0.5), [(" 7", lp(0.5)), (" 8", lp(0.3)), (" 9", lp(0.1))]),
             item("2", lp(0.9), [("2", lp(0.9)), ("3", lp(0.05))])]
    # Span " 72": (0.5 - 0.3 + 0.9 - 0.05) / 2 = 0.525.
    assert build_scorer("margin")(answer(items)) == pytest.approx(0.525)
    # MMLU: one letter. A at 0.32 vs B at 0.31 is a coin toss; vs B at 0.05 it is not,
    # though the chosen token's probability (answer_prob) is the same in both.
    close = answer([item("A", lp(0.32), [("A", lp(0.32)), ("B", lp(0.31))])])
    clear = answer([item("A", lp(0.32), [("A", lp(0.32)), ("B", lp(0.05))])])
    assert build_scorer("margin")(close) == pytest.approx(0.01)
    assert build_scorer("margin")(clear) == pytest.approx(0.27)
    assert build_scorer("answer_prob")(close) == build_scorer("answer_prob")(clear)
    # A sampled token that was not the favourite: margin 0, not negative.
    assert build_scorer("margin")(answer([item("B", lp(0.2), [("A", lp(0.7)),
                                                               ("B", lp(0.2))])])) == 0.0
    # No alternatives (upstream ignored top_logprobs): lower bound 2p - 1.
    assert build_scorer("margin")(answer([item("A", lp(0.8))])) == pytest.approx(0.6)
    assert build_scorer("margin").top_logprobs == 2


# -- agreement --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "want"), [
    ("so 3 * 6 = 18 eggs.\n#### $18", "18"),
    ("#### 1,250.00", "1250"),
    ("#### 2.5 hours", "2.5"),
    ("It costs 5, then 7.", "7"),  # no ####: the last number
    ("  B  ", "b"),  # no number: the normalised reply
    ("The Answer is  Paris.", "the answer is paris"),
    ("", None),
])
def test_final_answer(text: str, want: str | None) -> None:
    assert final_answer(text) == want


def test_final_answer_with_a_pattern() -> None:
    pat = re.compile(r"answer is \(?([A-D])")
    assert final_answer("I think the answer is (C) because 4 > 3", pat) == "c"
    assert final_answer("no verdict, 4 > 3", pat) == "3"  # no match: last number


def test_agreement_is_the_share_of_samples_agreeing_with_the_answer() -> None:
    agree = build_scorer("agreement", ScorerOptions(samples=5))
    assert agree.samples == 5 and agree.top_logprobs == 0
    main = reply("6 * 7 = 42\n#### 42")
    samples = [reply("#### 42.0"), reply("7 * 6 = 42.\n#### $42"), reply("#### 41"),
               None, reply("the answer is 42")]
    # 42, 42, 41, failed, 42 (last number): 3 of 5.
    assert agree(main, samples) == pytest.approx(0.6)
    # Samples not drawn count as disagreeing: 2 of 5.
    assert agree(main, samples[:2]) == pytest.approx(0.4)
    assert agree(reply(""), samples) == 0.0  # nothing to agree with
    assert build_scorer("mean_prob").samples == 0  # only sampling scorers get samples


def test_agreement_knows_when_the_rest_cannot_change_the_decision() -> None:
    agree = build_scorer("agreement", ScorerOptions(samples=5))
    main, yes, no = reply("#### 1"), reply("#### 1"), reply("#### 2")
    # threshold 0.6 = 3 of 5 votes.
    assert not agree.decided(main, [], 0.6)
    assert not agree.decided(main, [yes, yes], 0.6)  # 2/5 now, up to 5/5
    assert agree.decided(main, [yes, yes, yes], 0.6)  # 3/5 >= 0.6 whatever follows
    assert not agree.decided(main, [no, no], 0.6)  # up to 3/5
    assert agree.decided(main, [no, no, no], 0.6)  # at most 2/5 < 0.6
    assert agree.decided(main, [no, None, no], 0.6)
    assert agree.decided(main, [], 0.0)  # threshold 0 keeps everything: no samples
    assert agree.decided(reply(""), [], 0.6)  # an empty answer scores 0 regardless
    assert not build_scorer("mean_prob").decided(main, [], 0.6)


def test_sample_requests() -> None:
    req = ChatRequest(messages=(("user", "hi"),), max_tokens=9, temperature=0.0, seed=10,
                      top_logprobs=3, stop=("\n\n",))
    got = sample_requests(req, 3, 0.7)
    assert [r.seed for r in got] == [11, 12, 13]
    assert {(r.temperature, r.top_logprobs, r.max_tokens, r.stop, r.messages, r.logprobs)
            for r in got} == {(0.7, 0, 9, ("\n\n",), (("user", "hi"),), True)}
    unseeded = sample_requests(ChatRequest(messages=(("user", "hi"),)), 2, 1.0)
    assert [r.seed for r in unseeded] == [None, None]


# -- registry ---------------------------------------------------------------------------

def test_registry_rejects_duplicates_and_lists_the_names() -> None:
    assert list(SCORERS)[:6] == ["mean_prob", "min_prob", "tail_mean_prob", "answer_prob",
                                 "margin", "agreement"]
    with pytest.raises(ValueError, match="scorer 'margin' is already registered"):
        @register_scorer
        class Again(Scorer):
            name = "margin"

            def _score(self, answer: ChatAnswer, samples: Any) -> float:
                return 1.0
    with pytest.raises(ValueError, match="already registered"):
        register_scorer("mean_prob", lambda lps: 1.0)
    with pytest.raises(ConfigError, match=r"routing.cascade.scorer: unknown scorer 'vibes'; "
                                          r"registered: agreement, answer_prob, margin, "
                                          r"mean_prob, min_prob, tail_mean_prob"):
        build_scorer("vibes")


def test_plugin_scorers_and_the_logprob_function_form() -> None:
    @register_scorer
    class Length(Scorer):
        name = "test_length"

        def _score(self, answer: ChatAnswer, samples: Any) -> float:
            return len(answer.text) / 10  # clipped to [0, 1]

    register_scorer("test_first", lambda lps: math.exp(lps[0]))
    try:
        assert build_scorer("test_length")(reply("abc")) == pytest.approx(0.3)
        assert build_scorer("test_length")(reply("a" * 50)) == 1.0
        assert score("test_first", [-1.0, -5.0]) == pytest.approx(math.exp(-1))
        assert score("mean_prob", [-0.1, -0.1]) == pytest.approx(math.exp(-0.1))
        cfg = parse_config({"routing": {"cascade": {"scorer": "test_length"}}})
        assert cfg.routing.cascade.scorer == "test_length"
    finally:
        SCORERS.unregister("test_length")
        SCORERS.unregister("test_first")


# -- config -----------------------------------------------------------------------------

def test_cascade_config_defaults_and_keys() -> None:
    c = parse_config({}).routing.cascade
    assert (c.scorer, c.answer_pattern, c.samples, c.sample_temperature) == (
        "mean_prob", None, 5, 0.7)
    c = parse_config({"routing": {"cascade": {
        "scorer": "agreement", "samples": 3, "sample_temperature": 1.0,
        "answer_pattern": r"answer: (\w+)"}}}).routing.cascade
    opts = ScorerOptions.from_cascade(c)
    assert (opts.samples, opts.answer_pattern) == (3, r"answer: (\w+)")


def test_an_unknown_scorer_stops_the_node_at_start_up() -> None:
    """The scorer registry is open to plug-ins, so a name is checked when the node's
    router is built (``edgewise serve`` fails then, in one line), not when YAML parses."""
    from edgewise.api.app import create_app
    from edgewise.engines.fake import FakeEngine
    from edgewise.node import Node

    cfg = parse_config({"engine": {"kind": "fake"}, "audit": {"enabled": False},
                        "routing": {"cascade": {"scorer": "vibes"}}})
    with pytest.raises(ConfigError, match=r"routing.cascade.scorer: unknown scorer 'vibes'; "
                                          r"registered: agreement"):
        create_app(Node(cfg, FakeEngine()))


@pytest.mark.parametrize(("cascade", "fragment"), [
    ({"answer_pattern": "answer: ("}, "routing.cascade: answer_pattern is not a valid "
                                      "regular expression"),
    ({"answer_pattern": r"(\d*)"}, "matches the empty string"),
    ({"samples": 0}, "routing.cascade.samples: Input should be greater than or equal to 1"),
    ({"samples": 33}, "routing.cascade.samples: Input should be less than or equal to 32"),
    ({"sample_temperature": 0}, "routing.cascade.sample_temperature: Input should be "
                                "greater than 0"),
    ({"sample_temperature": 2.5}, "routing.cascade.sample_temperature: Input should be "
                                  "less than or equal to 2"),
    ({"sampels": 3}, "routing.cascade.sampels: unknown key; allowed keys here: enabled, "
                     "threshold, scorer, answer_pattern, samples, sample_temperature"),
])
def test_cascade_config_errors_name_the_key(cascade: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"routing": {"cascade": cascade}})
    assert fragment in str(err.value)

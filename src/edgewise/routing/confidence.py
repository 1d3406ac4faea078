"""Confidence scorers: how sure a tier was of its answer.

The cascade (``routing/service.py``) scores each answer of a tier below the top of the
plan and escalates when the score is below the calibrated ``routing.cascade.threshold``.
A scorer is a :class:`Scorer` subclass registered by name (``routing.cascade.scorer``).
It receives the tier's answer (:class:`~edgewise.tiers.base.ChatAnswer`: text and
OpenAI ``logprobs.content`` items, each with optional ``top_logprobs``) and, if it asks,
extra answers sampled from the same tier; it declares what it needs:

- ``top_logprobs``: how many alternatives per token it reads (the router asks the tier
  for at least that many and trims them back to what the client asked for);
- ``uses_samples``: whether it reads sampled answers; the router then draws
  ``routing.cascade.samples`` of them at ``routing.cascade.sample_temperature``
  (:func:`sample_requests`).

Every score is clipped to ``[0, 1]``; higher means more likely right. Scorers, with
``logp_i`` the log-probability of answer token ``i`` and ``n`` the number of tokens:

- ``mean_prob``: ``exp((1/n) Σ_i logp_i)``, the geometric-mean token probability — the
  length-normalised sequence likelihood, a standard uncertainty baseline (Malinin &
  Gales 2021, "Uncertainty estimation in autoregressive structured prediction").
- ``min_prob``: ``exp(min_i logp_i)`` — one unlikely token (a wrong digit) is enough to
  doubt the answer.
- ``tail_mean_prob``: the geometric mean over the ``max(1, n // 10)`` least likely
  tokens: between the two, robust to a single odd token.
- ``answer_prob``: ``mean_prob`` restricted to the tokens of the *final answer span*
  ``S`` (:func:`answer_span`): ``exp((1/|S|) Σ_{i∈S} logp_i)``. Chain-of-thought tokens
  are mostly fluent and likely whether or not the conclusion is right, so they dilute
  the signal; the probability of the answer tokens themselves is the quantity that
  answer-level calibration work measures (e.g. Kadavath et al. 2022, "Language models
  (mostly) know what they know", P(answer) of the final answer).
- ``margin``: the mean over ``S`` of ``p_i − max_{v ≠ y_i} p_i(v)``, the chosen token's
  probability minus the best alternative's (clipped at 0), from ``top_logprobs`` — the
  top-1 − top-2 margin of greedy decoding: the best-versus-second-best uncertainty of
  margin sampling (Scheffer et al. 2001, "Active hidden Markov models for information
  extraction"), here used as the score a selective classifier thresholds to abstain —
  for a cascade, to escalate (Geifman & El-Yaniv 2017, "Selective classification for
  deep neural networks"). With one-token answers (a multiple-choice letter) it
  separates "A at 0.32 vs B at 0.31" from "A at 0.32 vs B at 0.05", which the chosen
  token's probability alone cannot. Without alternatives (an upstream
  that ignores ``top_logprobs``) the runner-up is bounded by ``1 − p_i``, giving the
  lower bound ``max(0, 2 p_i − 1)``.
- ``agreement``: self-consistency (Wang et al. 2023, "Self-consistency improves chain of
  thought reasoning in language models", ICLR), used as a cascade's deferral signal by
  Yue et al. 2024 ("Large language model cascades with mixture of thought
  representations for cost-efficient reasoning", ICLR; their vote-based decision). The
  tier samples ``k`` more answers ``s_1..s_k`` at temperature ``T`` and, with ``a(·)``
  the extracted final answer (:func:`final_answer`) of the answer ``y`` that would be
  returned, ``confidence = (1/k) Σ_j [a(s_j) = a(y)]``. Yue et al. threshold the vote
  share of the *majority* answer; we score agreement with the answer actually returned
  (the main answer is not replaced by the vote), so the score is the estimated
  probability that a fresh sample agrees with it. A sample that failed (endpoint down,
  timed out) counts as disagreeing: the score stays on the scale the threshold was
  calibrated on (``k`` votes) and errs towards escalation, whereas skipping failures
  would make a flaky tier look *more* confident (1 of 1 beats 4 of 5).
  :meth:`Scorer.decided` lets the router stop sampling once the outcome is fixed: with
  ``a`` of ``m`` samples agreeing, the final score lies in ``[a/k, (a + k − m)/k]``;
  if that interval is entirely on one side of the threshold, the rest cannot change the
  decision (the score reported is then the lower bound ``a/k``).

The *final answer span* ``S`` and the final answer ``a(·)`` are found by
:mod:`edgewise.routing.answers` (the calibration graders use the same parser): the last
match of ``routing.cascade.answer_pattern``, else what follows the last ``####``, else
the last ``\\boxed{}``; without a span, ``S`` is the whole answer.
"""

from __future__ import annotations

import dataclasses
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, overload

from edgewise.chat import ChatAnswer, ChatRequest
from edgewise.config import CascadeConfig
from edgewise.registry import Registry
from edgewise.routing.answers import answer_span, final_answer

__all__ = [
    "SCORERS",
    "Scorer",
    "ScorerOptions",
    "build_scorer",
    "register_scorer",
    "sample_requests",
    "score",
]


@dataclass(frozen=True)
class ScorerOptions:
    """Settings a scorer may read (from ``routing.cascade``)."""

    #: Regular expression locating the final answer (its last match; group 1 if any).
    answer_pattern: str | None = None
    #: Sampled answers per scored answer, for scorers with ``uses_samples``.
    samples: int = 5

    @classmethod
    def from_cascade(cls, cascade: CascadeConfig) -> ScorerOptions:
        return cls(answer_pattern=cascade.answer_pattern, samples=cascade.samples)


class Scorer(ABC):
    """A confidence scorer. Subclasses set ``name`` (and what they need) and implement
    :meth:`_score`; :func:`register_scorer` makes them selectable by name."""

    #: The name in ``routing.cascade.scorer``.
    name: ClassVar[str]
    #: Alternatives per answer token this scorer reads (``top_logprobs`` items).
    top_logprobs: ClassVar[int] = 0
    #: Whether this scorer reads sampled answers (``options.samples`` of them).
    uses_samples: ClassVar[bool] = False

    def __init__(self, options: ScorerOptions | None = None) -> None:
        self.options = options or ScorerOptions()
        self.pattern = (re.compile(self.options.answer_pattern)
                        if self.options.answer_pattern else None)

    @property
    def samples(self) -> int:
        """Sampled answers the router must draw for each scored answer."""
        return self.options.samples if self.uses_samples else 0

    @abstractmethod
    def _score(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]) -> float:
        """The raw score (clipped by :meth:`__call__`)."""

    def __call__(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None] = ()
                 ) -> float:
        """Confidence in [0, 1]. ``samples``: the sampled answers, ``None`` for a sample
        that failed; fewer than :attr:`samples` means the rest were not drawn."""
        value = float(self._score(answer, samples))
        return 0.0 if math.isnan(value) else min(1.0, max(0.0, value))

    def decided(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None],
                threshold: float) -> bool:
        """Whether keep (score ≥ threshold) vs escalate is already fixed, whatever the
        samples not yet drawn say — the router then stops sampling. Default: never."""
        return False


#: Scorers by name (``routing.cascade.scorer``).
SCORERS: Registry[type[Scorer]] = Registry("scorer", key="routing.cascade.scorer")
_S = TypeVar("_S", bound=type[Scorer])


@overload
def register_scorer(cls: _S, /) -> _S: ...
@overload
def register_scorer(name: str, fn: Callable[[Sequence[float]], float], /) -> type[Scorer]: ...
def register_scorer(what: Any, fn: Any = None, /) -> Any:
    """Register a :class:`Scorer` subclass (usable as a class decorator), or — the older
    form — a function of the answer's token logprobs under ``name``.

    Raises:
        ValueError: the name is already registered.
    """
    if isinstance(what, str):
        logprob_fn: Callable[[Sequence[float]], float] = fn

        class _FromFunction(Scorer):
            name = what

            def _score(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]
                       ) -> float:
                return logprob_fn(answer.logprobs)

        _FromFunction.__name__ = _FromFunction.__qualname__ = f"Scorer[{what}]"
        cls = _FromFunction
    else:
        cls = what
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"scorer class {cls.__name__} must set a non-empty `name`")
    if name in SCORERS:  # a class is a new object even with the same body
        raise ValueError(f"scorer {name!r} is already registered")
    SCORERS.register(name, cls)
    return what if not isinstance(what, str) else cls


def build_scorer(name: str, options: ScorerOptions | None = None) -> Scorer:
    """The registered scorer ``name``, configured.

    Raises:
        ConfigError: no scorer has that name (the message lists those that do).
    """
    return SCORERS.get(name)(options)


def score(name: str, logprobs: Sequence[float]) -> float:
    """Confidence of an answer known only by its token logprobs (no text, alternatives
    or samples), with default options; 0 when there are none to judge by."""
    answer = ChatAnswer("", "stop", "", logprob_items=[
        {"token": "", "logprob": float(lp), "bytes": [], "top_logprobs": []} for lp in logprobs])
    return build_scorer(name)(answer)


def sample_requests(req: ChatRequest, k: int, temperature: float) -> list[ChatRequest]:
    """The ``k`` requests whose answers a sampling scorer compares with ``req``'s: same
    messages, limits and stops, at ``temperature``; seeded ``seed + j`` (j = 1..k) when
    the client fixed a seed (reproducible), unseeded otherwise. Logprobs stay on (cheap;
    a scorer may weigh samples by them), alternatives off."""
    return [dataclasses.replace(
        req, temperature=temperature, logprobs=True, top_logprobs=0, n=1,
        seed=None if req.seed is None else req.seed + j) for j in range(1, k + 1)]


# -- the final answer span -------------------------------------------------------------


def span_items(answer: ChatAnswer, pattern: re.Pattern[str] | None = None
               ) -> list[dict[str, Any]]:
    """The logprob items of the tokens that overlap the final answer span; all of them
    when there is no span or the tokens cannot be lined up with the text.

    Tokens are lined up by their ``bytes`` (exact, also for characters split across
    tokens), else by their ``token`` strings when those concatenate to the text."""
    items = answer.logprob_items
    span = answer_span(answer.text, pattern)
    if span is None or not items:
        return list(items)
    a, b = span
    if all(isinstance(i.get("bytes"), list) for i in items) and sum(
            len(i["bytes"]) for i in items) == len(answer.text.encode("utf-8")):
        a, b = len(answer.text[:a].encode("utf-8")), len(answer.text[:b].encode("utf-8"))
        widths = [len(i["bytes"]) for i in items]
    elif "".join(str(i.get("token", "")) for i in items) == answer.text:
        widths = [len(str(i.get("token", ""))) for i in items]
    else:
        return list(items)
    out, start = [], 0
    for item, w in zip(items, widths, strict=True):
        if start < b and start + w > a:  # token [start, start + w) overlaps [a, b)
            out.append(item)
        start += w
    return out or list(items)


# -- the scorers ----------------------------------------------------------------------

def _geo_mean(lps: Sequence[float]) -> float:
    return math.exp(sum(lps) / len(lps)) if lps else 0.0


@register_scorer
class MeanProb(Scorer):
    name = "mean_prob"

    def _score(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]) -> float:
        return _geo_mean(answer.logprobs)


@register_scorer
class MinProb(Scorer):
    name = "min_prob"

    def _score(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]) -> float:
        lps = answer.logprobs
        return math.exp(min(lps)) if lps else 0.0


@register_scorer
class TailMeanProb(Scorer):
    name = "tail_mean_prob"

    def _score(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]) -> float:
        lps = answer.logprobs
        if not lps:
            return 0.0
        k = max(1, len(lps) // 10)
        return _geo_mean(sorted(lps)[:k])


@register_scorer
class AnswerProb(Scorer):
    name = "answer_prob"

    def _score(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]) -> float:
        return _geo_mean([float(i["logprob"]) for i in span_items(answer, self.pattern)])


@register_scorer
class Margin(Scorer):
    name = "margin"
    top_logprobs = 2

    def _score(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]) -> float:
        margins = []
        for item in span_items(answer, self.pattern):
            p = math.exp(float(item["logprob"]))
            others = [math.exp(float(t["logprob"])) for t in item.get("top_logprobs") or ()
                      if t.get("token") != item.get("token")]
            runner_up = max(others) if others else 1.0 - p
            margins.append(max(0.0, p - runner_up))
        return sum(margins) / len(margins) if margins else 0.0


@register_scorer
class Agreement(Scorer):
    name = "agreement"
    uses_samples = True

    def _counts(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]
                ) -> tuple[int, int]:
        """(agreeing samples, the k that the score is out of)."""
        k = max(self.samples, len(samples), 1)
        main = final_answer(answer.text, self.pattern)
        if main is None:
            return 0, k
        agree = sum(1 for s in samples
                    if s is not None and final_answer(s.text, self.pattern) == main)
        return agree, k

    def _score(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None]) -> float:
        agree, k = self._counts(answer, samples)
        return agree / k

    def decided(self, answer: ChatAnswer, samples: Sequence[ChatAnswer | None],
                threshold: float) -> bool:
        if final_answer(answer.text, self.pattern) is None:
            return True  # nothing to agree with: 0 whatever the samples say
        agree, k = self._counts(answer, samples)
        best = (agree + max(0, k - len(samples))) / k
        return agree / k >= threshold or best < threshold

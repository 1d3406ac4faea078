"""Calibrating the cascade threshold: the cheapest threshold that keeps accuracy.

A two-tier cascade answers every request with the small tier, scores that answer's
confidence ``c_i`` (``edgewise.routing.confidence``), and escalates to the large tier
when ``c_i < t``. Given a labelled set of ``n`` examples with, for each ``i``:

- ``c_i``  confidence of the small tier's answer,
- ``s_i``  whether the small tier's answer is correct (0/1),
- ``l_i``  whether the large tier's answer is correct (0/1),
- ``a_i``, ``b_i``  the cost of asking the small / large tier (tokens, seconds, money),

the cascade at threshold ``t`` escalates ``E(t) = {i : c_i < t}`` and has

    escalation rate  r(t)   = |E(t)| / n
    accuracy         acc(t) = (1/n) Σ_i [ l_i if i ∈ E(t) else s_i ]
    cost             C(t)   = Σ_i a_i + Σ_{i ∈ E(t)} b_i     (mean per example reported)

Only the order of ``t`` among the ``c_i`` matters, so the candidates are every distinct
confidence value (escalate everything strictly below it), plus ``0`` (never escalate)
and ``1 + ε`` (always escalate; every ``c_i ≤ 1``). ``C(t)`` and ``r(t)`` are
non-decreasing in ``t``; ``acc(t)`` is not monotone — it rises when an escalated answer
was wrong on the small tier and right on the large one, and falls in the opposite case.

The goal is a fraction ``τ`` (e.g. 0.95) of the top tier's quality:
``acc(t) ≥ τ · acc_large`` with ``acc_large = mean(l_i)``. Among the thresholds that meet
it we choose the one of least cost, ties going to the higher accuracy (then to the lower
threshold). If none meets it, the most accurate point is returned with ``met=False`` —
the caller must say so rather than pretend. (With ``τ ≤ 1`` the always-escalate point
has ``acc = acc_large`` and always qualifies, so ``met=False`` needs ``τ > 1``: asking
the cascade to *beat* the large tier, which it can when the small tier is right where
the large one is wrong. Whether the chosen point is also *cheap* is the caller's
question: look at ``chosen.cost`` against ``large_cost``.) The chosen threshold is a
point estimate on the calibration set; evaluate it on held-out data before trusting it
(``bench/cascade.py``).

Sorting once makes the sweep ``O(n log n)``: walking the candidates upwards, each step
moves the examples whose confidence equals the previous candidate into the escalated set.

The second half of this module feeds it (``edgewise calibrate``): a labelled JSONL file
(:func:`load_labelled`), graders (:func:`grade`), :func:`collect` — which asks the small
and the large tier of a fleet config for every example through the node's own router,
in-process, so the answers come from the code path production uses, with what the
configured scorer needs (``top_logprobs``; for a sampling scorer such as ``agreement``,
``k`` more answers of the small tier, whose tokens are added to its cost ``a_i``) — and
:func:`write_calibration`, which records the result in the YAML file. ``c_i`` is then
``scorer(answer_i, samples_i)``, exactly what the router computes when serving.

Labelled JSONL, one object per line::

    {"prompt": "What is 6 x 7?", "answer": "42", "grader": "number"}
    {"messages": [{"role": "user", "content": "..."}], "answer": "B", "grader": "choice"}

``messages`` (OpenAI chat messages) or ``prompt`` (one user message); ``answer`` the gold
answer; ``id`` optional (default: the line number; :func:`write_router_data` keeps it);
``grader`` one of:

- ``exact``: the reply equals the answer, ignoring case, surrounding whitespace, runs of
  spaces and trailing ``.``;
- ``number``: the first number of the reply's final answer span (after its last
  ``####``, else in its last ``\\boxed{}``: :mod:`edgewise.routing.answers`, the
  parser the ``agreement`` scorer uses too), else its last number, equals the
  answer's, numerically (``$`` and ``,`` ignored);
- ``choice``: the first standalone letter A–H of the reply equals the answer's letter.

Graders are registered by name (:data:`GRADERS`, :func:`register_grader`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgewise.chat import ChatAnswer, ChatRequest, Message
from edgewise.errors import ConfigError, EdgewiseError, RequestError, UnavailableError
from edgewise.registry import Registry
from edgewise.routing.answers import parse_choice, parse_number

if TYPE_CHECKING:
    import httpx

    from edgewise.config import EdgewiseConfig
    from edgewise.engines import Engine
    from edgewise.routing.confidence import Scorer

__all__ = [
    "ALWAYS_ESCALATE",
    "GRADERS",
    "CalibrationPoint",
    "CalibrationResult",
    "Collected",
    "LabelledExample",
    "calibrate_threshold",
    "collect",
    "grade",
    "load_labelled",
    "register_grader",
    "write_calibration",
]

#: The candidate threshold that escalates every answer (confidences lie in [0, 1]).
ALWAYS_ESCALATE = 1.0 + 1e-9


@dataclass(frozen=True)
class CalibrationPoint:
    """One candidate threshold and what the cascade would do with it."""

    threshold: float
    escalation_rate: float
    accuracy: float
    #: Mean cost per example (small tier always, large tier when escalated).
    cost: float

    def as_dict(self) -> dict[str, float]:
        return {"threshold": self.threshold, "escalation_rate": self.escalation_rate,
                "accuracy": self.accuracy, "cost": self.cost}


@dataclass(frozen=True)
class CalibrationResult:
    """The chosen threshold and the whole accuracy/cost curve behind it."""

    #: The cheapest point meeting the target (or, with ``met=False``, the most accurate).
    chosen: CalibrationPoint
    #: Every candidate, by increasing threshold.
    curve: tuple[CalibrationPoint, ...]
    #: ``target × large_accuracy``: the accuracy the chosen point had to reach.
    required_accuracy: float
    target: float
    met: bool
    n: int
    small_accuracy: float
    large_accuracy: float
    small_cost: float
    large_cost: float

    @property
    def threshold(self) -> float:
        """The threshold to configure, clipped into ``[0, 1]`` (``routing.cascade``)."""
        return min(1.0, self.chosen.threshold)


def calibrate_threshold(
    confidence: Sequence[float],
    small_correct: Sequence[bool],
    large_correct: Sequence[bool],
    small_cost: Sequence[float],
    large_cost: Sequence[float],
    *,
    target: float = 0.95,
) -> CalibrationResult:
    """Sweep every candidate threshold and pick the cheapest that keeps ``target`` of
    the large tier's accuracy (see the module docstring for the maths).

    Raises:
        ValueError: empty or unequal-length inputs, a confidence outside [0, 1] or NaN,
            a negative cost, or a target outside (0, 2].
    """
    n = len(confidence)
    lengths = [n, len(small_correct), len(large_correct), len(small_cost), len(large_cost)]
    if n == 0 or set(lengths) != {n}:
        raise ValueError(f"calibration needs equally long, non-empty inputs; got lengths "
                         f"{lengths}")
    if not 0.0 < target <= 2.0:
        raise ValueError(f"target must be in (0, 2], a fraction of the large tier's accuracy "
                         f"(got {target})")
    for i, c in enumerate(confidence):
        if math.isnan(c) or not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence[{i}] = {c} is not in [0, 1]")
    if any(x < 0 for x in small_cost) or any(x < 0 for x in large_cost):
        raise ValueError("costs must be >= 0")

    s = [1 if x else 0 for x in small_correct]
    lg = [1 if x else 0 for x in large_correct]
    # 1. Start at t = 0: nothing is escalated.
    kept_correct = sum(s)
    escalated_correct = 0
    escalated_cost = 0.0
    escalated = 0
    base_cost = float(sum(small_cost))
    order = sorted(range(n), key=lambda i: confidence[i])
    thresholds = [0.0, *sorted({float(c) for c in confidence if c > 0.0}), ALWAYS_ESCALATE]

    curve: list[CalibrationPoint] = []
    j = 0  # order[:j] are escalated
    for t in thresholds:
        # 2. Escalate every example with confidence < t (those not yet escalated).
        while j < n and confidence[order[j]] < t:
            i = order[j]
            kept_correct -= s[i]
            escalated_correct += lg[i]
            escalated_cost += float(large_cost[i])
            escalated += 1
            j += 1
        curve.append(CalibrationPoint(
            threshold=t, escalation_rate=escalated / n,
            accuracy=(kept_correct + escalated_correct) / n,
            cost=(base_cost + escalated_cost) / n))

    # 3. The cheapest point meeting the target; ties -> higher accuracy, lower threshold.
    large_acc = sum(lg) / n
    required = target * large_acc
    eps = 1e-12  # accuracies are ratios of small integers; guard float rounding
    meeting = [p for p in curve if p.accuracy >= required - eps]
    if meeting:
        chosen = min(meeting, key=lambda p: (p.cost, -p.accuracy, p.threshold))
    else:
        chosen = min(curve, key=lambda p: (-p.accuracy, p.cost, p.threshold))
    return CalibrationResult(
        chosen=chosen, curve=tuple(curve), required_accuracy=required, target=target,
        met=bool(meeting), n=n, small_accuracy=sum(s) / n, large_accuracy=large_acc,
        small_cost=base_cost / n, large_cost=float(sum(large_cost)) / n)


# -- labelled data and graders -----------------------------------------------------------

def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold().rstrip(".").strip()


def _grade_exact(reply: str, gold: str) -> bool:
    return _normalise(reply) == _normalise(gold)


def _grade_number(reply: str, gold: str) -> bool:
    want, got = parse_number(gold), parse_number(reply)
    return want is not None and got is not None and math.isclose(got, want, abs_tol=1e-6)


def _grade_choice(reply: str, gold: str) -> bool:
    want = parse_choice(gold.strip().upper())
    return want is not None and parse_choice(reply) == want


#: Graders by name: (reply, gold answer) -> correct.
GRADERS: Registry[Callable[[str, str], bool]] = Registry("grader", key="grader")
for _name, _fn in (("exact", _grade_exact), ("number", _grade_number),
                   ("choice", _grade_choice)):
    GRADERS.register(_name, _fn)


def register_grader(name: str, fn: Callable[[str, str], bool]) -> None:
    """Make ``fn(reply, gold) -> correct`` usable as ``"grader": name`` in labelled data."""
    GRADERS.register(name, fn)


def grade(grader: str, reply: str, gold: str) -> bool:
    return GRADERS.get(grader)(reply, gold)


@dataclass(frozen=True)
class LabelledExample:
    messages: tuple[tuple[str, str], ...]  # (role, content)
    answer: str
    grader: str
    #: The line's ``id`` (default: its line number).
    id: str = ""


def load_labelled(path: Path) -> list[LabelledExample]:
    """Read a labelled JSONL file (format in the module docstring).

    Raises:
        ConfigError: naming the file and line of the first bad line and what is expected.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--data {path}: cannot be read: {exc}") from exc
    out = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON ({exc.msg}); each line must be one "
                              "object {messages|prompt, answer, grader}") from exc
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: must be a JSON object, got {type(row).__name__}")
        out.append(dataclasses.replace(_example(row, where),
                                       id=str(row.get("id", lineno))))
    if not out:
        raise ConfigError(f"--data {path}: no examples (one JSON object per line expected)")
    return out


def _example(row: dict[str, Any], where: str) -> LabelledExample:
    unknown = sorted(set(row) - {"id", "messages", "prompt", "answer", "grader"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                          "allowed: id, messages or prompt, answer, grader")
    if "id" in row and (isinstance(row["id"], bool)
                        or not isinstance(row["id"], (str, int))):
        raise ConfigError(f"{where}: id must be a string or an integer")
    grader = row.get("grader")
    if not isinstance(grader, str) or grader not in GRADERS:
        raise ConfigError(f"{where}: {GRADERS.unknown(str(grader))}")
    answer = row.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ConfigError(f"{where}: answer must be a non-empty string")
    if ("messages" in row) == ("prompt" in row):
        raise ConfigError(f"{where}: give exactly one of messages (a list of "
                          "{role, content}) or prompt (a string)")
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"]:
            raise ConfigError(f"{where}: prompt must be a non-empty string")
        return LabelledExample((("user", row["prompt"]),), answer, grader)
    msgs = row["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise ConfigError(f"{where}: messages must be a non-empty list of {{role, content}}")
    pairs = []
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise ConfigError(f"{where}: messages[{i}] must be {{\"role\": str, "
                              "\"content\": str}")
        pairs.append((m["role"], m["content"]))
    return LabelledExample(tuple(pairs), answer, grader)


# -- asking the tiers --------------------------------------------------------------------

@dataclass
class Collected:
    """Per-example measurements of one tier (lists aligned with the examples)."""

    tier: str
    replies: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    logprobs: list[list[float]] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)  # prompt + completion
    #: The answers as the router's scorers see them (text, logprob items).
    answers: list[ChatAnswer] = field(default_factory=list)
    #: Sampled answers per example (``samples`` > 0 only).
    samples: list[list[ChatAnswer | None]] = field(default_factory=list)
    #: Tokens (prompt + completion) spent on those samples, per example.
    sample_tokens: list[int] = field(default_factory=list)

    def confidence(self, scorer: Scorer) -> list[float]:
        """``scorer``'s confidence for every collected answer."""
        return [scorer(a, s) for a, s in zip(self.answers, self.samples, strict=True)]


async def collect(
    config: EdgewiseConfig,
    examples: Sequence[LabelledExample],
    tiers: Sequence[str],
    *,
    max_tokens: int = 256,
    temperature: float = 0.0,
    top_logprobs: int = 0,
    samples: int = 0,
    sample_temperature: float = 0.7,
    sampled_tiers: Sequence[str] | None = None,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
    engine: Engine | None = None,
    on_answer: Callable[[str, int], None] | None = None,
) -> dict[str, Collected]:
    """Ask each of ``tiers`` every example (``model: "<tier>"``, with logprobs and
    ``top_logprobs``) through this node's own router, in-process, with the cascade off
    — the path every served request takes: privacy guard, routing, audit. For
    ``sampled_tiers`` (default: all but the last of ``tiers``, the ones a cascade
    scores) also draw ``samples`` answers per example at ``sample_temperature``, as the
    router does for a sampling scorer
    (:func:`~edgewise.routing.confidence.sample_requests`; here seeded ``1..k``).

    ``engine`` replaces the local engine (default: built from the config);
    ``transports`` maps upstream URLs to httpx transports (tests). ``on_answer(tier, i)``
    is called after each answer (progress bars).
    """
    from edgewise.node import Node, build_engine
    from edgewise.routing.confidence import sample_requests
    from edgewise.routing.service import Queued, RequestContext, Router
    from edgewise.tiers.fleet import Fleet

    routing = dataclasses.replace(
        config.routing, cascade=dataclasses.replace(config.routing.cascade, enabled=False))
    cfg = dataclasses.replace(config, routing=routing)
    node = Node(cfg, engine if engine is not None else build_engine(cfg))
    await node.start()
    if not node.ready:
        raise UnavailableError(node.load_error or "the local model did not load")
    router = Router(cfg, Fleet(cfg, node, transports=transports), node.metrics)
    sampled = set(tiers[:-1] if sampled_tiers is None else sampled_tiers)
    out = {t: Collected(t) for t in tiers}
    try:
        router.start()
        await router.wait_guard()  # labelled data is screened like any request

        async def ask(req: ChatRequest, tier: str, i: int) -> ChatAnswer:
            ctx = RequestContext(request_id=f"calibrate-{tier}-{i}", requester="calibrate",
                                 declared=cfg.routing.default_sensitivity)
            try:
                result = await router.chat(req, ctx)
            except UnavailableError as exc:
                raise UnavailableError(f"tier {tier!r} failed on example {i + 1}: {exc}"
                                       ) from exc
            except RequestError as exc:
                raise RequestError(f"tier {tier!r} failed on example {i + 1}: {exc}",
                                   code=exc.code) from exc
            assert not isinstance(result, Queued)
            return result[0]

        for tier in tiers:
            for i, ex in enumerate(examples):
                req = ChatRequest(messages=tuple(Message(r, c) for r, c in ex.messages),
                                  model=tier, max_tokens=max_tokens,
                                  temperature=temperature, logprobs=True,
                                  top_logprobs=top_logprobs)
                answer = await ask(req, tier, i)
                drawn: list[ChatAnswer | None] = []
                if tier in sampled and samples:
                    for sreq in sample_requests(dataclasses.replace(req, seed=0),
                                                samples, sample_temperature):
                        drawn.append(await ask(sreq, tier, i))
                got = out[tier]
                got.replies.append(answer.text)
                got.correct.append(grade(ex.grader, answer.text, ex.answer))
                got.logprobs.append(answer.logprobs)
                got.tokens.append(answer.prompt_tokens + answer.completion_tokens)
                got.answers.append(answer)
                got.samples.append(drawn)
                got.sample_tokens.append(sum(s.prompt_tokens + s.completion_tokens
                                             for s in drawn if s is not None))
                if on_answer is not None:
                    on_answer(tier, i)
    finally:
        await router.stop()
        await node.stop()
    return out


# -- recording the result ----------------------------------------------------------------

def write_router_data(path: Path, examples: Sequence[LabelledExample], small: Collected,
                      large: Collected) -> int:
    """The learned router's training file (``edgewise router train``): one line per
    example, ``{"id", "prompt", "small_correct", "large_correct", "small_tokens",
    "large_tokens"}``; ``prompt`` is what the router reads of the chat (its last user
    message). Returns the number of lines written."""
    from edgewise.routing.learned import router_text

    lines = []
    for i, ex in enumerate(examples):
        lines.append(json.dumps({
            "id": ex.id or str(i + 1), "prompt": router_text(ex.messages),
            "small_correct": small.correct[i], "large_correct": large.correct[i],
            "small_tokens": small.tokens[i], "large_tokens": large.tokens[i]},
            ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(path)
    return len(lines)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def calibration_record(result: CalibrationResult, *, scorer: str, small: str, large: str,
                       data: Path, settings: dict[str, Any] | None = None,
                       max_points: int = 50) -> dict[str, Any]:
    """The ``routing.cascade.calibration`` mapping: settings, the chosen point and the
    curve (thinned to about ``max_points``, keeping both ends and the chosen point).
    ``settings``: what the scorer's numbers depend on (answer pattern, samples...)."""
    curve = list(result.curve)
    if len(curve) > max_points:
        step = math.ceil(len(curve) / max_points)
        curve = sorted({*curve[::step], curve[-1], result.chosen}, key=lambda p: p.threshold)
    return {
        "target": result.target, "scorer": scorer, "scorer_settings": settings or {},
        "small": small, "large": large,
        "n": result.n, "met": result.met, "required_accuracy": round(result.required_accuracy, 6),
        "small_accuracy": round(result.small_accuracy, 6),
        "large_accuracy": round(result.large_accuracy, 6),
        "small_cost": round(result.small_cost, 6), "large_cost": round(result.large_cost, 6),
        "cost_unit": "tokens per example",
        "chosen": _point(result.chosen), "curve": [_point(p) for p in curve],
        "data": str(data), "data_sha256": file_digest(data),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def _point(p: CalibrationPoint) -> dict[str, float]:
    return {k: (v if k == "threshold" else round(v, 6)) for k, v in p.as_dict().items()}


def write_calibration(config_path: Path, threshold: float, record: dict[str, Any], *,
                      scorer: str | None = None) -> Path:
    """Set ``routing.cascade.threshold`` and ``.calibration`` (and ``.scorer``, if
    given: the threshold only means something for the scorer it was calibrated for) in a
    YAML config file.

    PyYAML's round trip drops comments and reorders nothing else; the original is first
    copied to ``<file>.bak``, whose path is returned. The new file is validated before
    it replaces the old one.
    """
    import yaml

    from edgewise.config import parse_config

    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{config_path}: cannot be read back: {exc}") from exc
    routing = data.setdefault("routing", {}) or {}
    data["routing"] = routing
    cascade = routing.setdefault("cascade", {}) or {}
    routing["cascade"] = cascade
    cascade["threshold"] = min(1.0, max(0.0, threshold))
    if scorer is not None:
        cascade["scorer"] = scorer
    cascade["calibration"] = record
    parse_config(data, source=f"{config_path} (calibrated)")
    backup = config_path.with_name(config_path.name + ".bak")
    try:
        shutil.copy2(config_path, backup)
        tmp = config_path.with_name(config_path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
                       encoding="utf-8")
        tmp.replace(config_path)
    except OSError as exc:
        raise EdgewiseError(f"cannot write {config_path}: {exc}") from exc
    return backup

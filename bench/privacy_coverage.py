"""Coverage cases for the privacy guard: every HIPAA Safe Harbor identifier that can
appear in text (45 CFR 164.514(b)(2)(i)(A)–(R), less full-face photographs) and the
GDPR-style national identifiers, in realistic prompts to an assistant, with gold spans.

Its own template family (not the unit tests' sentences): patient-portal messages,
claims e-mails, HR exports, CSV pastes, JSON tool arguments, dictated notes, travel
bookings, car-insurance claims and support chats. Values are seeded and realistic:
national numbers carry valid check digits (python-stdnum's validators accept every one
generated: Steuer-ID, NIR, DNI/NIE, codice fiscale, Aadhaar, PAN, CPF, IMEI, NHS; VINs,
NPI, DEA and KVNR get their check digits computed here).

* :func:`coverage_cases` — per category ``n`` cases (``Case.source`` is
  ``"cov:<category>"``, ``meta["variant"]`` the spelling), gold spans named by the
  HIPAA/GDPR category ("street address", "date of birth", "passport"…), not by whatever
  entity type a guard reports. Each category is spelt several ways: plain, lower case,
  odd separators, inside a JSON tool argument (JSON-escaped), digits written as words;
  numbers written out in words (EN, DE, FR, ES, IT) and key-named records (JSON, CSV,
  key-value) are categories of their own.
* :func:`benign_cases` — near misses per category, about no one (a historical date, a
  year, a product model number, the documented example IBAN): the false-positive column.
* ``python bench/privacy_coverage.py --predict IN OUT`` — the guard importable as
  ``edgewise`` (``PYTHONPATH`` picks which: bench/privacy.py runs the guard of an older
  commit this way, from a git worktree) reads a JSON list of segment lists and writes its
  findings per case. This module imports nothing from edgewise at module level.
* ``python bench/privacy_coverage.py --time`` — the same guard as a timing server for
  bench/privacy.py's latency section: reads one JSON segment list per stdin line, clears
  the guard's cache, times ``detect`` and writes the milliseconds as one line (so the old
  and the new guard can alternate request by request).
"""

from __future__ import annotations

import json
import random
import re
import string
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).parent))

from privacy_data import Case, Gold

__all__ = ["CATEGORIES", "VARIANTS", "bench_cases", "benign_cases", "coverage_cases",
           "predict_main", "raw_values"]

# ---------------------------------------------------------------------------------------
# categories: name → the rule it comes from


CATEGORIES: dict[str, str] = {
    "name": "HIPAA (A)",
    "street address": "HIPAA (B)",
    "city + postcode": "HIPAA (B)",
    "date of birth": "HIPAA (C)",
    "admission/discharge date": "HIPAA (C)",
    "date of death": "HIPAA (C)",
    "age over 89": "HIPAA (C)",
    "phone": "HIPAA (D)",
    "fax": "HIPAA (E)",
    "e-mail": "HIPAA (F)",
    "SSN": "HIPAA (G)",
    "MRN": "HIPAA (H)",
    "health plan number": "HIPAA (I)",
    "account number": "HIPAA (J)",
    "certificate/licence number": "HIPAA (K)",
    "VIN": "HIPAA (L)",
    "licence plate": "HIPAA (L)",
    "device identifier": "HIPAA (M)",
    "personal URL": "HIPAA (N)",
    "IP address": "HIPAA (O)",
    "biometric identifier": "HIPAA (P)",
    "other unique ID": "HIPAA (R)",
    "passport": "GDPR Art. 87",
    "UK NINO": "GDPR Art. 87",
    "DE Steuer-ID": "GDPR Art. 87",
    "FR NIR": "GDPR Art. 87",
    "ES DNI": "GDPR Art. 87",
    "ES NIE": "GDPR Art. 87",
    "IT codice fiscale": "GDPR Art. 87",
    "IN Aadhaar": "GDPR-style (DPDP)",
    "IN PAN": "GDPR-style (DPDP)",
    "BR CPF": "GDPR-style (LGPD)",
    "SSN in words": "HIPAA (G), spoken",
    "phone in words": "HIPAA (D), spoken",
    "card in words": "HIPAA (J), spoken",
    "MRN in words": "HIPAA (H), spoken",
    "record: JSON": "key-named fields",
    "record: CSV": "key-named fields",
    "record: key-value": "key-named fields",
}

# ---------------------------------------------------------------------------------------
# rendering: templates with {slot}s (lower-case names; JSON braces never match)


_SLOT = re.compile(r"\{([a-z][a-z0-9_]*)\}")
Slots = dict[str, tuple[str | None, str]]  # slot → (gold category or None, value)


@dataclass
class Rendered:
    text: str
    gold: list[tuple[int, int, str, str]]  # start, end, category, raw value


def render(template: str, slots: Slots, encode: Callable[[str], str] = lambda s: s
           ) -> Rendered:
    """Fill ``template``; ``encode`` is applied to every chunk (JSON escaping is per
    character, so escaping chunk by chunk equals escaping the whole)."""
    out: list[str] = []
    gold = []
    pos = length = 0
    for m in _SLOT.finditer(template):
        lit = encode(template[pos:m.start()])
        out.append(lit)
        length += len(lit)
        category, raw = slots[m.group(1)]
        val = encode(raw)
        if category is not None:
            gold.append((length, length + len(val), category, raw))
        out.append(val)
        length += len(val)
        pos = m.end()
    out.append(encode(template[pos:]))
    return Rendered("".join(out), gold)


_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def _json_encoder(escape_more: bool) -> Callable[[str], str]:
    def enc(s: str) -> str:
        e = json.dumps(s, ensure_ascii=True)[1:-1]
        if escape_more:
            e = e.replace("-", "\\u002d").replace("@", "\\u0040").replace(".", "\\u002e")
        return e
    return enc


# ---------------------------------------------------------------------------------------
# digits as words


WORDS: dict[str, list[str]] = {
    "EN": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"],
    "DE": ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"],
    "FR": ["zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"],
    "ES": ["cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"],
    "IT": ["zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"],
}
_PLUS = {"EN": "plus", "DE": "plus", "FR": "plus", "ES": "más", "IT": "più"}
_DASH = {"EN": "dash", "DE": "Strich", "FR": "tiret", "ES": "guion", "IT": "trattino"}


def in_words(value: str, lang: str, rng: random.Random) -> str:
    """Digit by digit in ``lang``; separators become a comma, a pause word or nothing."""
    sep = rng.choice([", ", " ", f" {_DASH[lang]} "])
    words: list[str] = []
    for tok in re.findall(r"\d|[A-Za-z]|\+|[^\w+]+", value):
        if tok.isdigit():
            words.append(WORDS[lang][int(tok)])
        elif tok == "+":
            words.append(_PLUS[lang])
        elif tok.isalpha():
            words.append(tok)
        elif words and words[-1] != "<sep>":
            words.append("<sep>")
    text = " ".join(words).strip()
    text = text.replace(" <sep> ", sep).replace("<sep>", "").strip()
    return text


_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def age_in_words(age: int) -> str:
    if age >= 100:
        rest = age - 100
        return "one hundred" + (f" and {_ONES[rest]}" if rest else "")
    return "ninety" + (f"-{_ONES[age - 90]}" if age > 90 else "")


# ---------------------------------------------------------------------------------------
# values


_T = TypeVar("_T")
_VIN_CHARS = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"
_VIN_VALUE = {**{str(d): d for d in range(10)},
              **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
              **dict(zip("JKLMN", range(1, 6), strict=True)), "P": 7, "R": 9,
              **dict(zip("STUVWXYZ", range(2, 10), strict=True))}
_VIN_WEIGHTS = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]
_MBI_ALPHA = "ACDEFGHJKMNPQRTUVWXY"
_CF_MONTHS = "ABCDEHLMPRST"
_CF_TOWNS = ["H501", "F205", "L219", "A944", "G273", "D612", "F839", "L736"]


class CovValues:
    """Seeded generators; every number with a check digit is valid."""

    def __init__(self, seed: int) -> None:
        from faker import Faker

        self.rng = random.Random(seed)
        self.locales = ["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT"]
        self.fakers = {loc: Faker(loc) for loc in self.locales}
        for i, f in enumerate(self.fakers.values()):
            f.seed_instance(seed + i)
        self.us = self.fakers["en_US"]

    # helpers
    def choice(self, items: Sequence[_T]) -> _T:
        return self.rng.choice(items)

    def digits(self, n: int, first: str = string.digits) -> str:
        return self.rng.choice(first) + "".join(self.rng.choice(string.digits)
                                                for _ in range(n - 1))

    def letters(self, n: int, alphabet: str = string.ascii_uppercase) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def locale(self) -> str:
        return str(self.choice(self.locales))

    # HIPAA (A)–(C)
    def name(self) -> str:
        f = self.fakers[self.locale()]
        return f"{f.first_name()} {f.last_name()}"

    def street(self) -> str:
        r = self.rng.random()
        us = self.us
        if r < 0.3:
            return str(us.street_address())
        if r < 0.4:
            return f"{us.building_number()} {us.street_name()}, " + self.choice(
                [f"Apt {self.rng.randint(1, 40)}{self.choice(['', 'B', 'C'])}",
                 f"Unit {self.rng.randint(100, 999)}", f"#{self.rng.randint(2, 30)}"])
        if r < 0.5:
            return self.choice(["PO Box ", "P.O. Box ", "Post Office Box "]) + self.digits(
                self.rng.randint(3, 5), "123456789")
        loc = self.choice(["en_GB", "de_DE", "fr_FR", "es_ES", "it_IT"])
        return str(self.fakers[loc].street_address()).replace("\n", ", ")

    def city_postcode(self) -> str:
        loc = self.choice(["en_US", "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT"])
        f = self.fakers[loc]
        if loc == "en_US":
            return f"{f.city()}, {f.state_abbr()} {f.zipcode()}" + (
                f"-{self.digits(4)}" if self.rng.random() < 0.2 else "")
        if loc == "en_GB":
            return f"{f.city()} {f.postcode()}"
        return f"{f.postcode()} {f.city()}"

    def date(self, start: int, end: int) -> str:
        import datetime as dt

        d = dt.date(start, 1, 1) + dt.timedelta(days=self.rng.randint(
            0, (dt.date(end, 12, 31) - dt.date(start, 1, 1)).days))
        fmt = self.choice(["%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%B %d, %Y", "%d %B %Y",
                           "%Y-%m-%d", "%b %d %Y", "%d-%b-%Y", "%m-%d-%y"])
        return d.strftime(fmt)

    def dob(self) -> str:
        return self.date(1928, 2012)

    def recent_date(self) -> str:
        return self.date(2018, 2025)

    def age(self) -> str:
        return str(self.rng.randint(90, 106))

    # (D)–(H)
    def phone(self) -> str:
        loc = self.choice(["en_US", "en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT"])
        return re.sub(r"\s*(x|ext\.?)\s*\d+$", "", str(self.fakers[loc].phone_number()))

    def email(self) -> str:
        f = self.fakers[self.locale()]
        if self.rng.random() < 0.5:
            return str(f.free_email())
        first, last = (re.sub(r"[^a-z]", "", s.lower()) or "x" for s in
                       (f.first_name(), f.last_name()))
        return f"{first}.{last}{self.rng.randint(1, 99)}@{f.free_email_domain()}"

    def ssn(self) -> str:
        return str(self.us.ssn())

    def mrn(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return self.choice(["E", "MR", "H", "M"]) + self.digits(7)
        if r < 0.5:
            d = self.digits(8)
            return f"{d[:2]}-{d[2:5]}-{d[5:]}"
        return self.digits(self.rng.randint(7, 10), "123456789")

    # (I) health plan beneficiary numbers
    def mbi(self) -> str:
        c = self.rng.choice("123456789")
        def a() -> str:
            return self.rng.choice(_MBI_ALPHA)

        def an() -> str:
            return self.rng.choice(_MBI_ALPHA + string.digits)

        def n() -> str:
            return self.rng.choice(string.digits)

        s = c + a() + an() + n() + a() + an() + n() + a() + a() + n() + n()
        return s if self.rng.random() < 0.5 else f"{s[:4]}-{s[4:7]}-{s[7:]}"

    def nhs(self) -> str:
        from stdnum.gb import nhs

        while True:
            base = self.digits(9, "4")
            total = sum(int(d) * (10 - i) for i, d in enumerate(base))
            check = (11 - total % 11) % 11
            if check != 10 and nhs.is_valid(base + str(check)):
                s = base + str(check)
                return f"{s[:3]} {s[3:6]} {s[6:]}"

    def kvnr(self) -> str:
        letter = self.rng.choice(string.ascii_uppercase)
        body = f"{ord(letter) - 64:02d}" + self.digits(8)
        total = 0
        for i, d in enumerate(body):
            p = int(d) * (1 if i % 2 == 0 else 2)
            total += p // 10 + p % 10
        return letter + body[2:] + str(total % 10)

    def health_plan(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return self.mbi()
        if r < 0.6:
            return self.letters(3) + self.digits(9)
        if r < 0.8:
            return self.nhs()
        return self.kvnr()

    # (J) accounts
    def card(self) -> str:
        digits = str(self.us.credit_card_number(card_type=self.choice(
            ["visa16", "mastercard", "discover"])))
        return " ".join(digits[i:i + 4] for i in range(0, 16, 4)) if \
            self.rng.random() < 0.5 else digits

    def account(self) -> str:
        r = self.rng.random()
        if r < 0.3:
            return self.digits(self.rng.randint(8, 12))
        if r < 0.55:
            iban = str(self.fakers[self.choice(["de_DE", "fr_FR", "es_ES", "it_IT",
                                                "en_GB"])].iban())
            return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4)) \
                if self.rng.random() < 0.5 else iban
        if r < 0.75:
            return self.card()
        return self.choice(["ACC-", "AC", "Acct "]) + self.digits(4) + "-" + self.digits(4)

    # (K) certificates / licences
    def npi(self) -> str:
        from stdnum import luhn

        base = self.digits(9, "12")
        return base + luhn.calc_check_digit("80840" + base)

    def dea(self) -> str:
        d = [int(c) for c in self.digits(6)]
        check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
        return self.choice(list("ABFGM")) + self.rng.choice(string.ascii_uppercase) + \
            "".join(map(str, d)) + str(check)

    def licence(self) -> str:
        r = self.rng.random()
        if r < 0.15:
            return self.rng.choice(string.ascii_uppercase) + self.digits(7)  # CA DL
        if r < 0.25:
            d = self.digits(12)
            return f"{self.rng.choice(string.ascii_uppercase)}{d[:3]}-{d[3:6]}-{d[6:8]}-" \
                f"{d[8:11]}-{d[11]}"  # FL DL
        if r < 0.4:  # UK DVLA driving licence
            last = re.sub(r"[^A-Z]", "", str(self.fakers["en_GB"].last_name()).upper())
            last = (last + "99999")[:5]
            y = self.rng.randint(50, 99)
            m = self.rng.randint(1, 12) + self.choice([0, 50])
            return (f"{last}{y // 10}{m:02d}{self.rng.randint(1, 28):02d}{y % 10}"
                    f"{self.letters(2)}9{self.letters(2)}")
        if r < 0.55:
            return self.npi()
        if r < 0.7:
            return self.dea()
        if r < 0.85:
            return self.choice(["MD", "RN", "A", "G"]) + self.digits(6)
        return f"{self.rng.randint(2015, 2024)}-{self.letters(2)}-{self.digits(7)}"

    # (L) vehicles
    def vin(self) -> str:
        while True:
            chars = [self.rng.choice(_VIN_CHARS) for _ in range(17)]
            chars[9] = self.rng.choice("ABCDEFGHJKLMNPRSTVWXY123456789")
            total = sum(_VIN_VALUE[c] * w for c, w in zip(chars, _VIN_WEIGHTS, strict=True))
            chars[8] = "X" if total % 11 == 10 else str(total % 11)
            return "".join(chars)

    def plate(self) -> str:
        L, d = self.letters, self.digits
        return str(self.choice([
            f"{d(1, '123456789')}{L(3)}{d(3)}", f"{L(3)}-{d(4)}",
            f"{L(2)}{d(2)} {L(3)}", f"{self.choice(['B', 'M', 'HH', 'K', 'F'])}-{L(2)} "
            f"{d(self.rng.randint(2, 4), '123456789')}", f"{L(2)}-{d(3)}-{L(2)}",
            f"{L(2)} {d(3)}{L(2)}", f"{d(4)} {L(3, 'BCDFGHJKLMNPRSTVWXYZ')}"]))

    # (M) devices
    def imei(self) -> str:
        from stdnum import imei, luhn

        base = self.choice(["35", "86", "01", "99"]) + self.digits(12)
        s = base + luhn.calc_check_digit(base)
        assert imei.is_valid(s)
        return s if self.rng.random() < 0.6 else f"{s[:2]}-{s[2:8]}-{s[8:14]}-{s[14]}"

    def device(self) -> str:
        r = self.rng.random()
        if r < 0.35:
            return self.imei()
        if r < 0.5:
            return ":".join(f"{self.rng.randint(0, 255):02X}" for _ in range(6))
        if r < 0.75:
            return self.choice(["C02", "FVF", "5CG", "PJN", "SN"]) + self.letters(
                9, string.ascii_uppercase + string.digits)
        if r < 0.85:
            return "".join(self.rng.choice("0123456789abcdef") for _ in range(16))
        import uuid

        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4)).upper()

    # (N), (O), (P), (R)
    def url(self) -> str:
        f = self.fakers[self.locale()]
        first, last = (re.sub(r"[^a-z]", "", s.lower()) or "x" for s in
                       (f.first_name(), f.last_name()))
        tag = "".join(self.rng.choice("0123456789abcdef") for _ in range(6))
        return str(self.choice([
            f"https://www.linkedin.com/in/{first}-{last}-{tag}",
            f"https://www.facebook.com/{first}.{last}.{self.rng.randint(1, 99)}",
            f"https://instagram.com/{first}_{last}", f"https://github.com/{first}{last[:3]}",
            f"https://{first}{last}.me", f"https://www.{last}-{first}.de/about",
            f"https://portal.stmarys-health.org/patients/{self.digits(7)}/results",
            f"https://drive.google.com/file/d/1{self.letters(24, string.ascii_letters)}/view",
        ]))

    def ip(self) -> str:
        if self.rng.random() < 0.25:
            return "2a02:" + ":".join(f"{self.rng.randint(0, 65535):x}" for _ in range(7))
        while True:
            a = self.rng.randint(1, 223)
            b = self.rng.randint(0, 255)
            if a in (10, 127) or (a == 172 and 16 <= b <= 31) or (a == 192 and b == 168) \
                    or (a == 169 and b == 254) or (a == 100 and 64 <= b <= 127):
                continue
            return f"{a}.{b}.{self.rng.randint(0, 255)}.{self.rng.randint(1, 254)}"

    def hexstr(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789abcdef") for _ in range(n))

    def biometric(self) -> str:
        return str(self.choice([
            f"FPT-{self.letters(4, 'ABCDEF0123456789')}-{self.letters(4, 'ABCDEF0123456789')}",
            self.hexstr(32), f"IRIS-{self.digits(9)}", f"VP{self.digits(8)}",
            f"fe_{self.hexstr(24)}", f"PV-{self.digits(4)}-{self.digits(4)}"]))

    def other_id(self) -> str:
        return str(self.choice([
            f"EMP-{self.digits(6)}", f"S{self.digits(8, '12')}", f"CUST-{self.digits(8)}",
            f"CLM-{self.rng.randint(2019, 2025)}-{self.digits(7)}",
            f"POL {self.digits(2)}-{self.digits(3)}-{self.digits(4)}",
            f"MEM{self.digits(9)}", f"BADGE {self.digits(5)}",
            f"{self.letters(2)}{self.digits(6)}{self.letters(1)}"]))

    # GDPR-style national identifiers
    def passport(self) -> tuple[str, str]:
        L, d = self.letters, self.digits
        country = self.choice(["US", "UK", "DE", "FR", "ES", "IT", "IN", "BR", "CA", "NL"])
        value = {
            "US": d(9, "5") if self.rng.random() < 0.6 else L(1) + d(8),
            "UK": d(9, "1235"),
            "DE": self.choice(list("CFGHJK")) + L(8, "CFGHJKLMNPRTVWXYZ0123456789"),
            "FR": d(2) + L(2) + d(5), "ES": L(3) + d(6), "IT": L(2) + d(7),
            "IN": L(1) + d(7), "BR": L(2) + d(6), "CA": L(2) + d(6),
            "NL": L(2) + L(6, "ABCDEFGHJKLMNPRSTUVWXYZ0123456789") + d(1),
        }[country]
        return country, value

    def nino(self) -> str:
        first = "ABCEGHJKLMNOPRSTWXYZ"
        second = "ABCEGHJKLMNPRSTWXYZ"
        while True:
            p = self.rng.choice(first) + self.rng.choice(second)
            if p not in ("BG", "GB", "KN", "NK", "NT", "TN", "ZZ"):
                break
        d = self.digits(6)
        suffix = self.rng.choice("ABCD")
        return self.choice([f"{p}{d}{suffix}", f"{p} {d[:2]} {d[2:4]} {d[4:]} {suffix}"])

    def steuer_id(self) -> str:
        from stdnum.de import idnr
        from stdnum.iso7064 import mod_11_10

        while True:
            base = self.digits(10, "123456789")
            s = base + mod_11_10.calc_check_digit(base)
            if idnr.is_valid(s):
                return self.choice([s, f"{s[:2]} {s[2:5]} {s[5:8]} {s[8:]}"])

    def nir(self) -> str:
        from stdnum.fr import nir

        body = (self.rng.choice("12") + f"{self.rng.randint(30, 99):02d}"
                + f"{self.rng.randint(1, 12):02d}" + f"{self.rng.randint(1, 95):02d}"
                + self.digits(3) + self.digits(3))
        s = body + nir.calc_check_digits(body)
        assert nir.is_valid(s)
        return self.choice([s, f"{s[0]} {s[1:3]} {s[3:5]} {s[5:7]} {s[7:10]} {s[10:13]} "
                            f"{s[13:]}"])

    def dni(self) -> str:
        from stdnum.es import dni

        body = self.digits(8)
        return body + dni.calc_check_digit(body)

    def nie(self) -> str:
        from stdnum.es import nie

        s = ""
        while not nie.is_valid(s):
            prefix = self.rng.choice("XYZ")
            body = self.digits(7)
            s = prefix + body + nie.calc_check_digit(prefix + body)
        return s

    def codice_fiscale(self) -> str:
        from stdnum.it import codicefiscale as cf

        def part(word: str, is_name: bool) -> str:
            w = re.sub(r"[^A-Z]", "", word.upper())
            cons = [c for c in w if c not in "AEIOU"]
            vow = [c for c in w if c in "AEIOU"]
            if is_name and len(cons) >= 4:
                cons = [cons[0], cons[2], cons[3]]
            return "".join(cons + vow + ["X"] * 3)[:3]

        f = self.fakers["it_IT"]
        female = self.rng.random() < 0.5
        day = self.rng.randint(1, 28) + (40 if female else 0)
        first = f.first_name_female() if female else f.first_name_male()
        body = (part(f.last_name(), False) + part(first, True)
                + f"{self.rng.randint(30, 99):02d}" + self.rng.choice(_CF_MONTHS)
                + f"{day:02d}" + self.rng.choice(_CF_TOWNS))
        s = body + cf.calc_check_digit(body)
        assert cf.is_valid(s), s
        return s

    def aadhaar(self) -> str:
        from stdnum import verhoeff
        from stdnum.in_ import aadhaar

        while True:
            base = self.digits(11, "23456789")
            s = base + verhoeff.calc_check_digit(base)
            if aadhaar.is_valid(s):
                return self.choice([s, f"{s[:4]} {s[4:8]} {s[8:]}"])

    def pan(self) -> str:
        from stdnum.in_ import pan

        s = self.letters(3) + "P" + self.letters(1) + self.digits(4) + self.letters(1)
        assert pan.is_valid(s), s
        return s

    def cpf(self) -> str:
        from stdnum.br import cpf

        while True:
            d = [int(c) for c in self.digits(9)]
            if len(set(d)) == 1:
                continue
            for k in (10, 11):
                total = sum(x * w for x, w in zip(d, range(k, 1, -1), strict=False))
                d.append(0 if total % 11 < 2 else 11 - total % 11)
            s = "".join(map(str, d))
            if cpf.is_valid(s):
                return self.choice([s, f"{s[:3]}.{s[3:6]}.{s[6:9]}-{s[9:]}"])


# ---------------------------------------------------------------------------------------
# templates: the target value is {v}; {name} is a (gold) name, other slots context


T = list[str]
TEMPLATES: dict[str, T] = {
    "name": [
        "Hi, this is {v} — I booked the 9:40 physio slot online but got no confirmation. "
        "Can you check?",
        "Draft a polite reply to {v}, who complained that her parcel arrived damaged.",
        "Meeting notes: attendees {v}, Priya's team lead, and two people from facilities.",
        "HR export row → employee: {v}; department: logistics; start: Monday.",
        "Dictated: saw {v} in clinic today, knee still swollen, repeat x-ray in a month.",
        "Rebook the flight for passenger {v} to the later connection via Frankfurt.",
    ],
    "street address": [
        "Patient portal: I moved last month, please update my address to {v}, {city} so "
        "the bills stop going to the old place.",
        "Car insurance claim — the collision happened outside {v}, {city}, at about 8 am.",
        "Write a cover letter header for {name}, {v}, {city}.",
        "Support chat: the courier keeps saying 'address not found' for {v}, {city}. "
        "What should I change?",
        "Travel booking: the guest asked for the invoice to be sent to {v}, {city}.",
    ],
    "city + postcode": [
        "Where is the nearest pharmacy open on Sundays to {v}? I'm staying with my aunt.",
        "Claims e-mail: policyholder {name}, loss location {street}, {v}.",
        "Please fill the delivery form: street {street}, town and postcode {v}.",
        "Our patient lives in {v} — which clinic in our network is closest?",
    ],
    "date of birth": [
        "Patient portal message: I'm {name}, born {v}, and I can't log in to see my lab "
        "results.",
        "Fix the grammar: 'The applicant, date of birth {v}, have worked with us since "
        "2019.'",
        "Travel booking for an infant: DOB {v}, travelling on her mother's lap.",
        "HR onboarding: {name} (d.o.b. {v}) starts in the warehouse next week; draft a "
        "welcome e-mail.",
        "The insurer wants the policyholder's birth date — it's {v}. Which form field is "
        "that?",
    ],
    "admission/discharge date": [
        "Dictated note: {name} was admitted on {v} with a fractured hip.",
        "Claims e-mail: the inpatient stay ended with discharge on {v}; why was day three "
        "denied?",
        "Summarise: patient arrived in the ER {v}, transferred to cardiology the same "
        "night.",
        "Write the referral: seen in our clinic on {v} for follow-up of the wound.",
    ],
    "date of death": [
        "Help me word the bereavement letter: my father {name} passed away on {v}.",
        "The estate lawyer needs the date of death ({v}) on the claim form; which box?",
        "Death certificate transcription: deceased {name}, died {v}, cause pending.",
    ],
    "age over 89": [
        "My grandmother is {v} years old and keeps falling; what home adaptations help?",
        "Dictated: {v}-year-old woman, lives alone, admitted after a fall at home.",
        "Support chat: the account holder is aged {v} and can't read the small print.",
        "Patient portal: booking for my dad (age {v}), he needs a wheelchair at reception.",
    ],
    "phone": [
        "Call me back on {v} when the prescription is ready, thanks!",
        "Car insurance claim: the other driver gave me the number {v}.",
        "Update my contact details in the booking: mobile {v}.",
        "Please add to the HR record for {name}: emergency contact phone {v}.",
    ],
    "fax": [
        "Please fax the signed consent to our office at {v} before the procedure.",
        "Claims e-mail: send the itemised bill by fax to {v}, attention billing.",
        "Referral letter footer: Tel. switchboard, fax {v}.",
    ],
    "e-mail": [
        "Can you send the discharge papers to {v}? I can't open the portal on my phone.",
        "Travel booking: confirmation e-mail should go to {v} not my work address.",
        "Support chat: my login is {v} and the reset link never arrives.",
        "HR export: {name}, contact {v}, contractor, remote.",
    ],
    "SSN": [
        "I'm filling out the W-2 correction — my social is {v}, is the form right?",
        "Claims e-mail: member SSN {v} does not match your records, please re-check.",
        "HR export row → employee {name}, SSN: {v}, salary band 4.",
        "Support chat: the bank asked me for my social security number ({v}) over the "
        "phone, is that normal?",
    ],
    "MRN": [
        "Patient portal: my chart number is {v} and the results page is empty.",
        "Dictated note: MRN {v}, follow-up ultrasound in six weeks.",
        "Claims e-mail: the denial references medical record number {v}; please advise.",
        "Add to the handover list: bed 12, hospital no. {v}, NPO after midnight.",
    ],
    "health plan number": [
        "Claims e-mail: member ID {v}, date of service last Tuesday, claim still pending.",
        "Patient portal: my insurance card says {v}, should I enter it with the dashes?",
        "Pharmacy chat: the beneficiary number on the prescription is {v}.",
        "Can you check whether health plan number {v} covers physiotherapy?",
    ],
    "account number": [
        "Set up the direct debit from account {v} for the gym membership.",
        "Claims e-mail: refund the excess to the policyholder's account {v}.",
        "Support chat: my account number is {v}, why was I charged twice?",
        "HR export: payroll bank details for {name}: {v}.",
    ],
    "certificate/licence number": [
        "Car insurance claim: my driver's licence number is {v}, issued last year.",
        "Verify the prescriber: licence no. {v}, is it still active?",
        "HR onboarding: nursing certificate {v} uploaded for {name}.",
        "Travel booking for the rental car — driving licence {v}.",
    ],
    "VIN": [
        "Car insurance claim: vehicle identification number {v}, damage to the rear "
        "bumper.",
        "Is this VIN {v} from a car that was recalled for the airbag issue?",
        "Support chat: the dealer typed the chassis number as {v}; can you double check "
        "it?",
    ],
    "licence plate": [
        "Car insurance claim: the other car's plate was {v}, it drove off after the "
        "crash.",
        "Parking permit request for registration {v}, level -2.",
        "Travel booking: add the guest's number plate {v} to the hotel garage list.",
    ],
    "device identifier": [
        "Support chat: my phone (IMEI {v}) was stolen, please block it.",
        "Patient portal: the insulin pump serial {v} keeps alarming at night.",
        "MDM export: device {v} assigned to {name}, last seen yesterday.",
        "My pacemaker's serial number is {v}; the clinic asked me to report it.",
    ],
    "personal URL": [
        "Can you review my profile {v} and suggest a better headline?",
        "HR export: candidate {name}, portfolio {v}, interview on Thursday.",
        "Support chat: someone copied my page {v}, how do I report it?",
        "Patient portal: the link to my results is {v} — it says access denied.",
    ],
    "IP address": [
        "Support chat: my home connection shows IP {v} and your site blocks me.",
        "Why does my login history list {v} from a country I've never been to?",
        "Firewall ticket from the home-office user {name}: please allow {v}.",
    ],
    "biometric identifier": [
        "HR export: {name}, badge access via fingerprint template {v}.",
        "Support chat: the bank app says my voiceprint ID {v} no longer matches.",
        "Clinic door log: enrolled iris code {v} for the night nurse.",
        "The time clock rejects face template {v}; how do I re-enrol?",
    ],
    "other unique ID": [
        "Claims e-mail: please reference {v} in all correspondence about my accident.",
        "HR export: staff number {v}, night shift, forklift certified.",
        "Support chat: my customer number is {v}; the renewal quote seems wrong.",
        "Travel booking: frequent-flyer/loyalty number {v}, please add the miles.",
    ],
    "passport": [
        "Travel booking: passport number {v}, expires in 2031, nationality as on the "
        "document.",
        "Check-in asks for the passport no. — it's {v}. Which field is 'document number'?",
        "HR export: visa sponsorship for {name}, passport {v}.",
        "Reisebuchung: Reisepassnummer {v}, bitte für den Flug hinterlegen.",
    ],
    "UK NINO": [
        "HR onboarding: new starter {name}, National Insurance number {v}.",
        "My NI number is {v} — why does the payslip show emergency tax?",
        "Claims e-mail: please quote NINO {v} on the benefit form.",
    ],
    "DE Steuer-ID": [
        "Lohnabrechnung: Steuer-ID {v} für {name}, bitte im Personalbogen ergänzen.",
        "My German tax ID (Steuerliche Identifikationsnummer) is {v}; where does it go "
        "on the form?",
        "HR export: employee {name}, IdNr {v}, tax class 1.",
    ],
    "FR NIR": [
        "Mutuelle : mon numéro de sécurité sociale est {v}, le remboursement n'arrive "
        "pas.",
        "HR export: French payroll, NIR {v} for {name}.",
        "Patient portal: my carte Vitale number is {v}, please add it to the file.",
    ],
    "ES DNI": [
        "Reserva de hotel: DNI {v}, llegada el viernes por la noche.",
        "HR export: Spanish contractor {name}, DNI {v}.",
        "Support chat: the form rejects my DNI number {v}, is the letter wrong?",
    ],
    "ES NIE": [
        "Necesito renovar mi residencia, mi NIE es {v}. ¿Qué documentos hacen falta?",
        "HR export: {name}, foreign employee, NIE {v}.",
        "Car rental booking: ID document NIE {v}.",
    ],
    "IT codice fiscale": [
        "Prenotazione visita: codice fiscale {v}, preferisco il mattino.",
        "HR export: Italian payroll, codice fiscale {v} for {name}.",
        "Claims e-mail: the policy holder's tax code is {v}.",
    ],
    "IN Aadhaar": [
        "KYC form: Aadhaar number {v}, address proof attached.",
        "HR onboarding: {name}, Aadhaar {v}, PF account to be opened.",
        "Support chat: my Aadhaar card {v} is not linking with my bank.",
    ],
    "IN PAN": [
        "Income tax filing: my PAN is {v}, why is the refund on hold?",
        "HR export: {name}, PAN {v}, joining bonus payable.",
        "KYC form for the trading account: PAN card number {v}.",
    ],
    "BR CPF": [
        "Cadastro no plano de saúde: CPF {v}, titular {name}.",
        "Travel booking for a Brazilian guest: CPF {v} needed for the invoice.",
        "Support chat: the app says my CPF {v} is already registered.",
    ],
}

WORD_TEMPLATES: dict[str, dict[str, str]] = {
    "SSN in words": {
        "EN": "Transcribe this voicemail: hi, it's about my tax form, my social is {v}, "
              "call me back.",
        "DE": "Sprachnachricht abtippen: meine Social Security Number lautet {v}, bitte "
              "zurückrufen.",
        "FR": "Transcris ce message : mon numéro de sécurité sociale américain est {v}.",
        "ES": "Transcribe el audio: mi número de seguro social es {v}, gracias.",
        "IT": "Trascrivi il messaggio: il mio numero di previdenza sociale è {v}.",
    },
    "phone in words": {
        "EN": "Dictated note: patient asks for a callback at {v} after six.",
        "DE": "Bitte ruf mich unter {v} zurück, am besten nach siebzehn Uhr.",
        "FR": "Rappelez-moi au {v} s'il vous plaît, après dix-huit heures.",
        "ES": "Llámame al {v} cuando salgas del trabajo.",
        "IT": "Richiamami al {v} dopo le sei, grazie.",
    },
    "card in words": {
        "EN": "Support call transcript: the customer read the card number as {v}, "
              "expiry next spring.",
        "DE": "Die Kartennummer ist {v}, gültig bis Ende nächsten Jahres.",
        "FR": "Le numéro de ma carte bancaire est {v}, merci de débiter le solde.",
        "ES": "El número de la tarjeta es {v}, caduca el año que viene.",
        "IT": "Il numero della carta è {v}, scadenza l'anno prossimo.",
    },
    "MRN in words": {
        "EN": "Dictation: chart number {v}, follow-up in two weeks for the wound check.",
        "DE": "Diktat: Patientennummer {v}, Kontrolle in zwei Wochen.",
        "FR": "Dictée : dossier patient numéro {v}, contrôle dans deux semaines.",
        "ES": "Dictado: número de historia clínica {v}, revisión en dos semanas.",
        "IT": "Dettatura: numero di cartella clinica {v}, controllo tra due settimane.",
    },
}

#: Category → value generator (passport returns its country too).
def _generators(v: CovValues) -> dict[str, Callable[[], str]]:
    return {
        "name": v.name, "street address": v.street, "city + postcode": v.city_postcode,
        "date of birth": v.dob, "admission/discharge date": v.recent_date,
        "date of death": v.recent_date, "age over 89": v.age, "phone": v.phone,
        "fax": v.phone, "e-mail": v.email, "SSN": v.ssn, "MRN": v.mrn,
        "health plan number": v.health_plan, "account number": v.account,
        "certificate/licence number": v.licence, "VIN": v.vin, "licence plate": v.plate,
        "device identifier": v.device, "personal URL": v.url, "IP address": v.ip,
        "biometric identifier": v.biometric, "other unique ID": v.other_id,
        "passport": lambda: v.passport()[1], "UK NINO": v.nino, "DE Steuer-ID": v.steuer_id,
        "FR NIR": v.nir, "ES DNI": v.dni, "ES NIE": v.nie,
        "IT codice fiscale": v.codice_fiscale, "IN Aadhaar": v.aadhaar, "IN PAN": v.pan,
        "BR CPF": v.cpf,
    }


# ---------------------------------------------------------------------------------------
# spellings of the target value


def _odd_separators(value: str, category: str, rng: random.Random) -> str | None:
    if category == "e-mail":
        return rng.choice([value.replace("@", " [at] ").replace(".", " [dot] "),
                           value.replace("@", "(at)"), value.replace("@", " @ ")])
    if category == "personal URL":
        return rng.choice([value.replace("https://", "hxxps://").replace(".", "[.]"),
                           value.replace("https://", "").replace("www.", "")])
    if category in ("name", "street address", "city + postcode"):
        if category == "name":
            parts = value.split(" ", 1)
            return rng.choice([f"{parts[-1].upper()}, {parts[0]}", value.replace(" ", "_"),
                               value.replace(" ", ".")])
        return rng.choice([value.replace(", ", "\n"), value.replace(", ", " | "),
                           value.replace(" ", "  ")])
    if category == "age over 89":
        return None
    groups = re.findall(r"[A-Za-z0-9]+", value)
    joined = "".join(groups)
    if len(groups) == 1:  # no separators: cut into threes
        groups = [joined[i:i + 3] for i in range(0, len(joined), 3)]
    sep = rng.choice([" . ", "/", "_", " - ", "  ", "·", " ", "\n"])
    return sep.join(groups)


def _digit_words(value: str, category: str, rng: random.Random) -> str | None:
    if category == "age over 89":
        return age_in_words(int(value))
    if sum(c.isdigit() for c in value) < 4 or category in ("personal URL", "e-mail"):
        return None
    return in_words(value, "EN", rng)


VARIANTS = ("plain", "lower case", "odd separators", "inside JSON", "digits as words")


# ---------------------------------------------------------------------------------------
# records: values named by their keys


_RECORD_FIELDS: list[tuple[list[str], str]] = [
    (["name", "full_name", "patientName", "Employee Name"], "name"),
    (["dob", "date_of_birth", "birthDate", "DOB"], "dob"),
    (["ssn", "social_security_no", "SSN"], "ssn"),
    (["mrn", "medical_record_number", "chart_no"], "mrn"),
    (["phone", "mobile", "tel"], "phone"),
    (["email", "e_mail", "contactEmail"], "email"),
    (["address", "home_address", "street"], "street"),
    (["zip", "postcode", "postal_code"], "zip"),
    (["member_id", "memberId", "insurance_id"], "health_plan"),
    (["employee_id", "staff_no", "personnel_number"], "emp"),
    (["passport_no", "passportNumber"], "passport"),
    (["nino", "ni_number"], "nino"),
    (["iban", "bank_account"], "account"),
    (["vin", "vehicle_vin"], "vin"),
    (["plate", "licence_plate"], "plate"),
    (["imei", "device_serial"], "device"),
    (["ip", "last_login_ip"], "ip"),
    (["tax_id", "steuer_id", "codice_fiscale", "cpf"], "tax"),
]
_BORING = [("status", ["active", "pending", "closed"]), ("plan", ["Gold PPO", "Basic"]),
           ("amount", ["120.00", "89.50", "1,240.00"]), ("notes", ["call after 5", "n/a"])]


def _record_value(v: CovValues, kind: str) -> str:
    gens: dict[str, Callable[[], str]] = {
        "name": v.name, "dob": v.dob, "ssn": v.ssn, "mrn": v.mrn, "phone": v.phone,
        "email": v.email, "street": v.street, "zip": lambda: v.digits(5),
        "health_plan": v.health_plan, "emp": lambda: v.digits(6),
        "passport": lambda: v.passport()[1], "nino": v.nino, "account": v.account,
        "vin": v.vin, "plate": v.plate, "device": v.device, "ip": v.ip,
        "tax": lambda: v.choice([v.steuer_id, v.codice_fiscale, v.cpf])(),
    }
    return gens[kind]()


def _record_case(v: CovValues, container: str, i: int) -> Case:
    rng = v.rng
    fields = rng.sample(_RECORD_FIELDS, rng.randint(3, 5))
    rows = rng.randint(1, 3) if container == "CSV" else 1
    keys = [rng.choice(names) for names, _ in fields]
    boring = rng.sample(_BORING, 2)
    segments: list[str] = []
    gold: list[Gold] = []
    values: list[tuple[str, str]] = []
    category = f"record: {container}"
    if container == "JSON":
        style = ("pretty", "minified", "nested", "tool argument")[i % 4]
        record: dict[str, Any] = {}
        for k, (_, kind) in zip(keys, fields, strict=True):
            record[k] = _record_value(v, kind)
        for k, opts in boring:
            record[k] = rng.choice(opts)
        obj: Any = {"patient" if i % 2 else "customer": record} if style == "nested" else record
        text = json.dumps(obj, indent=2 if style == "pretty" else None, ensure_ascii=False)
        intro = rng.choice(["Validate this JSON before I post it to the claims API:",
                            "Why does the import reject this record?",
                            "Convert this to a YAML config:"])
        if style == "tool argument":
            segments = ["Update the CRM with this record.", text]
            seg = 1
        else:
            segments = [f"{intro}\n{text}"]
            seg = 0
        body = segments[seg]
        for k in keys:
            raw = record[k]
            enc = json.dumps(raw, ensure_ascii=False)[1:-1]
            pos = body.index(f'"{k}"')
            start = body.index(enc, pos)
            gold.append(Gold(seg, start, start + len(enc), category))
            values.append((category, raw))
        return Case(segments, gold, f"cov:{category}",
                    meta={"variant": f"JSON {style}", "values": values,
                          "shape": "tool_args" if seg else "user"})
    if container == "CSV":
        style = ("comma", "semicolon", "tab", "markdown")[i % 4]
        sep = {"comma": ",", "semicolon": ";", "tab": "\t", "markdown": " | "}[style]
        header = keys + [k for k, _ in boring]
        lines = [sep.join(header)]
        if style == "markdown":
            lines = ["| " + lines[0] + " |", "|" + "---|" * len(header)]
        spans: list[tuple[int, int, str]] = []
        intro = rng.choice(["Here's the HR export, can you find duplicates?\n",
                            "Pasted from the claims sheet — sort by the second column:\n",
                            "Clean up this CSV before the payroll upload:\n"])
        text = intro + "\n".join(lines)
        for _ in range(rows):
            cells = [_record_value(v, kind).replace(sep.strip() or sep, " ")
                     for _, kind in fields]
            cells = [c.replace(",", " ") if style == "comma" else c for c in cells]
            extra = [rng.choice(opts) for _, opts in boring]
            line = "| " if style == "markdown" else ""
            offset = len(text) + 1 + len(line)
            for c in cells:
                spans.append((offset, offset + len(c), c))
                offset += len(c) + len(sep)
            line += sep.join(cells + extra) + (" |" if style == "markdown" else "")
            text += "\n" + line
        for a, b, raw in spans:
            assert text[a:b] == raw
            gold.append(Gold(0, a, b, category))
            values.append((category, raw))
        return Case([text], gold, f"cov:{category}",
                    meta={"variant": f"CSV {style}", "values": values, "shape": "user"})
    style = ("Key: value", "key=value", "YAML", "KEY -> value")[i % 4]
    fmt = {"Key: value": "{k}: {v}", "key=value": "{k}={v}", "YAML": "  {k}: {v}",
           "KEY -> value": "{K} -> {v}"}[style]
    text = rng.choice(["Dictated intake, please tidy into a letter:\n",
                       "Support ticket fields (copy from the old system):\n",
                       "Car insurance claim form dump:\n"])
    if style == "YAML":
        text += "claimant:\n"
    for k, (_, kind) in zip(keys, fields, strict=True):
        raw = _record_value(v, kind)
        line = fmt.replace("{k}", k).replace("{K}", k.upper())
        pre = line.split("{v}")[0]
        start = len(text) + len(pre)
        text += pre + raw + "\n"
        gold.append(Gold(0, start, start + len(raw), category))
        values.append((category, raw))
    for k, opts in boring:
        text += fmt.replace("{k}", k).replace("{K}", k.upper()).replace(
            "{v}", rng.choice(opts)) + "\n"
    return Case([text], gold, f"cov:{category}",
                meta={"variant": style, "values": values, "shape": "user"})


# ---------------------------------------------------------------------------------------
# the generator


def _context(v: CovValues) -> Slots:
    return {"name": ("name", v.name()), "city": ("city + postcode", v.city_postcode()),
            "street": ("street address", v.street())}


def _make(template: str, slots: Slots, variant: str, category: str,
          rng: random.Random) -> Case:
    values_meta: list[tuple[str, str]]
    if variant == "inside JSON":
        escape_more = rng.random() < 0.5
        body = render(template, slots, _json_encoder(escape_more))
        key = rng.choice(["note", "message", "text", "comment"])
        prefix = '{"' + key + '": "'
        seg = prefix + body.text + '", "priority": "normal"}'
        gold = [Gold(1, a + len(prefix), b + len(prefix), c) for a, b, c, _ in body.gold]
        values_meta = [(c, raw) for _, _, c, raw in body.gold]
        instruction = rng.choice(["Log this for the case file.", "Save the customer's note.",
                                  "Forward this to the right team."])
        return Case([instruction, seg], gold, f"cov:{category}",
                    meta={"variant": variant, "values": values_meta, "shape": "tool_args"})
    r = render(template, slots)
    text = r.text.translate(_LOWER) if variant == "lower case" else r.text
    gold = [Gold(0, a, b, c) for a, b, c, _ in r.gold]
    values_meta = [(c, text[a:b]) for a, b, c, _ in r.gold]
    return Case([text], gold, f"cov:{category}",
                meta={"variant": variant, "values": values_meta, "shape": "user"})


def coverage_cases(n: int, seed: int = 14) -> list[Case]:
    """``n`` cases per category (see the module docstring)."""
    v = CovValues(seed)
    rng = v.rng
    gens = _generators(v)
    cases: list[Case] = []
    for category, templates in TEMPLATES.items():
        for i in range(n):
            variant = VARIANTS[i % len(VARIANTS)]
            template = templates[(i // len(VARIANTS) + i) % len(templates)]
            value = gens[category]()
            if variant == "odd separators":
                odd = _odd_separators(value, category, rng)
                if odd is None:
                    variant = "plain"
                else:
                    value = odd
            elif variant == "digits as words":
                spelt = _digit_words(value, category, rng)
                if spelt is None:
                    variant = "lower case"
                else:
                    value = spelt
            slots = {**_context(v), "v": (category, value)}
            cases.append(_make(template, slots, variant, category, rng))
    langs = list(WORDS)
    word_gen: dict[str, Callable[[], str]] = {
        "SSN in words": v.ssn, "phone in words": v.phone, "card in words": v.card,
        "MRN in words": lambda: v.digits(rng.randint(7, 9))}
    for category, by_lang in WORD_TEMPLATES.items():
        for i in range(n):
            lang = langs[i % len(langs)]
            value = in_words(word_gen[category](), lang, rng)
            r = render(by_lang[lang], {"v": (category, value)})
            cases.append(Case([r.text], [Gold(0, a, b, c) for a, b, c, _ in r.gold],
                              f"cov:{category}",
                              meta={"variant": f"words: {lang}",
                                    "values": [(category, value)], "shape": "user"}))
    for container in ("JSON", "CSV", "key-value"):
        for i in range(n):
            cases.append(_record_case(v, container, i))
    for c in cases:  # gold spans hold their values (JSON-escaped ones excepted)
        for g, (_, raw) in zip(c.gold, c.meta["values"], strict=True):
            span = c.segments[g.segment][g.start:g.end]
            assert span == raw or "\\" in span or c.meta["variant"] == "inside JSON", (
                span, raw)
    return cases


def bench_cases(n: int, seed: int) -> tuple[list[Case], list[Case]]:
    """The cases bench/privacy.py's ``coverage`` and ``coverage_leak`` sections share:
    ``n`` per category and ``max(2, n // 2)`` near misses per category."""
    return coverage_cases(n, seed=seed + 14), benign_cases(max(2, n // 2), seed=seed + 15)


def raw_values(case: Case) -> list[tuple[str, str]]:
    """(category, value as the user wrote it, before any JSON escaping) per gold span."""
    return list(case.meta["values"])


# ---------------------------------------------------------------------------------------
# benign near misses: about no one


_FAMOUS = ["Marie Curie", "Abraham Lincoln", "Charles Darwin", "Leonardo da Vinci",
           "Nelson Mandela", "Ada Lovelace", "Albert Einstein", "Frida Kahlo"]
_HISTORIC = ["July 20, 1969", "9 November 1989", "14 July 1789", "April 15, 1912",
             "June 6, 1944", "1 January 2002", "October 4, 1957", "March 11, 2011"]

BENIGN: dict[str, list[tuple[str, Callable[[CovValues], str]]]] = {
    "name": [
        ("Summarise {d}'s main scientific contributions in three bullet points.",
         lambda v: v.choice(_FAMOUS)),
        ("Write a short quiz question about {d} for a history class.",
         lambda v: v.choice(_FAMOUS)),
    ],
    "street address": [
        ("Why is {d} in New York called that?",
         lambda v: v.choice(["Wall Street", "Broadway", "Fifth Avenue", "Canal Street"])),
        ("What is the history of the building at {d}?",
         lambda v: v.choice(["10 Downing Street", "221B Baker Street",
                             "1600 Pennsylvania Avenue"])),
    ],
    "city + postcode": [
        ("Excel drops the leading zero from ZIP codes like {d}; how do I keep it?",
         lambda v: "0" + v.digits(4)),
        ("Which year did the TV series Beverly Hills, {d} premiere?", lambda v: "90210"),
        ("What does the outward code {d} of a UK postcode cover?",
         lambda v: v.choice(["SW1A", "EC1", "M1", "B33"])),
    ],
    "date of birth": [
        ("What happened on {d}? Give me two sentences.", lambda v: v.choice(_HISTORIC)),
        ("Is {d} a weekday? I'm planning a release.", lambda v: v.date(2026, 2027)),
    ],
    "admission/discharge date": [
        ("Our office is closed on {d} for the public holiday; draft a notice.",
         lambda v: v.date(2026, 2026)),
        ("How many days are there between {d} and the end of that year?",
         lambda v: v.choice(_HISTORIC)),
    ],
    "date of death": [
        ("Why did the Titanic sink on {d}?", lambda v: "April 15, 1912"),
        ("Explain what happened in Europe around {d}.", lambda v: v.choice(_HISTORIC)),
    ],
    "age over 89": [
        ("What does a {d}-day return policy usually cover?", lambda v: "90"),
        ("Why can some trees live more than {d} years?",
         lambda v: str(v.rng.randint(100, 900))),
        ("Explain the {d}th percentile in plain words.", lambda v: v.choice(["95", "99"])),
    ],
    "phone": [
        ("Which emergency number works across the EU, is it {d}?", lambda v: "112"),
        ("Find the book with ISBN {d} and tell me its topic.",
         lambda v: v.choice(["978-0-13-468599-1", "978-3-16-148410-0", "978-0-596-52068-7"])),
        ("Convert {d} seconds to days.", lambda v: v.digits(6, "123456789")),
    ],
    "fax": [
        ("Is sending documents by fax still common in {d}?",
         lambda v: v.choice(["Germany", "Japan", "2025"])),
    ],
    "e-mail": [
        ("Should transactional mail come from a {d} address or a real inbox?",
         lambda v: "noreply@"),
        ("Who runs the {d} account on social media?", lambda v: v.choice(["@NASA", "@WHO"])),
    ],
    "SSN": [
        ("Where can I buy replacement filter part no. {d} for a dishwasher?",
         lambda v: f"{v.digits(3)}-{v.digits(2)}-{v.digits(4)}"),
        ("What do the parts of the SSN format {d} stand for?", lambda v: "AAA-GG-SSSS"),
    ],
    "MRN": [
        ("What is the prime factorisation of {d}?", lambda v: v.digits(7, "123456789")),
        ("What does Windows update error {d} mean?",
         lambda v: v.choice(["0x80070005", "0x800f081f", "0x80240034"])),
    ],
    "health plan number": [
        ("What's the difference between Medicare Part {d} and Part D?",
         lambda v: v.choice(["A", "B", "C"])),
        ("What kind of plan is CMS contract {d}?", lambda v: "H" + v.digits(4)),
    ],
    "account number": [
        ("Explain the check digits using the standard example IBAN {d}.",
         lambda v: "GB82 WEST 1234 5698 7654 32"),
        ("Is {d} really Chase's ABA routing number?", lambda v: "021000021"),
    ],
    "certificate/licence number": [
        ("Is the {d} licence compatible with GPL-3.0?",
         lambda v: v.choice(["Apache-2.0", "MIT", "MPL-2.0"])),
        ("What does ISO {d} certification require?",
         lambda v: v.choice(["27001", "9001", "13485"])),
    ],
    "VIN": [
        ("Which character of a VIN encodes the model year for {d} cars?",
         lambda v: str(v.rng.randint(2001, 2025))),
        ("What manufacturer does the WMI code {d} stand for?",
         lambda v: v.choice(["WVW", "1HG", "JTD", "VF1"])),
    ],
    "licence plate": [
        ("What does the age identifier '{d}' on a UK number plate mean?",
         lambda v: v.choice(["24", "74", "19"])),
        ("Which country uses the oval plate code {d}?",
         lambda v: v.choice(["CH", "NL", "IRL", "CZ"])),
    ],
    "device identifier": [
        ("Does the {d} support Wi-Fi 6?",
         lambda v: v.choice(["iPhone 15 Pro (model A3102)", "Raspberry Pi 4 Model B",
                             "Dell XPS 13 9310", "Galaxy S23 SM-S911B"])),
        ("What changed in firmware version {d}?",
         lambda v: f"{v.rng.randint(1, 9)}.{v.rng.randint(0, 9)}.{v.digits(4)}"),
    ],
    "personal URL": [
        ("Summarise the page {d}.",
         lambda v: v.choice(["https://docs.python.org/3/library/re.html",
                             "https://en.wikipedia.org/wiki/HIPAA",
                             "https://www.who.int/news-room/fact-sheets"])),
    ],
    "IP address": [
        ("Is {d} a good public DNS resolver?", lambda v: v.choice(["8.8.8.8", "1.1.1.1",
                                                                   "9.9.9.9"])),
        ("What is the subnet mask {d} in CIDR notation?",
         lambda v: v.choice(["255.255.255.0", "255.255.0.0"])),
    ],
    "biometric identifier": [
        ("How does {d} matching work, roughly?",
         lambda v: v.choice(["fingerprint minutiae", "iris code", "face embedding"])),
        ("Is {d} the SHA-256 of an empty string?",
         lambda v: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    ],
    "other unique ID": [
        ("What does RFC {d} specify?", lambda v: v.choice(["7231", "9110", "2616", "8446"])),
        ("Explain the paper with DOI {d}.",
         lambda v: v.choice(["10.1038/nphys1170", "10.1145/3292500.3330701"])),
    ],
    "passport": [
        ("How many pages does a {d} passport have?",
         lambda v: v.choice(["German", "French", "Indian", "Brazilian"])),
        ("What does the MRZ prefix {d} mean?", lambda v: "P<UTO"),
    ],
    "UK NINO": [
        ("Explain the format of a National Insurance number like the example {d}.",
         lambda v: "QQ 12 34 56 C"),
    ],
    "DE Steuer-ID": [
        ("Wie viele Stellen hat die Steuer-ID, {d}?", lambda v: "elf"),
        ("Was bedeutet Steuerklasse {d}?", lambda v: v.choice(["1", "3", "5"])),
    ],
    "FR NIR": [
        ("Que signifie le chiffre {d} au début du numéro de sécurité sociale ?",
         lambda v: v.choice(["1", "2"])),
    ],
    "ES DNI": [
        ("Which letter corresponds to remainder {d} in the DNI algorithm?",
         lambda v: str(v.rng.randint(0, 22))),
    ],
    "ES NIE": [
        ("Is the NIE prefix {d} used for foreigners registered after 2008?",
         lambda v: v.choice(["Y", "Z"])),
    ],
    "IT codice fiscale": [
        ("What does the month letter {d} mean in a codice fiscale?",
         lambda v: v.choice(list(_CF_MONTHS))),
    ],
    "IN Aadhaar": [
        ("How many digits does an Aadhaar number have — {d}?", lambda v: "12"),
    ],
    "IN PAN": [
        ("What does the fourth character {d} of a PAN mean?",
         lambda v: v.choice(["P", "C", "H"])),
    ],
    "BR CPF": [
        ("Why is {d} rejected as a CPF?", lambda v: "111.111.111-11"),
    ],
    "SSN in words": [
        ("Translate '{d}' into Spanish.", lambda v: "one two three four five"),
    ],
    "phone in words": [
        ("Teach my kid to count: {d}.", lambda v: v.choice([
            "eins, zwei, drei, vier, fünf", "un deux trois quatre cinq six"])),
    ],
    "card in words": [
        ("Write the number {d} in Italian words.", lambda v: v.digits(4, "123456789")),
    ],
    "MRN in words": [
        ("What rhymes with '{d}'?", lambda v: "seven eight nine"),
    ],
    "record: JSON": [
        ("Validate this JSON: {d}", lambda v: json.dumps(
            {"sku": f"A-{v.digits(4)}", "qty": v.rng.randint(1, 9), "price": "19.99",
             "created": v.date(2024, 2025)})),
    ],
    "record: CSV": [
        ("Sort this CSV by population:\n{d}", lambda v: "city,population,year\n"
         "Berlin,3645000,2023\nMadrid,3332000,2023\nRome,2873000,2023"),
    ],
    "record: key-value": [
        ("Explain these build settings:\n{d}", lambda v: f"version: 2.4.{v.rng.randint(0, 9)}\n"
         f"build: {v.date(2024, 2025)}\nregion: eu-west-1\nreplicas: 3"),
    ],
}


def benign_cases(n: int, seed: int = 15) -> list[Case]:
    """Up to ``n`` near-miss prompts per category (no gold: nothing personal in them;
    duplicates dropped)."""
    v = CovValues(seed)
    out = []
    for category, templates in BENIGN.items():
        seen: set[str] = set()
        for i in range(n):
            template, gen = templates[i % len(templates)]
            r = render(template, {"d": (None, gen(v))})
            if r.text in seen:  # a fixed near miss counts once
                continue
            seen.add(r.text)
            out.append(Case([r.text], [], f"near:{category}", meta={"shape": "user"}))
    return out


# ---------------------------------------------------------------------------------------
# predictions of whatever guard `edgewise` is on the path (old commit via PYTHONPATH)


def predict_main(argv: list[str]) -> int:
    """``--predict IN OUT``: IN a JSON list of segment lists; OUT, per case, its
    findings ``[segment, start, end, entity, level]`` and the request level."""
    import edgewise
    from edgewise.privacy import Detector

    src, dst = Path(argv[0]), Path(argv[1])
    batches = json.loads(src.read_text())
    detector = Detector()
    out = []
    for segments in batches:
        d = detector.detect(segments)
        out.append({"level": d.level, "findings": [
            [f.segment, f.start, f.end, f.entity, f.level] for f in d.findings]})
    dst.write_text(json.dumps({"edgewise": str(Path(edgewise.__file__).parent),
                               "cases": out}))
    return 0


def time_main() -> int:
    """``--time``: one JSON segment list per stdin line in, ``detect``'s ms per line out
    (the first line out names the package timed)."""
    import time

    import edgewise
    from edgewise.privacy import Detector

    detector = Detector()
    print(json.dumps({"edgewise": str(Path(edgewise.__file__).parent)}), flush=True)
    for line in sys.stdin:
        segments = json.loads(line)
        detector.clear_cache()
        t = time.perf_counter()
        detector.detect(segments)
        print((time.perf_counter() - t) * 1000, flush=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--predict"]:
        raise SystemExit(predict_main(sys.argv[2:]))
    if sys.argv[1:2] == ["--time"]:
        raise SystemExit(time_main())
    # a look at the data
    for c in coverage_cases(2)[::3][:30]:
        print(c.source, c.meta["variant"], c.segments, [
            c.segments[g.segment][g.start:g.end] for g in c.gold])

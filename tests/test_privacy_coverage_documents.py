"""Identity documents beyond the US (recognizers/documents.py): passports of many
countries and national IDs with their checksums — realistic and adversarial spellings
(lower case, dashes and spaces, after "no.", "#", in JSON) and the near misses that must
stay unflagged. Valid numbers are generated here and checked by python-stdnum, not
copied from memory."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from stdnum import verhoeff
from stdnum.br import cpf
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar, pan
from stdnum.iso7064 import mod_11_10
from stdnum.it import codicefiscale

from edgewise.privacy.levels import DEFAULT_LEVELS
from privacy_helpers import default_detector, entities, scan

_RNG = random.Random(14)


def _search(make: Callable[[random.Random], str], ok: Callable[[str], bool]) -> str:
    """The first value ``make`` draws for which ``ok`` holds (seeded: reproducible)."""
    for _ in range(100_000):
        value = make(_RNG)
        if ok(value):
            return value
    raise AssertionError("no value found")


def _digits(n: int, first: str = "123456789") -> Callable[[random.Random], str]:
    return lambda r: r.choice(first) + "".join(r.choice("0123456789") for _ in range(n - 1))


def _de_tax_id() -> str:
    def make(r: random.Random) -> str:
        body = _digits(10)(r)
        return body + mod_11_10.calc_check_digit(body)
    return _search(make, idnr.is_valid)


def _nir() -> str:
    body = "1850578006084"
    return body + nir.calc_check_digits(body)


def _dni() -> str:
    body = _digits(8)(_RNG)
    return body + dni.calc_check_digit(body)


def _nie() -> str:
    body = "X" + _digits(7)(_RNG)
    return body + nie.calc_check_digit(body)


def _codice_fiscale() -> str:
    body = "RSSMRA85T10A562"
    return body + codicefiscale.calc_check_digit(body)


def _aadhaar() -> str:
    def make(r: random.Random) -> str:
        body = _digits(11, "23456789")(r)
        return body + verhoeff.calc_check_digit(body)
    return _search(make, aadhaar.is_valid)


def _cpf() -> str:
    return _search(_digits(11), cpf.is_valid)


def _wrong_last(value: str, ok: Callable[[str], bool], alphabet: str) -> str:
    """``value`` with its check character replaced so that the check fails."""
    return next(value[:-1] + c for c in alphabet if not ok(value[:-1] + c))


DE, NIR, DNI, NIE, CF, AADHAAR, CPF = (_de_tax_id(), _nir(), _dni(), _nie(),
                                       _codice_fiscale(), _aadhaar(), _cpf())
PAN = "ABCPK1234F"


def _spaced(value: str, groups: tuple[int, ...], sep: str = " ") -> str:
    out, pos = [], 0
    for g in groups:
        out.append(value[pos:pos + g])
        pos += g
    return sep.join(out)


def _cpf_formatted(value: str) -> str:
    return f"{value[:3]}.{value[3:6]}.{value[6:9]}-{value[9:]}"


def test_generated_numbers_pass_stdnum() -> None:
    assert all([idnr.is_valid(DE), nir.is_valid(NIR), dni.is_valid(DNI), nie.is_valid(NIE),
                codicefiscale.is_valid(CF), aadhaar.is_valid(AADHAAR), cpf.is_valid(CPF),
                pan.is_valid(PAN)])


PASSPORTS = [
    # (text, value): the common shapes by country, passport words in several languages
    ("My passport number is 123456789.", "123456789"),                  # US / UK
    ("US passport no. A12345678, expires 2031", "A12345678"),           # next-gen US
    ("Reisepass: C01X00T47", "C01X00T47"),                              # Germany
    ("passeport n° 09AA12345", "09AA12345"),                            # France
    ("número de pasaporte PAA123456", "PAA123456"),                     # Spain
    ("passaporto YA1234567", "YA1234567"),                              # Italy
    ("Indian passport J1234567 issued in Pune", "J1234567"),            # India
    ("Canadian passport: AB123456", "AB123456"),                        # Canada
    ("passaporte brasileiro FT123456", "FT123456"),                     # Brazil
    ("Australian passport N1234567", "N1234567"),                       # Australia
    # adversarial: lower case, dashes/spaces, "#", JSON, the word after the value
    ("pass# 987654321", "987654321"),
    ("passport no.c01x00t47", "c01x00t47"),
    ("PASSPORT NUMBER: YA 1234567", "YA 1234567"),
    ('{"passport_no": "09aa12345"}', "09aa12345"),
    ('{"holder": "x", "passportNumber": "AB123456"}', "AB123456"),
    ("J1234567 is the number on my passport", "J1234567"),
    ("Passnummer C01X00T47", "C01X00T47"),
]


@pytest.mark.parametrize(("text", "value"), PASSPORTS)
def test_passports(text: str, value: str) -> None:
    assert ("PASSPORT", value) in scan(text)


PASSPORT_MISSES = [
    "Passport photos cost $15 at the post office.",
    "Order 123456789 shipped on Monday.",
    "The flight AB123456 departs at noon.",       # no passport word
    "Do I need a passport to visit Canada?",
    "passport control took 45 minutes",
    "Call 123456789 for the pass office",          # "pass" alone is no passport word
]


@pytest.mark.parametrize("text", PASSPORT_MISSES)
def test_passport_near_misses(text: str) -> None:
    assert "PASSPORT" not in entities(text)


NATIONAL = [
    # UK NINO (no checksum: prefix letters and suffix A-D)
    ("NI number: AB 12 34 56 C", "UK_NINO", "AB 12 34 56 C"),
    ("Employee NINO JG103759A", "UK_NINO", "JG103759A"),
    ("national insurance no. ab-12-34-56-c", "UK_NINO", "ab-12-34-56-c"),
    ('{"nino": "AB123456C"}', "UK_NINO", "AB123456C"),
    # Germany: Steuer-ID (ISO 7064 mod 11,10)
    (f"Steuer-ID: {DE}", "DE_TAX_ID", DE),
    (f"meine Steueridentifikationsnummer ist {_spaced(DE, (2, 3, 3, 3))}", "DE_TAX_ID",
     _spaced(DE, (2, 3, 3, 3))),
    (f"tax id #{DE}", "DE_TAX_ID", DE),
    # France: NIR with its key
    (f"numéro de sécurité sociale {_spaced(NIR, (1, 2, 2, 2, 3, 3, 2))}", "FR_NIR",
     _spaced(NIR, (1, 2, 2, 2, 3, 3, 2))),
    (f"NIR: {NIR}", "FR_NIR", NIR),
    (f"Sent with my carte vitale ({NIR})", "FR_NIR", NIR),
    # Spain: DNI and NIE check letters
    (f"DNI {DNI}", "ES_DNI", DNI),
    (f"dni no. {DNI[:8]}-{DNI[8].lower()}", "ES_DNI", f"{DNI[:8]}-{DNI[8].lower()}"),
    (f"my id is {DNI}", "ES_DNI", DNI),
    (f"NIE: {NIE}", "ES_NIE", NIE),
    (f"tarjeta de residencia {NIE[0]}-{NIE[1:8]}-{NIE[8]}", "ES_NIE",
     f"{NIE[0]}-{NIE[1:8]}-{NIE[8]}"),
    # Italy: codice fiscale check character
    (f"Codice fiscale: {CF}", "IT_FISCAL_CODE", CF),
    (f"cf {CF.lower()}", "IT_FISCAL_CODE", CF.lower()),
    (f"Ship to Mario, {CF}", "IT_FISCAL_CODE", CF),
    # India: Aadhaar (Verhoeff) and PAN
    (f"Aadhaar: {_spaced(AADHAAR, (4, 4, 4))}", "IN_AADHAAR", _spaced(AADHAAR, (4, 4, 4))),
    (f"my aadhar no is {AADHAAR}", "IN_AADHAAR", AADHAAR),
    (f"UID #{_spaced(AADHAAR, (4, 4, 4), '-')}", "IN_AADHAAR", _spaced(AADHAAR, (4, 4, 4), "-")),
    (f"PAN: {PAN}", "IN_PAN", PAN),
    (f"pan card no. {PAN.lower()}", "IN_PAN", PAN.lower()),
    (f'{{"pan": "{PAN}"}}', "IN_PAN", PAN),
    # Brazil: CPF, two check digits
    (f"CPF {_cpf_formatted(CPF)}", "BR_CPF", _cpf_formatted(CPF)),
    (f"cpf nº {CPF}", "BR_CPF", CPF),
    (f"Cliente: {_cpf_formatted(CPF)}", "BR_CPF", _cpf_formatted(CPF)),
    # a national ID without a country
    ("national ID number 4821-9930-17", "NATIONAL_ID", "4821-9930-17"),
    ("ID card no. X7781234", "NATIONAL_ID", "X7781234"),
]


@pytest.mark.parametrize(("text", "entity", "value"), NATIONAL)
def test_national_ids(text: str, entity: str, value: str) -> None:
    assert (entity, value) in scan(text)


def test_a_wrong_checksum_counts_only_right_after_a_strong_key_word() -> None:
    bad_de = _wrong_last(DE, idnr.is_valid, "0123456789")
    bad_dni = _wrong_last(DNI, dni.is_valid, "TRWAGMYFPDXBNJZSQVHLCKE")
    bad_cpf = _wrong_last(CPF, cpf.is_valid, "0123456789")
    bad_cf = _wrong_last(CF, codicefiscale.is_valid, "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    # a typo'd ID is still an ID when the key word says so
    assert ("DE_TAX_ID", bad_de) in scan(f"meine Steuer-ID ist {bad_de}")
    assert ("ES_DNI", bad_dni) in scan(f"DNI {bad_dni}")
    assert ("BR_CPF", bad_cpf) in scan(f"CPF: {bad_cpf}")
    assert ("IT_FISCAL_CODE", bad_cf) in scan(f"codice fiscale {bad_cf}")
    # ... but not by shape alone, nor with the key word far away
    assert "ES_DNI" not in entities(f"Reference {bad_dni}")
    assert "BR_CPF" not in entities(f"Invoice {_cpf_formatted(bad_cpf)}")
    assert "IT_FISCAL_CODE" not in entities(f"Product code {bad_cf}")
    assert "DE_TAX_ID" not in entities(
        f"Die Steuer-ID steht auf dem Bescheid. Die Kundennummer lautet {bad_de}.")


NATIONAL_MISSES = [
    # Aadhaar-shaped: Verhoeff-valid 12 digits alone are 1 in 10 random numbers
    (f"Tracking number {AADHAAR}", "IN_AADHAAR"),
    (f"The population was {AADHAAR} in the model.", "IN_AADHAAR"),
    # PAN-shaped product codes
    (f"Replace filter part {PAN} every six months.", "IN_PAN"),
    (f"Heat the frying pan. SKU {PAN}", "IN_PAN"),
    # an 11-digit Steuer-ID-valid number without its key word
    (f"Call reference {DE} when you write.", "DE_TAX_ID"),
    (f"Order {DE}", "DE_TAX_ID"),
    # a CPF-valid 11-digit number without key word or its dotted format
    (f"Serial {CPF} shipped", "BR_CPF"),
    # NINO shape in lower case without key word, and excluded prefixes
    ("the code ab123456c is printed on the box", "UK_NINO"),
    ("GB123456A", "UK_NINO"),
    ("National Insurance rates rose by 1.25% in 2022.", "UK_NINO"),
    ("12345678 is a number, Z is a letter", "ES_DNI"),
    ("ID card photos must be 35x45 mm", "NATIONAL_ID"),
]


@pytest.mark.parametrize(("text", "entity"), NATIONAL_MISSES)
def test_national_id_near_misses(text: str, entity: str) -> None:
    assert entity not in entities(text)


def test_levels_and_digits_view() -> None:
    for entity in ("PASSPORT", "NATIONAL_ID", "UK_NINO", "DE_TAX_ID", "FR_NIR", "ES_DNI",
                   "ES_NIE", "IT_FISCAL_CODE", "IN_AADHAAR", "IN_PAN", "BR_CPF"):
        assert DEFAULT_LEVELS[entity] == "pii", entity
    # digits broken up by dots and line breaks are joined by the collapsed view
    text = f"Steuer-ID {DE[:4]}.{DE[4:8]}.\n{DE[8:]}"
    assert "DE_TAX_ID" in entities(text)
    detection = default_detector().detect([text])
    assert detection.level == "pii"


def test_a_passport_split_over_two_messages() -> None:
    detection = default_detector().detect(["What is my passport number?", "It is C01X00T47."])
    assert {f.entity for f in detection.findings} >= {"PASSPORT"}

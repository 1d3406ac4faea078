"""People's identifiers that Presidio's defaults miss.

* ``PHONE_NUMBER``: Presidio validates numbers with ``phonenumbers`` for eight regions
  and scores them 0.4 (0.75 with a context word), so a national number of any other
  country (``06-82237745``, ``730 064 218``) or one written without context is lost.
  Here a phone-shaped string — optional ``+``country code, optional ``(area)``, up to
  six groups of digits separated by a space, dot or dash, 7–15 digits in all (6 if
  grouped), an optional extension — counts when it starts with ``+`` or ``(area)``
  (0.6), or has a phone word (``phone``, ``tel``, ``call``, ``mobile``, ``fax``,
  ``office``…; ``Telefon``, ``Handy``, ``portable``, ``móvil``, ``cellulare``,
  ``telemóvel``, ``mobiel``… in the EU languages) within 40 characters before or 12
  after (0.7–0.8). Dates are not phones.
* ``UK_NHS``: Presidio's ``NhsRecognizer`` scores any 3-3-4 number with a valid mod-11
  check digit 1.0 — one US phone number in eleven. It is replaced by the same check
  that only counts with an NHS word nearby.
* ``US_SSN``: Presidio scores ``123-45-6789`` 0.5 but nine bare digits 0.05 even after
  "SSN"; here nine digits (or 3-2-4 with any separator) right after an SSN key word
  count, with the Social Security Administration's validity rules (no 000/666/9xx
  area, no 00 group, no 0000 serial).
* ``US_DRIVER_LICENSE``: state formats differ too much for one pattern, and Presidio's
  recognizer misses plain digit runs ("…license number is 217223320" reads as a date
  to spaCy); here 4–20 letters/digits (two digits at least) right after "driver's
  license (number|no|#)" count (0.85).
* ``PERSON``: a capitalised name after a title (``Dr. Ana Lima``, ``Mrs Okafor``) or
  after "my name is" / "name:" / "patient" / "pt" / "Dear" / "Regards,", which spaCy's
  small model misses in lists, signatures and clinical shorthand.
"""

from __future__ import annotations

import re

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule, words

__all__ = ["IdentityRecognizer"]

_PHONE_WORDS = words([
    "phone", "phones", "telephone", "tel", "tel.", "call", "calls", "calling", "called",
    "mobile", "cell", "cellphone", "fax", "desk", "office", "landline", "contact",
    "reach", "text", "sms", "whatsapp", "signal", "ring", "dial", "hotline",
    "ph", "mob", "phone number", "extension", "ext", "message", "messages",
    "voicemail", "answering",
    # German, French, Spanish, Italian, Portuguese, Dutch (text is accent-folded first)
    "telefon", "telefonnummer", "tel.-nr.", "tel.nr.", "handy", "handynummer", "mobil",
    "mobilnummer", "anrufen", "rufnummer", "festnetz", "numero de telephone", "portable",
    "appeler", "appelez", "appelle", "joindre", "telefono", "numero de telefono", "movil",
    "celular", "llamar", "llame", "llama", "cellulare", "numero di telefono", "chiamare",
    "chiama", "chiamami", "telefone", "numero de telefone", "telemovel", "ligar", "ligue",
    "telefoon", "telefoonnummer", "mobiel", "mobiele nummer", "bellen", "bel",
])
_NHS_WORDS = words(["nhs", "national health service", "nhs no", "nhs number",
                    "health service", "health authority", "chi number"])

# 7–15 digits: optional +country code, optional (area), up to six groups separated by a
# space, dot or dash, optional extension. A label glued on with a dash ("-Office") may
# follow.
_PHONE = (
    r"(?<![\w+\-.])"
    r"(?:\+\d{1,3}[ .\-]?)?"
    r"(?:\(\d{1,5}\)[ .\-]?)?"
    r"\d{1,15}(?:[ .\-]\d{1,8}){0,5}"
    r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,5})?"
    r"(?![\w]|-\d|\.\d)"
)
_PHONE_INTL = (
    r"(?<![\w+\-.])(?:\+\d{1,3}[ .\-]?(?:\(\d{1,5}\)[ .\-]?)?|\(\d{1,5}\)[ .\-]?)"
    r"\d{1,8}(?:[ .\-]?\d{1,8}){0,5}"
    r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,5})?(?![\w]|-\d|\.\d)"
)

def _digits(value: str) -> int:
    return sum(c.isdigit() for c in value)


def _phone_ok(value: str) -> bool:
    number = re.split(r"\s?(?:x|ext\.?|extension)\s?", value)[0]
    n = _digits(number)
    # six digits only as groups ("61 60 34": a local number in several countries)
    if not (7 <= n <= 15 or (n == 6 and re.search(r"\d[ .\-]\d", number))):
        return False
    # Dates and times are not phone numbers: 2024-03-05, 12.05.2024, 10.30.45.
    return not re.fullmatch(r"\d{1,4}[.\-/]\d{1,2}[.\-/]\d{1,4}", value)


def _nhs_ok(value: str) -> bool:
    """NHS number check digit: weights 10..2 over the first nine digits, mod 11."""
    d = [int(c) for c in value if c.isdigit()]
    if len(d) != 10:
        return False
    check = 11 - sum(w * x for w, x in zip(range(10, 1, -1), d[:9], strict=True)) % 11
    return (0 if check == 11 else check) == d[9] and check != 10


def _ssn_ok(value: str) -> bool:
    d = "".join(c for c in value if c.isdigit())
    if len(d) != 9:
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    return not (area in ("000", "666") or area[0] == "9" or group == "00"
                or serial == "0000" or len(set(d)) == 1)


_NAME = r"[A-Z][a-z'’\-]+(?:\s+[A-Z]\.)?(?:\s+[A-Z][a-z'’\-]+){0,2}"


def _rules() -> list[Rule]:
    return [
        Rule("PHONE_NUMBER", "international phone (+cc or (area))",
             re.compile(_PHONE_INTL),
             0.6, context=_PHONE_WORDS, context_score=0.8, window=(40, 12),
             validate=_phone_ok),
        Rule("PHONE_NUMBER", "phone-shaped number near a phone word", re.compile(_PHONE),
             0.0, context=_PHONE_WORDS, context_score=0.7, window=(40, 12),
             validate=_phone_ok),
        Rule("US_SSN", "ssn after its key word",
             re.compile(r"(?i)(?:\bssn|\bss\s?#|social\s+security(?:\s+(?:number|no\.?|#))?)"
                        r"[\"']?\s*(?:is\s+|[:#=\-]\s*)?[\"']?"
                        r"(?P<v>\d{3}[ .\-/]?\d{2}[ .\-/]?\d{4})"
                        r"(?![\w\-])"), 0.9, group="v", validate=_ssn_ok),
        Rule("US_DRIVER_LICENSE", "licence number after its key word",
             re.compile(r"(?i)\b(?:driver'?s?|driving)\s+licen[cs]e(?:\s+(?:number|no\.?|#))?"
                        r"[\"']?\s*(?:is\s+|[:#=\-]\s*)?[\"']?"
                        r"(?P<v>(?=[A-Za-z0-9\-]*\d[A-Za-z0-9\-]*\d)[A-Za-z0-9][A-Za-z0-9\-]{3,19})"
                        r"(?![\w\-])"), 0.85, group="v"),
        Rule("UK_NHS", "nhs number near an nhs word",
             re.compile(r"(?<![\w\-])\d{3}[ \-]?\d{3}[ \-]?\d{4}(?![\w]|-\d)"), 0.0,
             context=_NHS_WORDS, context_score=0.9, window=(48, 8), validate=_nhs_ok),
        Rule("PERSON", "name after a title",
             re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Rev|Mme|Mlle|Herr|Frau)"
                        r"\.?\s+(?P<v>" + _NAME + r")"), 0.7, group="v"),
        Rule("PERSON", "name after an introduction",
             re.compile(r"(?:\b[Mm]y name is|\b[Nn]ame\s*:|\b[Dd]ear"
                        r"|\b[Ss]incerely,|\b[Rr]egards,|\b[Ss]igned,?|\b[Cc]ontact\s*:|\b[Pp]atient\s*:?"
                        r"|\b[Pp]t\.?)"
                        r"\s+(?!(?:Sir|Madam|Team|All|Customer|Colleagues?|Friends?|Doctor|"
                        r"Patient|Valued|Hiring|Support|Admin|Manager|Everyone)\b)"
                        r"(?P<v>" + _NAME + r")"), 0.7, group="v"),
    ]


class IdentityRecognizer(RegexRecognizer):
    """International ``PHONE_NUMBER``, key-word ``US_SSN`` and ``US_DRIVER_LICENSE``, and
    titled ``PERSON``."""

    def __init__(self) -> None:
        super().__init__("EdgewiseIdentityRecognizer", _rules())


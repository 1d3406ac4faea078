"""Identity documents beyond the US: passports of many countries and national ID numbers.

Who does what:

* **python-stdnum** checks every checksum: ``de.idnr`` (Steuer-ID, ISO 7064 mod 11,10
  and the digit-frequency rule), ``fr.nir`` (the 97-complement key, Corsica ``2A``/``2B``),
  ``es.dni`` / ``es.nie`` (the mod-23 check letter), ``it.codicefiscale`` (the check
  character), ``in_.aadhaar`` (Verhoeff, no palindromes, first digit 2–9), ``in_.pan``
  (the holder-type letter), ``br.cpf`` (two mod-11 check digits).
* **Presidio's country recognizers** give the shapes where theirs are good: the UK NINO
  prefix letters (``UkNinoRecognizer``: no BG/GB/NK/KN/NT/TN/ZZ, no D/F/I/Q/U/V) and the
  Italian codice fiscale pattern (``ItFiscalCodeRecognizer``, with omocodia letters).
  Their recognizers themselves are not registered: they are registered for other
  languages, boost scores only from spaCy lemmas (nothing on the cheap views) and, for
  Aadhaar and the Steuer-ID, score any valid number without context — a random
  12-digit number passes Verhoeff one time in ten.
* **Here**: the context words (in English and the document's own language, in a
  character window so they work without spaCy) and the scores.

Scores (``privacy.min_score`` is 0.5):

* a value with a valid checksum and a key word within the window — 0.9;
* a value with a valid checksum and a shape few other things have (``123.456.789-09``
  for a CPF, the 16-character codice fiscale, ``12345678Z`` for a DNI, ``1 85 05 78 006
  084 36`` for a NIR, a 4-4-4 grouped Aadhaar, a NINO in upper case) — 0.6;
* a value of the right shape whose checksum fails, right after a strong key word
  (``Steuer-ID: …``, ``NIE …``, ``CPF nº …``) — 0.7: a typo'd ID is still somebody's
  ID, and the key word says what it is;
* nothing else: an 11-digit Steuer-ID-valid number or a ``ABCDE1234F`` product code
  without their key words is not reported.

Passports (``PASSPORT``; Presidio's ``US_PASSPORT`` stays as it is): no country's
passport number has a public checksum outside the machine-readable zone, so a value of
one of the common shapes counts only next to a passport word — ``passport``,
``passport no.``, ``pass#``, ``Reisepass``, ``Passnummer``, ``passeport``, ``pasaporte``,
``passaporto``, ``paspoort``, ``paszport``, ``travel document`` (0.85 in the window, 0.9
right after it). Shapes: 9 digits (US, UK), a letter + 7–8 digits (US next-generation,
India ``J1234567``, Australia ``N1234567``), 2 letters + 6–7 digits (Canada
``AB123456``, Brazil, Italy ``YA1234567``, UK), 3 letters + 6 digits (Spain), 2 digits +
2 letters + 5 digits (France ``09AA12345``), the German 9-character serial
(``C01X00T47``: no vowels, a check digit last).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from presidio_analyzer.predefined_recognizers import ItFiscalCodeRecognizer, UkNinoRecognizer
from stdnum.br import cpf
from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.in_ import aadhaar, pan
from stdnum.it import codicefiscale

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule, words

__all__ = ["KEY_SEP", "VALUE_START", "DocumentsRecognizer", "after_key"]

#: What may stand between a key word and its value: quotes, ``:``, ``=``, ``#``, dashes,
#: ``no.``, ``nº``, ``number``, ``is`` / ``ist`` / ``est`` (``"passport_no": "…"``,
#: ``Steuer-ID-Nr.: …``).
KEY_SEP = (r"(?:[\s\"'`:=#\-_.,()\[\]]|n[°º]|(?:is|was|ist|lautet|est|es|no|nr|num|number"
           r"|nummer|numero|número|id)(?![A-Za-z])){0,8}")


#: Where a value may start: not inside a word — except a number right after a key in
#: capitals, which the collapsed-digits view glues on ("ID 4889 6381 256" is read as
#: "ID48896381256").
VALUE_START = r"(?:(?<![A-Za-z0-9])|(?<=(?-i:[A-Z]))(?=\d))"


def after_key(key: str, value: str) -> re.Pattern[str]:
    """``key`` (a regex), the separators of :data:`KEY_SEP`, then ``value`` as group
    ``v``; case-insensitive, whole words."""
    return re.compile(r"(?i)(?<![A-Za-z0-9])(?:" + key + r")" + KEY_SEP
                      + VALUE_START + r"(?P<v>" + value + r")(?![A-Za-z0-9])")


def _valid(check: Callable[[str], bool]) -> Callable[[str], bool]:
    def ok(value: str) -> bool:
        return check(re.sub(r"[\s.\-/]", "", value))
    return ok


# -- passports ---------------------------------------------------------------------------

_PASSPORT_KEY = (r"passports?|pass\s?(?:#|no\b\.?|nr\b\.?|num\b)|reisepass(?:nummer)?"
                 r"|passnummer|pass-nr|passeport|pasaporte|passaporto|passaporte|paspoort"
                 r"|paszport|travel\s+document")
_PASSPORT_WORDS = re.compile(r"(?i)(?<![A-Za-z0-9])(?:" + _PASSPORT_KEY + r")")
_PASSPORT_VALUE = (
    r"(?:\d{9}"                                   # US, UK
    r"|[A-Z][ \-]?\d{7,8}"                        # US next-gen, IN, AU
    r"|[A-Z]{2}[ \-]?\d{6,7}"                     # CA, BR, IT, UK, AU
    r"|[A-Z]{3}[ \-]?\d{6}"                       # ES
    r"|\d{2}[A-Z]{2}[ \-]?\d{5}"                  # FR
    r"|[CFGHJK](?=[A-Z0-9]{7}\d)(?=(?:[A-Z]*\d){3})[CFGHJKLMNPRTVWXYZ0-9]{7}\d)"  # DE
)


def _not_all_same(value: str) -> bool:
    digits = re.sub(r"\D", "", value)
    return len(set(digits)) > 1


# -- national IDs ------------------------------------------------------------------------

# UK NINO: Presidio's prefix letters, then 6 digits (pairs may be spaced or dashed) and
# a suffix A–D.
_NINO_PREFIX = UkNinoRecognizer.PATTERNS[0].regex.split(r"([0-9]{2})")[0].removeprefix(r"\b")
_NINO = _NINO_PREFIX + r"[ \-]?\d{2}[ \-]?\d{2}[ \-]?\d{2}[ \-]?[A-Da-d]"
# Italian codice fiscale: Presidio's pattern (without its own (?i) flag and groups).
_CF = ItFiscalCodeRecognizer.PATTERNS[0].regex.removeprefix("(?i)")

_DE_TAX = r"[1-9]\d(?:[ ]?\d{3}){3}"               # 12 345 678 901 or 12345678901
_NIR = (r"[1-478][ ]?\d{2}[ ]?(?:0[1-9]|1[0-2]|[2-9]\d)[ ]?(?:\d{2}|2[AB])[ ]?\d{3}[ ]?"
        r"\d{3}[ ]?\d{2}")
_NIR_GROUPED = r"[1-478] \d{2} \d{2} (?:\d{2}|2[AB]) \d{3} \d{3} \d{2}"
_DNI = r"\d{8}[ \-]?[A-Z]"
_NIE = r"[XYZ][ \-]?\d{7}[ \-]?[A-Z]"
_AADHAAR = r"[2-9]\d{3}[ \-]?\d{4}[ \-]?\d{4}"
_AADHAAR_GROUPED = r"[2-9]\d{3}([ \-])\d{4}\1\d{4}"
_PAN = r"[A-Z]{3}[ABCFGHJLPT][A-Z]\d{4}[A-Z]"
_CPF = r"\d{3}\.?\d{3}\.?\d{3}[\-/]?\d{2}"
_CPF_FORMATTED = r"\d{3}\.\d{3}\.\d{3}-\d{2}"

_NINO_WORDS = words(["national insurance", "national insurance number", "ni number",
                     "ni no", "nino", "nin", "ni#", "n.i. number"])
_NINO_KEY = r"nino|ni\s?(?:no\b\.?|number|#)|national\s+insurance(?:\s+number)?"
_DE_TAX_WORDS = words([
    "steuer-id", "steuerid", "steuer id", "steuer-idnr", "steueridentifikationsnummer",
    "steuerliche identifikationsnummer", "identifikationsnummer", "idnr", "id-nr",
    "tin", "tax id", "tax identification number", "german tax id", "bzst",
    "persönliche identifikationsnummer", "personliche identifikationsnummer"])
_DE_TAX_KEY = (r"steuer[\s\-]?id(?:[\s\-]?nr)?|steueridentifikationsnummer|idnr"
               r"|steuerliche\s+identifikationsnummer|(?:german\s+)?tax\s+id")
_NIR_WORDS = words([
    "nir", "numéro de sécurité sociale", "numero de securite sociale", "sécurité sociale",
    "securite sociale", "sécu", "secu", "n° de sécu", "insee", "numéro insee",
    "carte vitale", "social security", "french social security"])
_NIR_KEY = (r"nir|num[ée]ro\s+(?:de\s+)?s[ée]cu(?:rit[ée]\s+sociale)?|s[ée]curit[ée]\s+sociale"
            r"|s[ée]cu|insee|carte\s+vitale")
_DNI_WORDS = words(["dni", "d.n.i.", "nif", "documento nacional de identidad",
                    "documento de identidad", "spanish id", "national id", "id", "id card",
                    "identity", "identity card", "id number"])
_DNI_KEY = r"dni|d\.n\.i\.|nif"
_NIE_WORDS = words(["nie", "n.i.e.", "número de identidad de extranjero",
                    "numero de identidad de extranjero", "foreigner identity number",
                    "tarjeta de residencia", "residence card"])
_NIE_KEY = r"nie|n\.i\.e\.|tie"
_CF_WORDS = words(["codice fiscale", "cod. fiscale", "cod fiscale", "c.f.", "cf",
                   "fiscal code", "tax code", "tessera sanitaria"])
_CF_KEY = r"codice\s+fiscale|cod\.?\s*fisc(?:ale)?\.?|c\.f\.|cf|fiscal\s+code"
_AADHAAR_WORDS = words(["aadhaar", "aadhar", "adhaar", "uidai", "uid", "आधार",
                        "aadhaar number", "aadhaar no", "aadhaar card"])
_AADHAAR_KEY = r"aadhaa?r|adhaar|uidai|uid"
_PAN_WORDS = re.compile(r"(?<![A-Za-z0-9])(?:PAN|(?i:pan[\"']?\s*(?:card|no\b|number|#|:|=)"
                        r"|permanent\s+account\s+number|income\s+tax))(?![A-Za-z0-9])")
_PAN_KEY = r"pan(?:\s*card)?|permanent\s+account\s+number"
_CPF_WORDS = words(["cpf", "c.p.f.", "cadastro de pessoas físicas",
                    "cadastro de pessoas fisicas", "cadastro de pessoa física",
                    "brazilian taxpayer", "taxpayer id"])
_CPF_KEY = r"cpf|c\.p\.f\.|cadastro\s+de\s+pessoas?\s+f[íi]sicas?"


def _national(entity: str, value: str, check: Callable[[str], bool], context: re.Pattern[str],
              key: str, formatted: str | None = None, *,
              window: tuple[int, int] = (48, 16)) -> list[Rule]:
    """The three rules of a national ID (see the module docstring for the scores)."""
    valid = _valid(check)
    body = r"(?<![\-.])" + VALUE_START + r"(?i:" + value + r")(?![A-Za-z0-9]|[\-.]\d)"
    rules = [
        Rule(entity, f"{entity.lower()} with a valid checksum near its key word",
             re.compile(body), 0.0, context=context, context_score=0.9, window=window,
             validate=valid),
        Rule(entity, f"{entity.lower()} right after its key word (any checksum)",
             after_key(key, value), 0.7, group="v", validate=_not_all_same),
    ]
    if formatted is not None:
        rules.append(Rule(entity, f"{entity.lower()} in its own format, valid checksum",
                          re.compile(r"(?<![A-Za-z0-9\-.])" + formatted
                                     + r"(?![A-Za-z0-9]|[\-.]\d)"), 0.6, validate=valid))
    return rules


def _rules() -> list[Rule]:
    return [
        Rule("PASSPORT", "passport-shaped value near a passport word",
             re.compile(r"(?<!-)" + VALUE_START + r"(?i:" + _PASSPORT_VALUE
                        + r")(?![A-Za-z0-9]|-\d)"),
             0.0, context=_PASSPORT_WORDS, context_score=0.85, window=(48, 40),
             validate=_not_all_same),
        Rule("PASSPORT", "passport-shaped value right after a passport word",
             after_key(_PASSPORT_KEY, _PASSPORT_VALUE), 0.9, group="v",
             validate=_not_all_same),
        # The NINO has no checksum; its letters are rare enough in upper case.
        Rule("UK_NINO", "nino in upper case",
             re.compile(r"(?<![A-Za-z0-9\-])" + _NINO + r"(?![A-Za-z0-9])"), 0.6,
             context=_NINO_WORDS, context_score=0.9, validate=str.isupper),
        Rule("UK_NINO", "nino in any case near its key word",
             re.compile(r"(?i)(?<![A-Za-z0-9\-])" + _NINO + r"(?![A-Za-z0-9])"), 0.0,
             context=_NINO_WORDS, context_score=0.85),
        Rule("UK_NINO", "nino right after its key word",
             after_key(_NINO_KEY, _NINO), 0.9, group="v"),
        *_national("DE_TAX_ID", _DE_TAX, idnr.is_valid, _DE_TAX_WORDS, _DE_TAX_KEY),
        *_national("FR_NIR", _NIR, nir.is_valid, _NIR_WORDS, _NIR_KEY, _NIR_GROUPED),
        *_national("ES_DNI", _DNI, dni.is_valid, _DNI_WORDS, _DNI_KEY,
                   r"\d{8}-?[A-Z]"),
        *_national("ES_NIE", _NIE, nie.is_valid, _NIE_WORDS, _NIE_KEY,
                   r"[XYZ]-?\d{7}-?[A-Z]"),
        *_national("IT_FISCAL_CODE", _CF, codicefiscale.is_valid, _CF_WORDS, _CF_KEY,
                   _CF),
        *_national("IN_AADHAAR", _AADHAAR, aadhaar.is_valid, _AADHAAR_WORDS, _AADHAAR_KEY,
                   _AADHAAR_GROUPED),
        *_national("IN_PAN", _PAN, pan.is_valid, _PAN_WORDS, _PAN_KEY),
        *_national("BR_CPF", _CPF, cpf.is_valid, _CPF_WORDS, _CPF_KEY, _CPF_FORMATTED),
    ]


class DocumentsRecognizer(RegexRecognizer):
    """``PASSPORT`` and the national IDs ``UK_NINO``, ``DE_TAX_ID``, ``FR_NIR``,
    ``ES_DNI``, ``ES_NIE``, ``IT_FISCAL_CODE``, ``IN_AADHAAR``, ``IN_PAN``, ``BR_CPF``."""

    def __init__(self) -> None:
        super().__init__("EdgewiseDocumentsRecognizer", _rules())

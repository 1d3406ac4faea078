"""Payment cards and IBANs, complementing Presidio's recognizers for both.

* ``CREDIT_CARD``: 12–19 digits, optionally grouped by single spaces or dashes,
  Luhn-valid, starting with an issuer prefix (ISO/IEC 7812 ranges of Visa, Mastercard
  including the 2221–2720 series, Amex, Discover, JCB, Diners, Maestro, UnionPay).
  Presidio's recognizer misses the Mastercard 2-series, 19-digit Visa and Maestro.
* ``IBAN_CODE``: upper-case country code, check digits and 4-character groups, checked
  with ISO 13616's mod-97. Presidio's recognizer (kept) matches case-insensitively, so
  in "IBAN ES27 5936 1551 1639 0609 7122 before Friday" it swallows "befo" as a fifth
  group, fails the checksum and reports nothing; here trailing groups are dropped one
  by one until the checksum holds.
"""

from __future__ import annotations

import re
from typing import Any

from presidio_analyzer import RecognizerResult

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule, luhn_ok, words

__all__ = ["FinanceRecognizer", "iban_ok"]

_CARD = r"(?<![\w\-])\d{4}(?:[ \-]?\d{2,7}){1,4}(?![\w]|-\d)"
_CARD_PREFIX = re.compile(
    r"^(?:4|5[0-9]|6\d|2(?:2[2-9][1-9]|2[3-9]\d|[3-6]\d\d|7[01]\d|720)|3[47]|3[0689]|35"
    r"|1800|2131)")
_CARD_WORDS = words(["card", "cards", "cc", "credit", "debit", "visa", "mastercard",
                     "amex", "discover", "maestro", "jcb", "diners", "pan", "charge"])

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[ \-]?[A-Z0-9]{4}){2,7}"
                   r"(?:[ \-]?[A-Z0-9]{1,3})?(?![A-Za-z0-9])")
_IBAN_GROUP_END = re.compile(r"[ \-]?[A-Z0-9]{1,4}$")


def _card_ok(value: str) -> bool:
    digits = "".join(c for c in value if c.isdigit())
    return (12 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits))
            and luhn_ok(digits) and len(set(digits)) > 2)


def iban_ok(value: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters → 10..35,
    the number mod 97 must be 1."""
    s = re.sub(r"[ \-]", "", value)
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    n = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(n) % 97 == 1


class FinanceRecognizer(RegexRecognizer):
    """``CREDIT_CARD`` (every issuer range) and ``IBAN_CODE`` (strict case, trimmed)."""

    def __init__(self) -> None:
        super().__init__("EdgewiseFinanceRecognizer", [
            Rule("CREDIT_CARD", "payment card (Luhn, issuer prefix)", re.compile(_CARD), 0.9,
                 context=_CARD_WORDS, context_score=1.0, window=(48, 8), validate=_card_ok),
        ])
        self.supported_entities = ["CREDIT_CARD", "IBAN_CODE"]

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts)
        if entities and "IBAN_CODE" not in entities:
            return results
        for m in _IBAN.finditer(text):
            value = m.group()
            while len(re.sub(r"[ \-]", "", value)) >= 15 and not iban_ok(value):
                value = _IBAN_GROUP_END.sub("", value)
            if iban_ok(value):
                results.append(RecognizerResult(
                    entity_type="IBAN_CODE", start=m.start(), end=m.start() + len(value),
                    score=1.0, recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: self.recognizer_name,
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                        "rule": "iban (mod 97)"}))
        return results

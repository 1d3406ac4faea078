"""Edgewise's Presidio recognizers, on top of Presidio's predefined ones.

* ``identity.py`` — ``PHONE_NUMBER`` (international formats), ``US_SSN`` (unformatted,
  after "SSN"), ``UK_NHS`` (only with an NHS word; replaces Presidio's), ``PERSON``
  (after a title or "my name is");
* ``finance.py`` — ``CREDIT_CARD`` (every issuer range), ``IBAN_CODE`` (mod-97, strict
  case);
* ``medical.py`` — ``MRN``, ``ICD10_CODE``, ``DRUG_NAME``, ``MEDICAL_CONTEXT``;
* ``secrets.py`` — ``AWS_ACCESS_KEY``, ``AWS_SECRET_KEY``, ``GITHUB_TOKEN``,
  ``OPENAI_API_KEY``, ``SLACK_TOKEN``, ``GOOGLE_API_KEY``, ``STRIPE_KEY``, ``JWT``,
  ``PRIVATE_KEY``, ``PASSWORD``, ``SECRET``;
* ``network.py`` — ``INTERNAL_HOSTNAME``, ``PRIVATE_IP``;
* ``places.py`` — ``STREET_ADDRESS`` (US/UK/continental streets, PO boxes, apartment
  lines), ``POSTCODE`` (city + ZIP, UK postcodes, continental postcode + city);
* ``dates.py`` — ``DATE_OF_BIRTH``, ``PERSONAL_DATE`` (admission, discharge, death,
  visit dates), ``AGE_OVER_89``;
* ``records.py`` — values named by their key in JSON, ``key=value``, ``Key: value`` and
  CSV/Markdown tables (``"dob": …`` → ``DATE_OF_BIRTH``; other identifying keys →
  ``RECORD_VALUE``);
* ``documents.py`` — ``PASSPORT`` (common shapes of many countries, near a passport word
  in several languages), national IDs with their checksums (python-stdnum):
  ``UK_NINO``, ``DE_TAX_ID``, ``FR_NIR``, ``ES_DNI``, ``ES_NIE``, ``IT_FISCAL_CODE``,
  ``IN_AADHAAR``, ``IN_PAN``, ``BR_CPF``;
* ``numbers.py`` — fax numbers (``PHONE_NUMBER``), ``HEALTH_PLAN_ID`` (MBI, Medicaid,
  member/policy numbers), ``ACCOUNT_NUMBER``, ``LICENSE_NUMBER`` (licences,
  certificates, DEA, NPI), ``VIN``, ``LICENSE_PLATE``, ``DEVICE_ID`` (IMEI, MEID, IMSI,
  serials, advertising IDs), ``PERSONAL_URL``, ``BIOMETRIC_ID``, ``ID_NUMBER``,
  ``NATIONAL_ID``;
* ``custom.py`` — whatever ``privacy.patterns`` and ``privacy.deny_lists`` name;
* ``nouns.py`` — ``PROPER_NOUN``, every proper-noun run (only with
  ``privacy.proper_nouns: true``).

Presidio's predefined English recognizers stay on (credit cards with Luhn, IBAN with the
mod-97 check, e-mail, phone via ``phonenumbers``, US SSN/ITIN/passport/driver licence/
bank numbers, NHS numbers, IP/MAC addresses, URLs, crypto wallets, dates, medical
licences, UUIDs) with spaCy's NER for ``PERSON``, ``LOCATION``, ``NRP`` and ``DATE_TIME``.

Importing this package imports Presidio (and spaCy); ``edgewise.privacy.detector``
imports it only when a :class:`~edgewise.privacy.detector.Detector` is built.
"""

from __future__ import annotations

from typing import Any

from edgewise.config import PrivacyConfig
from edgewise.privacy.recognizers.custom import deny_list_recognizers, pattern_recognizers
from edgewise.privacy.recognizers.dates import DatesRecognizer
from edgewise.privacy.recognizers.documents import DocumentsRecognizer
from edgewise.privacy.recognizers.finance import FinanceRecognizer
from edgewise.privacy.recognizers.identity import IdentityRecognizer
from edgewise.privacy.recognizers.medical import MedicalRecognizer
from edgewise.privacy.recognizers.network import NetworkRecognizer
from edgewise.privacy.recognizers.nouns import ProperNounRecognizer
from edgewise.privacy.recognizers.numbers import NumbersRecognizer
from edgewise.privacy.recognizers.places import PlacesRecognizer
from edgewise.privacy.recognizers.records import RecordsRecognizer
from edgewise.privacy.recognizers.secrets import SecretsRecognizer

__all__ = ["REPLACED_PRESIDIO_RECOGNIZERS", "STRUCTURED_ENTITIES", "edgewise_recognizers"]

#: Presidio predefined recognizers that edgewise replaces with its own version.
REPLACED_PRESIDIO_RECOGNIZERS: tuple[str, ...] = ("NhsRecognizer",)

#: Entity types whose recognizers need no NER: the ones run on the cheap views
#: (collapsed digits, message junctions). Config patterns and deny lists are added by
#: the detector.
STRUCTURED_ENTITIES: frozenset[str] = frozenset({
    "CREDIT_CARD", "IBAN_CODE", "US_SSN", "PHONE_NUMBER", "EMAIL_ADDRESS", "US_ITIN",
    "US_PASSPORT", "US_BANK_NUMBER", "UK_NHS", "CRYPTO", "IP_ADDRESS", "MRN",
    "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "GITHUB_TOKEN", "OPENAI_API_KEY", "SLACK_TOKEN",
    "GOOGLE_API_KEY", "STRIPE_KEY", "JWT", "PRIVATE_KEY", "PASSWORD", "SECRET",
    "PRIVATE_IP", "INTERNAL_HOSTNAME",
    "STREET_ADDRESS", "POSTCODE", "DATE_OF_BIRTH", "PERSONAL_DATE", "AGE_OVER_89",
    "RECORD_VALUE",
    "PASSPORT", "UK_NINO", "DE_TAX_ID", "FR_NIR", "ES_DNI", "ES_NIE", "IT_FISCAL_CODE",
    "IN_AADHAAR", "IN_PAN", "BR_CPF", "NATIONAL_ID", "HEALTH_PLAN_ID", "ACCOUNT_NUMBER",
    "LICENSE_NUMBER", "VIN", "LICENSE_PLATE", "DEVICE_ID", "PERSONAL_URL", "BIOMETRIC_ID",
    "ID_NUMBER",
})


def edgewise_recognizers(config: PrivacyConfig) -> list[Any]:
    """Every recognizer edgewise adds to Presidio's registry for ``config``."""
    return [
        IdentityRecognizer(),
        FinanceRecognizer(),
        MedicalRecognizer(),
        SecretsRecognizer(),
        NetworkRecognizer(config.internal_domains),
        PlacesRecognizer(),
        DatesRecognizer(),
        RecordsRecognizer(),
        DocumentsRecognizer(),
        NumbersRecognizer(),
        *pattern_recognizers(config.patterns),
        *deny_list_recognizers(config.deny_lists),
        *([ProperNounRecognizer()] if config.proper_nouns else []),
    ]

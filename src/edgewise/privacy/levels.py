"""Sensitivity levels and the default mapping entity type → level.

Levels are ordered ``public < internal < pii < phi`` (:class:`edgewise.levels.Level`).
A request's level is the highest of: its declared label, the level of each finding, and
the PHI rule (below). ``privacy.levels`` in the config overrides any entry of
:data:`DEFAULT_LEVELS`; an entity type named nowhere gets :data:`UNKNOWN_ENTITY_LEVEL`.

Why these defaults (bench/results/privacy.md has the numbers behind the noisy ones):

* **pii** — anything that identifies a person directly (GDPR Art. 4(1); the HIPAA Safe
  Harbor identifiers, 45 CFR 164.514(b)(2)): names, e-mail, phone, SSN/ITIN, passport,
  driver licence, card and bank numbers, IBAN, public IP addresses (personal data per
  CJEU C-582/14 *Breyer*), crypto wallets. Safe Harbor's geographic, date and age
  identifiers: ``STREET_ADDRESS`` and ``POSTCODE`` (geographic units smaller than a
  state; a full UK postcode covers ~15 addresses), ``DATE_OF_BIRTH`` and
  ``PERSONAL_DATE`` (admission, discharge, death, visit dates — a date tied to a
  person), ``AGE_OVER_89`` (ages over 89 are rare enough to single someone out); and
  ``RECORD_VALUE``, a value whose record key names it identifying (``user_id``,
  ``employee_id``…). Identity documents and Safe Harbor's number identifiers 10–18:
  ``PASSPORT`` (any country), national IDs (``UK_NINO``, ``DE_TAX_ID``, ``FR_NIR``,
  ``ES_DNI``, ``ES_NIE``, ``IT_FISCAL_CODE``, ``IN_AADHAAR``, ``IN_PAN``, ``BR_CPF``,
  and ``NATIONAL_ID``, an ID card or national number of no known country) — each
  issued to one person for life; ``ACCOUNT_NUMBER`` (bank, customer, utility, loyalty accounts),
  ``LICENSE_NUMBER`` (licences, certificates, DEA, NPI), ``VIN`` and ``LICENSE_PLATE``
  (a vehicle leads to its keeper), ``DEVICE_ID`` (IMEI, serials, advertising IDs: one
  handset, one implant, one person), ``PERSONAL_URL`` (a profile page or a URL that
  carries a person's key), ``BIOMETRIC_ID`` (a template cannot be changed once leaked),
  ``ID_NUMBER`` (employee, student, customer, case, claim numbers). **Secrets** (API
  keys, tokens, passwords,
  private keys) are not personal data, but a leaked credential opens every system it
  guards; they get ``pii`` so they stay on tiers cleared for the organisation's own
  data and are redacted before anything lower.
* **phi** — identifiers that only exist inside a care relationship: medical record
  numbers (HIPAA identifier 8) and health plan beneficiary numbers (``HEALTH_PLAN_ID``:
  member, subscriber and policy numbers, Medicare MBI, Medicaid IDs; identifier 9). A
  person's identifier *plus* health information is also
  ``phi`` (the PHI rule).
* **internal** — the organisation's infrastructure: internal host names, private IP
  addresses, MAC addresses, deny-list terms (project code names and the like).
* **public** — noisy or non-identifying on their own: ``LOCATION``, ``DATE_TIME`` and
  ``NRP`` from the NER model fire on most general-knowledge questions (a capital city,
  "in 1945", "French"), which would keep them off every public tier for no privacy
  gain; a street address next to a name is caught by the name. URLs and UUIDs are
  public. Health markers (ICD-10 codes, drug names, clinical words) alone are not
  individually identifiable (Safe Harbor de-identified data is not PHI), so they are
  ``public`` — but they switch on the PHI rule.

**The PHI rule** (HIPAA: PHI is individually identifiable health information). If a
request contains a health marker (:data:`HEALTH_ENTITIES`) and at least one finding whose
level is ``pii`` or higher, the request is ``phi`` and those identifying findings are
raised to ``phi``: removing them is what de-identifies the text, so a redacting tier
cleared for ``pii`` still gets them replaced.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgewise.levels import Level

__all__ = [
    "DEFAULT_LEVELS",
    "HEALTH_ENTITIES",
    "SECRET_ENTITIES",
    "UNKNOWN_ENTITY_LEVEL",
]

#: Entity types of credentials (one family in the bench).
SECRET_ENTITIES: frozenset[str] = frozenset({
    "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "GITHUB_TOKEN", "OPENAI_API_KEY", "SLACK_TOKEN",
    "GOOGLE_API_KEY", "STRIPE_KEY", "JWT", "PRIVATE_KEY", "PASSWORD", "SECRET",
})

#: Health markers: they do not identify anyone, but next to an identifier they make PHI.
HEALTH_ENTITIES: frozenset[str] = frozenset({
    "ICD10_CODE", "DRUG_NAME", "MEDICAL_CONTEXT", "MRN", "HEALTH_PLAN_ID",
})

_DEFAULTS: dict[str, str] = {
    # people (Presidio + edgewise recognizers)
    "PERSON": "pii",
    "PROPER_NOUN": "pii",  # only with privacy.proper_nouns (recognizers/nouns.py)
    "EMAIL_ADDRESS": "pii",
    "PHONE_NUMBER": "pii",
    "US_SSN": "pii",
    "US_ITIN": "pii",
    "US_PASSPORT": "pii",
    "US_DRIVER_LICENSE": "pii",
    "UK_NHS": "pii",
    "MEDICAL_LICENSE": "pii",
    # places, dates, ages and key-named record values (recognizers/places.py,
    # dates.py, records.py)
    "STREET_ADDRESS": "pii",
    "POSTCODE": "pii",
    "DATE_OF_BIRTH": "pii",
    "PERSONAL_DATE": "pii",
    "AGE_OVER_89": "pii",
    "RECORD_VALUE": "pii",
    # identity documents and numbers (recognizers/documents.py, numbers.py)
    "PASSPORT": "pii",
    "NATIONAL_ID": "pii",
    "UK_NINO": "pii",
    "DE_TAX_ID": "pii",
    "FR_NIR": "pii",
    "ES_DNI": "pii",
    "ES_NIE": "pii",
    "IT_FISCAL_CODE": "pii",
    "IN_AADHAAR": "pii",
    "IN_PAN": "pii",
    "BR_CPF": "pii",
    "ACCOUNT_NUMBER": "pii",
    "LICENSE_NUMBER": "pii",
    "VIN": "pii",
    "LICENSE_PLATE": "pii",
    "DEVICE_ID": "pii",
    "PERSONAL_URL": "pii",
    "BIOMETRIC_ID": "pii",
    "ID_NUMBER": "pii",
    # money
    "CREDIT_CARD": "pii",
    "US_BANK_NUMBER": "pii",
    "IBAN_CODE": "pii",
    "CRYPTO": "pii",
    # network
    "IP_ADDRESS": "pii",
    "PRIVATE_IP": "internal",
    "INTERNAL_HOSTNAME": "internal",
    "MAC_ADDRESS": "internal",
    "URL": "public",
    "UUID": "public",
    # noisy NER types (see module docstring)
    "LOCATION": "public",
    "DATE_TIME": "public",
    "NRP": "public",
    # health
    "MRN": "phi",
    "HEALTH_PLAN_ID": "phi",
    "ICD10_CODE": "public",
    "DRUG_NAME": "public",
    "MEDICAL_CONTEXT": "public",
    # secrets
    **{name: "pii" for name in sorted(SECRET_ENTITIES)},
}

DEFAULT_LEVELS: Mapping[str, Level] = {k: Level(v) for k, v in _DEFAULTS.items()}

#: Level of an entity type that neither the defaults nor ``privacy.levels`` name (a
#: custom recognizer's own ``level`` is used first).
UNKNOWN_ENTITY_LEVEL = Level.PII

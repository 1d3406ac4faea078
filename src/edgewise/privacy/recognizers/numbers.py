"""Numbers that identify a person through something they hold: plans, accounts, licences,
vehicles, devices, profiles, biometrics (HIPAA Safe Harbor identifiers 9–16, 18).

Every type needs its key words, except shapes with a check digit that nothing else has;
key words are found in a character window (``base.Rule``) or right before the value
(:func:`~edgewise.privacy.recognizers.documents.after_key`: ``no.``, ``#``, ``:``,
quotes and JSON keys in between), so the rules run on the cheap views and on numbers
written in words. A value is never a bare year (``case number … in 2019``) and, for
the key-word rules, has three digits at least (``order 12``, ``case 3`` are no IDs).

* ``PHONE_NUMBER`` for fax numbers: ``identity.py`` already counts ``fax``; here
  ``telefax``, ``facsimile`` and ``fax#`` glued to the number.
* ``HEALTH_PLAN_ID`` (``phi``, identifier 9): the Medicare Beneficiary Identifier in
  Presidio's ``UsMbiRecognizer`` shape (``1EG4-TE5-MK73``; dashed alone 0.6, else near
  ``medicare``/``MBI``), a Medicaid ID after its key word, and subscriber / member /
  policy / group / beneficiary numbers when a health-plan word (``health``,
  ``insurance card``, ``Aetna``, ``copay``…) is within 80 characters. Presidio's own
  MBI and member-id recognizers stay off (they score from spaCy lemmas only).
* ``ACCOUNT_NUMBER`` (identifier 10): 5–20 digits (dashes, a letter prefix) after
  ``account number``/``acct``/``a/c``, after ``bank``/``checking``/``customer``/
  ``utility``/``billing``/``loyalty`` … ``account``, ``frequent flyer``, ``policy
  number`` without a health word. Presidio's ``US_BANK_NUMBER`` (any 8–17 digits, 0.05)
  is left as it is.
* ``LICENSE_NUMBER`` (identifier 11): after ``licence/license no.``, ``certificate
  no.``, ``permit no.``, ``professional/medical/nursing licence``; a DEA number
  (2 letters + 7 digits, checksum ``d1+d3+d5 + 2(d2+d4+d6) ≡ d7 (mod 10)``) near
  ``DEA``; an NPI (10 digits from 1 or 2, Luhn over ``80840`` + NPI, as Presidio's
  ``UsNpiRecognizer``) near ``NPI``/``provider``. Presidio's ``MEDICAL_LICENSE`` stays.
* ``VIN`` (identifier 12): 17 characters without I, O, Q, two letters and two digits at
  least; the ISO 3779 check digit (position 9, North America; python-stdnum has no
  VIN module) alone 0.6, any check digit near ``VIN``/``chassis``/``Fahrgestellnummer``
  … 0.85 (European VINs carry none).
* ``LICENSE_PLATE`` (identifier 12): 3–10 letters/digits with a digit, right after
  ``plate``, ``registration``, ``reg``, ``Kennzeichen``, ``immatriculation``,
  ``plaque``, ``matrícula``, ``targa``; Presidio's UK and German formats
  (``UkVehicleRegistrationRecognizer``, ``DeKfzRecognizer``) near a vehicle word.
* ``DEVICE_ID`` (identifier 13): IMEI (15 digits, Luhn via ``stdnum.imei``), MEID
  (``stdnum.meid``), IMSI (``stdnum.imsi``, a known country code) near their names;
  serial numbers after ``serial``/``S/N``/``SN``/``device ID``/``UDI``/``pacemaker``/
  ``implant``; Android IDs (16 hex) and advertising IDs (IDFA/GAID UUIDs) after their
  names; a UUID after a device word. A bare UUID stays ``UUID`` (public).
* ``PERSONAL_URL`` (identifier 14): profile URLs (``linkedin.com/in/…``,
  ``facebook.com/…``, ``x.com/…``, ``twitter.com/…``, ``instagram.com/…``,
  ``github.com/<user>``, ``tiktok.com/@…``…), URLs whose query names a person's key
  (``?patient_id=``, ``&email=``) or whose path holds a person's number
  (``/users/12345``, ``/patients/…``), and a URL after "my website/blog/profile/page".
  Site pages (``x.com/home``, ``github.com/features``) are not profiles.
* ``BIOMETRIC_ID`` (identifier 16): a template ID or hash (hex, base64, UUID, an ID with
  digits) after ``fingerprint``/``iris``/``retina``/``face``/``voiceprint``/``palm`` …
  ``template``/``hash``/``ID``.
* ``ID_NUMBER`` (identifier 18): a number after ``employee``/``staff``/``student``/
  ``badge``/``member``/``customer``/``client``/``case``/``claim``/``voter``/``user`` +
  ``ID``/``number``/``no.``/``#``, ``booking reference``/``PNR``, ``my ID is``; a user
  UUID. ``ID`` alone, ``order number 12``, ``ticket #4521`` and ``invoice`` are not.
"""

from __future__ import annotations

import re

from presidio_analyzer.predefined_recognizers import (
    DeKfzRecognizer,
    UkVehicleRegistrationRecognizer,
    UsMbiRecognizer,
)
from stdnum import imei, imsi, meid

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule, luhn_ok, words
from edgewise.privacy.recognizers.documents import KEY_SEP, VALUE_START, after_key

__all__ = ["NumbersRecognizer", "dea_ok", "npi_ok", "vin_ok"]

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
#: An identifier value: 4–24 letters/digits (dashes, slashes inside), a digit.
_ID = r"(?=[A-Za-z0-9\-/]*\d)[A-Za-z0-9](?:[A-Za-z0-9]|[\-/](?=[A-Za-z0-9])){3,23}"
#: Up to 30 characters without digits, a line break or a currency sign: "member ID on
#: the card is …".
_GAP = r"[^\d\n$£€¥]{0,30}?"
#: Not an amount: no currency word or sign after the value.
_NOT_MONEY = (r"(?!\s*(?:dollars?|euros?|pounds?|usd|eur|gbp|chf|inr|yen|rupees?|bucks|"
              r"cents?|%|percent|k\b|m\b|million|billion|thousand|shares?|points?))")


def _id_ok(value: str) -> bool:
    """Three digits at least, not a bare year, not one repeated digit."""
    digits = re.sub(r"\D", "", value)
    return (len(digits) >= 3 and not re.fullmatch(r"(?:19|20)\d\d", value)
            and len(set(digits)) > 1)


def _near(key: str, value: str) -> re.Pattern[str]:
    """``key``, a few words without digits, then ``value`` (group ``v``)."""
    return re.compile(r"(?i)(?<![A-Za-z0-9])(?:" + key + r")(?![A-Za-z])" + _GAP
                      + r"(?<![A-Za-z0-9\-])(?P<v>" + value + r")(?![A-Za-z0-9]|-\d)"
                      + _NOT_MONEY)


def vin_ok(value: str) -> bool:
    """The ISO 3779 / 49 CFR 565 check digit (position 9) of a 17-character VIN."""
    v = value.upper()
    if len(v) != 17:
        return False
    letters = "ABCDEFGHJKLMNPRSTUVWXYZ"
    values = [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 7, 9, 2, 3, 4, 5, 6, 7, 8, 9]
    code = dict(zip(letters, values, strict=True)) | {str(d): d for d in range(10)}
    weights = [8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2]
    try:
        total = sum(code[c] * w for c, w in zip(v, weights, strict=True))
    except KeyError:
        return False
    check = total % 11
    return v[8] == ("X" if check == 10 else str(check))


def _vin_shape(value: str) -> bool:
    """Two digits and two letters at least (not a word, not a number)."""
    return sum(c.isdigit() for c in value) >= 2 and sum(c.isalpha() for c in value) >= 2


def _vin_alone(value: str) -> bool:
    """A check-digit-valid VIN without key words: also a letter beyond hex (a slice of a
    hash is not a VIN)."""
    return vin_ok(value) and _vin_shape(value) and bool(re.search(r"[G-Z]", value))


def dea_ok(value: str) -> bool:
    """A DEA registration number: 2 letters, 7 digits, ``d1+d3+d5 + 2(d2+d4+d6)``'s last
    digit is d7."""
    v = value.upper().replace(" ", "").replace("-", "")
    if not re.fullmatch(r"[A-Z][A-Z9]\d{7}", v):
        return False
    d = [int(c) for c in v[2:]]
    return (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10 == d[6]


def npi_ok(value: str) -> bool:
    """An NPI: 10 digits from 1 or 2, Luhn over ``80840`` + the number (CMS)."""
    v = re.sub(r"[\s\-]", "", value)
    return bool(re.fullmatch(r"[12]\d{9}", v)) and luhn_ok("80840" + v) and len(set(v[:-1])) > 1


def _imei_ok(value: str) -> bool:
    v = re.sub(r"[\s\-/]", "", value)
    return len(v) == 15 and imei.is_valid(v) and len(set(v)) > 2


def _plate_ok(value: str) -> bool:
    """4–10 letters/digits with a letter and a digit."""
    chars = [c for c in value if c.isalnum()]
    return (4 <= len(chars) <= 10 and any(c.isdigit() for c in chars)
            and any(c.isalpha() for c in chars))


def _not_uuid(value: str) -> bool:
    return not re.fullmatch(_UUID, value)


# -- key words ---------------------------------------------------------------------------

_FAX_WORDS = words(["telefax", "facsimile", "fax", "fax no", "fax number", "télécopie",
                    "telecopie", "fax#"])
_FAX_VALUE = (r"(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,5}\)[ .\-]?)?\d{2,5}(?:[ .\-]\d{2,8}){1,4}"
              r"|\+?\d{7,15}")

_HEALTH_WORDS = words([
    "health", "healthcare", "health plan", "health insurance", "medical", "dental",
    "vision", "medicare", "medicaid", "insurance card", "insurance id", "insurer",
    "insurance member", "copay", "co-pay", "deductible", "hmo", "ppo", "epo", "pharmacy",
    "rx", "rxbin", "rxgrp", "pcn", "payer", "aetna", "cigna", "humana", "anthem",
    "kaiser", "bcbs", "blue cross", "blue shield", "unitedhealthcare", "united healthcare",
    "uhc", "tricare", "chip", "obamacare", "aca", "hospital", "clinic", "patient",
    "beneficiary", "krankenkasse", "krankenversicherung", "versichertennummer",
    "mutuelle", "tarjeta sanitaria"])
_PLAN_KEY = (r"(?:subscriber|member(?:ship)?|policy(?:holder)?|group|beneficiary|insured|"
             r"enrollee|insurance|plan|health\s+plan|versicherten)"
             r"(?:\s*(?:id|identifier|number|num|no\b\.?|nr\b\.?|#))")
_MBI = UsMbiRecognizer._MBI_NO_DASH
_MBI_DASHED = UsMbiRecognizer._MBI_WITH_DASH
_MBI_WORDS = words(["medicare", "mbi", "medicare beneficiary identifier", "hicn", "hic",
                    "medicare number", "medicare id", "cms", "beneficiary"])
_MEDICAID_KEY = r"medicaid(?:\s*(?:id|identifier|number|num|no\b\.?|#|card))?|medi-cal(?:\s+id)?"

_ACCOUNT_KEY = (
    r"(?:account|acct|acc|a/c)\s*(?:number|num|no\b\.?|nr\b\.?|#|id)"
    r"|(?:bank|checking|chequing|savings|current|customer|utility|electric(?:ity)?|gas|"
    r"water|billing|loyalty|rewards?|member(?:ship)?|brokerage|investment|trading|"
    r"pension|401k|ira|phone|mobile|broadband|cable|internet)\s+(?:account|acct)"
    r"(?:\s*(?:number|num|no\b\.?|#|id))?"
    r"|acct|a/c|frequent\s+fl(?:y|i)er(?:\s*(?:number|no\b\.?|#))?"
    r"|loyalty\s+(?:number|card|card\s+number|id)|rewards?\s+(?:number|card\s+number)"
    r"|kontonummer|konto|num[ée]ro\s+de\s+compte|n[úu]mero\s+de\s+cuenta|conto"
    r"|policy\s*(?:number|num|no\b\.?|#)")
_ACCOUNT_VALUE = r"(?:(?-i:[A-Z]{1,4})[\- ]?)?\d(?:[\d\- ]?\d){4,19}"

_LICENSE_KEY = (
    r"(?:licen[cs]e|certificate|cert|permit|accreditation|credential)"
    r"\s*(?:number|num|no\b\.?|nr\b\.?|#|id)"
    r"|(?:professional|medical|nursing|nurse|physician|pharmacist|pharmacy|dental|"
    r"contractor|business|trade|bar|teaching|state|board|firearms?|gun|pilot|"
    r"real\s+estate|broker|liquor|cpa)\s+(?:licen[cs]e|certificate|permit|registration)"
    r"(?:\s*(?:number|num|no\b\.?|#|id))?"
    r"|approbation|licencia|licenza|numéro\s+rpps|rpps|adeli|lanr")
_DEA_WORDS = words(["dea", "dea number", "dea no", "dea#", "dea registration",
                    "drug enforcement administration", "prescriber"])
_NPI_WORDS = words(["npi", "npi number", "national provider identifier",
                    "national provider id", "provider id", "provider number",
                    "rendering provider", "billing provider", "prescriber npi"])

_VIN = r"[A-HJ-NPR-Za-hj-npr-z0-9]{17}"
_VIN_WORDS = words(["vin", "vin number", "vin no", "vehicle identification number",
                    "vehicle identification no", "chassis", "chassis number", "chassis no",
                    "frame number", "fahrgestellnummer", "fahrzeug-identifizierungsnummer",
                    "fin", "numéro de série", "numero de serie", "numéro vin", "bastidor",
                    "número de bastidor", "numero de bastidor", "telaio", "numero di telaio",
                    "car", "vehicle", "truck"])

_PLATE_KEY = (
    r"(?:licen[cs]e|number|registration|reg|vehicle|car|tag)\s+plates?(?:\s*(?:number|no\b\.?|#))?"
    r"|plates?(?:\s*(?:number|no\b\.?|#))?|numberplate|license\s+tag|tag\s+number"
    r"|(?:vehicle|car|motor)\s+registration(?:\s*(?:number|mark|no\b\.?|#))?"
    r"|registration\s+(?:mark|plate)|reg\s*(?:no\b\.?|number|#|plate)?"
    r"|(?:kfz|amtliches)?[\s\-]?kennzeichen|immatriculation|plaque(?:\s+d'immatriculation)?"
    r"|matr[íi]cula|targa|placa|kenteken|rekisterinumero")
# 1–8 letters/digits, then up to two more groups in upper case ("B-MW 1234", "AB12 CDE"),
# so "plate 7abc123 was seen" stops before "was".
_PLATE_VALUE = r"[A-Za-z0-9ÄÖÜäöü]{1,8}(?:[\- ](?-i:[A-Z0-9ÄÖÜ]{1,4})(?![a-z])){0,2}"
_VEHICLE_WORDS = words(["car", "cars", "vehicle", "van", "truck", "motorbike",
                        "motorcycle", "parked", "parking", "towed", "speeding", "driver",
                        "drove", "driving", "auto", "fahrzeug", "wagen", "voiture",
                        "coche", "macchina", "registration", "reg", "plate", "dvla"])

_SERIAL_KEY = (
    r"serial(?:\s*(?:number|num|no\b\.?|nr\b\.?|#|id))?|s/n|s\.n\.|(?-i:SN)(?:\s*#)?"
    r"|ser\.?\s*no\b\.?"
    r"|device\s*(?:id|identifier|serial|number|no\b\.?|uuid)|udi|udid"
    r"|(?:hardware|equipment|machine|asset|implant|pacemaker|defibrillator|"
    r"insulin\s+pump|hearing\s+aid|cgm|sensor|transmitter)\s*(?:serial|id|sn|s/n|number|no\b\.?|#)"
    r"(?:\s*(?:number|no\b\.?|#))?"
    r"|seriennummer|num[ée]ro\s+de\s+s[ée]rie|n[úu]mero\s+de\s+serie|numero\s+di\s+serie")
_IMEI_WORDS = words(["imei", "imei number", "imei no", "imei#", "*#06#", "imei1", "imei2"])
_MEID_WORDS = words(["meid", "meid number", "meid hex", "meid dec", "esn"])
_IMSI_WORDS = words(["imsi", "imsi number", "subscriber identity"])
_AD_ID_KEY = (r"(?:advertising|advertiser|ad)\s*(?:id|identifier)|idfa|idfv|gaid|aaid|adid"
              r"|google\s+advertising\s+id|(?:android|device|installation|install|instance|"
              r"hardware|app\s+instance)\s*(?:id|identifier|uuid)|android_id|udid")

_PROFILE_SITE = (
    r"(?:www\.|m\.|[a-z]{2}\.)?(?:"
    r"linkedin\.com/in/[A-Za-z0-9_\-%.]{2,100}"
    r"|(?:facebook|fb)\.com/(?!(?:groups|pages|events|help|policies|privacy|login|"
    r"watch|marketplace|business|gaming|share|sharer|dialog|plugins|legal|ads)\b)"
    r"(?:profile\.php\?id=\d+|[A-Za-z0-9.]{3,50})"
    r"|(?:x|twitter)\.com/(?!(?:home|search|explore|i|intent|share|settings|login|"
    r"signup|tos|privacy|hashtag|notifications|messages)\b)[A-Za-z0-9_]{2,15}"
    r"|instagram\.com/(?!(?:p|reel|reels|explore|accounts|about|stories|legal)\b)"
    r"[A-Za-z0-9_.]{2,30}"
    r"|github\.com/(?!(?:features|pricing|about|topics|marketplace|orgs|sponsors|"
    r"settings|login|join|explore|collections|trending|enterprise|security|site|"
    r"customer-stories|readme|team|apps|search|notifications|new)\b)"
    r"[A-Za-z0-9](?:[A-Za-z0-9]|-(?=[A-Za-z0-9])){0,38}(?=/?(?:[\s\"'<>),;]|$))"
    r"|(?:tiktok|youtube|medium|threads\.net)\.com/@[A-Za-z0-9_.\-]{2,50}"
    r"|threads\.net/@[A-Za-z0-9_.\-]{2,50}|t\.me/[A-Za-z0-9_]{4,32}"
    r"|reddit\.com/(?:u|user)/[A-Za-z0-9_\-]{3,20}"
    r"|[a-z0-9.\-]+\.[a-z]{2,}/@[A-Za-z0-9_]{1,30}"  # Mastodon
    r"|(?:xing\.com/profile|vk\.com|ok\.ru/profile|pinterest\.com|snapchat\.com/add"
    r"|about\.me|keybase\.io|gitlab\.com)/[A-Za-z0-9_.\-]{2,50}"
    r")")
_URL_TAIL = r"[^\s\"'<>)\]]*"
_PERSON_QUERY = (
    r"(?:patient|user|member|customer|client|employee|person|subscriber|account|student|"
    r"applicant|contact)[_\-]?(?:id|no|num|number|name)?|uid|userid|email|e-mail|mail|ssn|"
    r"dob|mrn|phone|tel|mobile|first[_\-]?name|last[_\-]?name|full[_\-]?name|username|"
    r"login")
_PERSON_PATH = (r"(?:users?|patients?|members?|customers?|clients?|employees?|people|"
                r"persons?|profiles?|accounts?|students?)")
_NAMED_PATH = r"(?:u|users?|profiles?|people|members?)"
_NOT_A_PERSON = (r"(?:login|logout|signin|sign_in|sign-in|signup|sign_up|sign-up|new|edit|"
                 r"settings|search|me|self|register|password|reset|list|all|index|home|"
                 r"create|delete|update|show|view|profile|account|dashboard|help|admin)"
                 r"(?=[/?#\s\"'<>.]|$)")
_TLD = (r"(?:com|net|org|io|dev|me|info|co|uk|de|fr|es|it|nl|blog|site|xyz|app|page|ca|au|"
        r"in|br|eu|ch|at|be|se|no|dk|fi|pl|pt|ie|us|tv|ai|gg|link|online|website|tech|art|"
        r"design|studio|name|pro|bio|social)")

_BIOMETRIC_KEY = (
    r"(?:fingerprint|finger\s?print|thumbprint|thumb\s?print|iris|retina|retinal|face|"
    r"facial|faceprint|face\s?print|voiceprint|voice\s?print|palm\s?print|palm\s+vein|"
    r"vein|gait|biometric|dna\s+profile)s?"
    r"(?:[\s_\-]+(?:scan|recognition|print|biometric))?"
    r"[\s_\-]*(?:template|hash|id|identifier|record|enrol(?:l)?ment|signature|embedding|"
    r"vector|minutiae|code|key|fingerprint|sha-?256|md5)(?:[\s_\-]*(?:id|number|no\b\.?|#|hash))?")
_BIOMETRIC_VALUE = (_UUID + r"|[0-9a-fA-F]{16,128}|[A-Za-z0-9+/]{20,}={0,2}"
                    r"|(?=[A-Za-z0-9\-_]*\d)(?=[A-Za-z0-9\-_]*[A-Za-z])[A-Za-z0-9][A-Za-z0-9\-_]{5,63}")

_ID_KEY = (
    r"(?:employee|emp|staff|personnel|worker|student|pupil|matriculation|badge|member"
    r"(?:ship)?|customer|client|case|claim|voter|user|patron|library\s+card|passenger|"
    r"citizen|resident|applicant|candidate|inmate|prisoner|military|veteran|"
    r"social\s+insurance|personal|tax(?:payer)?|benefits?)"
    r"\s*(?:id|identifier|identification|number|num|no\b\.?|nr\b\.?|#|code)"
    r"(?:\s*(?:number|no\b\.?|#))?"
    r"|booking\s+(?:reference|ref\b\.?|number|code)|pnr|e-?ticket\s*(?:number|no\b\.?|#)?"
    r"|my\s+id|personalnummer|matrikelnummer|sozialversicherungsnummer"
    r"|num[ée]ro\s+(?:d'|de\s+)?(?:employ[ée]|[ée]tudiant|client|adh[ée]rent|dossier)"
    r"|n[úu]mero\s+de\s+(?:empleado|cliente|estudiante|socio|expediente)"
    # social security numbers of the EU languages (the US SSN is identity.py's)
    r"|n[úu]mero\s+de\s+(?:la\s+)?seguridad\s+social|(?<![\w])nuss|(?<![\w])naf"
    r"|num[ée]ro\s+de\s+s[ée]curit[ée]\s+sociale|num[ée]ro\s+de\s+s[ée]cu"
    r"|rentenversicherungsnummer|versichertennummer|burgerservicenummer|sofinummer"
    r"|n[úu]mero\s+de\s+seguran[çc]a\s+social|(?<![\w])niss"
    r"|numero\s+(?:di\s+)?previdenza(?:\s+sociale)?|tessera\s+sanitaria")
_USER_UUID_KEY = (r"(?:user|customer|member|person|patient|account|profile|client)"
                  r"[\s_\-]?(?:id|uuid|guid)")
_NATIONAL_ID_KEY = (
    r"national\s+(?:id(?:entity)?|identification|identity)(?:\s+card)?"
    r"(?:\s*(?:number|num|no\b\.?|#))?|(?:id|identity)\s+card(?:\s*(?:number|no\b\.?|#))?"
    r"|citizen\s+id|personalausweis(?:nummer)?|ausweisnummer|carte\s+d'identit[ée]"
    r"|c[ée]dula(?:\s+de\s+ciudadan[íi]a)?|carta\s+d'identit[àa]|carteira\s+de\s+identidade"
    r"|dowód\s+osobisty|documento\s+de\s+identidad")


def _rules() -> list[Rule]:
    after = after_key
    return [
        # fax numbers: "telefax", "facsimile", "fax#" (identity.py counts "fax")
        Rule("PHONE_NUMBER", "fax number after a fax word",
             re.compile(r"(?i)(?<![A-Za-z0-9])(?:telefax|facsimile|t[ée]l[ée]copie|fax)"
                        + KEY_SEP + r"(?P<v>" + _FAX_VALUE + r")(?![\w]|-\d|\.\d)"),
             0.8, group="v", validate=lambda v: 7 <= sum(c.isdigit() for c in v) <= 15),
        # health plans
        Rule("HEALTH_PLAN_ID", "medicare mbi, dashed", re.compile(
            r"(?i)(?<![A-Za-z0-9\-])" + _MBI_DASHED + r"(?![A-Za-z0-9]|-\w)"), 0.6,
             context=_MBI_WORDS, context_score=0.9, validate=str.isupper),
        Rule("HEALTH_PLAN_ID", "medicare mbi near medicare", re.compile(
            r"(?i)(?<!-)" + VALUE_START + r"(?:" + _MBI + "|" + _MBI_DASHED
            + r")(?![A-Za-z0-9]|-\w)"),
             0.0, context=_MBI_WORDS, context_score=0.9, window=(64, 24)),
        Rule("HEALTH_PLAN_ID", "medicaid id after its key word",
             after(_MEDICAID_KEY, _ID), 0.85, group="v", validate=_id_ok),
        Rule("HEALTH_PLAN_ID", "plan, member, policy, group number with a health word",
             after(_PLAN_KEY, _ID), 0.0, group="v", context=_HEALTH_WORDS,
             context_score=0.85, window=(80, 40), validate=_id_ok),
        Rule("HEALTH_PLAN_ID", "plan number a few words after its key word, health word",
             _near(_PLAN_KEY, _ID), 0.0, group="v", context=_HEALTH_WORDS,
             context_score=0.8, window=(80, 40), validate=_id_ok),
        # accounts
        Rule("ACCOUNT_NUMBER", "account number after its key word",
             after(_ACCOUNT_KEY, _ACCOUNT_VALUE), 0.85, group="v", validate=_id_ok),
        Rule("ACCOUNT_NUMBER", "account number a few words after its key word",
             _near(_ACCOUNT_KEY, _ACCOUNT_VALUE), 0.75, group="v",
             validate=lambda v: _id_ok(v) and sum(c.isdigit() for c in v) >= 7),
        # licences and certificates
        Rule("LICENSE_NUMBER", "licence/certificate number after its key word",
             after(_LICENSE_KEY, _ID), 0.8, group="v", validate=_id_ok),
        Rule("LICENSE_NUMBER", "dea number near dea", re.compile(
            r"(?i)(?<![A-Za-z0-9\-])[A-Z][A-Z9][ \-]?\d{7}(?![A-Za-z0-9])"), 0.0,
             context=_DEA_WORDS, context_score=1.0, validate=dea_ok),
        Rule("LICENSE_NUMBER", "npi near npi", re.compile(
            r"(?<!-)" + VALUE_START + r"[12]\d{3}[ \-]?\d{3}[ \-]?\d{3}(?![A-Za-z0-9]|-\d)"),
             0.0,
             context=_NPI_WORDS, context_score=0.9, validate=npi_ok),
        # vehicles
        Rule("VIN", "vin with its check digit", re.compile(
            r"(?<![A-Za-z0-9\-])[A-HJ-NPR-Z0-9]{17}(?![A-Za-z0-9])"), 0.6,
             context=_VIN_WORDS, context_score=0.95, window=(64, 16), validate=_vin_alone),
        Rule("VIN", "vin near a vin word", re.compile(
            r"(?<![A-Za-z0-9\-])" + _VIN + r"(?![A-Za-z0-9])"), 0.0,
             context=_VIN_WORDS, context_score=0.85, window=(64, 16), validate=_vin_shape),
        Rule("LICENSE_PLATE", "plate after its key word",
             after(_PLATE_KEY, _PLATE_VALUE), 0.85, group="v",
             validate=_plate_ok),
        *(Rule("LICENSE_PLATE", f"presidio plate format ({p.name})",
               re.compile(p.regex.replace(r"\b", r"(?<![A-Za-z0-9])", 1)
                          .replace(r"\b", r"(?![A-Za-z0-9])")), 0.0,
               context=_VEHICLE_WORDS, context_score=0.8, window=(48, 24))
          for p in (*UkVehicleRegistrationRecognizer.PATTERNS[:3],
                    *DeKfzRecognizer.PATTERNS[:3])),
        # devices
        Rule("DEVICE_ID", "imei near its name", re.compile(
            r"(?<!-)" + VALUE_START
            + r"\d{2}[ \-/]?\d{6}[ \-/]?\d{6}[ \-/]?\d(?![A-Za-z0-9]|-\d)"),
             0.0, context=_IMEI_WORDS, context_score=0.9, validate=_imei_ok),
        Rule("DEVICE_ID", "imei in its 2-6-6-1 format", re.compile(
            r"(?<![A-Za-z0-9\-])\d{2}-\d{6}-\d{6}-\d(?![A-Za-z0-9]|-\d)"), 0.6,
             validate=_imei_ok),
        Rule("DEVICE_ID", "meid near its name", re.compile(
            r"(?<![A-Za-z0-9\-])(?:[0-9A-Fa-f]{14}|\d{18})(?![A-Za-z0-9])"), 0.0,
             context=_MEID_WORDS, context_score=0.9,
             validate=lambda v: meid.is_valid(v) and sum(c.isdigit() for c in v) >= 4),
        Rule("DEVICE_ID", "imsi near its name", re.compile(
            r"(?<!-)" + VALUE_START + r"\d{14,15}(?![A-Za-z0-9])"), 0.0,
             context=_IMSI_WORDS, context_score=0.9, validate=imsi.is_valid),
        Rule("DEVICE_ID", "serial number after its key word",
             after(_SERIAL_KEY, _ID), 0.85, group="v", validate=_id_ok),
        Rule("DEVICE_ID", "advertising / android id after its key word",
             after(_AD_ID_KEY, _UUID + r"|[0-9a-fA-F]{16}"), 0.85, group="v"),
        # people's URLs
        Rule("PERSONAL_URL", "profile url", re.compile(
            r"(?i)(?<![\w@.\-/])(?:https?://)?" + _PROFILE_SITE + _URL_TAIL), 0.85),
        Rule("PERSONAL_URL", "url with a person's key in its query", re.compile(
            r"(?i)(?<![\w@.\-/])(?:https?://|www\.)[^\s\"'<>?]+\?(?:[^\s\"'<>#]*&)?"
            r"(?:" + _PERSON_QUERY + r")=[^&\s\"'<>#]{2,}" + _URL_TAIL), 0.85),
        Rule("PERSONAL_URL", "url with a person's number in its path", re.compile(
            r"(?i)(?<![\w@.\-/])(?:https?://|www\.)[^\s\"'<>/]+(?:/[^\s\"'<>/?#]+)*?/"
            + _PERSON_PATH + r"/(?:\d{3,}|[0-9a-f\-]{32,36})(?=[/?#\s\"'<>.,;)]|$)"
            + _URL_TAIL), 0.8),
        Rule("PERSONAL_URL", "url with a user name in its path", re.compile(
            r"(?i)(?<![\w@.\-/])(?:https?://|www\.)[^\s\"'<>/]+(?:/[^\s\"'<>/?#]+)*?"
            r"(?:/" + _NAMED_PATH + r"/(?!" + _NOT_A_PERSON + r")[A-Za-z][A-Za-z0-9_.\-]{2,30}"
            r"|/~[A-Za-z][A-Za-z0-9_.\-]{1,30})(?=[/?#\s\"'<>,;)]|$)" + _URL_TAIL), 0.8),
        Rule("PERSONAL_URL", "url after 'my website'", re.compile(
            r"(?i)\b(?:my|our\s+family's|his|her)\s+(?:personal\s+)?(?:website|web\s?site|"
            r"blog|homepage|home\s+page|profile|portfolio|page|site|channel|linktree|"
            r"onlyfans|patreon|substack|cv|resume|résumé)\b[^\n]{0,24}?"
            r"(?P<v>(?:https?://|www\.)[^\s\"'<>]+|[a-z0-9\-]+(?:\.[a-z0-9\-]+)*\." + _TLD
            + r"(?![A-Za-z0-9\-])(?:/[^\s\"'<>]*)?)"), 0.85, group="v"),
        # biometrics
        Rule("BIOMETRIC_ID", "template id or hash after a biometric word",
             after(_BIOMETRIC_KEY, _BIOMETRIC_VALUE), 0.85, group="v",
             validate=lambda v: any(c.isdigit() for c in v)),
        # other identifying numbers
        Rule("ID_NUMBER", "identifying number after its key word",
             after(_ID_KEY, _ID), 0.8, group="v",
             validate=lambda v: _id_ok(v) and _not_uuid(v)),
        Rule("ID_NUMBER", "identifying number a few words after its key word",
             _near(_ID_KEY, _ID), 0.7, group="v",
             validate=lambda v: _id_ok(v) and len(v) >= 5),
        Rule("ID_NUMBER", "user uuid", after(_USER_UUID_KEY, _UUID), 0.8, group="v"),
        Rule("NATIONAL_ID", "national id number after its key word",
             after(_NATIONAL_ID_KEY, _ID), 0.85, group="v", validate=_id_ok),
    ]


class NumbersRecognizer(RegexRecognizer):
    """Fax ``PHONE_NUMBER``, ``HEALTH_PLAN_ID``, ``ACCOUNT_NUMBER``, ``LICENSE_NUMBER``,
    ``VIN``, ``LICENSE_PLATE``, ``DEVICE_ID``, ``PERSONAL_URL``, ``BIOMETRIC_ID``,
    ``ID_NUMBER`` and ``NATIONAL_ID``."""

    def __init__(self) -> None:
        super().__init__("EdgewiseNumbersRecognizer", _rules())

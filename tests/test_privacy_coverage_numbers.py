"""Safe Harbor's number identifiers (recognizers/numbers.py): fax numbers, health plan,
account, licence, vehicle, device, URL, biometric and other identifying numbers — in
realistic and adversarial spellings, with the benign near misses that must stay
unflagged. Check digits are computed here with python-stdnum (and compared with
Presidio's own validators), not copied from memory."""

from __future__ import annotations

import random

import pytest
from presidio_analyzer.predefined_recognizers import MedicalLicenseRecognizer, UsNpiRecognizer
from stdnum import imei, imsi, luhn, meid

from edgewise.privacy.levels import DEFAULT_LEVELS
from edgewise.privacy.recognizers.numbers import dea_ok, npi_ok, vin_ok
from privacy_helpers import default_detector, entities, scan

_RNG = random.Random(18)


def _imei() -> str:
    # reporting body 86 (35, the most common, is also the JCB card range: such an IMEI is
    # reported as CREDIT_CARD, pii all the same)
    body = "86" + "".join(_RNG.choice("0123456789") for _ in range(12))
    return body + luhn.calc_check_digit(body)


def _npi() -> str:
    body = "1" + "".join(_RNG.choice("0123456789") for _ in range(8))
    return body + luhn.calc_check_digit("80840" + body)


def _dea(letters: str = "AB") -> str:
    d = [_RNG.randrange(10) for _ in range(6)]
    check = (d[0] + d[2] + d[4] + 2 * (d[1] + d[3] + d[5])) % 10
    return letters + "".join(map(str, d)) + str(check)


def _vin(prefix: str = "1HGCM8263", rest: str = "3A004352") -> str:
    """A VIN whose position-9 check character is the one vin_ok accepts — exactly one."""
    found = [c for c in "0123456789X" if vin_ok(prefix[:8] + c + rest)]
    assert len(found) == 1
    return prefix[:8] + found[0] + rest


IMEI, NPI, DEA, VIN = _imei(), _npi(), _dea(), _vin("5YJ3E1EA", "KF317000")
MEID = "A10000009296F2"
IMSI = "310150123456789"


def test_check_digits_agree_with_stdnum_and_presidio() -> None:
    assert imei.is_valid(IMEI) and meid.is_valid(MEID) and imsi.is_valid(IMSI)
    npi_check = UsNpiRecognizer()
    dea_check = MedicalLicenseRecognizer()
    for _ in range(200):
        npi = "1" + "".join(_RNG.choice("0123456789") for _ in range(9))
        assert npi_ok(npi) == bool(npi_check.validate_result(npi)), npi
        dea = "AB" + "".join(_RNG.choice("0123456789") for _ in range(7))
        assert dea_ok(dea) == bool(dea_check.validate_result(dea)), dea
    # published VINs (the NHTSA example and one with an X check digit)
    assert vin_ok("1HGCM82633A004352") and vin_ok("1M8GDM9AXKP042788")
    assert not vin_ok("1HGCM82643A004352")


POSITIVES = [
    # fax numbers are phone numbers
    ("Fax: +1 617 555 0100", "PHONE_NUMBER", "+1 617 555 0100"),
    ("fax no. 020 7946 0958", "PHONE_NUMBER", "020 7946 0958"),
    ("Telefax 030 1234567", "PHONE_NUMBER", "030 1234567"),
    ("facsimile (617) 555-0100", "PHONE_NUMBER", "(617) 555-0100"),
    ("FAX#6175550100", "PHONE_NUMBER", "6175550100"),
    ('{"fax": "617-555-0100"}', "PHONE_NUMBER", "617-555-0100"),
    # health plans (phi)
    ("Medicare MBI 1EG4-TE5-MK73", "HEALTH_PLAN_ID", "1EG4-TE5-MK73"),
    ("my medicare number is 1eg4te5mk73", "HEALTH_PLAN_ID", "1eg4te5mk73"),
    ("Aetna member ID: W123456789", "HEALTH_PLAN_ID", "W123456789"),
    ("health insurance policy no. HP-4471-2290", "HEALTH_PLAN_ID", "HP-4471-2290"),
    ("BCBS subscriber # XYZ884512337", "HEALTH_PLAN_ID", "XYZ884512337"),
    ("Group number 0045521 on my insurance card", "HEALTH_PLAN_ID", "0045521"),
    ("Medicaid ID 12345678901", "HEALTH_PLAN_ID", "12345678901"),
    ('{"plan": "PPO", "member_id": "ABC123456789"}', "HEALTH_PLAN_ID", "ABC123456789"),
    # accounts
    ("account number 12345678", "ACCOUNT_NUMBER", "12345678"),
    ("Acct# 0012-3456-789", "ACCOUNT_NUMBER", "0012-3456-789"),
    ("my checking account is 004417823391", "ACCOUNT_NUMBER", "004417823391"),
    ("electricity account no. 8812 3345 61", "ACCOUNT_NUMBER", "8812 3345 61"),
    ("Frequent flyer number: BA 88213456", "ACCOUNT_NUMBER", "BA 88213456"),
    ("a/c 55443322", "ACCOUNT_NUMBER", "55443322"),
    ("Kontonummer 0532013000", "ACCOUNT_NUMBER", "0532013000"),
    # licences and certificates
    ("Medical license number: MD-483920", "LICENSE_NUMBER", "MD-483920"),
    ("nursing licence no. RN778812", "LICENSE_NUMBER", "RN778812"),
    ("certificate no. 2023-44817", "LICENSE_NUMBER", "2023-44817"),
    ("permit # BP-99213", "LICENSE_NUMBER", "BP-99213"),
    (f"DEA number {DEA}", "LICENSE_NUMBER", DEA),
    (f"dea: {DEA.lower()}", "LICENSE_NUMBER", DEA.lower()),
    (f"NPI {NPI}", "LICENSE_NUMBER", NPI),
    (f"prescriber NPI: {NPI[:4]}-{NPI[4:7]}-{NPI[7:]}", "LICENSE_NUMBER",
     f"{NPI[:4]}-{NPI[4:7]}-{NPI[7:]}"),
    # vehicles
    ("VIN 1HGCM82633A004352", "VIN", "1HGCM82633A004352"),
    (f"vin: {VIN.lower()}", "VIN", VIN.lower()),
    ("Fahrgestellnummer WVWZZZ1JZXW000001", "VIN", "WVWZZZ1JZXW000001"),  # no check digit
    (f"Car for sale, {VIN}", "VIN", VIN),
    ('{"vehicle": {"vin": "1M8GDM9AXKP042788"}}', "VIN", "1M8GDM9AXKP042788"),
    ("license plate 7ABC123 was seen", "LICENSE_PLATE", "7ABC123"),
    ("reg AB12 CDE", "LICENSE_PLATE", "AB12 CDE"),
    ("Kennzeichen B-MW 1234", "LICENSE_PLATE", "B-MW 1234"),
    ("immatriculation AB-123-CD", "LICENSE_PLATE", "AB-123-CD"),
    ("matrícula 1234 BCD", "LICENSE_PLATE", "1234 BCD"),
    ("targa: ab123cd", "LICENSE_PLATE", "ab123cd"),
    ("my car AB12 CDE was towed", "LICENSE_PLATE", "AB12 CDE"),
    # devices
    (f"IMEI {IMEI}", "DEVICE_ID", IMEI),
    (f"imei: {IMEI[:2]}-{IMEI[2:8]}-{IMEI[8:14]}-{IMEI[14]}", "DEVICE_ID",
     f"{IMEI[:2]}-{IMEI[2:8]}-{IMEI[8:14]}-{IMEI[14]}"),
    (f"MEID {MEID}", "DEVICE_ID", MEID),
    (f"IMSI {IMSI}", "DEVICE_ID", IMSI),
    ("Serial number: C02XK1ABJG5H", "DEVICE_ID", "C02XK1ABJG5H"),
    ("S/N 4823-XK-9910", "DEVICE_ID", "4823-XK-9910"),
    ("pacemaker serial PJN123456", "DEVICE_ID", "PJN123456"),
    ("implant sn# ab7781200", "DEVICE_ID", "ab7781200"),
    ("advertising ID 38400000-8cf0-11bd-b23e-10b96e40000d", "DEVICE_ID",
     "38400000-8cf0-11bd-b23e-10b96e40000d"),
    ("android_id=9774d56d682e549c", "DEVICE_ID", "9774d56d682e549c"),
    # people's URLs
    ("https://www.linkedin.com/in/jane-doe-123/", "PERSONAL_URL",
     "https://www.linkedin.com/in/jane-doe-123/"),
    ("find me at instagram.com/jane.doe_", "PERSONAL_URL", "instagram.com/jane.doe_"),
    ("x.com/janedoe", "PERSONAL_URL", "x.com/janedoe"),
    ("https://twitter.com/JaneDoe", "PERSONAL_URL", "https://twitter.com/JaneDoe"),
    ("https://facebook.com/profile.php?id=100004123456789", "PERSONAL_URL",
     "https://facebook.com/profile.php?id=100004123456789"),
    ("code at https://github.com/janedoe", "PERSONAL_URL", "https://github.com/janedoe"),
    ("https://portal.example.com/view?patient_id=88231", "PERSONAL_URL",
     "https://portal.example.com/view?patient_id=88231"),
    ("https://shop.example.com/unsubscribe?list=7&email=jane%40example.com", "PERSONAL_URL",
     "https://shop.example.com/unsubscribe?list=7&email=jane%40example.com"),
    ("https://crm.example.com/customers/448812/orders", "PERSONAL_URL",
     "https://crm.example.com/customers/448812/orders"),
    ("my blog is janedoe.dev", "PERSONAL_URL", "janedoe.dev"),
    ("My website: https://jane-doe.example.org", "PERSONAL_URL", "https://jane-doe.example.org"),
    # biometrics
    ("fingerprint template ID: FP-0047719", "BIOMETRIC_ID", "FP-0047719"),
    ("iris hash 9f86d081884c7d659a2feaa0c55ad015", "BIOMETRIC_ID",
     "9f86d081884c7d659a2feaa0c55ad015"),
    ("voiceprint id vp_88213ab", "BIOMETRIC_ID", "vp_88213ab"),
    ('{"face_template_id": "d3b07384-d9a0-4c9b-8f7e-1e2d3c4b5a69"}', "BIOMETRIC_ID",
     "d3b07384-d9a0-4c9b-8f7e-1e2d3c4b5a69"),
    # other identifying numbers
    ("employee ID E-204871", "ID_NUMBER", "E-204871"),
    ("Student no. 20231456", "ID_NUMBER", "20231456"),
    ("badge #44172", "ID_NUMBER", "44172"),
    ("customer id: cu-88123", "ID_NUMBER", "cu-88123"),
    ("Claim number CLM-2024-88812", "ID_NUMBER", "CLM-2024-88812"),
    ("case no. 23-CV-04417", "ID_NUMBER", "23-CV-04417"),
    ("booking reference X7K9Q2", "ID_NUMBER", "X7K9Q2"),
    ("user_id: 3f2504e0-4f89-11d3-9a0c-0305e82c3301", "ID_NUMBER",
     "3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
    ("my employee number is 004417", "ID_NUMBER", "004417"),
]


@pytest.mark.parametrize(("text", "entity", "value"), POSITIVES)
def test_numbers(text: str, entity: str, value: str) -> None:
    assert (entity, value) in scan(text)


NEAR_MISSES = [
    ("What is the fax machine's invention year, 1843?", "PHONE_NUMBER"),
    ("How many members does a health plan need? At least 12345.", "HEALTH_PLAN_ID"),
    ("The group number 12 in the periodic table", "HEALTH_PLAN_ID"),
    ("Our team has 4 members and a policy of 100% code review.", "HEALTH_PLAN_ID"),
    ("Open a savings account with $25000 and earn 4%.", "ACCOUNT_NUMBER"),
    ("Accounts receivable were 125000 in 2023.", "ACCOUNT_NUMBER"),
    ("Take into account 1500 employees.", "ACCOUNT_NUMBER"),
    ("A driver's license costs $45 and a permit $30.", "LICENSE_NUMBER"),
    ("The MIT licence, version 2.0", "LICENSE_NUMBER"),
    (f"Tracking code {DEA} shipped", "LICENSE_NUMBER"),   # DEA-valid without DEA
    (f"Invoice {NPI}", "LICENSE_NUMBER"),                 # NPI-valid without NPI
    ("sha1 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b", "VIN"),
    ("The car has 17 valves and 4 wheels.", "VIN"),
    ("Place the sample on plate 3 for 24 hours.", "LICENSE_PLATE"),
    ("registration opens in 2025", "LICENSE_PLATE"),
    ("Tectonic plate boundaries move 25 mm a year.", "LICENSE_PLATE"),
    ("The SN2 reaction of 2-bromobutane", "DEVICE_ID"),
    ("Tin (Sn) 119 is stable.", "DEVICE_ID"),
    ("Serial killers in 1980s fiction", "DEVICE_ID"),
    ("request id 550e8400-e29b-41d4-a716-446655440000", "DEVICE_ID"),
    (f"Order total {IMEI}", "DEVICE_ID"),                 # Luhn-valid 15 digits alone
    ("See https://github.com/features and https://x.com/home", "PERSONAL_URL"),
    ("Docs: https://docs.python.org/3/library/re.html?highlight=search", "PERSONAL_URL"),
    ("https://example.com/users/sign_in", "PERSONAL_URL"),
    ("my profile picture.png is broken", "PERSONAL_URL"),
    ("Fingerprint sensors in 2024 phones", "BIOMETRIC_ID"),
    ("Face ID was introduced in 2017.", "BIOMETRIC_ID"),
    ("order number 12", "ID_NUMBER"),
    ("case number 3 of the study", "ID_NUMBER"),
    ("The case number of 2019 was lower.", "ID_NUMBER"),
    ("ID 12 in the table", "ID_NUMBER"),
    ("ticket #4521 is closed", "ID_NUMBER"),
    ("invoice 100234 is due", "ID_NUMBER"),
]


@pytest.mark.parametrize(("text", "entity"), NEAR_MISSES)
def test_number_near_misses(text: str, entity: str) -> None:
    assert entity not in entities(text)


def test_a_bare_uuid_stays_public() -> None:
    detection = default_detector().detect(["uuid 550e8400-e29b-41d4-a716-446655440000"])
    assert detection.level == "public"


def test_levels() -> None:
    assert DEFAULT_LEVELS["HEALTH_PLAN_ID"] == "phi"
    for entity in ("ACCOUNT_NUMBER", "LICENSE_NUMBER", "VIN", "LICENSE_PLATE", "DEVICE_ID",
                   "PERSONAL_URL", "BIOMETRIC_ID", "ID_NUMBER"):
        assert DEFAULT_LEVELS[entity] == "pii", entity
    # a health plan number is a health marker too: a name next to it is phi
    detection = default_detector().detect(["Aetna member ID W123456789 for Dr. Ana Lima"])
    assert detection.level == "phi"


def test_numbers_split_by_separators_and_messages() -> None:
    # the collapsed-digits view: an IMEI broken over a line
    text = f"IMEI {IMEI[:6]}\n{IMEI[6:12]} {IMEI[12:]}"
    assert "DEVICE_ID" in entities(text)
    # the key word in one message, the number in the next
    detection = default_detector().detect(["What's my account number?", "It's 4417823391."])
    assert "ACCOUNT_NUMBER" in {f.entity for f in detection.findings}

"""Structured records: a value whose key names it is sensitive whatever its shape."""

from __future__ import annotations

import pytest

from edgewise.privacy.recognizers.records import key_entity
from privacy_helpers import default_detector, entities, scan


@pytest.mark.parametrize(("key", "entity"), [
    ("dob", "DATE_OF_BIRTH"), ("date_of_birth", "DATE_OF_BIRTH"),
    ("birthDate", "DATE_OF_BIRTH"), ("Date of Birth", "DATE_OF_BIRTH"),
    ("patient_dob", "DATE_OF_BIRTH"), ("The patient's date of birth", "DATE_OF_BIRTH"),
    ("home_address", "STREET_ADDRESS"), ("addr", "STREET_ADDRESS"),
    ("street", "STREET_ADDRESS"), ("zip", "POSTCODE"), ("postcode", "POSTCODE"),
    ("passport_no", "PASSPORT"), ("ssn", "US_SSN"), ("social_security", "US_SSN"),
    ("nino", "NATIONAL_ID"), ("tax_id", "NATIONAL_ID"), ("national_id", "NATIONAL_ID"),
    ("mrn", "MRN"), ("patient_id", "MRN"), ("phone", "PHONE_NUMBER"),
    ("mobile", "PHONE_NUMBER"), ("fax", "PHONE_NUMBER"), ("email", "EMAIL_ADDRESS"),
    ("name", "PERSON"), ("first_name", "PERSON"), ("lastName", "PERSON"),
    ("surname", "PERSON"), ("full_name", "PERSON"), ("patient_name", "PERSON"),
    ("account_no", "ACCOUNT_NUMBER"), ("iban", "ACCOUNT_NUMBER"), ("card", "ACCOUNT_NUMBER"),
    ("licence", "LICENSE_NUMBER"), ("license", "LICENSE_NUMBER"),
    ("plate", "LICENSE_PLATE"), ("vin", "VIN"), ("device_id", "DEVICE_ID"),
    ("serial", "DEVICE_ID"), ("imei", "DEVICE_ID"), ("ip", "IP_ADDRESS"),
    ("member_id", "HEALTH_PLAN_ID"), ("policy_number", "HEALTH_PLAN_ID"),
    ("user_id", "RECORD_VALUE"), ("employeeId", "RECORD_VALUE"),
])
def test_keys_map_to_entity_types(key: str, entity: str) -> None:
    assert key_entity(key) == entity


@pytest.mark.parametrize("key", ["file_name", "hostname", "server_address", "host_ip",
                                 "id", "note", "question", "class_name", "plan"])
def test_keys_that_are_not_about_a_person(key: str) -> None:
    assert key_entity(key) is None


RECORDS = [
    ('{"dob": "14/03/85", "name": "ana lima", "zip": 62704}',
     {("DATE_OF_BIRTH", "14/03/85"), ("PERSON", "ana lima"), ("POSTCODE", "62704")}),
    ("{'ssn': '123456789', 'passport_no': 'X1234567'}",
     {("US_SSN", "123456789"), ("PASSPORT", "X1234567")}),
    # escaped JSON inside a JSON string, and \u-escaped quotes
    ('{"args": "{\\"patient_name\\": \\"Ana Lima\\", \\"birthDate\\": \\"1985-03-14\\"}"}',
     {("PERSON", "Ana Lima"), ("DATE_OF_BIRTH", "1985-03-14")}),
    ('{\\u0022dob\\u0022: \\u00221985-03-14\\u0022}', {("DATE_OF_BIRTH", "1985-03-14")}),
    ("https://api.example.com/lookup?ssn=123-45-6789&dob=1985-03-14&page=2",
     {("US_SSN", "123-45-6789"), ("DATE_OF_BIRTH", "1985-03-14")}),
    ('PATIENT_NAME="Ana Lima" mrn=A77 device_id=ab:cd:01',
     {("PERSON", "Ana Lima"), ("MRN", "A77"), ("DEVICE_ID", "ab:cd:01")}),
    ("Patient Name: John Smith, DOB: 3/4/85, Phone: ext 12",
     {("PERSON", "John Smith"), ("DATE_OF_BIRTH", "3/4/85"), ("PHONE_NUMBER", "ext 12")}),
    ("address: 12 Baker Street, London\nhome_address: \"4 Elm Rd\"\nlicence: ABC123\n"
     "plate: KA-01-1234\nvin: 1HGCM82633A004352\nmember_id: W-1",
     {("STREET_ADDRESS", "12 Baker Street, London"), ("STREET_ADDRESS", "4 Elm Rd"),
      ("LICENSE_NUMBER", "ABC123"), ("LICENSE_PLATE", "KA-01-1234"),
      ("VIN", "1HGCM82633A004352"), ("HEALTH_PLAN_ID", "W-1")}),
    ("name,dob,ssn\nAna Lima,1985-03-14,123-45-6789\nBo Chen,1990-01-02,\n",
     {("PERSON", "Ana Lima"), ("DATE_OF_BIRTH", "1985-03-14"), ("US_SSN", "123-45-6789"),
      ("PERSON", "Bo Chen"), ("DATE_OF_BIRTH", "1990-01-02")}),
    ("| Name | DOB | Plan |\n|---|---|---|\n| Ana Lima | 1985-03-14 | gold |",
     {("PERSON", "Ana Lima"), ("DATE_OF_BIRTH", "1985-03-14")}),
    ("user_id\tip\n88121\t8.8.4.4", {("RECORD_VALUE", "88121"), ("IP_ADDRESS", "8.8.4.4")}),
]


@pytest.mark.parametrize(("text", "expected"), RECORDS, ids=[t[:24] for t, _ in RECORDS])
def test_record_values_are_found_by_key(text: str, expected: set[tuple[str, str]]) -> None:
    assert expected <= scan(text)


@pytest.mark.parametrize("text", [
    '{"name": null, "dob": "", "ssn": "N/A", "email": "<EMAIL_ADDRESS_1>"}',
    "name: <PERSON_1>\ndob: [REDACTED]\nssn: ***-**-****\nphone: -",
    "passport_no={{passport}} ssn=${SSN}",
    '{"name": "  "}',
])
def test_empty_and_placeholder_values_are_not_findings(text: str) -> None:
    assert not {e for e, _ in scan(text)} & {"PERSON", "DATE_OF_BIRTH", "US_SSN",
                                              "EMAIL_ADDRESS", "PHONE_NUMBER", "PASSPORT"}


@pytest.mark.parametrize("text", [
    "Name, address and phone number are required\nFill in both, then submit",
    'file_name: report.pdf\nserver_address: 10.0.0.1\n{"plan": "gold", "id": 7}',
    "Question: which card game uses 52 cards?",
    "x=5, y=6; name the two numbers",
])
def test_text_without_identifying_keys_has_no_record_values(text: str) -> None:
    assert "RECORD_VALUE" not in entities(text)
    assert "STREET_ADDRESS" not in entities(text)
    assert "PERSON" not in {e for e, v in scan(text) if v in ("report.pdf", "the two numbers")}


def test_record_values_are_pii_and_the_key_is_not_part_of_the_span() -> None:
    text = '{"user_id": "u-88121"}'
    det = default_detector().detect([text])
    spans = {text[f.start:f.end] for f in det.findings if f.entity == "RECORD_VALUE"}
    assert spans == {"u-88121"}
    assert det.level == "pii"

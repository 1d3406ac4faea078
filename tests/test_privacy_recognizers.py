"""Each recognizer: what it finds (exact value) and the near misses it must leave alone."""

from __future__ import annotations

import pytest

from edgewise.privacy.recognizers.base import luhn_ok, shannon_entropy
from edgewise.privacy.recognizers.finance import iban_ok
from edgewise.privacy.recognizers.medical import drug_names
from edgewise.privacy.recognizers.network import is_private_ip
from privacy_helpers import default_detector, entities, scan

POSITIVES = [
    # medical record numbers: after the key word, a few words after it, common shapes
    ("MRN: 00457812", "MRN", "00457812"),
    ("Medical record no. E1234567 at St. Anne's", "MRN", "E1234567"),
    ("MR# 4567890", "MRN", "4567890"),
    ("her MRN is 12-345-678", "MRN", "12-345-678"),
    ("patient ID 4567890, admitted today", "MRN", "4567890"),
    ("MRN for Jane Doe: 98765432", "MRN", "98765432"),
    # ICD-10 with medical context
    ("Dx: E11.9, I10", "ICD10_CODE", "E11.9"),
    ("Dx: E11.9, I10", "ICD10_CODE", "I10"),
    ("ICD-10 J45.909 on the claim", "ICD10_CODE", "J45.909"),
    ("Assessment: S72.001A", "ICD10_CODE", "S72.001A"),
    ("the patient's E11.9 is well controlled", "ICD10_CODE", "E11.9"),
    # drugs and clinical words
    ("started metformin 500 mg", "DRUG_NAME", "metformin"),
    ("Is Ozempic covered?", "DRUG_NAME", "Ozempic"),
    ("switch to insulin glargine", "DRUG_NAME", "insulin glargine"),
    ("the patient was diagnosed last week", "MEDICAL_CONTEXT", "patient"),
    ("tested HIV positive", "MEDICAL_CONTEXT", "HIV positive"),
    ("history of COPD", "MEDICAL_CONTEXT", "COPD"),
    # payment cards and IBANs
    ("card 4111 1111 1111 1111", "CREDIT_CARD", "4111 1111 1111 1111"),
    ("MC 2223 0000 4840 0011 exp 09/28", "CREDIT_CARD", "2223 0000 4840 0011"),
    ("amex 3782-822463-10005", "CREDIT_CARD", "3782-822463-10005"),
    ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN_CODE", "GB82 WEST 1234 5698 7654 32"),
    ("IBAN ES91 2100 0418 4502 0005 1332 before Friday", "IBAN_CODE",
     "ES91 2100 0418 4502 0005 1332"),
    ("to DE89370400440532013000.", "IBAN_CODE", "DE89370400440532013000"),
    # people
    ("SSN 123-45-6789", "US_SSN", "123-45-6789"),
    ("my SSN is 123456789", "US_SSN", "123456789"),
    ("social security number 123 45 6789", "US_SSN", "123 45 6789"),
    ("call me on 06-82237745", "PHONE_NUMBER", "06-82237745"),
    ("reach me at +44 20 7946 0958", "PHONE_NUMBER", "+44 20 7946 0958"),
    ("Desk: 6038505064", "PHONE_NUMBER", "6038505064"),
    ("(212) 555-0199", "PHONE_NUMBER", "(212) 555-0199"),
    ("NHS number 943 476 5919", "UK_NHS", "943 476 5919"),
    ("Dr. Ana Lima called", "PERSON", "Ana Lima"),
    ("Regards, Tomasz Nowak", "PERSON", "Tomasz Nowak"),
    ("write to john.smith@example.com", "EMAIL_ADDRESS", "john.smith@example.com"),
    # secrets
    ("key AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_KEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("token ghp_0123456789abcdefghijABCDEFGHIJ012345", "GITHUB_TOKEN",
     "ghp_0123456789abcdefghijABCDEFGHIJ012345"),
    ("OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z",
     "OPENAI_API_KEY", "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z"),
    ("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "SLACK_TOKEN",
     "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
    ("key=AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "GOOGLE_API_KEY",
     "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_KEY", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3"
     "I9PlFUP0THsR8U", "JWT", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3"
     "jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
     "PRIVATE_KEY",
     "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"),
    ("postgres://app:s3cr3t-Pw@db.example.com/prod", "PASSWORD", "s3cr3t-Pw"),
    ('{"password": "hunter2!"}', "SECRET", "hunter2!"),
    ("DB_PASSWORD=Tr0ub4dor&3", "SECRET", "Tr0ub4dor&3"),
    ("my password is Sommer2024!", "PASSWORD", "Sommer2024!"),
    ("api token: 9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZ", "SECRET",
     "9f8e7d6c5b4a39281706f5e4d3c2b1a0ZZ"),
    # infrastructure
    ("ssh deploy@build-07.eu.factory.internal", "INTERNAL_HOSTNAME",
     "build-07.eu.factory.internal"),
    ("psql -h db1.corp -p 5432", "INTERNAL_HOSTNAME", "db1.corp"),
    ("http://printer.home.arpa/status", "INTERNAL_HOSTNAME", "printer.home.arpa"),
    ("PLC at 10.1.2.3 is down", "PRIVATE_IP", "10.1.2.3"),
    ("gateway 192.168.0.1", "PRIVATE_IP", "192.168.0.1"),
    ("DNS 8.8.8.8", "IP_ADDRESS", "8.8.8.8"),
]


@pytest.mark.parametrize(("text", "entity", "value"), POSITIVES,
                         ids=[f"{e}-{i}" for i, (_, e, _) in enumerate(POSITIVES)])
def test_recognizer_finds_the_exact_value(text: str, entity: str, value: str) -> None:
    assert (entity, value) in scan(text)


NEAR_MISSES = [
    # (text, entity that must NOT be reported)
    ("order 00457812 shipped", "MRN"),                      # no record key word
    ("medical record updated on 1996-04-26", "MRN"),        # a date is no MRN
    ("Seat A12 is free", "ICD10_CODE"),                     # code shape, no medical context
    ("take vitamin B12 daily", "ICD10_CODE"),
    ("E11.9 sounds like a version", "ICD10_CODE"),
    ("the A12 motorway", "ICD10_CODE"),
    ("please be patient with me", "MEDICAL_CONTEXT"),
    ("a lithium battery", "DRUG_NAME"),
    ("card 4111 1111 1111 1112", "CREDIT_CARD"),            # Luhn fails
    ("number 1234 5678 9012 3456", "CREDIT_CARD"),          # Luhn fails
    ("IBAN GB82 WEST 1234 5698 7654 33", "IBAN_CODE"),      # mod 97 fails
    ("IBAN DE89370400440532013001", "IBAN_CODE"),
    ("SSN 666-12-3456", "US_SSN"),                          # invalid area
    ("SSN 123-00-6789", "US_SSN"),                          # invalid group
    ("order 2024-03-05", "PHONE_NUMBER"),                   # a date
    ("there were 1234567 visitors", "PHONE_NUMBER"),        # no phone word
    ("call 814-967-0726", "UK_NHS"),                        # mod-11 passes, no NHS word
    ("ghp_short", "GITHUB_TOKEN"),
    ("AKIAIOSFODNN7EXAMPL", "AWS_ACCESS_KEY"),              # one character short
    ("from sklearn import svm  # sk-learn", "OPENAI_API_KEY"),
    ("password: ********", "SECRET"),
    ("password=${DB_PASSWORD}", "SECRET"),
    ("api_key = os.environ['OPENAI_API_KEY']", "SECRET"),
    ("the token: expires tomorrow", "SECRET"),              # a word, not a secret
    ("commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it", "SECRET"),
    ("see mycorp.com and example.com", "INTERNAL_HOSTNAME"),
    ("DNS 8.8.8.8", "PRIVATE_IP"),
    ("PLC at 10.1.2.3", "IP_ADDRESS"),                      # private: PRIVATE_IP only
]


@pytest.mark.parametrize(("text", "entity"), NEAR_MISSES,
                         ids=[f"{e}-{i}" for i, (_, e) in enumerate(NEAR_MISSES)])
def test_near_miss_is_not_reported(text: str, entity: str) -> None:
    assert entity not in entities(text)


def test_checksum_helpers() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and not iban_ok("GB82WEST12345698765433")
    assert not iban_ok("GB82")
    assert shannon_entropy("aaaa") == 0 and shannon_entropy("abcd") == 2
    assert is_private_ip("172.16.0.1") and not is_private_ip("172.32.0.1")
    assert is_private_ip("fe80::1") and not is_private_ip("2001:4860::8888")
    assert not is_private_ip("999.1.1.1")


def test_drug_list_is_shipped_and_sizeable() -> None:
    names = drug_names()
    assert len(names) >= 300
    assert "metformin" in names and "Ozempic" in names
    assert not [n for n in names if n.startswith("#") or n != n.strip()]


def test_presidio_iban_recognizer_is_active() -> None:
    recognizers = default_detector()._analyzer.registry.recognizers
    names = {r.name for r in recognizers}
    assert {"IbanRecognizer", "CreditCardRecognizer", "SpacyRecognizer"} <= names
    assert "NhsRecognizer" not in names  # replaced by the context-requiring rule


def test_proper_nouns_catch_names_the_ner_misses_when_asked() -> None:
    from privacy_helpers import detector_for

    strict = detector_for({"proper_nouns": True})
    text = ("Yesterday Francesca Freeman met Li Wei about the Smith-Jones account; "
            "J. R. R. Tolkien and O'Neill too. What is x^2 in Paris?")
    got = {(e, v) for e, v in scan(text, strict)}
    assert ("PROPER_NOUN", "Smith-Jones") in got and ("PROPER_NOUN", "Paris") in got
    assert any(v == "O'Neill" for _, v in got)
    assert not any("x^2" in v for _, v in got)
    assert strict.level_of("PROPER_NOUN") == "pii"
    # off by default
    assert "PROPER_NOUN" not in entities(text)


@pytest.mark.parametrize("text, value", [
    ("My driver's license number is 217223320", "217223320"),
    ("Driving licence: MORGA753116SM9IJ", "MORGA753116SM9IJ"),
    ("drivers license # D1234-5678-90", "D1234-5678-90"),
])
def test_driver_licences_after_their_key_word(text: str, value: str) -> None:
    assert ("US_DRIVER_LICENSE", value) in scan(text)


def test_licence_words_without_a_number_are_not_licences() -> None:
    assert "US_DRIVER_LICENSE" not in entities("My driver's license expired in the spring.")

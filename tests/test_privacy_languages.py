"""The identifiers' context words and record keys in German, French, Spanish, Italian,
Portuguese and Dutch: a phone, medical record or social security number, a birth or
admission date, an age over 89 and a record field said in those languages are found as
they are in English, and the same words in a general question stay public."""

from __future__ import annotations

import pytest

from privacy_helpers import entities, scan

PHONES = [
    ("Meine Handynummer ist 0171 2345678.", "0171 2345678"),
    ("Sie erreichen mich unter Telefon 030 12345678", "030 12345678"),
    ("Mon portable : 06 12 34 56 78", "06 12 34 56 78"),
    ("Pouvez-vous appeler le 01 42 68 53 00 demain ?", "01 42 68 53 00"),
    ("Mi móvil es 612 345 678", "612 345 678"),
    ("Il mio cellulare è 347 123 4567", "347 123 4567"),
    ("O meu telemóvel é 912 345 678", "912 345 678"),
    ("Mijn mobiele nummer is 06 12345678", "06 12345678"),
]


@pytest.mark.parametrize(("text", "value"), PHONES, ids=[t for t, _ in PHONES])
def test_phone_words_of_the_eu_languages(text: str, value: str) -> None:
    assert ("PHONE_NUMBER", value) in scan(text)


RECORD_NUMBERS = [
    ("Patientennummer: 4567890", "MRN", "4567890"),
    ("Ihre Fallnummer lautet 20240312", "MRN", "20240312"),
    ("numéro de dossier 00457812", "MRN", "00457812"),
    ("Número de historia clínica: 1234567", "MRN", "1234567"),
    ("cartella clinica n. 7654321", "MRN", "7654321"),
    ("número do prontuário 8765432", "MRN", "8765432"),
    ("patiëntnummer 3456789", "MRN", "3456789"),
]


@pytest.mark.parametrize(("text", "entity", "value"), RECORD_NUMBERS,
                         ids=[t for t, _, _ in RECORD_NUMBERS])
def test_medical_record_words_of_the_eu_languages(text: str, entity: str, value: str) -> None:
    assert (entity, value) in scan(text)


SOCIAL_SECURITY = [
    "Mi número de la Seguridad Social es 281234567840",
    "numéro de sécurité sociale : 1 85 05 78 006 084 36",
    "Rentenversicherungsnummer 12 150380 M 023",
    "burgerservicenummer 111222333",
    "número de segurança social 12345678901",
]


@pytest.mark.parametrize("text", SOCIAL_SECURITY)
def test_social_security_words_of_the_eu_languages(text: str) -> None:
    found = entities(text)
    assert found & {"ID_NUMBER", "NATIONAL_ID", "FR_NIR"}, found


BIRTH_AND_CARE_DATES = [
    ("Geburtsdatum: 14.03.1985", "DATE_OF_BIRTH", "14.03.1985"),
    ("data de nascimento 14 de março de 1985", "DATE_OF_BIRTH", "14 de março de 1985"),
    ("geboren op 14 maart 1985", "DATE_OF_BIRTH", "14 maart 1985"),
    ("Nascida em 3 de maio de 1990 em Lisboa", "DATE_OF_BIRTH", "3 de maio de 1990"),
    ("Der Patient wurde am 02.03.2024 aufgenommen und am 09.03.2024 entlassen.",
     "PERSONAL_DATE", "09.03.2024"),
    ("Admis le 2 mars 2024, sorti le 9 mars 2024", "PERSONAL_DATE", "2 mars 2024"),
    ("Ingresó el 2 de marzo de 2024", "PERSONAL_DATE", "2 de marzo de 2024"),
    ("ricoverato il 2 marzo 2024", "PERSONAL_DATE", "2 marzo 2024"),
    ("internado em 2 de março de 2024", "PERSONAL_DATE", "2 de março de 2024"),
    ("overleden op 12 juni 2019", "PERSONAL_DATE", "12 juni 2019"),
]


@pytest.mark.parametrize(("text", "entity", "value"), BIRTH_AND_CARE_DATES,
                         ids=[t for t, _, _ in BIRTH_AND_CARE_DATES])
def test_birth_and_care_dates_of_the_eu_languages(text: str, entity: str, value: str) -> None:
    assert (entity, value) in scan(text)


AGES = [
    "Die Patientin ist 93 Jahre alt.",
    "eine 94-jährige Frau mit Herzinsuffizienz",
    "Patiente de 93 ans, diabétique",
    "mujer de 95 años con EPOC",
    "Mia nonna ha 96 anni",
    "doente de 92 anos",
    "een vrouw van 91 jaar oud",
]


@pytest.mark.parametrize("text", AGES)
def test_ages_over_89_in_the_eu_languages(text: str) -> None:
    assert "AGE_OVER_89" in entities(text)


NOT_AGES = [
    "Vor 93 Jahren wurde die Brücke gebaut.",
    "il y a 93 ans, la guerre",
    "hace 95 años que se fundó",
    "la torre fu costruita 96 anni fa",
    "há 92 anos foi fundada a cidade",
    "91 jaar geleden",
]


@pytest.mark.parametrize("text", NOT_AGES)
def test_years_ago_in_the_eu_languages_are_not_ages(text: str) -> None:
    assert "AGE_OVER_89" not in entities(text)


RECORDS = [
    ('{"vorname": "Anna", "nachname": "Schmidt", "geburtsdatum": "14.03.1985"}',
     {"PERSON", "DATE_OF_BIRTH"}),
    ("nom;prenom;telephone\nDupont;Marie;0612345678", {"PERSON", "PHONE_NUMBER"}),
    ('{"nombre": "Lucía", "apellidos": "García", "pasaporte": "XDA123456"}',
     {"PERSON", "PASSPORT"}),
    ("cognome: Rossi\ncellulare: 3471234567", {"PERSON", "PHONE_NUMBER"}),
    ('{"nome": "João", "sobrenome": "Silva", "morada": "Rua das Flores 12"}',
     {"PERSON", "STREET_ADDRESS"}),
    ("voornaam=Tijn achternaam=Jansen geboortedatum=1990-05-03 woonadres=Kerkstraat 5",
     {"PERSON", "DATE_OF_BIRTH", "STREET_ADDRESS"}),
    ('{"Patientennummer": "A-1234567", "Versichertennummer": "X123456789"}',
     {"MRN", "HEALTH_PLAN_ID"}),
]


@pytest.mark.parametrize(("text", "expected"), RECORDS, ids=[t[:40] for t, _ in RECORDS])
def test_record_keys_of_the_eu_languages(text: str, expected: set[str]) -> None:
    assert expected <= entities(text)


GENERAL = [
    "Was ist eine gute Telefon-Strategie für Vertriebsteams?",
    "¿Cuántos años tiene la Tierra?",
    "Quelle est la date de naissance de Napoléon ?",
    "Come si calcola il numero di telefono di emergenza europeo?",
    "Het ziekenhuis werd in maart opgenomen in de lijst.",
]


@pytest.mark.parametrize("text", GENERAL)
def test_general_questions_in_the_eu_languages_stay_clear(text: str) -> None:
    found = entities(text) & {"PHONE_NUMBER", "MRN", "DATE_OF_BIRTH", "PERSONAL_DATE",
                              "AGE_OVER_89", "NATIONAL_ID"}
    assert not found, found

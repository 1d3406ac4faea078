"""Safe Harbor identifier 2, geography below a state: STREET_ADDRESS and POSTCODE.

Each case: the exact value reported, in realistic and adversarial spellings (lower case,
abbreviations, escapes, full-width digits); and near misses that must stay unflagged.
"""

from __future__ import annotations

import pytest

from privacy_helpers import default_detector, entities, scan

ADDRESSES = [
    # US
    ("Ship it to 123 N Main St. please", "123 N Main St."),
    ("4500 Elm Avenue Apt 4B, Springfield", "4500 Elm Avenue Apt 4B"),
    ("our office is at 350 5th Avenue, Suite 200", "350 5th Avenue, Suite 200"),
    ("1600 Pennsylvania Ave NW", "1600 Pennsylvania Ave NW"),
    ("she moved to 77 Sunset Blvd #12 last year", "77 Sunset Blvd #12"),
    ("i live at 123 main st", "123 main st"),
    ("12 Oak Ln", "12 Oak Ln"),
    ("42 Wallaby Way, Sydney", "42 Wallaby Way"),
    # UK
    ("Flat 3, 12 Baker Street, London", "Flat 3, 12 Baker Street"),
    ("221B Baker St", "221B Baker St"),
    ("10 Downing Street", "10 Downing Street"),
    # continental
    ("Hauptstraße 5, 10115 Berlin", "Hauptstraße 5"),
    ("wohnt in der Berliner Str. 12a", "Berliner Str. 12a"),
    ("Kerkstraat 12, Amsterdam", "Kerkstraat 12"),
    ("Rue de Rivoli 12", "Rue de Rivoli 12"),
    ("12 rue de Rivoli, 75001 Paris", "12 rue de Rivoli"),
    ("Calle Mayor 10, 3º B, 28013 Madrid", "Calle Mayor 10, 3º B"),
    ("Via Roma 1, 00184 Roma", "Via Roma 1"),
    ("abito in via Garibaldi 7, Torino", "via Garibaldi 7"),
    # PO boxes and apartment lines
    ("P.O. Box 123, Anytown", "P.O. Box 123"),
    ("send it to PO Box 4567", "PO Box 4567"),
    ("po box 88", "po box 88"),
    ("Postfach 12 34", "Postfach 12 34"),
    ("Apartado 45, Sevilla", "Apartado 45"),
    ("BP 123, 75001 Paris", "BP 123"),
    ("Casella postale 12", "Casella postale 12"),
    ("Apt 4B", "Apt 4B"),
    # adversarial: full-width digits, escaped text, zero-width space
    ("１２３ Main Street", "１２３ Main Street"),
    ("221B Baker\\u0020Street", "221B Baker\\u0020Street"),
    ("12\u200b Baker Street", "12\u200b Baker Street"),
]


@pytest.mark.parametrize(("text", "value"), ADDRESSES, ids=[v for _, v in ADDRESSES])
def test_street_addresses_are_found(text: str, value: str) -> None:
    assert ("STREET_ADDRESS", value) in scan(text)


POSTCODES = [
    ("Springfield, IL 62704", "Springfield, IL 62704"),
    ("moved to Austin TX 78701-1234 in May", "Austin TX 78701-1234"),
    ("Portland, Oregon 97201", "Portland, Oregon 97201"),
    ("zip code: 62704", "62704"),
    ("my postcode is SW1A 1AA", "SW1A 1AA"),
    ("SW1A 1AA", "SW1A 1AA"),
    ("Manchester M1 1AE", "M1 1AE"),
    ("post code ec1a 1bb", "ec1a 1bb"),
    ("75001 Paris", "75001 Paris"),
    ("10115 Berlin", "10115 Berlin"),
    ("D-80331 München", "D-80331 München"),
    ("28013 Madrid", "28013 Madrid"),
    ("00184 Roma", "00184 Roma"),
    ("1012 AB Amsterdam", "1012 AB Amsterdam"),
    ("8001 Zürich", "8001 Zürich"),
    ("Musterweg 3\n69123 Heidelberg", "69123 Heidelberg"),
    ("PLZ 80331", "80331"),
]


@pytest.mark.parametrize(("text", "value"), POSTCODES, ids=[v for _, v in POSTCODES])
def test_postcodes_are_found(text: str, value: str) -> None:
    assert ("POSTCODE", value) in scan(text)


NOT_PLACES = [
    "There were 12345 people at the stadium.",
    "The number 90210 is a famous ZIP code.",
    "John walked 5 miles down the road.",
    "Turn left after 2 blocks on the main road.",
    "a 2 lane road",
    "He sent it via FedEx 2 days ago.",
    "Bach's Suite No. 1 in G major",
    "Unit 5 of the course covers vectors.",
    "BP 120/80 mmHg",
    "In 1945 AD Rome was not yet rebuilt.",
    "The 3 main streets of the town are busy.",
    "What is the capital of France? Paris.",
    "Compute 12 x 5 and drive 3 km.",
    "The train leaves platform 9 at 10:15.",
    "Chapter 12 Street Art",
    "I paid $100 on Main Street.",
]


@pytest.mark.parametrize("text", NOT_PLACES)
def test_near_misses_are_not_places(text: str) -> None:
    assert not entities(text) & {"STREET_ADDRESS", "POSTCODE"}


def test_address_is_pii_and_phi_with_health() -> None:
    d = default_detector()
    assert d.level_of("STREET_ADDRESS") == "pii" and d.level_of("POSTCODE") == "pii"
    det = d.detect(["Patient at 12 Baker Street was diagnosed with diabetes."])
    assert det.level == "phi"
    assert d.detect(["Where is Baker Street?"]).level == "public"


def test_postcode_split_across_messages_is_found() -> None:
    d = default_detector()
    segments = ["Deliver to 12 Baker Street, London", "SW1A 1AA"]
    det = d.detect(segments)
    assert ("POSTCODE", "SW1A 1AA") in {(f.entity, segments[f.segment][f.start:f.end])
                                        for f in det.findings}

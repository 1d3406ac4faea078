"""Safe Harbor identifier 3: dates tied to a person (DATE_OF_BIRTH, PERSONAL_DATE) and
ages over 89 (AGE_OVER_89); bare dates in general questions stay public."""

from __future__ import annotations

import pytest

from privacy_helpers import default_detector, entities, scan

BIRTH_DATES = [
    ("DOB: 03/14/1985", "03/14/1985"),
    ("D.O.B. 14.03.1985", "14.03.1985"),
    ("dob 1985-03-14", "1985-03-14"),
    ("Date of birth: March 14, 1985", "March 14, 1985"),
    ("She was born on March 14, 1985 in Ohio.", "March 14, 1985"),
    ("born 14 Mar 1985", "14 Mar 1985"),
    ("he was born on the 14th of March 1985", "14th of March 1985"),
    ("she was born on the 3rd of May", "3rd of May"),
    ("my birthday is May 3", "May 3"),
    ("J. Doe (b. 03/14/1985)", "03/14/1985"),
    ("Anna Müller, geb. 14.03.1985", "14.03.1985"),
    ("née le 3 mai 1985", "3 mai 1985"),
    ("fecha de nacimiento: 14/03/1985", "14/03/1985"),
    ("data di nascita 14 marzo 1985", "14 marzo 1985"),
    ("BORN IN MARCH 1985", "MARCH 1985"),
    # adversarial: escaped separators, full-width digits
    ("DOB:\\u002003/14/1985", "03/14/1985"),
    ("DOB: ０３/１４/１９８５", "０３/１４/１９８５"),
]


@pytest.mark.parametrize(("text", "value"), BIRTH_DATES, ids=[t for t, _ in BIRTH_DATES])
def test_birth_dates_are_found(text: str, value: str) -> None:
    assert ("DATE_OF_BIRTH", value) in scan(text)


PERSONAL_DATES = [
    ("Admitted 03/02/2024, discharged 03/09/2024.", {"03/02/2024", "03/09/2024"}),
    ("adm. 2024-03-02; d/c 2024-03-09", {"2024-03-02", "2024-03-09"}),
    ("He died on 12 June 2019.", {"12 June 2019"}),
    ("DOD: 06/12/2019", {"06/12/2019"}),
    ("DOS 04/01/2024", {"04/01/2024"}),
    ("seen on 4/1/24 for follow-up", {"4/1/24"}),
    ("operated on May 5, 2023", {"May 5, 2023"}),
    ("Date of service: 2024-01-15", {"2024-01-15"}),
]


@pytest.mark.parametrize(("text", "values"), PERSONAL_DATES,
                         ids=[t for t, _ in PERSONAL_DATES])
def test_care_and_life_event_dates_are_found(text: str, values: set[str]) -> None:
    found = {v for e, v in scan(text) if e == "PERSONAL_DATE"}
    assert values <= found


AGES = [
    ("a 93-year-old woman with CHF", "93"),
    ("93 y/o male", "93"),
    ("93yo F", "93"),
    ("93 y.o. retired teacher", "93"),
    ("aged 95", "95"),
    ("Age: 91", "91"),
    ("age 104", "104"),
    ("a 92 year old woman", "92"),
    ("Alter: 93", "93"),
    ("she is 101 years old", "101"),
    ("He was 99 years of age.", "99"),
    ("at the age of 96 she moved", "96"),
]


@pytest.mark.parametrize(("text", "value"), AGES, ids=[t for t, _ in AGES])
def test_ages_over_89_are_found(text: str, value: str) -> None:
    assert ("AGE_OVER_89", value) in scan(text)


NOT_PERSONAL = [
    # bare dates in general questions
    ("What happened on July 4, 1776?", {"DATE_OF_BIRTH", "PERSONAL_DATE"}),
    ("Is 2024-03-05 a Tuesday?", {"DATE_OF_BIRTH", "PERSONAL_DATE"}),
    ("Can we move the meeting on 3 May?", {"DATE_OF_BIRTH", "PERSONAL_DATE"}),
    ("Einstein was born on March 14, 1879.", {"DATE_OF_BIRTH"}),  # history
    ("Lincoln died on April 15, 1865.", {"PERSONAL_DATE"}),
    ("She was born in 1985.", {"DATE_OF_BIRTH"}),                 # a year only
    ("Born on a Tuesday. The meeting is on 3 May.", {"DATE_OF_BIRTH"}),
    ("MS-DOS 6.22 was released in 1994", {"PERSONAL_DATE"}),
    # ages that are no ages over 89
    ("an 89-year-old man", {"AGE_OVER_89"}),
    ("a 45 y/o female", {"AGE_OVER_89"}),
    ("That happened 90 years ago.", {"AGE_OVER_89"}),
    ("music in the 90s", {"AGE_OVER_89"}),
    ("a 90-year mortgage", {"AGE_OVER_89"}),
    ("a 100-year-old oak tree", {"AGE_OVER_89"}),
    ("patients aged 90 or older", {"AGE_OVER_89"}),  # Safe Harbor's own bucket
    ("age 90+", {"AGE_OVER_89"}),
    ("turn the valve 90 degrees", {"AGE_OVER_89"}),
    ("the age of 100 days", {"AGE_OVER_89"}),
]


@pytest.mark.parametrize(("text", "absent"), NOT_PERSONAL, ids=[t for t, _ in NOT_PERSONAL])
def test_near_misses_are_not_personal_dates_or_ages(text: str, absent: set[str]) -> None:
    assert not entities(text) & absent


def test_a_bare_date_next_to_a_name_is_a_personal_date() -> None:
    text = "Maria Gonzalez came in on 03/14/2024 for the interview."
    assert ("PERSONAL_DATE", "03/14/2024") in scan(text)
    # a year or a date far away from the name stays a plain DATE_TIME
    assert "PERSONAL_DATE" not in entities("Maria Gonzalez was elected in 2019.")


def test_a_date_on_a_record_line_with_a_name_is_a_personal_date() -> None:
    text = ("Visitors:\nJonathan Smith, room 12, badge checked at the front desk, "
            "2024-03-14\n")
    assert ("PERSONAL_DATE", "2024-03-14") in scan(text)


def test_levels_of_the_date_types() -> None:
    d = default_detector()
    assert {d.level_of(e) for e in ("DATE_OF_BIRTH", "PERSONAL_DATE", "AGE_OVER_89")} == {
        "pii"}
    assert d.detect(["What happened on July 4, 1776?"]).level == "public"
    assert d.detect(["93-year-old with dementia"]).level == "phi"

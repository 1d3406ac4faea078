"""Numbers written in words: the view that reads them as digits, and detection through it."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from edgewise.privacy.normalize import normalize
from edgewise.privacy.spelled import _PAUSES, _WORDS, spell_digits
from privacy_helpers import default_detector, found, scan


def view(text: str) -> str | None:
    v = spell_digits(normalize(text).text)
    return None if v is None else v.text


@pytest.mark.parametrize(("source", "expected"), [
    ("my SSN is five three six, two two, four one nine eight", "my SSN is 536224198"),
    ("call me at four-oh-two five five five oh one nine nine", "call me at 4025550199"),
    ("MRN 45 sixty-seven 89 oh one", "MRN 45678901"),
    ("5 three 6", "536"),
    ("double five, triple seven", "55777"),
    ("double oh seven", "007"),
    ("nineteen eighty-five", "1985"),
    ("five five five, twelve thirty-four", "5551234"),
    ("FIVE Five five", "555"),
    ("a ninety-three-year-old man", "a 93-year-old man"),
    ("aged ninety three years old", "aged 93 years old"),
    ("one hundred and five two, one hundred twenty-three four", "10521234"),
    ("one eight hundred five five five one two one two", "18005551212"),
    ("plus four four seven nine one one", "+447911"),
    ("five three six dash two two dash four one nine eight", "536224198"),
    ("four o two", "402"),
    # German, French, Spanish, Italian, Portuguese, Dutch
    ("null eins sieben zwo drei, vier fünf", "0172345"),
    ("einundzwanzig zweiundvierzig neunzehn", "214219"),
    ("zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit", "0612345678"),
    ("quatre-vingt-dix-neuf, quatre-vingts, soixante et onze, vingt et un", "99807121"),
    ("quatre un un un", "4111"),
    ("seis uno dos, treinta y uno, veintidós", "6123122"),
    ("tre quattro sette, ventotto, trentadue", "3472832"),
    ("nove um um, vinte e um, dezasseis", "9112116"),
    ("nul zes een twee, eenentwintig, tweeëntwintig", "06122122"),
    ("IBAN DE89 three seven zero four zero zero four four zero five three two zero one",
     "IBAN DE8937040044053201"),
])
def test_number_words_read_as_digits(source: str, expected: str) -> None:
    assert view(source) == expected


@pytest.mark.parametrize("source", [
    "one of the two", "I have one question", "at nine o'clock", "the three musketeers",
    "one or two", "two thousand years ago", "uno o dos", "un trois étoiles", "oh one more",
    "Sept 12", "the bill is due 5 days from now", "once 3 times", "no nein 5",
    "I think to be or not to be, for two", "one hundred and five", "twenty-one",
    "a man and a woman", "version 1.2 three",
])
def test_prose_has_no_view(source: str) -> None:
    assert view(source) is None


@pytest.mark.parametrize(("source", "expected"), [
    ("a one-two punch", "a 12 punch"),                    # harmless: no identifier
    ("pages four, five and six", "pages 45 and six"),     # "and" ends a run
    ("in 2019 two people", "in 20192 people"),
    ("ninety years ago", "90 years ago"),                 # an age word follows: read
    ("uno dos tres o cuatro cinco", "123 o 45"),          # "o" is Spanish "or" here
])
def test_short_runs_stay_short(source: str, expected: str) -> None:
    assert view(source) == expected


def test_each_digit_maps_to_its_word_group() -> None:
    source = "SSN five three six, twenty-two 4 one nine eight"
    v = spell_digits(source)
    assert v is not None and v.text == "SSN 536224198"
    pieces = [source[slice(*v.to_source(k, k + 1))] for k in range(4, len(v.text))]
    assert pieces == ["five", "three", "six", "twenty-two", "twenty-two", "4", "one",
                      "nine", "eight"]
    a, b = v.to_source(4, len(v.text))
    assert source[a:b] == "five three six, twenty-two 4 one nine eight"
    assert v.to_source(0, 4) == (0, 4)
    # converted words, not digits that were digits already
    assert v.covers_word(4, 5) and not v.covers_word(9, 10) and v.covers_word(9, 11)
    assert not v.covers_word(0, 4)
    assert "five" not in repr(v) and "536" not in repr(v)


def test_windows_hold_every_word_with_its_context() -> None:
    filler = " ".join(["lorem"] * 200)
    source = f"{filler} SSN five three six two two four one nine eight {filler} 5 three 6"
    v = spell_digits(source)
    assert v is not None
    wins = v.windows(margin=40)
    assert len(wins) == 2 and all(hi - lo < 120 for lo, hi in wins)
    for s, e in v.words:
        assert any(lo <= s and e <= hi for lo, hi in wins)
    for lo, hi in wins:  # cut at whitespace: no word is split
        assert lo == 0 or v.text[lo - 1] in " \n"
        assert hi == len(v.text) or v.text[hi] in " \n"
    assert "SSN 536224198" in v.text[wins[0][0]:wins[0][1]]
    assert v.windows(margin=10_000) == [(0, len(v.text))]


def test_a_comma_next_to_digits_ends_a_run() -> None:
    v = spell_digits("SSN five three six, twenty-two, 4 one nine eight")
    assert v is not None and v.text == "SSN 53622, 4198"


def test_iban_head_is_glued_on() -> None:
    source = "GB82 WEST one two three four five six nine eight seven six five four three two"
    v = spell_digits(source)
    assert v is not None and v.text == "GB82WEST12345698765432"
    assert source[slice(*v.to_source(0, len(v.text)))] == source


# -- properties ------------------------------------------------------------------------

_strong = {lang: {v: w.split()[0] for v, w in table.items() if v < 10}
           for lang, table in _WORDS.items()}
_strong["fr"][1] = "un"
_strong["es"][1] = _strong["it"][1] = "uno"
_strong["pt"][1] = "um"
_strong["nl"][1] = "een"
_strong["en"][1] = "one"


@given(st.sampled_from(sorted(_strong)), st.text(alphabet="0123456789", min_size=3,
                                                  max_size=16),
       st.lists(st.sampled_from([" ", ", ", "-", " - ", " dash "]), min_size=15,
                max_size=15), st.booleans())
@settings(max_examples=300, deadline=None)
def test_digit_words_read_back_exactly(lang: str, digits: str, seps: list[str],
                                       upper: bool) -> None:
    assume(any(c != "1" for c in digits))  # "un un un": only weak words
    words = [_strong[lang][int(c)] for c in digits]
    text = words[0] + "".join(s + w for s, w in zip(seps, words[1:], strict=False))
    text = text.upper() if upper else text
    v = spell_digits("Tel. " + text + ".")
    assert v is not None and v.text == "Tel. " + digits + "."
    assert v.to_source(5, 5 + len(digits)) == (5, 5 + len(text))


_pieces = st.sampled_from([
    "one", "two", "five", "oh", "o", "twenty", "-one", "hundred", "and", "double",
    "zwei", "einundzwanzig", "un", "quatre", "vingt", "dix", "sept", "uno", "dos", "y",
    "ventotto", "um", "een", "plus", "dash", "12", "4", "2024", " ", " ", " ", ", ", "-",
    ".", "\n", "the", "a", "I", "'", "o'clock", "DE89", "GB82 WEST", "year-old", "x",
])
texts = st.lists(_pieces, max_size=40).map("".join)


@given(texts)
@settings(max_examples=500, deadline=None)
def test_view_map_is_monotone_and_exact(source: str) -> None:
    v = spell_digits(source)
    if v is None:
        return
    assert len(v.starts) == len(v.ends) == len(v.text)
    prev = (0, 0)
    for k, (s, e) in enumerate(zip(v.starts, v.ends, strict=True)):
        assert 0 <= s < e <= len(source) and (s, e) >= prev and e >= prev[1]
        prev = (s, e)
        if not v.covers_word(k, k + 1):  # copied as is, or a digit that was one
            assert source[s:e] == v.text[k] or source[s:e].isdigit()
        else:
            assert v.text[k] in "0123456789+" and any(c.isalpha() for c in source[s:e])
    # what was removed is separators (and dashes read aloud) only
    covered = set()
    for s, e in zip(v.starts, v.ends, strict=True):
        covered.update(range(s, e))
    gaps = re.findall(r"[^\x00]+", "".join("\x00" if i in covered else c
                                             for i, c in enumerate(source)))
    pause = re.compile("|".join(_PAUSES), re.IGNORECASE)
    for gap in gaps:
        assert set(pause.sub("", gap)) <= set(" \t,-–—"), gap


@given(texts, st.data())
@settings(max_examples=300, deadline=None)
def test_spans_map_inside_the_source(source: str, data: st.DataObject) -> None:
    v = spell_digits(source)
    if v is None or not v.text:
        return
    i = data.draw(st.integers(0, len(v.text) - 1))
    j = data.draw(st.integers(i + 1, len(v.text)))
    a, b = v.to_source(i, j)
    assert 0 <= a < b <= len(source)
    for k in range(i, j):
        assert a <= v.starts[k] and v.ends[k] <= b


# -- detection ---------------------------------------------------------------------------

_SSN = "five three six, two two, four one nine eight"
_CARD = "four one one one one one one one one one one one one one one one"


@pytest.mark.parametrize(("text", "entity", "value"), [
    (f"my SSN is {_SSN}", "US_SSN", _SSN),
    ("SSN 5 three 6 2 2 4 one 9 8", "US_SSN", "5 three 6 2 2 4 one 9 8"),
    (f"card {_CARD}", "CREDIT_CARD", _CARD),
    ("call me at four-oh-two five five five oh one nine nine", "PHONE_NUMBER",
     "four-oh-two five five five oh one nine nine"),
    ("phone: five five five, twelve thirty-four", "PHONE_NUMBER",
     "five five five, twelve thirty-four"),
    ("call plus four four, seven nine one one, one two three, four five six",
     "PHONE_NUMBER", "plus four four, seven nine one one, one two three, four five six"),
    ("MRN 45 sixty-seven 89 oh one", "MRN", "45 sixty-seven 89 oh one"),
    ("NHS number four eight five seven seven seven three four five seven", "UK_NHS",
     "four eight five seven seven seven three four five seven"),
    ("IBAN DE89 three seven zero four zero zero four four zero five three two zero one "
     "three zero zero zero", "IBAN_CODE", "DE89 three seven zero four zero zero four four "
     "zero five three two zero one three zero zero zero"),
    ("the patient is a ninety-three-year-old man", "AGE_OVER_89", "ninety-three"),
    ("SSN: FIVE THREE SIX TWO TWO FOUR ONE NINE EIGHT", "US_SSN",
     "FIVE THREE SIX TWO TWO FOUR ONE NINE EIGHT"),
    # German
    ("Tel. null eins sieben zwo, drei vier fünf, sechs sieben acht", "PHONE_NUMBER",
     "null eins sieben zwo, drei vier fünf, sechs sieben acht"),
    ("Kreditkarte: vier eins eins eins eins eins eins eins eins eins eins eins eins eins "
     "eins eins", "CREDIT_CARD", "vier eins eins eins eins eins eins eins eins eins eins "
     "eins eins eins eins eins"),
    ("IBAN DE acht neun drei sieben null vier null null vier vier null fünf drei zwei "
     "null eins drei null null null", "IBAN_CODE", "DE acht neun drei sieben null vier "
     "null null vier vier null fünf drei zwei null eins drei null null null"),
    ("SSN: fünf drei sechs zwei zwei vier eins neun acht", "US_SSN",
     "fünf drei sechs zwei zwei vier eins neun acht"),
    ("NHS Nummer vier acht fünf sieben sieben sieben drei vier fünf sieben", "UK_NHS",
     "vier acht fünf sieben sieben sieben drei vier fünf sieben"),
    # French
    ("Tél. zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit",
     "PHONE_NUMBER", "zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit"),
    ("carte bancaire quatre un un un un un un un un un un un un un un un", "CREDIT_CARD",
     "quatre un un un un un un un un un un un un un un un"),
    ("MRN quarante-cinq soixante-sept quatre-vingt-neuf zéro un", "MRN",
     "quarante-cinq soixante-sept quatre-vingt-neuf zéro un"),
    ("SSN : cinq trois six deux deux quatre un neuf huit", "US_SSN",
     "cinq trois six deux deux quatre un neuf huit"),
    # Spanish
    ("Tel. seis uno dos, tres cuatro cinco, seis siete ocho", "PHONE_NUMBER",
     "seis uno dos, tres cuatro cinco, seis siete ocho"),
    ("tarjeta cuatro uno uno uno uno uno uno uno uno uno uno uno uno uno uno uno",
     "CREDIT_CARD", "cuatro uno uno uno uno uno uno uno uno uno uno uno uno uno uno uno"),
    ("SSN: cinco tres seis dos dos cuatro uno nueve ocho", "US_SSN",
     "cinco tres seis dos dos cuatro uno nueve ocho"),
    ("MRN cuarenta y cinco, sesenta y siete, ochenta y nueve, cero uno", "MRN",
     "cuarenta y cinco, sesenta y siete, ochenta y nueve, cero uno"),
    # Italian
    ("Tel. tre quattro sette, uno due tre, quattro cinque sei sette", "PHONE_NUMBER",
     "tre quattro sette, uno due tre, quattro cinque sei sette"),
    ("carta quattro uno uno uno uno uno uno uno uno uno uno uno uno uno uno uno",
     "CREDIT_CARD", "quattro uno uno uno uno uno uno uno uno uno uno uno uno uno uno uno"),
    ("NHS number quattro otto cinque sette sette sette tre quattro cinque sette",
     "UK_NHS", "quattro otto cinque sette sette sette tre quattro cinque sette"),
    # Portuguese, Dutch
    ("Tel. nove um um, nove oito sete seis, cinco quatro três dois", "PHONE_NUMBER",
     "nove um um, nove oito sete seis, cinco quatro três dois"),
    ("Tel. nul zes een twee, drie vier vijf zes zeven acht", "PHONE_NUMBER",
     "nul zes een twee, drie vier vijf zes zeven acht"),
    ("IBAN NL negen een A B N A nul vier een zeven een vier", None, None),
])
def test_numbers_in_words_are_found(text: str, entity: str | None, value: str | None,
                                    ) -> None:
    if entity is None:  # letters spelled out are out of scope: nothing breaks
        scan(text)
        return
    assert (entity, value) in scan(text)


@pytest.mark.parametrize("text", [
    "One of the two reviewers had one question about the three musketeers.",
    "We met at nine o'clock, one or two of us, and it was a one-two punch.",
    "Two thousand years ago, twenty-one legions marched for ninety days.",
    "Call me in five or ten minutes; I have one more thing and then two calls.",
    "In nineteen eighty-four, Orwell wrote about the year one thousand nine hundred.",
    "Her phone has two cameras, three microphones and one speaker.",
    "The score was six to four, then seven to five, then six to three.",
    "Count them: one, two, three, four, five. Then stop.",
    "Tengo uno o dos gatos y tres perros; il y a un ou deux chats.",
    "Ich habe null Ahnung, aber zwei oder drei Ideen; een of twee.",
    "Due to the rain, Otto and Elf left on Sept 12 at 5 pm.",
    "Oh, one more thing: I bought a hundred apples for ninety cents.",
])
def test_prose_stays_clean(text: str) -> None:
    d = default_detector()
    det = d.detect([text])
    assert not [f for f in det.findings if f.via == "words"], found(det, [text])


def test_a_number_in_words_split_over_two_messages() -> None:
    segs = ["my card is four one one one one one one one", "one one one one one one one one"]
    det = default_detector().detect(segs)
    got = {(f.segment, f.entity, f.via) for f in det.findings}
    assert {(0, "CREDIT_CARD", "across"), (1, "CREDIT_CARD", "across")} <= got
    spans = found(det, segs)
    assert ("CREDIT_CARD", "one one one one one one one one") in spans


def test_findings_through_the_view_say_so() -> None:
    det = default_detector().detect([f"my SSN is {_SSN}"])
    assert [(f.entity, f.via) for f in det.findings] == [("US_SSN", "words")]
    assert det.level == "pii"

"""Dates related to an individual and ages over 89 (HIPAA Safe Harbor identifier 3).

Safe Harbor removes "all elements of dates (except year) for dates directly related to
an individual, including birth date, admission date, discharge date, date of death;
and all ages over 89". A date alone is not about anyone ("What happened on July 4,
1776?" stays ``public``: Presidio's ``DATE_TIME``); these rules need the words that tie
it to a person. A date next to a person's name is raised by the detector
(``edgewise.privacy.detector``: ``DATE_TIME`` near a ``PERSON`` → ``PERSONAL_DATE``).

* A **date** is any common spelling: ``03/14/1985``, ``14.03.1985``, ``1985-03-14``,
  ``March 14, 1985``, ``14 Mar 1985``, ``14th of March 1985``, ``the 3rd of May``, a
  month and day only (``May 3``), a month and year (``March 1985``); month names in
  English, German, French, Spanish, Italian, Portuguese and Dutch. A year alone is not
  a date here (Safe Harbor keeps years).
* ``DATE_OF_BIRTH``: a date after a birth word — directly after ``DOB``, ``D.O.B.``,
  ``b.``, ``geb.``; within a few words (no digits, no sentence end in between) after
  ``born``, ``date of birth``, ``birth date``, ``birthday``, ``geboren``, ``né(e) le``,
  ``fecha de nacimiento``, ``data di nascita``, ``nato/nata il``, ``data de
  nascimento``, ``nascido em``, ``geboortedatum``, ``geboren op``; ``DDN``, ``F. Nac.``.
* ``PERSONAL_DATE``: a date after an event of care or of a life — ``admitted``,
  ``admission``, ``discharged``, ``died``, ``deceased``, ``date of death``, ``seen on``,
  ``visit date``, ``date of service``, ``operated on``, ``date of surgery``,
  ``appointment``…; directly after the abbreviations ``adm.``, ``d/c``, ``DOD``,
  ``DOS``; the same words in German, French, Spanish, Italian, Portuguese and Dutch
  (``aufgenommen``, ``entlassen``, ``admis le``, ``décédé``, ``ingresó``, ``fecha de
  alta``, ``ricoverato``, ``dimesso``, ``internado``, ``faleceu``, ``opgenomen``,
  ``overleden``…).
* Dates with a year before 1900 are neither: nobody born then is alive, and HIPAA
  protects a decedent's information for 50 years only (45 CFR 160.103, "protected
  health information" (2)(iv)) — "Einstein was born on March 14, 1879" is history.
* ``AGE_OVER_89``: 90–130 as an age — ``93-year-old``, ``93 year old``, ``93 y/o``,
  ``93yo``, ``93 y.o.``, ``93 years of age``, ``aged 95``, ``age: 91``, ``at the age of
  104``, ``Alter: 93``, ``âge 91``, ``edad 93``, ``età 95``. The value is the number.
  Not ages: 89 and below, ``90 years ago``, ``in the 90s``, a ``90-year mortgage``, a
  ``100-year-old oak`` (a thing, not a person), Safe Harbor's own bucket ``aged 90 or
  older`` / ``90+`` / ``90-99``.
"""

from __future__ import annotations

import re

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule

__all__ = ["DATE", "DatesRecognizer", "year_before_1900"]

_MONTHS = [
    # English (with abbreviations)
    "january", "jan", "february", "feb", "march", "mar", "april", "apr", "may", "june",
    "jun", "july", "jul", "august", "aug", "september", "sept", "sep", "october", "oct",
    "november", "nov", "december", "dec",
    # German (accent-folded: März → Marz), French, Spanish, Italian
    "januar", "janner", "februar", "marz", "mai", "juni", "juli", "oktober", "dezember",
    "janvier", "fevrier", "mars", "avril", "juin", "juillet", "aout", "septembre",
    "octobre", "novembre", "decembre", "enero", "febrero", "marzo", "abril", "mayo",
    "junio", "julio", "agosto", "septiembre", "setiembre", "octubre", "noviembre",
    "diciembre", "gennaio", "febbraio", "aprile", "maggio", "giugno", "luglio",
    "settembre", "ottobre", "dicembre",
    # Portuguese (março → marco), Dutch
    "janeiro", "fevereiro", "marco", "maio", "junho", "julho", "setembro", "outubro",
    "dezembro", "januari", "februari", "maart", "mei", "augustus",
]
_MONTH = r"(?:" + "|".join(sorted(set(_MONTHS), key=len, reverse=True)) + r")\.?"
_ORD = r"(?:st|nd|rd|th|er|o|º)?"
_YEAR = r"(?:\d{4}|'\d{2})"
#: Any common spelling of a calendar date with at least a month (case-insensitive).
DATE = (
    r"(?i:"
    r"\d{1,2}[./\-]\d{1,2}[./\-](?:\d{4}|\d{2})(?![\d./\-]\d)"
    r"|\d{4}[./\-]\d{1,2}[./\-]\d{1,2}(?![\d./\-]\d)"
    r"|\d{1,2}" + _ORD + r"\.?(?:\s+of|\s+de|\s+di)?\s+" + _MONTH
    + r"(?:,?\s+(?:de\s+)?" + _YEAR + r")?"
    r"|" + _MONTH + r"\s+(?:the\s+)?\d{1,2}" + _ORD + r"(?![\d:])(?:,?\s+" + _YEAR + r")?"
    r"|" + _MONTH + r"\s+\d{4}"
    r")(?![\w])"
)


def year_before_1900(value: str) -> bool:
    """Whether ``value`` names a four-digit year before 1900."""
    years = [int(y) for y in re.findall(r"(?<!\d)\d{4}(?!\d)", value)]
    return any(y < 1900 for y in years)


def _recent(value: str) -> bool:
    return not year_before_1900(value)


# A few words between the key and the date: no digits, no line or sentence end.
_GAP = r"[^\d\n.!?;]{0,30}?"
_SEP = r"\s*(?:[:=#\-]\s*|is\s+|was\s+|on\s+|am\s+|le\s+|el\s+|il\s+)?[\"']?"

_BIRTH_WORDS = (r"(?:born|date\s+of\s+birth|birth\s?date|birthday|geboren|"
                r"n[eé]e?\s+le|fecha\s+de\s+nacimiento|data\s+di\s+nascita|"
                r"nat[oa]\s+il|nacid[oa]\s+el|date\s+de\s+naissance|geburtsdatum|"
                r"geburtstag|geboortedatum|geboren\s+op|data\s+de\s+nascimento|"
                r"nascid[oa]\s+(?:em|a)|data\s+(?:di|de)\s+nascita|nascimento|"
                r"fecha\s+de\s+nac\.?|naissance|nacimiento|nascita)")
_BIRTH_ABBREVIATIONS = (r"(?:DOB|D\.O\.B\.?|[Dd]ob|(?<![\w.])b\.|geb\.|DDN|F\.?\s?[Nn]ac\.|"
                        r"[Nn]ac\.|[Gg]eb\.?-?[Dd]at(?:um)?\.?)")
_EVENT_WORDS = (
    r"(?:admitted|admission(?:\s+date)?|date\s+of\s+admission|discharged|discharge\s+date|"
    r"date\s+of\s+discharge|died|deceased|passed\s+away|date\s+of\s+death|death\s+date|"
    r"seen\s+(?:in\s+clinic\s+)?on|visit\s+date|date\s+of\s+visit|visited\s+on|"
    r"date\s+of\s+service|service\s+date|operated\s+on|surgery\s+on|date\s+of\s+surgery|"
    r"surgery\s+date|procedure\s+date|date\s+of\s+procedure|appointment|hospitali[sz]ed|"
    r"date\s+of\s+injury|injured\s+on|presented\s+on|delivered\s+on|vaccinated\s+on|"
    # German, French, Spanish, Italian, Portuguese, Dutch (accent-folded text)
    r"aufgenommen|aufnahme(?:datum)?|entlassen|entlassung(?:sdatum)?|gestorben|verstorben|"
    r"todestag|sterbedatum|operiert|stationar|admise?s?|hospitalis[ée]e?|sortie?|"
    r"date\s+d'admission|date\s+d'entr[ée]e|date\s+de\s+sortie|d[ée]c[ée]d[ée]e?|"
    r"date\s+(?:de\s+|du\s+)?d[ée]c[eè]s|ingres[oó]|ingresad[oa]|fecha\s+de\s+ingreso|"
    r"fecha\s+de\s+alta|dad[oa]\s+de\s+alta|falleci[oó]|fallecid[oa]|"
    r"fecha\s+de\s+(?:defunci[oó]n|fallecimiento)|ricoverat[oa]|ricovero|dimess[oa]|"
    r"dimissione|decedut[oa]|morto|morta|data\s+(?:di|do|de)\s+(?:ricovero|dimissione|"
    r"morte|decesso|internamento|internacao|alta|obito)|internad[oa]|faleceu|falecid[oa]|"
    r"teve\s+alta|opgenomen|ontslagen|overleden|opnamedatum|ontslagdatum|sterfdatum)"
)
_EVENT_ABBREVIATIONS = r"(?:(?<![\w.])(?:adm\.|Adm\.|d/c|D/C)|DOD|DOS|DOA|DOI)"

_AGE = r"(?P<v>9\d|1[0-2]\d|130)"
# Things that are old, not people: "a 100-year-old oak".
_THINGS = (
    r"(?:tree|trees|oak|oaks|building|buildings|house|church|bridge|company|firm|business|"
    r"tradition|record|recipe|wine|whisky|whiskey|bottle|car|cars|ship|theory|law|book|"
    r"painting|photo|photograph|song|mystery|question|debate|institution|university|"
    r"school|mansion|castle|farm|barn|structure|dam|forest|vine|tortoise|turtle|"
    r"newspaper|magazine|brand|mortgage|bond|treaty|rule|statute|map|manuscript|"
    r"problem|puzzle|building's|home|hotel|restaurant|shop|store|factory|mill|temple)"
)
_NOT_AN_AGE_AFTER = (
    r"(?!\s*(?:\+|-\s*\d|–\s*\d|to\s+\d|or\s+(?:older|over|above|more)|and\s+(?:older|over|"
    r"above|up)|years?\s+ago|days?|weeks?|months?|hours?|minutes?|seconds?|BC|AD|%|"
    r"percent|degrees?|°|s\b|'s\b))"
)


def _rules() -> list[Rule]:
    date = r"(?P<v>" + DATE + r")"
    return [
        Rule("DATE_OF_BIRTH", "date right after a birth abbreviation",
             re.compile(_BIRTH_ABBREVIATIONS + _SEP + r"(?:the\s+)?" + date), 0.9, group="v",
             validate=_recent),
        Rule("DATE_OF_BIRTH", "date a few words after a birth word",
             re.compile(r"(?i)(?<![\w])" + _BIRTH_WORDS + r"(?![\w])" + _GAP + r"(?<![\w\-])"
                        + date), 0.85, group="v", validate=_recent),
        Rule("PERSONAL_DATE", "date right after an event abbreviation",
             re.compile(_EVENT_ABBREVIATIONS + _SEP + date), 0.85, group="v",
             validate=_recent),
        Rule("PERSONAL_DATE", "date a few words after an event word",
             re.compile(r"(?i)(?<![\w])" + _EVENT_WORDS + r"(?![\w])" + _GAP + r"(?<![\w\-])"
                        + date), 0.8, group="v", validate=_recent),
        Rule("AGE_OVER_89", "n-year-old",
             re.compile(r"(?i)(?<![\w.\-$£€])" + _AGE + r"\s*[- ]?\s*(?:years?|yrs?|yr)\s*[- ]?"
                        r"\s*old(?![\w])(?!\s*[- ]?" + _THINGS + r"(?![\w]))"), 0.85, group="v"),
        Rule("AGE_OVER_89", "n y/o, n yo",
             re.compile(r"(?i)(?<![\w.\-$£€])" + _AGE + r"\s*(?:y/o|y\.o\.?|yo|yr\.?\s*old)"
                        r"(?![\w])"), 0.85, group="v"),
        Rule("AGE_OVER_89", "n years of age",
             re.compile(r"(?i)(?<![\w.\-$£€])" + _AGE + r"\s+(?:years?|yrs?)\s+of\s+age(?![\w])"),
             0.85, group="v"),
        # "93 Jahre alt", "93-jährige", "93 ans", "93 años", "93 anni", "93 anos", "93 jaar";
        # not "vor 93 Jahren", "il y a 93 ans", "hace 93 años", "93 anni fa", "há 93 anos",
        # "93 jaar geleden" (years ago).
        Rule("AGE_OVER_89", "n years old in the EU languages",
             re.compile(r"(?i)(?<![\w.\-$£€])(?<!il y a )(?<!hace )(?<!depuis )"
                        # Portuguese "há 93 anos" is "93 years ago"; Italian "ha 93 anni"
                        # is "is 93"
                        r"(?:(?<!ha )(?<!há )|(?=\d+\s+anni))"
                        r"(?<!desde )(?<!durante )(?<!pendant )(?<!per )(?<!por )" + _AGE
                        + r"(?:\s*[- ]?\s*j[aä]hrige?[rnms]?|\s+jahre?\s+alt"
                        r"|\s+(?:ans|años|anos|anni|jaar)(?:\s+oud)?)(?![\w])"
                        r"(?!\s+(?:fa|geleden|atras|atrás|plus\s+t[oô]t|depuis|de\s+"
                        r"(?:historia|histoire|storia|hist[oó]ria|garantie|garantia|mariage)"
                        r"))"), 0.8, group="v"),
        Rule("AGE_OVER_89", "age word and n",
             re.compile(r"(?i)(?<![\w])(?:aged|age|at\s+the\s+age\s+of|age\s+of|alter|"
                        r"âge|edad|eta|età|idade|leeftijd)\s*[:=]?\s*(?:is\s+|was\s+)?"
                        + _AGE + r"(?![\w.,]\d|\w)" + _NOT_AN_AGE_AFTER), 0.8, group="v"),
    ]


class DatesRecognizer(RegexRecognizer):
    """``DATE_OF_BIRTH``, ``PERSONAL_DATE`` and ``AGE_OVER_89``."""

    def __init__(self) -> None:
        super().__init__("EdgewiseDatesRecognizer", _rules())

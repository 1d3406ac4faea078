"""Geographic data smaller than a state (HIPAA Safe Harbor identifier 2): street
addresses, PO boxes and postcodes.

spaCy's ``LOCATION`` (``public``) fires on every city and country in a general question;
what identifies a household is the part below the city. The rules run on the
normalized text (accents dropped: ``München`` reads ``Munchen``, ``3º`` reads ``3o``)
and need no NER.

* ``STREET_ADDRESS``:

  - a house number (``123``, ``221B``, ``12-14``) and one to four name words ending in a
    street-type word (``Street``/``St``, ``Avenue``/``Ave``, ``Road``/``Rd``, ``Lane``,
    ``Boulevard``…), an optional direction (``123 N Main St.``) and unit (``Apt 4B``,
    ``Suite 200``, ``Unit 5``, ``#12``), an optional ``Flat 3,`` before it. Any case
    (``123 main st``) for the unambiguous types; types that are also common words
    (``Drive``, ``Way``, ``Place``, ``Court``, ``Square``, ``Close``…) only title-cased.
    Name words that are units or function words (``5 miles down the road``, ``a
    2 lane road``) break the match.
  - continental forms: ``Hauptstraße 5``, ``Berliner Str. 12a``, ``Kerkstraat 12``
    (a word ending in ``-straße``/``-weg``/``-gasse``/``-allee``/``-platz``/
    ``-straat``/``-laan``/``-gracht``… and a number); ``12 rue de Rivoli`` and ``Rue de
    Rivoli 12``; ``Calle Mayor 10, 3º B`` (``Calle``/``C/``/``Avenida``/``Plaza``/
    ``Paseo``/``Carrer``, with the floor and door); ``Via Roma 1`` (``Via``/``Viale``/
    ``Piazza``/``Corso``; lower-case ``via`` only before a capitalised name and a number
    that ends the phrase, so "sent via FedEx 2 days" is no address).
  - PO boxes: ``P.O. Box 123``, ``PO Box``, ``Post Office Box``, ``Postfach 12 34``,
    ``Apartado (de correos) 45``, ``Apdo.``, ``BP 123`` / ``Boîte postale`` (not a blood
    pressure: ``BP 120/80``), ``Casella postale``, ``Postbus``.
  - an apartment line on its own: ``Apt 4B``, ``Apartment 12``, ``Flat 3`` at a line
    start or before a comma. ``Suite``/``Unit`` alone are not (Bach's "Suite No. 1",
    "Unit 5 of the course").

* ``POSTCODE``:

  - US: a city, a state (code or name) and a ZIP / ZIP+4: ``Springfield, IL 62704``,
    ``Austin TX 78701-1234``; or five digits right after a ZIP key word (``zip code:
    62704``).
  - UK: the full postcode shape with Royal Mail's position rules (the letters each
    position allows, ``GIR 0AA``) — taken from Presidio's ``UkPostcodeRecognizer``,
    whose own score is 0.1 and needs spaCy lemmas for its context boost, so it is not
    used as is. A full UK postcode covers about 15 addresses, so it counts alone in
    capitals (``SW1A 1AA``, ``M1 1AE``), in any case after a postcode word.
  - continental: a 4–5 digit code with a country prefix (``D-80331 München``,
    ``F-75001 Paris``); a 5-digit code and a major city (``75001 Paris``,
    ``10115 Berlin``, ``28013 Madrid``, ``00184 Roma``); a 4-digit code and a city
    (``1000 Bruxelles``, ``8001 Zürich``); the Dutch ``1012 AB Amsterdam``; five digits
    and a capitalised place as a line or comma-separated field of its own (``…,
    69123 Heidelberg``); four or five digits after a postcode word (``PLZ``,
    ``code postal``, ``CAP``). Presidio's ``DePlzRecognizer`` is any five digits at 0.05
    (context required), which adds nothing to these rules and is not used. A bare
    5-digit number is never a postcode.
"""

from __future__ import annotations

import re

from edgewise.privacy.recognizers.base import RegexRecognizer, Rule

__all__ = ["PlacesRecognizer"]

# -- street addresses --------------------------------------------------------------------

# Street types that are seldom anything else after a number and a name.
_PLAIN_TYPES = [
    "street", "st", "avenue", "ave", "av", "road", "rd", "boulevard", "blvd", "lane",
    "ln", "highway", "hwy", "parkway", "pkwy", "pky", "drive", "dr", "terrace", "ter",
    "crescent", "cres", "expressway", "expy", "freeway", "fwy", "turnpike", "tpke",
    "strasse",
]
# Street types that are common words too: title case only ("3 Way" yes, "3 way" no).
_WORD_TYPES = [
    "Way", "Place", "Pl", "Court", "Ct", "Close", "Square", "Sq", "Circle", "Cir",
    "Row", "Mews", "Gardens", "Grove", "Hill", "Walk", "Trail", "Trl", "Plaza", "Park",
    "Green", "Rise", "View", "Loop", "Alley", "Pike", "Path", "Commons", "Crossing",
    "Parade", "Esplanade", "Embankment",
]
# Words that cannot be part of a street name: "5 miles down the road", "a 2 lane road".
_NOT_NAME = (
    r"(?:the|a|an|of|to|in|on|at|by|and|or|for|from|with|down|up|along|across|over|per|"
    r"each|every|this|that|these|those|more|less|than|his|her|their|its|our|my|your|"
    r"miles?|mi|km|kilometers?|kilometres?|meters?|metres?|m|feet|foot|ft|yards?|blocks?|"
    r"lanes?|minutes?|mins?|hours?|hrs?|days?|weeks?|years?|times?|cars?|way|ways|"
    r"dirt|toll|paved|new|old|long|short|straight|one|two|three|four|five|"
    r"six|seven|eight|nine|ten|is|are|was|were|be|been|has|have|had|it|he|she|they|we|"
    r"you|i|who|which|what|when|where|how|times|x|percent|dollars?|people|students)"
)
_HOUSE = r"(?<![\w.,/$£€\-])\d{1,6}[A-Za-z]?(?:\s?-\s?\d{1,6}[A-Za-z]?)?(?![\w.,/]\d|[%°])"
_DIRECTION = r"(?:[NSEW]|N\.|S\.|E\.|W\.|NE|NW|SE|SW|North|South|East|West)"
_NAME_WORD = (r"(?!" + _NOT_NAME + r"\b)(?:[A-Za-z][A-Za-z'’\-]*\.?|\d{1,3}(?:st|nd|rd|th))")
_UNIT = (r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|Bldg|Building"
         r"|apt|suite|unit|flat|floor)\.?\s*#?\s*[A-Za-z0-9][\w\-]{0,5}|,?\s*#\s?\d[\w\-]{0,5})")
_FLAT_PREFIX = r"(?:(?:Flat|Apartment|Apt\.?|Unit|Suite)\s+[A-Za-z0-9][\w\-]{0,5},?\s+)?"


def _type_alts() -> str:
    plain = "|".join(sorted(_PLAIN_TYPES, key=len, reverse=True))
    word = "|".join(sorted(_WORD_TYPES, key=len, reverse=True))
    return (r"(?:(?i:" + plain + r")\.?|(?:" + word + r")\.?)")


_US_STREET = (
    _FLAT_PREFIX + _HOUSE + r"\s+(?:" + _DIRECTION + r"\s+)?"
    r"(?:" + _NAME_WORD + r"\s+){1,4}" + _type_alts()
    + r"(?![A-Za-z\-])(?:\s+" + _DIRECTION + r"(?![A-Za-z]))?" + r"(?:" + _UNIT + r")?"
    + r"(?![A-Za-z0-9])"
)

_DE_NL_SUFFIX = (r"(?:strasse|straße|str\.|gasse|allee|weg|platz|damm|chaussee|ufer|"
                 r"straat|laan|gracht|plein|kade|singel|steeg|dijk|vej|gatan|gata|veien)")
_DE_NL_STREET = (
    r"(?<![\w\-])(?:[A-Z][a-zäöüß]+[ \-])?[A-Z][a-zäöüßéè]{2,}" + _DE_NL_SUFFIX
    + r"\s*\d{1,4}(?:\s?[a-zA-Z](?![\w]))?(?:\s?-\s?\d{1,4})?(?![\w])"
)
# "Berliner Str. 12a", "Lange Gasse 3": an adjective or name, then the street word.
_DE_TWO_WORDS = (
    r"(?<![\w\-])[A-Z][a-zäöüß]{2,}\s+(?:Straße|Strasse|Str\.|Weg|Allee|Platz|Gasse|Ring|"
    r"Damm|Ufer|Chaussee|Markt)\s*\d{1,4}(?:\s?[a-zA-Z](?![\w]))?(?![\w])"
)
_FR_TYPE = r"(?:rue|avenue|av\.|boulevard|bd|bld|place|impasse|allee|allée|chemin|quai|cours|route)"
_FR_PARTICLE = r"(?:de\s+la\s+|de\s+l'|du\s+|des\s+|de\s+|d'|la\s+|le\s+|l')"
_FR_NAME = r"[A-Z][\w'’\-]+(?:\s+(?:de\s+|du\s+|des\s+)?[A-Z][\w'’\-]+){0,3}"
_FR_NUMBER_FIRST = (
    r"(?<![\w.,/\-])\d{1,4}(?:\s?(?:bis|ter|[A-Za-z]))?,?\s+(?i:" + _FR_TYPE + r")\s+"
    r"(?:(?i:" + _FR_PARTICLE + r")" + r"?" + _FR_NAME + r")"
)
_FR_NAME_FIRST = (
    r"(?<![\w])(?:Rue|rue)\s+(?i:" + _FR_PARTICLE + r")?" + _FR_NAME
    + r",?\s+\d{1,4}(?![\w.,/]\d|\w)"
)
_ES_TYPE = (r"(?:Calle|calle|C/|c/|Avenida|avenida|Avda\.?|avda\.?|Plaza|plaza|Pza\.?|"
            r"Paseo|paseo|Carrer|carrer|Ronda|ronda|Travesia|Travesía|Camino|camino|"
            r"Rua|rua)")
_ES_STREET = (
    r"(?<![\w])" + _ES_TYPE + r"\s*(?:de\s+los\s+|de\s+las\s+|de\s+la\s+|del\s+|de\s+)?"
    r"[A-Z][\w'’\-]+(?:\s+(?:de\s+|del\s+)?[A-Z][\w'’\-]+){0,3},?\s+(?:n[oº°]\.?\s*|num\.?\s*)?"
    r"\d{1,4}(?![\w.,/]\d|\w)"
    r"(?:,?\s*\d{1,2}\s?[oº°ª]\.?(?:\s?[A-Za-z](?![\w])|\s?(?:izq|izda|dcha|der)\.?)?)?"
)
_IT_STREET = (
    r"(?<![\w])(?:(?:Via|Viale|V\.le|Piazza|P\.zza|Piazzale|Corso|Largo|Vicolo|Lungomare|"
    r"Contrada)\s+[A-Z][\w'’\-]+(?:\s+[A-Z][\w'’\-]+){0,3},?\s+\d{1,4}(?:/?[A-Za-z])?"
    r"(?![\w.,/]\d|\w)"
    r"|via\s+[A-Z][\w'’\-]+(?:\s+[A-Z][\w'’\-]+){0,2},?\s+\d{1,4}(?:/?[A-Za-z])?"
    r"(?=\s*(?:,|$|\n|\d{5}\b)))"
)
_PO_BOX = (
    r"(?<![\w])(?:(?i:P\.?\s?O\.?\s?Box|Post\s+Office\s+Box|Postfach|Apartado(?:\s+de\s+correos)?"
    r"|Apdo\.?|Bo[iî]te\s+postale|Casella\s+postale|Postbus|Postboks|Box)"
    r"|(?:B\.P\.|BP))\s*(?:No\.?\s*|#\s*)?\d{1,6}(?:\s\d{2,4})?(?![\w/]|\s*(?:/|mm|over))"
)
_APT_LINE = (
    r"(?:(?<![\w])(?:Apt\.?|apt\.?|Apartment|Appt\.?)\s*#?\s*\d[\w\-]{0,5}(?![\w])"
    r"|(?m:^)\s*Flat\s+\d[\w\-]{0,4}(?=,|\s*$))"
)

# -- postcodes ---------------------------------------------------------------------------

_STATES = ["AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID",
           "IL", "IN", "IA", "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO",
           "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR", "PA",
           "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "PR",
           "GU", "VI"]
_STATE_NAMES = ["Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado",
                "Connecticut", "Delaware", "Florida", "Georgia", "Hawaii", "Idaho",
                "Illinois", "Indiana", "Iowa", "Kansas", "Kentucky", "Louisiana", "Maine",
                "Maryland", "Massachusetts", "Michigan", "Minnesota", "Mississippi",
                "Missouri", "Montana", "Nebraska", "Nevada", "New Hampshire", "New Jersey",
                "New Mexico", "New York", "North Carolina", "North Dakota", "Ohio",
                "Oklahoma", "Oregon", "Pennsylvania", "Rhode Island", "South Carolina",
                "South Dakota", "Tennessee", "Texas", "Utah", "Vermont", "Virginia",
                "Washington", "West Virginia", "Wisconsin", "Wyoming"]
_CITY_WORD = r"[A-Z][a-z'’\-]+\.?"
_US_CITY_STATE_ZIP = (
    r"(?<![\w])" + _CITY_WORD + r"(?:\s+" + _CITY_WORD + r"){0,3},?\s+"
    r"(?:" + "|".join(_STATES) + "|" + "|".join(_STATE_NAMES) + r"),?\s+"
    r"\d{5}(?:-\d{4})?(?![\w\-])"
)
# Royal Mail position rules, as in Presidio's UkPostcodeRecognizer.
_UK_POSTCODE = (
    r"(?:GIR\s?0AA"
    r"|[A-PR-UWYZ][0-9][ABCDEFGHJKPSTUW]?\s?[0-9][ABD-HJLNP-UW-Z]{2}"
    r"|[A-PR-UWYZ][0-9]{2}\s?[0-9][ABD-HJLNP-UW-Z]{2}"
    r"|[A-PR-UWYZ][A-HK-Y][0-9][ABEHMNPRVWXY]?\s?[0-9][ABD-HJLNP-UW-Z]{2}"
    r"|[A-PR-UWYZ][A-HK-Y][0-9]{2}\s?[0-9][ABD-HJLNP-UW-Z]{2})"
)
_POSTCODE_WORDS = (r"(?:post\s?code|postal\s+code|zip(?:\s?code)?|zip\+4|plz|postleitzahl|"
                   r"code\s+postal|c[oó]digo\s+postal|cap|c\.a\.p\.|postnummer|"
                   r"postcode|post\s+town)")
_CITIES = [
    # France, Germany, Spain, Italy, Portugal, Benelux, Alps, Nordics, east
    "Paris", "Lyon", "Marseille", "Toulouse", "Nice", "Nantes", "Strasbourg", "Bordeaux",
    "Lille", "Rennes", "Montpellier", "Grenoble", "Berlin", "Hamburg", "Munchen",
    "München", "Munich", "Koln", "Köln", "Cologne", "Frankfurt", "Stuttgart", "Dusseldorf",
    "Düsseldorf", "Leipzig", "Dresden", "Hannover", "Nurnberg", "Nürnberg", "Bremen",
    "Essen", "Dortmund", "Bonn", "Heidelberg", "Mannheim", "Karlsruhe", "Freiburg",
    "Madrid", "Barcelona", "Valencia", "Sevilla", "Seville", "Zaragoza", "Malaga",
    "Málaga", "Bilbao", "Granada", "Roma", "Rome", "Milano", "Milan", "Napoli", "Naples",
    "Torino", "Turin", "Firenze", "Florence", "Bologna", "Venezia", "Venice", "Genova",
    "Palermo", "Lisboa", "Lisbon", "Porto", "Amsterdam", "Rotterdam", "Den Haag",
    "Utrecht", "Eindhoven", "Groningen", "Bruxelles", "Brussel", "Brussels", "Antwerpen",
    "Antwerp", "Gent", "Ghent", "Liege", "Liège", "Luxembourg", "Wien", "Vienna", "Graz",
    "Linz", "Salzburg", "Innsbruck", "Zurich", "Zürich", "Geneve", "Genève", "Geneva",
    "Basel", "Bern", "Lausanne", "Kobenhavn", "København", "Copenhagen", "Aarhus", "Oslo",
    "Bergen", "Stockholm", "Goteborg", "Göteborg", "Malmo", "Malmö", "Helsinki",
    "Warszawa", "Warsaw", "Krakow", "Kraków", "Praha", "Prague", "Brno", "Budapest",
    "Athens", "Athina", "Dublin", "Ljubljana", "Zagreb", "Bratislava", "Bucuresti",
]
_CITY_ALTS = "|".join(sorted((re.escape(c) for c in _CITIES), key=len, reverse=True))
_EU_CITY = r"(?:" + _CITY_ALTS + r")(?:[ \-]\d{1,2}|\s+(?:Cedex|CEDEX)(?:\s\d{1,2})?)?(?![\w])"
_EU_PREFIXED = (r"(?<![\w\-])(?:D|F|I|E|A|B|L|P|CH|NL|DK|FI|SE|NO|AT|DE|FR|IT|ES|BE|LU|PT)"
                r"-\d{4,5}\s+[A-Z][\w\-]+(?:\s+[A-Z][\w\-]+)?")
_NL_POSTCODE = (r"(?<![\w])[1-9]\d{3}\s?(?!SA|SD|SS|AD|BC|CE|AM|PM|US|UK|EU|UN|TV|OK|ID|IQ|"
                r"MB|GB|KB|TB|MW|KW|HP)[A-Z]{2}\s+(?:" + _CITY_ALTS
                + r"|[A-Z][a-z]+(?:[ \-][A-Z][a-z]+)?)(?![\w])")
_FIELD_POSTCODE = (r"(?:(?m:^)[ \t]*|,[ \t]*)(?P<v>\d{5}[ \t]+[A-Z][a-zäöüßéè]+"
                   r"(?:[ \-](?:am|an|im|sur|en|de|del|di)?[ \-]?[A-Z][a-zäöüßéè]+)?)"
                   r"(?=[ \t]*(?:$|\n|,|;))")


def _rules() -> list[Rule]:
    postcode_words = re.compile(r"(?i)(?<![\w])" + _POSTCODE_WORDS + r"(?![\w])")
    return [
        Rule("STREET_ADDRESS", "number, name and street type", re.compile(_US_STREET), 0.8),
        Rule("STREET_ADDRESS", "continental street word and number",
             re.compile(_DE_NL_STREET), 0.8),
        Rule("STREET_ADDRESS", "german name and street word", re.compile(_DE_TWO_WORDS), 0.8),
        Rule("STREET_ADDRESS", "number and french street", re.compile(_FR_NUMBER_FIRST), 0.8),
        Rule("STREET_ADDRESS", "rue and number", re.compile(_FR_NAME_FIRST), 0.8),
        Rule("STREET_ADDRESS", "spanish street and number", re.compile(_ES_STREET), 0.8),
        Rule("STREET_ADDRESS", "italian street and number", re.compile(_IT_STREET), 0.8),
        Rule("STREET_ADDRESS", "po box", re.compile(_PO_BOX), 0.8),
        Rule("STREET_ADDRESS", "apartment line", re.compile(_APT_LINE), 0.7),
        Rule("POSTCODE", "us city, state and zip", re.compile(_US_CITY_STATE_ZIP), 0.85),
        Rule("POSTCODE", "zip after its key word",
             re.compile(r"(?i)(?<![\w])" + _POSTCODE_WORDS + r"\.?\s*(?:is\s+|[:#=\-]\s*)?"
                        r"[\"']?(?P<v>\d{4,5}(?:-\d{4})?)(?![\w\-])"), 0.85, group="v"),
        Rule("POSTCODE", "uk postcode", re.compile(r"(?<![\w\-])" + _UK_POSTCODE
                                                   + r"(?![\w\-])"), 0.75),
        Rule("POSTCODE", "uk postcode any case after a postcode word",
             re.compile(r"(?<![\w\-])(?i:" + _UK_POSTCODE + r")(?![\w\-])"), 0.0,
             context=postcode_words, context_score=0.8, window=(40, 4)),
        Rule("POSTCODE", "country-prefixed postcode and place", re.compile(_EU_PREFIXED), 0.85),
        Rule("POSTCODE", "postcode and major city",
             re.compile(r"(?<![\w\-.,/$€£])\d{4,5}\s+" + _EU_CITY), 0.85),
        Rule("POSTCODE", "dutch postcode and place", re.compile(_NL_POSTCODE), 0.85),
        Rule("POSTCODE", "postcode and place as a field", re.compile(_FIELD_POSTCODE), 0.7,
             group="v"),
    ]


class PlacesRecognizer(RegexRecognizer):
    """``STREET_ADDRESS`` (streets, PO boxes, apartment lines) and ``POSTCODE``."""

    def __init__(self) -> None:
        super().__init__("EdgewisePlacesRecognizer", _rules())


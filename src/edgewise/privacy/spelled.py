"""Numbers written in words, read as digits: a view for the structured recognizers.

``my SSN is five three six, two two, four one nine eight`` holds an SSN that no regular
expression sees. :func:`spell_digits` rewrites each *run* of number words (digits mixed
in) into the digits it reads as, keeping a map back to the offsets of the text it was
given, like :func:`~edgewise.privacy.normalize.collapse_separators`; the detector runs
the structured recognizers on it and keeps only matches that cover a converted word.

What a run is made of (case-insensitive, on normalized text, so accents are gone):

* digit words of English, German, French, Spanish, Italian, Portuguese and Dutch
  (``five``, ``zwo``, ``cinq``, ``cero``, ``nove``, ``oito``, ``negen``), ``oh``/``o``
  for zero, teens and tens (``nineteen``, ``zwanzig``, ``vingt``, ``veinte``…) and
  their compounds, written as one word or several (``twenty-one``, ``einundzwanzig``,
  ``vingt et un``, ``soixante-dix-sept``, ``quatre-vingt-dix``, ``treinta y uno``,
  ``veintiuno``, ``ventotto``, ``vinte e um``, ``eenentwintig``); hundreds (``one
  hundred and five``, ``one hundred twenty-three``; ``eight hundred five five five``
  is 800555…); ``double``/``triple`` before a digit (``double five`` → 55); ``plus``
  (``más``, ``più``) first (→ ``+``);
* digit groups between them (``5 three 6``, ``MRN 45 sixty-seven 89 oh one``);
* separated by spaces, hyphens or dashes, a dash read aloud (``dash``, ``Strich``,
  ``tiret``, ``guion``, ``trattino``…), and commas between words (``five five five,
  twelve thirty-four`` → ``5551234``). Newlines and full stops end a run.

Each word group becomes its digits (``nineteen eighty-five`` → ``1985``, ``ninety-three``
→ ``93``) and the separators between groups are removed, so the run reads as one number;
every digit maps to the whole word group it came from.

Ordinary prose must not turn into numbers, so a run counts only when it is long enough
to matter: two number words, or one English number word with digits next to it
(``5 three 6``); a single word only right before an age (``ninety-three-year-old`` →
``93-year-old``, which ``AGE_OVER_89`` reads). Words that are also something else are
*weak*: ``oh``/``o``, the articles ``un``/``uno``/``um``/``uma``/``een`` (French,
Spanish, Italian, Portuguese, Dutch "a"), Brazilian ``meia`` (6); they take part in a
run but count only in one of three words or more (``quatre un un…``; not ``oh one``,
``un trois``). A run never mixes languages — ``uno o dos`` ("one or two") is three
runs of one word — so English words that are digits elsewhere (``due``, ``once``,
``elf``, ``Sept``) stay words. Not
read: ``a``/``an``, ``i``, ``no``/``nein``, homophones (``to``, ``for``), ``thousand``
and above (``two thousand years ago``), ``and`` between digits (``pages four, five and
six`` is a list). Before a run of ten digits or more, an IBAN head (country code, check
digits, bank code: ``DE89``, ``GB82 WEST``) is glued on, so the IBAN check can run.
"""

from __future__ import annotations

import re
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from typing import NamedTuple

from edgewise.privacy.normalize import NormalizedText

__all__ = ["SpelledText", "spell_digits"]


@dataclass(frozen=True, eq=False)
class SpelledText(NormalizedText):
    """A text with its number words rewritten as digits (see the module docstring)."""

    #: ``[start, end)`` ranges of :attr:`text` that are converted words, in text order.
    words: tuple[tuple[int, int], ...] = ()

    def __repr__(self) -> str:  # never the text: it may be sensitive
        return f"SpelledText(len={len(self.text)}, words={len(self.words)})"

    def windows(self, margin: int = 256) -> list[tuple[int, int]]:
        """``[start, end)`` ranges of :attr:`text` holding every converted word with
        ``margin`` characters either side (for context words), widened to whitespace
        and merged: the only places where a match covering a word can be."""
        out: list[tuple[int, int]] = []
        n = len(self.text)
        for s, e in self.words:
            lo, hi = max(0, s - margin), min(n, e + margin)
            if out and lo <= out[-1][1]:
                out[-1] = (out[-1][0], hi)
            else:
                out.append((lo, hi))
        text = self.text
        return [(0 if lo == 0 else max(text.rfind(" ", 0, lo), text.rfind("\n", 0, lo)) + 1,
                 n if hi == n else min((k for k in (text.find(" ", hi), text.find("\n", hi))
                                        if k >= 0), default=n))
                for lo, hi in out]

    def covers_word(self, start: int, end: int) -> bool:
        """Whether ``text[start:end]`` overlaps a converted word."""
        k = bisect_right(self.words, (start, 1 << 62))  # first range starting after start
        if k and self.words[k - 1][1] > start:  # the one starting at or before start
            return True
        return k < len(self.words) and self.words[k][0] < end


# -- the lexicon -------------------------------------------------------------------------

#: Per language, value → its words (accents stripped, as normalization leaves them).
_WORDS: dict[str, dict[int, str]] = {
    "en": {0: "zero nought", 1: "one", 2: "two", 3: "three", 4: "four", 5: "five",
           6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten", 11: "eleven",
           12: "twelve", 13: "thirteen", 14: "fourteen", 15: "fifteen", 16: "sixteen",
           17: "seventeen", 18: "eighteen", 19: "nineteen", 20: "twenty", 30: "thirty",
           40: "forty", 50: "fifty", 60: "sixty", 70: "seventy", 80: "eighty",
           90: "ninety", 100: "hundred"},
    "de": {0: "null", 1: "eins", 2: "zwei zwo", 3: "drei", 4: "vier", 5: "funf fuenf",
           6: "sechs", 7: "sieben", 8: "acht", 9: "neun", 10: "zehn", 11: "elf",
           12: "zwolf zwoelf", 13: "dreizehn", 14: "vierzehn", 15: "funfzehn fuenfzehn",
           16: "sechzehn", 17: "siebzehn", 18: "achtzehn", 19: "neunzehn", 20: "zwanzig",
           30: "dreissig dreißig", 40: "vierzig", 50: "funfzig fuenfzig", 60: "sechzig",
           70: "siebzig", 80: "achtzig", 90: "neunzig", 100: "hundert"},
    "fr": {0: "zero", 2: "deux", 3: "trois", 4: "quatre", 5: "cinq", 6: "six",
           7: "sept", 8: "huit", 9: "neuf", 10: "dix", 11: "onze", 12: "douze",
           13: "treize", 14: "quatorze", 15: "quinze", 16: "seize", 20: "vingt vingts",
           30: "trente", 40: "quarante", 50: "cinquante", 60: "soixante",
           70: "septante", 80: "huitante octante", 90: "nonante", 100: "cent"},
    "es": {0: "cero", 2: "dos", 3: "tres", 4: "cuatro", 5: "cinco", 6: "seis",
           7: "siete", 8: "ocho", 9: "nueve", 10: "diez", 11: "once", 12: "doce",
           13: "trece", 14: "catorce", 15: "quince", 16: "dieciseis", 17: "diecisiete",
           18: "dieciocho", 19: "diecinueve", 20: "veinte", 30: "treinta",
           40: "cuarenta", 50: "cincuenta", 60: "sesenta", 70: "setenta", 80: "ochenta",
           90: "noventa", 100: "cien ciento"},
    "it": {0: "zero", 2: "due", 3: "tre", 4: "quattro", 5: "cinque", 6: "sei",
           7: "sette", 8: "otto", 9: "nove", 10: "dieci", 11: "undici", 12: "dodici",
           13: "tredici", 14: "quattordici", 15: "quindici", 16: "sedici",
           17: "diciassette", 18: "diciotto", 19: "diciannove", 20: "venti",
           30: "trenta", 40: "quaranta", 50: "cinquanta", 60: "sessanta",
           70: "settanta", 80: "ottanta", 90: "novanta", 100: "cento"},
    "pt": {0: "zero", 2: "dois duas", 3: "tres", 4: "quatro", 5: "cinco", 6: "seis",
           7: "sete", 8: "oito", 9: "nove", 10: "dez", 11: "onze", 12: "doze",
           13: "treze", 14: "catorze quatorze", 15: "quinze", 16: "dezesseis dezasseis",
           17: "dezessete dezassete", 18: "dezoito", 19: "dezenove dezanove",
           20: "vinte", 30: "trinta", 40: "quarenta", 50: "cinquenta", 60: "sessenta",
           70: "setenta", 80: "oitenta", 90: "noventa", 100: "cem cento"},
    "nl": {0: "nul", 2: "twee", 3: "drie", 4: "vier", 5: "vijf", 6: "zes", 7: "zeven",
           8: "acht", 9: "negen", 10: "tien", 11: "elf", 12: "twaalf", 13: "dertien",
           14: "veertien", 15: "vijftien", 16: "zestien", 17: "zeventien",
           18: "achttien", 19: "negentien", 20: "twintig", 30: "dertig", 40: "veertig",
           50: "vijftig", 60: "zestig", 70: "zeventig", 80: "tachtig", 90: "negentig",
           100: "honderd"},
}
#: Words that are digits only inside a run (an interjection, a letter, an article).
_WEAK: dict[str, dict[str, int]] = {
    "en": {"oh": 0, "o": 0}, "fr": {"un": 1}, "es": {"uno": 1, "un": 1},
    "it": {"uno": 1}, "pt": {"um": 1, "uma": 1, "meia": 6}, "nl": {"een": 1},
}
_ALL = frozenset(_WORDS)
_MULTIPLIERS = {"double": 2, "triple": 3, "treble": 3}  # English: "double five" → 55
_CONNECTORS = frozenset({"and", "und", "et", "y", "e"})
#: Words read aloud for a dash between digit groups: a separator.
_PAUSES = ("dash", "hyphen", "strich", "bindestrich", "tiret", "guion", "trattino",
           "traco", "streepje")
_PLUS = ("plus", "mas", "piu")  # "más", "più" with their accents stripped


class _Entry(NamedTuple):
    kind: str  # unit (0-9) | teen (10-19) | tens | hundred | mult | plus
    value: int
    langs: frozenset[str]
    weak: bool


def _kind(value: int) -> str:
    return ("unit" if value < 10 else "teen" if value < 20 else "tens" if value < 100
            else "hundred")


def _lexicon() -> dict[str, _Entry]:
    langs: dict[tuple[str, int, bool], set[str]] = {}
    for lang, table in _WORDS.items():
        for value, words in table.items():
            for w in words.split():
                langs.setdefault((w, value, False), set()).add(lang)
    for lang, weak_words in _WEAK.items():
        for w, value in weak_words.items():
            langs.setdefault((w, value, True), set()).add(lang)
    out: dict[str, _Entry] = {}
    for (w, value, weak), ls in langs.items():
        assert w not in out, w  # one value per word, whatever the language
        out[w] = _Entry(_kind(value), value, frozenset(ls), weak)
    for w, n in _MULTIPLIERS.items():
        out[w] = _Entry("mult", n, frozenset({"en"}), False)
    for w in _PLUS:
        out[w] = _Entry("plus", 0, _ALL, True)
    return out


_LEXICON = _lexicon()


def _words(lang: str, lo: int, hi: int) -> list[str]:
    return [w for v, ws in _WORDS[lang].items() if lo <= v <= hi for w in ws.split()]


def _group(words: list[str]) -> str:
    return "(?:" + "|".join(sorted(words, key=lambda w: (-len(w), w))) + ")"


# Compounds written as one word: German "einundzwanzig", Dutch "eenentwintig", Spanish
# "veintiuno", Italian "ventotto"/"trentadue". Groups: unit then tens, or tens then unit.
_COMPOUNDS: list[tuple[str, re.Pattern[str]]] = [
    ("de", re.compile(f"(?P<u>ein|{_group(_words('de', 1, 9))[3:-1]})und"
                      f"(?P<t>{_group(_words('de', 20, 90))[3:-1]})")),
    ("nl", re.compile(f"(?P<u>een|{_group(_words('nl', 1, 9))[3:-1]})en"
                      f"(?P<t>{_group(_words('nl', 20, 90))[3:-1]})")),
    ("es", re.compile(f"(?P<t>veint)i(?P<u>un|uno|{_group(_words('es', 2, 9))[3:-1]})")),
    ("it", re.compile(r"(?P<t>vent|trent|quarant|cinquant|sessant|settant|ottant|novant)"
                      f"[ai]?(?P<u>uno|{_group(_words('it', 2, 9))[3:-1]})")),
]
_TENS_STEM = {"veint": 20, "vent": 20, "trent": 30, "quarant": 40, "cinquant": 50,
              "sessant": 60, "settant": 70, "ottant": 80, "novant": 90}


def _compound(word: str) -> _Entry | None:
    for lang, pattern in _COMPOUNDS:
        m = pattern.fullmatch(word)
        if m is not None:
            u, t = m["u"], m["t"]
            unit = 1 if u in ("ein", "een", "un", "uno") else _LEXICON[u].value
            tens = _TENS_STEM[t] if t in _TENS_STEM else _LEXICON[t].value
            return _Entry("tens", tens + unit, frozenset({lang}), False)
    return None


def _trie(words: list[str]) -> str:
    """One regex alternation for many words, factored by prefix (so failing is fast)."""
    root: dict[str, dict] = {}  # type: ignore[type-arg]
    for w in words:
        node = root
        for c in w:
            node = node.setdefault(c, {})
        node[""] = {}

    def walk(node: dict) -> str:  # type: ignore[type-arg]
        branches = [re.escape(c) + walk(child) for c, child in sorted(node.items()) if c]
        if not branches:
            return ""
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        return f"(?:{body})?" if "" in node else body

    return walk(root)


_WORD = (r"(?:" + _trie(sorted(_LEXICON)) + "|"
         + "|".join(re.sub(r"\(\?P<\w>", "(?:", p.pattern) for _, p in _COMPOUNDS)
         + r")(?![\w'’])")
_DIGITS = r"\d+(?![\w'’])"
_SEP = (r"(?:[ \t]{1,3}|[ \t]?[,\-–—][ \t]?)"
        rf"(?:(?:and|und|et|y|e)[ \t\-]{{1,2}}|(?:{'|'.join(_PAUSES)})[ \t,]{{1,2}})?")
_AGE = r"[ \t]?-?[ \t]?(?:years?|yrs?|y/?o|jahre?|ans|anos|anni|jaar)(?![a-z])"
# A candidate run: digits then a word, or a word followed by another token (or an age),
# then any tokens. The Python pass below decides what it reads as.
_RUN = re.compile(
    r"(?<![\w'’])(?<!\d[.,])"
    rf"(?:(?:{_DIGITS}{_SEP}){{1,8}}{_WORD}|{_WORD}(?={_SEP}(?:{_WORD}|\d)|{_AGE}))"
    rf"(?:{_SEP}(?:{_WORD}|{_DIGITS}))*(?![.,]\d)")
# Matching the lower-cased text case-sensitively is about three times faster than
# IGNORECASE (sre folds case at every comparison); prose pays ~0.07 µs a character.
_RUN_ANY_CASE = re.compile(_RUN.pattern, re.IGNORECASE)
_PART = re.compile(r"\d+|[^\W\d_]+")
_AGE_AFTER = re.compile(_AGE, re.IGNORECASE)
_IBAN_HEAD = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}(?:[0-9]{2})?(?P<s1>[ \t]+)"
                        r"(?:[A-Z]{4}(?P<s2>[ \t]+))?\Z")
_IBAN_MIN_DIGITS = 10


class _Tok(NamedTuple):
    word: str  # lower case; digits as they are
    entry: _Entry | None  # None: digits or a connector
    start: int
    end: int
    comma: bool  # a comma between it and the token before


class _Group(NamedTuple):
    """Digits read from consecutive tokens, and the source range they came from."""

    digits: str
    start: int
    end: int
    langs: frozenset[str]
    words: int  # number words in it (0: a digit group)
    weak: bool


def _tokens(text: str, start: int, end: int) -> list[_Tok]:
    out: list[_Tok] = []
    prev = start
    for m in _PART.finditer(text, start, end):
        word = m.group().lower()
        if word in _PAUSES:
            continue
        entry = None if word.isdigit() or word in _CONNECTORS else (
            _LEXICON.get(word) or _compound(word))
        out.append(_Tok(word, entry, m.start(), m.end(), "," in text[prev:m.start()]))
        prev = m.end()
    return out


def _joined(toks: list[_Tok], k: int, *kinds: str) -> _Entry | None:
    """Token ``k``'s entry when it exists, follows the one before without a comma and is
    a number word of one of ``kinds``."""
    if k >= len(toks) or toks[k].comma:
        return None
    e = toks[k].entry
    return e if e is not None and e.kind in kinds else None


def _connector(toks: list[_Tok], k: int) -> bool:
    return (k < len(toks) and not toks[k].comma and toks[k].entry is None
            and not toks[k].word.isdigit())


def _below_100(toks: list[_Tok], i: int) -> tuple[int, int, frozenset[str], bool]:
    """The value (below 100) of the number words at ``i``, the index after them, the
    languages they can be, and whether they are one weak word."""
    e = toks[i].entry
    assert e is not None
    nxt = _joined(toks, i + 1, "unit", "tens")
    if e.kind == "unit" and e.value == 4 and nxt is not None and toks[
            i + 1].word.startswith("vingt"):
        v, j, langs = 80, i + 2, frozenset({"fr"})  # quatre-vingt(s)
    elif e.kind == "tens":
        v, j, langs = e.value, i + 1, e.langs
    elif (e.kind == "teen" and e.value == 10 and "fr" in e.langs and nxt is not None
          and nxt.kind == "unit" and nxt.value >= 7 and "fr" in nxt.langs):
        return 10 + nxt.value, i + 2, frozenset({"fr"}), False  # dix-sept … dix-neuf
    else:
        return e.value, i + 1, e.langs, e.weak
    if v % 10:  # a compound word already holds its unit
        return v, j, langs, False
    # tens [and] unit: "twenty-one", "vingt et un", "treinta y uno"; soixante and
    # quatre-vingt take 10–19 too ("soixante-dix-sept", "quatre-vingt-onze").
    k = j + 1 if _connector(toks, j) else j
    u = _joined(toks, k, "unit", "teen")
    if u is not None and u.kind == "unit" and 1 <= u.value <= 9 and u.langs & langs:
        return v + u.value, k + 1, langs & u.langs, False
    if u is not None and u.kind == "teen" and v in (60, 80) and "fr" in langs & u.langs:
        w, k2, _, _ = _below_100(toks, k)
        return v + w, k2, frozenset({"fr"}), False
    return v, j, langs, False


def _read(toks: list[_Tok], i: int) -> tuple[_Group | None, int]:
    """The group starting at token ``i`` and the index after it (None: not a number)."""
    t = toks[i]
    e = t.entry
    if e is None:
        if not t.word.isdigit():  # a connector outside a compound
            return None, i + 1
        return _Group(t.word, t.start, t.end, _ALL, 0, False), i + 1
    if e.kind == "plus":
        return _Group("+", t.start, t.end, _ALL, 1, True), i + 1
    if e.kind == "mult":
        u = _joined(toks, i + 1, "unit")
        if u is None:
            return None, i + 1
        return _Group(str(u.value) * e.value, t.start, toks[i + 1].end,
                      e.langs & u.langs, 2, False), i + 2
    if e.kind == "hundred":
        return None, i + 1
    v, j, langs, weak = _below_100(toks, i)
    h = _joined(toks, j, "hundred")
    if v and h is not None and h.langs & langs:  # "eight hundred", "nineteen hundred"
        langs &= h.langs
        v *= 100
        j += 1
        weak = False
        # then "and" and any number, or tens/teens ("one hundred twenty-three"); not a
        # bare digit: "eight hundred five five five…" is 800 555…
        k = j + 1 if _connector(toks, j) else j
        if _joined(toks, k, *(("unit", "teen", "tens") if k > j else ("teen", "tens"))):
            w, k2, w_langs, _ = _below_100(toks, k)
            if w and w_langs & langs:
                v, j, langs = v + w, k2, langs & w_langs
    return _Group(str(v), t.start, toks[j - 1].end, langs, j - i, weak), j


def _runs(toks: list[_Tok]) -> list[list[_Group]]:
    """Split tokens into runs of groups: a connector, a comma next to a digit group,
    a plus sign inside, or a change of language ends a run."""
    runs: list[list[_Group]] = []
    cur: list[_Group] = []
    langs = _ALL
    i = 0
    while i < len(toks):
        comma = toks[i].comma
        g, i = _read(toks, i)
        if g is None:
            if cur:
                runs.append(cur)
            cur, langs = [], _ALL
            continue
        if cur and ((comma and (g.words == 0 or cur[-1].words == 0))
                    or g.digits == "+" or not g.langs & langs):
            runs.append(cur)
            cur, langs = [], _ALL
        cur.append(g)
        langs &= g.langs
    if cur:
        runs.append(cur)
    return runs


def _counts(run: list[_Group], text: str) -> bool:
    """Whether a run is long enough to be part of an identifier (see module)."""
    strong = sum(1 for g in run if g.words and not g.weak)
    if strong >= 2 or (strong and sum(1 for g in run if g.words) >= 3):
        return True
    if strong == 1 and any(g.words == 0 for g in run):
        return "en" in _ALL.intersection(*(g.langs for g in run))
    return (strong == 1 and len(run) == 1 and len(run[0].digits) >= 2
            and _AGE_AFTER.match(text, run[0].end) is not None)


def spell_digits(text: str) -> SpelledText | None:
    """``text`` with its runs of number words read as digits; ``None`` when it has none.

    The result maps back to ``text``'s offsets: each digit to the word group it was read
    from; a removed separator belongs to no character (a span across it maps to the
    range including it).
    """
    pieces: list[tuple[int, int, str | None]] = []  # (a, b, digits or None: copy)
    lower = text.lower()
    # same offsets unless lowering changed a length ("İ" → "i̇")
    matches = (_RUN.finditer(lower) if len(lower) == len(text)
               else _RUN_ANY_CASE.finditer(text))
    for m in matches:
        for run in _runs(_tokens(text, m.start(), m.end())):
            if not _counts(run, text):
                continue
            pos = pieces[-1][1] if pieces else 0
            first = run[0].start
            if sum(len(g.digits) for g in run) >= _IBAN_MIN_DIGITS:
                head = _IBAN_HEAD.search(text, max(pos, first - 16), first)
                if head is not None:  # "DE89 " / "GB82 WEST ": drop its spaces
                    cut = [(head.start(s), head.end(s)) for s in ("s1", "s2")
                           if head.start(s) >= 0]
                    for a, b in cut:
                        pieces.append((pos, a, None))
                        pos = b
            pieces.append((pos, first, None))
            for g in run:
                pieces.append((g.start, g.end, g.digits))
    if not pieces:
        return None
    pieces.append((pieces[-1][1], len(text), None))
    chars: list[str] = []
    starts = array("l")
    ends = array("l")
    words: list[tuple[int, int]] = []
    n = 0
    for a, b, digits in pieces:
        if digits is None:
            chars.append(text[a:b])
            starts.extend(range(a, b))
            ends.extend(range(a + 1, b + 1))
            n += b - a
        else:
            chars.append(digits)
            starts.extend([a] * len(digits))
            ends.extend([b] * len(digits))
            if not text[a:b].isdigit():
                words.append((n, n + len(digits)))
            n += len(digits)
    return SpelledText("".join(chars), starts, ends, len(text), tuple(words))

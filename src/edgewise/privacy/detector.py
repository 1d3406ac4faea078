"""The privacy guard's detector: every text of a request → a level and exact spans.

Build one :class:`Detector` per process (it loads Presidio and spaCy: about a second)
and call :meth:`Detector.detect` with every piece of text of a request — each message's
content whatever its role, tool-call names and arguments — in order. Importing this
module loads nothing.

How a request is scanned:

1. **Per segment** (cached by the segment's sha256, so a conversation re-sent every
   turn only pays for its new messages):

   a. :func:`~edgewise.privacy.normalize.normalize` the text (escapes, invisible
      characters, look-alikes, NFKC) keeping a map to the original offsets;
   b. Presidio with spaCy NER, edgewise's name detector (``edgewise.privacy.names``)
      and every recognizer (Presidio's predefined ones and edgewise's) on the
      normalized text, texts over 50,000 characters in overlapping
      chunks;
   c. :func:`~edgewise.privacy.normalize.collapse_separators` — digits broken up by
      spaces, dots, dashes or newlines joined — and the structured recognizers (no NER)
      on that view; only matches that span a removed separator are kept;
   d. :func:`~edgewise.privacy.spelled.spell_digits` — numbers written in words or
      mixed (``five three six, two two…``, ``4 oh two``, ``neunzehn``, ``quatre-vingt``)
      read as digits — and the structured recognizers on that view, around the
      converted words only; only matches that cover a converted word are kept. Text
      without a run of number words has no such view and pays one regular-expression
      pass;
   e. every span mapped back to the original text.

2. **Across segments**: for each boundary between consecutive segments, the last and
   first 128 normalized characters around it (reaching into further segments when one
   is short) are joined and scanned by the structured recognizers, as they are, with
   digits collapsed and with numbers in words read as digits. A match that crosses a
   boundary becomes one finding per segment it touches (``via="across"``); so does one
   that the other segment's words made recognisable (``MRN?`` in one message, the
   number in the next).

3. **Clean-up**: findings below ``privacy.min_score`` or equal to an ``allow_list``
   entry are dropped; a finding inside another one at least as sensitive and as sure is
   dropped (a date inside an IBAN, a URL inside an e-mail); an NER guess overlapping a
   pattern match of another type yields to it ("Started Humira" is a drug, not a
   person); Presidio's ``IP_ADDRESS`` on a private address yields to ``PRIVATE_IP``;
   ``pw@host`` or ``token@host`` in a URL is a credential, not an e-mail address;
   NER guesses that are a bare letter ("D.") or a one-word multiple-choice option
   ("A. Wrong") are dropped; a ``DATE_TIME`` with a day and a month next to a
   ``PERSON`` (or on a short line with one) becomes ``PERSONAL_DATE``.

4. **Level**: a ``PERSON`` naming a public figure is ``public`` when nothing else in the
   request identifies anyone and it holds no health information; each finding gets its
   entity's level (``edgewise.privacy.levels``); the
   PHI rule raises identifiers next to health information to ``phi``; the request's
   level is ``max(declared, findings, PHI rule)`` — a declared label can only raise it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import weakref
from array import array
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from edgewise.config import PrivacyConfig
from edgewise.errors import PrivacyError
from edgewise.levels import LEVEL_NAMES, Level
from edgewise.privacy.findings import Detection, Finding
from edgewise.privacy.levels import (
    DEFAULT_LEVELS,
    HEALTH_ENTITIES,
    SECRET_ENTITIES,
    UNKNOWN_ENTITY_LEVEL,
)
from edgewise.privacy.normalize import NormalizedText, collapse_separators, normalize
from edgewise.privacy.spelled import spell_digits

__all__ = ["CacheInfo", "Detector", "resolve_levels"]

#: Characters of each side of a segment boundary scanned for split values.
JUNCTION_WINDOW = 128
#: Longest text given to spaCy at once; longer segments are scanned in chunks that
#: overlap by CHUNK_OVERLAP characters.
CHUNK_CHARS = 50_000
CHUNK_OVERLAP = 256


class _Hit(NamedTuple):
    """A span found in one text, in that text's coordinates (cached; no segment index)."""

    entity: str
    score: float
    start: int
    end: int
    via: str
    #: Found by spaCy's NER (not by a pattern).
    ner: bool = False


#: Recognizers whose findings are a model's guesses (they yield to pattern matches).
_NER_RECOGNIZERS = frozenset({"SpacyRecognizer", "EdgewiseNamesRecognizer"})


def _is_ner(result: Any) -> bool:
    meta = result.recognition_metadata or {}
    return meta.get("recognizer_name") in _NER_RECOGNIZERS


@dataclass(frozen=True)
class CacheInfo:
    hits: int
    misses: int
    size: int
    maxsize: int


class _LRU:
    """A small thread-safe LRU map from a digest to a tuple of hits."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[bytes, tuple[_Hit, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> tuple[_Hit, ...] | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key: bytes, value: tuple[_Hit, ...]) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def info(self) -> CacheInfo:
        with self._lock:
            return CacheInfo(self.hits, self.misses, len(self._data), self.maxsize)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0


_ENGINE_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_ENGINE_LOCKS_GUARD = threading.Lock()


def _engine_lock(engine: Any) -> threading.Lock:
    with _ENGINE_LOCKS_GUARD:
        lock = _ENGINE_LOCKS.get(engine)
        if lock is None:
            lock = _ENGINE_LOCKS[engine] = threading.Lock()
        return lock


def resolve_levels(config: PrivacyConfig) -> dict[str, Level]:
    """Entity type → level: defaults, raised by custom patterns/deny lists, then
    ``privacy.levels`` (which may also lower)."""
    levels = dict(DEFAULT_LEVELS)
    for entity, level in [*((p.entity, p.level) for p in config.patterns),
                          *((d.entity, d.level) for d in config.deny_lists)]:
        levels[entity] = Level.highest([levels.get(entity), level])
    levels.update(config.levels)
    return levels


class Detector:
    """Sensitivity detection for requests (see the module docstring for the steps).

    Thread-safe: the cache has its own lock and one lock serialises the NLP pipeline
    (spaCy is not guaranteed re-entrant, and detection is CPU-bound anyway); use
    :meth:`adetect` from async code.

    ``nlp_engine``: an already loaded engine (``other_detector.nlp_engine``) instead of
    loading the model again; detectors sharing it take turns on it.

    Raises (at construction):
        ModelNotFoundError / ModelIntegrityError: the spaCy model is missing or altered.
        ConfigError: a ``privacy.patterns`` regex Presidio's engine rejects.
    """

    def __init__(self, config: PrivacyConfig | None = None, *, cache_size: int = 4096,
                 verify_model: bool = True, nlp_engine: Any = None) -> None:
        from edgewise.privacy.nlp import without_deep_learning

        with without_deep_learning():  # spaCy would import torch, Presidio transformers
            self._load(config, cache_size, verify_model, nlp_engine)

    def _load(self, config: PrivacyConfig | None, cache_size: int, verify_model: bool,
              nlp_engine: Any) -> None:
        from edgewise.privacy.nlp import build_nlp_engine, quiet_presidio

        quiet_presidio()  # before Presidio's import, which already logs
        from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

        from edgewise.privacy.recognizers import (
            REPLACED_PRESIDIO_RECOGNIZERS,
            STRUCTURED_ENTITIES,
            edgewise_recognizers,
        )

        self.config = config if config is not None else PrivacyConfig()
        self.levels = resolve_levels(self.config)
        self._allow = frozenset(self.config.allow_list)
        # A loaded engine may be shared (several configs in one process, tests): the
        # lock that serialises it is attached to the engine, not to the detector.
        self._engine = nlp_engine if nlp_engine is not None else build_nlp_engine(
            verify=verify_model)
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=self._engine)
        for name in REPLACED_PRESIDIO_RECOGNIZERS:
            registry.remove_recognizer(name)
        for recognizer in edgewise_recognizers(self.config):
            registry.add_recognizer(recognizer)
        if self.config.names_model:
            from edgewise.privacy import names

            registry.add_recognizer(names.recognizer(*_names_ner(self._engine, verify_model)))
        self._analyzer = AnalyzerEngine(nlp_engine=self._engine, registry=registry,
                                        supported_languages=["en"])
        custom = {p.entity for p in self.config.patterns} | {
            d.entity for d in self.config.deny_lists}
        supported = set(self._analyzer.get_supported_entities("en"))
        self._structured = sorted((STRUCTURED_ENTITIES | custom) & supported)
        self._nlp_lock = _engine_lock(self._engine)
        self._cache = _LRU(cache_size)
        self._junction_cache = _LRU(cache_size)

    # -- public API ----------------------------------------------------------------------

    def detect(self, segments: Sequence[str], declared: str | None = None) -> Detection:
        """Scan every text of one request; the level is never below ``declared``.

        Raises:
            PrivacyError: ``declared`` is not a level, a segment is not a string, or the
                NLP pipeline failed (the message never quotes the text).
        """
        if declared is not None and declared not in LEVEL_NAMES:
            raise PrivacyError(f"declared sensitivity {declared!r} is not a level; "
                               f"valid levels: {', '.join(LEVEL_NAMES)}")
        for i, seg in enumerate(segments):
            if not isinstance(seg, str):
                raise PrivacyError(f"segment {i} is a {type(seg).__name__}, not text; pass "
                                   "each message content / tool argument as a string")
        if not self.config.enabled:
            return self._verdict([], declared, len(segments))
        norms = [normalize(s) if s else None for s in segments]
        hits = [self._segment_hits(s, n) if n is not None else () for s, n in
                zip(segments, norms, strict=True)]
        found: list[Finding] = [
            Finding(h.entity, self._level(h.entity), h.score, i, h.start, h.end, h.via)
            for i, seg_hits in enumerate(hits) for h in seg_hits]
        if len(segments) > 1:
            found.extend(self._across(segments, norms, hits))
        if self.config.public_figures:
            found = _public_figures(found, segments)
        return self._verdict(found, declared, len(segments))

    async def adetect(self, segments: Sequence[str], declared: str | None = None,
                      ) -> Detection:
        """:meth:`detect` in a worker thread, so the event loop keeps serving."""
        return await asyncio.to_thread(self.detect, list(segments), declared)

    @property
    def nlp_engine(self) -> Any:
        """The loaded Presidio NLP engine (pass it to another Detector to share it)."""
        return self._engine

    def cache_info(self) -> CacheInfo:
        """Hits, misses and size of the per-segment cache."""
        return self._cache.info()

    def clear_cache(self) -> None:
        self._cache.clear()
        self._junction_cache.clear()

    def level_of(self, entity: str) -> str:
        """The level of an entity type under this detector's config."""
        return self._level(entity)

    # -- one segment ---------------------------------------------------------------------

    def _segment_hits(self, text: str, norm: NormalizedText) -> tuple[_Hit, ...]:
        key = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        hits: list[_Hit] = []
        for r in self._analyze_chunked(norm.text, full=True):
            a, b = norm.to_source(r.start, r.end)
            hits.append(_Hit(r.entity_type, float(r.score), a, b, "text", _is_ner(r)))
        collapsed = collapse_separators(norm.text)
        if collapsed is not None:
            for r in self._analyze_chunked(collapsed.text, full=False):
                na, nb = collapsed.to_source(r.start, r.end)
                if nb - na == r.end - r.start:  # crosses no removed separator
                    continue
                a, b = norm.to_source(na, nb)
                hits.append(_Hit(r.entity_type, float(r.score), a, b, "digits"))
        spelled = spell_digits(norm.text)
        # only around the converted words: a 4000-token text with one spoken number
        # pays for ~600 characters, not a third full scan
        if spelled is not None:
            for lo, hi in spelled.windows():
                for r in self._analyze_chunked(spelled.text[lo:hi], full=False):
                    if spelled.covers_word(lo + r.start, lo + r.end):
                        a, b = norm.to_source(*spelled.to_source(lo + r.start,
                                                                 lo + r.end))
                        hits.append(_Hit(r.entity_type, float(r.score), a, b, "words"))
        result = tuple(self._clean(hits, text))
        self._cache.put(key, result)
        return result

    def _analyze_chunked(self, text: str, *, full: bool) -> list[Any]:
        if len(text) <= CHUNK_CHARS:
            return self._analyze(text, full=full)
        out: list[Any] = []
        pos = 0
        while pos < len(text):
            end = min(len(text), pos + CHUNK_CHARS)
            if end < len(text):  # cut at whitespace so no token is split
                cut = text.rfind(" ", pos + CHUNK_CHARS // 2, end)
                end = cut if cut > 0 else end
            for r in self._analyze(text[pos:end], full=full):
                r.start += pos
                r.end += pos
                out.append(r)
            if end >= len(text):
                break
            pos = max(pos + 1, end - CHUNK_OVERLAP)
        return out

    def _analyze(self, text: str, *, full: bool) -> list[Any]:
        """Presidio on one text: everything (spaCy pipeline) or the structured
        recognizers only (spaCy's tokenizer alone, for context words)."""
        if not text.strip():
            return []
        try:
            with self._nlp_lock:
                if full:
                    return list(self._analyzer.analyze(
                        text=text, language="en", score_threshold=self.config.min_score))
                return list(self._analyzer.analyze(
                    text=text, language="en", entities=self._structured,
                    score_threshold=self.config.min_score,
                    nlp_artifacts=self._tokens_only(text)))
        except Exception as exc:
            raise PrivacyError(
                f"the privacy guard failed to scan a text of {len(text)} characters "
                f"({type(exc).__name__}); the request cannot be classified") from exc

    def _tokens_only(self, text: str) -> Any:
        from presidio_analyzer.nlp_engine import NlpArtifacts

        doc = self._engine.nlp["en"].make_doc(text)
        return NlpArtifacts(entities=[], tokens=doc, tokens_indices=[t.idx for t in doc],
                            lemmas=[t.lower_ for t in doc], nlp_engine=self._engine,
                            language="en")

    def _clean(self, hits: Iterable[_Hit], text: str) -> list[_Hit]:
        """Allow list, PRIVATE_IP over IP_ADDRESS, contained duplicates; text order."""
        best: dict[tuple[str, int, int], _Hit] = {}
        for h in hits:  # one hit per (entity, span): the surest, the plain text view first
            k = (h.entity, h.start, h.end)
            if k not in best or (h.score, h.via == "text") > (best[k].score,
                                                              best[k].via == "text"):
                best[k] = h
        kept = []
        values = [t for t in (_trim_list_marker(h, text) if h.ner else h
                              for h in best.values()) if t is not None]
        private = {(h.start, h.end) for h in values if h.entity == "PRIVATE_IP"}
        secrets = {h.start for h in values if h.entity in SECRET_ENTITIES}
        patterns = [h for h in values if not h.ner and h.score >= 0.6]
        for h in values:
            if h.entity == "IP_ADDRESS" and (h.start, h.end) in private:
                continue
            # "user:pw@host" or "token@host" in a URL is not an e-mail address
            if h.entity == "EMAIL_ADDRESS" and h.start in secrets:
                continue
            # NER guesses yield to a pattern that knows what the words are ("Started
            # Humira" is not a person, "B20" after "diagnosis code" is not one either)
            if h.ner and any(p.entity != h.entity and p.start < h.end and h.start < p.end
                             for p in patterns):
                continue
            if self._allow and self._allowed(text[h.start:h.end]):
                continue
            kept.append(h)
        kept = _personal_dates(kept, text)
        kept = _drop_contained(kept, self._level)
        return sorted(kept, key=lambda h: (h.start, h.end, h.entity))

    def _allowed(self, value: str) -> bool:
        return value in self._allow or value.strip() in self._allow or (
            normalize(value).text.strip() in self._allow)

    # -- across segments -----------------------------------------------------------------

    def _across(self, segments: Sequence[str], norms: Sequence[NormalizedText | None],
                hits: Sequence[tuple[_Hit, ...]]) -> list[Finding]:
        """Findings of values split over (or made recognisable by) a segment boundary."""
        texts = [n.text if n is not None else "" for n in norms]
        out: dict[tuple[str, int, int, int], Finding] = {}
        for boundary in range(len(texts) - 1):
            pieces = _window(texts, boundary)
            if not pieces:
                continue
            joined = "".join(texts[s][a:b] for s, a, b in pieces)
            cuts = _cumulative([b - a for _, a, b in pieces])
            # Is there text beyond the window's ends (a value there may be cut off)?
            first, last = pieces[0], pieces[-1]
            cut_left = first[1] > 0 or any(texts[:first[0]])
            cut_right = last[2] < len(texts[last[0]]) or any(texts[last[0] + 1:])
            for h in self._junction_hits(joined, cuts, cut_left, cut_right):
                parts = []
                for seg, na, nb in _split(pieces, cuts, h.start, h.end):
                    norm = norms[seg]
                    assert norm is not None
                    parts.append((seg, *norm.to_source(na, nb)))
                if len(parts) == 1 and self._known(h, parts[0], hits[parts[0][0]]):
                    continue
                for seg, a, b in parts:
                    key = (h.entity, seg, a, b)
                    if key not in out or out[key].score < h.score:
                        out[key] = Finding(h.entity, self._level(h.entity), h.score, seg,
                                           a, b, "across")
        return list(out.values())

    def _known(self, h: _Hit, part: tuple[int, int, int], seg_hits: tuple[_Hit, ...],
               ) -> bool:
        """Whether a junction hit that lies in one segment adds nothing to its own scan."""
        _, a, b = part
        return any((o.entity == h.entity and o.start < b and a < o.end)
                   or (o.start <= a and b <= o.end and o.score >= h.score
                       and Level.parse(self._level(o.entity)).rank >= Level.parse(
                           self._level(h.entity)).rank)
                   for o in seg_hits)

    def _junction_hits(self, joined: str, cuts: list[int], cut_left: bool,
                       cut_right: bool) -> tuple[_Hit, ...]:
        key = hashlib.sha256(joined.encode("utf-8", "surrogatepass") + b"\0"
                             + ",".join(map(str, cuts)).encode()
                             + bytes([cut_left, cut_right])).digest()
        cached = self._junction_cache.get(key)
        if cached is not None:
            return cached
        inner = cuts[1:-1]  # segment boundaries inside the joined text
        found: list[_Hit] = []

        def keep(start: int, end: int) -> bool:
            # Touching an edge where the window cut text off: possibly a truncated
            # value (the segment's own scan sees it whole), skip.
            return (start > 0 or not cut_left) and (end < len(joined) or not cut_right)

        for r in self._analyze(joined, full=False):
            if keep(r.start, r.end):
                found.append(_Hit(r.entity_type, float(r.score), r.start, r.end, "across"))
        collapsed = collapse_separators(joined)
        if collapsed is not None:
            for r in self._analyze(collapsed.text, full=False):
                a, b = collapsed.to_source(r.start, r.end)
                if b - a != r.end - r.start and keep(a, b):
                    found.append(_Hit(r.entity_type, float(r.score), a, b, "across"))
        spaced = _spaced(joined, inner)  # "…one" + "one…" must not read "oneone"
        spelled = spell_digits(spaced.text)
        if spelled is not None:
            for r in self._analyze(spelled.text, full=False):
                a, b = spaced.to_source(*spelled.to_source(r.start, r.end))
                if spelled.covers_word(r.start, r.end) and keep(a, b):
                    found.append(_Hit(r.entity_type, float(r.score), a, b, "across"))
        # Keep what crosses a boundary or sits next to one (context from the other side).
        result = tuple(h for h in set(found) if any(h.start <= c <= h.end for c in inner)
                       or any(abs(h.start - c) <= 64 or abs(h.end - c) <= 64 for c in inner))
        self._junction_cache.put(key, result)
        return result

    # -- verdict -------------------------------------------------------------------------

    def _level(self, entity: str) -> str:
        return self.levels.get(entity, UNKNOWN_ENTITY_LEVEL)

    def _verdict(self, findings: list[Finding], declared: str | None,
                 n_segments: int) -> Detection:
        pii = Level.PII.rank
        health = any(f.entity in HEALTH_ENTITIES for f in findings)
        identifying = [f for f in findings if f.entity not in HEALTH_ENTITIES
                       and f.entity not in SECRET_ENTITIES and Level.parse(f.level).rank >= pii]
        phi_rule = health and bool(identifying)
        if phi_rule:
            raise_ids = {id(f) for f in identifying}
            findings = [Finding(f.entity, "phi", f.score, f.segment, f.start, f.end, f.via)
                        if id(f) in raise_ids else f for f in findings]
        findings.sort(key=lambda f: (f.segment, f.start, f.end, f.entity))
        detected = Level.highest([f.level for f in findings] + (["phi"] if phi_rule else []))
        return Detection.build(level=Level.highest([detected, declared]), detected=detected,
                               declared=declared, findings=tuple(findings),
                               phi_rule=phi_rule, segments=n_segments)


_NAMES_NER: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _names_ner(engine: Any, verify: bool) -> tuple[Any, frozenset[str]]:
    """The name detector on ``engine``'s vocabulary and the English words of its
    lemmatizer, loaded once per engine (every Detector sharing it reuses both)."""
    from edgewise.privacy import names
    from edgewise.privacy.nlp import model_dir

    with _ENGINE_LOCKS_GUARD:
        loaded = _NAMES_NER.get(engine)
        if loaded is None:
            nlp = engine.nlp["en"]
            loaded = _NAMES_NER[engine] = (
                names.load_names_ner(nlp.vocab, model_dir(), verify=verify),
                names.english_words(nlp))
        return loaded


def _public_figures(found: list[Finding], segments: Sequence[str]) -> list[Finding]:
    """``PERSON`` findings naming a public figure become ``public`` — when nothing else
    in the request identifies anyone (no other finding at ``pii`` or above) and it holds
    no health information (``edgewise.privacy.names.public_figure``)."""
    from edgewise.privacy.names import public_figure

    famous = [f.entity == "PERSON" and public_figure(segments[f.segment][f.start:f.end])
              for f in found]
    if not any(famous):
        return found
    pii = Level.PII.rank
    if any(f.entity in HEALTH_ENTITIES or (not fam and Level.parse(f.level).rank >= pii)
           for f, fam in zip(found, famous, strict=True)):
        return found
    return [Finding(f.entity, "public", f.score, f.segment, f.start, f.end, f.via)
            if fam else f for f, fam in zip(found, famous, strict=True)]


def _merge_same_type(hits: list[_Hit]) -> list[_Hit]:
    """Fold each hit into a longer hit of the same type that contains it."""
    out: list[_Hit] = []
    by_entity: dict[str, list[_Hit]] = {}
    for h in hits:
        by_entity.setdefault(h.entity, []).append(h)
    for group in by_entity.values():
        group.sort(key=lambda h: (h.start, -h.end))
        kept: list[_Hit] = []
        for h in group:
            outer = next((i for i in range(len(kept) - 1, -1, -1)
                          if kept[i].start <= h.start and h.end <= kept[i].end), None)
            if outer is None:
                kept.append(h)
            elif h.score > kept[outer].score:
                kept[outer] = kept[outer]._replace(score=h.score)
        out.extend(kept)
    return out


#: A date this close to a person's name (characters between them) is that person's.
PERSON_DATE_WINDOW = 40
#: Longest line in which a date and a name on it belong together (a record's row).
PERSON_DATE_LINE = 200


def _personal_dates(hits: list[_Hit], text: str) -> list[_Hit]:
    """A ``DATE_TIME`` with a day and a month (Safe Harbor keeps years) within
    PERSON_DATE_WINDOW characters of a ``PERSON``, or on a line of at most
    PERSON_DATE_LINE characters with one, is that person's date: ``PERSONAL_DATE``.
    Dates before 1900 stay ``DATE_TIME`` (history: see recognizers/dates.py)."""
    people = [h for h in hits if h.entity == "PERSON"]
    if not people:
        return hits
    from edgewise.privacy.recognizers.dates import DATE, year_before_1900

    def near(p: _Hit, d: _Hit) -> bool:
        if max(p.start, d.start) - min(p.end, d.end) <= PERSON_DATE_WINDOW:
            return True
        line = text.rfind("\n", 0, d.start) + 1
        end = text.find("\n", d.end)
        end = len(text) if end < 0 else end
        return end - line <= PERSON_DATE_LINE and line <= p.start and p.end <= end

    out = []
    for h in hits:
        if h.entity == "DATE_TIME":
            m = re.search(DATE, text[h.start:h.end])
            if (m is not None and re.search(r"(?<!\d)\d{1,2}(?!\d)", m.group())
                    and not year_before_1900(text[h.start:h.end])
                    and any(near(p, h) for p in people)
                    # a pattern that says more ("dob": … → DATE_OF_BIRTH) keeps it
                    and not any(o.entity not in ("DATE_TIME", "PERSON") and not o.ner
                                and o.start <= h.start and h.end <= o.end for o in hits)):
                h = h._replace(entity="PERSONAL_DATE")
        out.append(h)
    return out


_LIST_MARKER = re.compile(r"[A-Ha-h1-9][.)]\s+")
_TOO_SHORT = re.compile(r"\W*[A-Za-z]?\W*")


def _trim_list_marker(h: _Hit, text: str) -> _Hit | None:
    """NER reads "A. Wrong" in a multiple-choice list as a person and "D." as a
    nationality: drop a bare letter, and take an option marker at a line start off a
    name (nothing is left of a one-word option: it is dropped)."""
    value = text[h.start:h.end]
    if _TOO_SHORT.fullmatch(value):
        return None
    at_line_start = h.start == 0 or text[h.start - 1] == "\n"
    m = _LIST_MARKER.match(value)
    if not (m and at_line_start):
        return h
    rest = value[m.end():]
    if "\n" in rest or len(rest.split()) < 2:
        return None
    return h._replace(start=h.start + m.end())


def _drop_contained(hits: list[_Hit], level: Any) -> list[_Hit]:
    """Drop hits inside another hit that is at least as sensitive and as confident.

    A hit inside a longer one of the same entity type is dropped whatever its score
    (the longer one takes the higher score: "Lima" inside "Ana Lima"). On an identical
    span only the most sensitive, then surest, then alphabetically first entity stays.
    A sweep over start-sorted hits keeps this near-linear.
    """
    hits = _merge_same_type(hits)

    def key(h: _Hit) -> tuple[int, float, tuple[int, ...]]:
        return Level.parse(level(h.entity)).rank, h.score, tuple(-ord(c) for c in h.entity)

    by_span: dict[tuple[int, int], _Hit] = {}
    for h in hits:
        span = (h.start, h.end)
        if span not in by_span or key(h) > key(by_span[span]):
            by_span[span] = h
    out: list[_Hit] = []
    active: list[_Hit] = []  # earlier hits that may still contain later ones
    for h in sorted(by_span.values(), key=lambda h: (h.start, -h.end)):
        active = [o for o in active if o.end >= h.start]
        lv = Level.parse(level(h.entity)).rank
        if not any(o.end >= h.end and Level.parse(level(o.entity)).rank >= lv and o.score >= h.score
                   for o in active):
            out.append(h)
        active.append(h)
    return out


def _window(texts: Sequence[str], boundary: int) -> list[tuple[int, int, int]]:
    """``(segment, start, end)`` pieces: up to JUNCTION_WINDOW characters before the
    boundary after segment ``boundary`` and as many after it."""
    left: list[tuple[int, int, int]] = []
    need, seg = JUNCTION_WINDOW, boundary
    while seg >= 0 and need > 0:
        n = len(texts[seg])
        if n:
            left.append((seg, max(0, n - need), n))
            need -= min(n, need)
        seg -= 1
    right: list[tuple[int, int, int]] = []
    need, seg = JUNCTION_WINDOW, boundary + 1
    while seg < len(texts) and need > 0:
        n = len(texts[seg])
        if n:
            right.append((seg, 0, min(n, need)))
            need -= min(n, need)
        seg += 1
    if not left or not right:
        return []
    return [*reversed(left), *right]


def _spaced(text: str, cuts: list[int]) -> NormalizedText:
    """``text`` with a space at each cut between two letters (segments joined end to
    end); the space maps to the letter before it."""
    at = [c for c in cuts if 0 < c < len(text) and text[c - 1].isalpha()
          and text[c].isalpha()]
    starts, ends = array("l", range(len(text))), array("l", range(1, len(text) + 1))
    for c in reversed(at):
        starts.insert(c, c - 1)
        ends.insert(c, c)
        text = text[:c] + " " + text[c:]
    return NormalizedText(text, starts, ends, len(ends) - len(at))


def _cumulative(lengths: list[int]) -> list[int]:
    cuts = [0]
    for n in lengths:
        cuts.append(cuts[-1] + n)
    return cuts


def _split(pieces: list[tuple[int, int, int]], cuts: list[int], start: int, end: int,
           ) -> list[tuple[int, int, int]]:
    """The parts of joined-text range ``[start, end)`` in each piece's segment."""
    out = []
    for (seg, a, _b), lo, hi in zip(pieces, cuts, cuts[1:], strict=False):
        s, e = max(start, lo), min(end, hi)
        if s < e:
            out.append((seg, a + s - lo, a + e - lo))
    return out

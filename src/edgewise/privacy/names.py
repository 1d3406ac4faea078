"""The name detector: a second spaCy NER, fine-tuned on names, beside the small model's.

spaCy's small English model misses about a quarter of person names (names of cultures
its news training text rarely holds, names in lists, signatures, dialogue and lower
case). No larger NER model installs from the registries edgewise may use, so edgewise
ships its own: the small model's NER component (its own hash-embedding CNN over NORM,
PREFIX, SUFFIX and SHAPE) fine-tuned on generated sentences — names of about sixty
locales in introductions, e-mails, signatures, clinical notes, forms, lists, dialogue,
with titles, initials, possessives, hyphens, in lower and upper case — and on
negatives full of capitalised words that are not people (``tools/train_names.py``,
``tools/names_data.py``; bench/privacy.py measures it on names and templates it never
saw and on presidio-evaluator's sentences).

The trained component lives in ``data/names/`` (``cfg``, ``model``, ``moves``: 6 MB,
committed); its files are checked against :data:`NAMES_FILES` before spaCy reads them,
as the spaCy model's are. It runs on the tokens of the main pipeline's document (no
second tokenization): :class:`NamesRecognizer` gives Presidio its ``PERSON`` spans,
which join those of the small model's NER (an ensemble: a name either one finds is a
name).

**Public figures.** A question about Karl Marx or Marie Curie names no private person.
:func:`public_figure` says whether a name is on ``data/public_figures.txt`` (historical
and public figures, written for this list — where it comes from is at its top); the
detector makes such a ``PERSON`` finding ``public`` only when nothing else in the
request identifies anyone and it holds no health information (``detector.py``).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "NAMES_FILES",
    "english_words",
    "load_names_ner",
    "names_dir",
    "person_spans",
    "plausible",
    "public_figure",
    "recognizer",
    "verify_names",
]

#: sha256 of the trained component's files (``tools/train_names.py`` prints them).
NAMES_FILES: dict[str, str] = {
    "cfg": "a7172edadafba9f472e9ac0f2660eec04b6405e471be9e20267b79c67288d22d",
    "model": "048fa243ffa34222ac3504ff4e37eb63cbd17f8cc591586072b83adb3b5b5aaa",
    "moves": "d82b13473ebd33e0396004dd22f00c71fe3c1251742bf1f7c4554f23fd3b0af4",
}

#: Score of a name found by this model (Presidio's spaCy recognizer gives 0.85).
SCORE = 0.85


def names_dir() -> Path:
    return Path(str(resources.files("edgewise.privacy") / "data" / "names"))


def verify_names(root: Path | None = None) -> Path:
    """Check the digests of the name detector's files; return their directory.

    Raises:
        ModelNotFoundError: a file is missing (a broken install).
        ModelIntegrityError: a file whose digest differs from :data:`NAMES_FILES`.
    """
    from edgewise.privacy.nlp import verify_files

    return verify_files(root if root is not None else names_dir(), NAMES_FILES,
                        "name detector", "pip install --force-reinstall -e .")


def load_names_ner(vocab: Any, spacy_model: Path, *, verify: bool = True,
                   root: Path | None = None) -> Any:
    """The trained NER component, built like the small model's (``spacy_model``: its
    directory, whose ``config.cfg`` gives the architecture) and loaded from
    ``data/names``."""
    import spacy
    from spacy.util import load_config

    root = verify_names(root) if verify else (root or names_dir())
    arch = load_config(spacy_model / "config.cfg", interpolate=True)
    nlp = spacy.blank("en", vocab=vocab)
    ner: Any = nlp.add_pipe("ner", name="edgewise_names",
                            config={"model": arch["components"]["ner"]["model"]})
    ner.from_disk(root, exclude=["vocab"])
    return ner


def person_spans(ner: Any, doc: Any) -> list[tuple[int, int]]:
    """Character spans of the persons the model finds in ``doc``'s text (its tokens)."""
    from spacy.tokens import Doc

    if not len(doc):
        return []
    copy = Doc(doc.vocab, words=[t.text for t in doc],
               spaces=[bool(t.whitespace_) for t in doc])
    copy = ner(copy)
    out = []
    for e in copy.ents:
        if e.label_ != "PERSON":
            continue
        # a name holds no digits and no list punctuation: cut the span at the first
        # such token ("Bo Chen,1990-01-02" in a CSV row is "Bo Chen")
        toks = list(e)
        for i, t in enumerate(toks):
            if any(c.isdigit() for c in t.text) or t.text in {",", ";", "|", ":", "(", ")"} \
                    or "\n" in t.text:
                toks = toks[:i]
                break
        while toks and not any(c.isalpha() for c in toks[-1].text):
            toks.pop()
        if toks:
            out.append((toks[0].idx, toks[-1].idx + len(toks[-1].text)))
    return out


def recognizer(ner: Any, words: frozenset[str] = frozenset()) -> Any:
    """A Presidio ``LocalRecognizer`` reporting the model's ``PERSON`` spans."""
    from presidio_analyzer import LocalRecognizer, RecognizerResult

    class _Names(LocalRecognizer):
        def __init__(self) -> None:
            super().__init__(supported_entities=["PERSON"], name="EdgewiseNamesRecognizer",
                             supported_language="en", context=[])

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                    ) -> list[Any]:
            if entities and "PERSON" not in entities:
                return []
            doc = getattr(nlp_artifacts, "tokens", None)
            if doc is None or doc.text != text:
                return []
            return [RecognizerResult(
                entity_type="PERSON", start=a, end=b, score=SCORE,
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: "EdgewiseNamesRecognizer",
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id})
                for a, b in person_spans(ner, doc) if plausible(doc, a, b, words)]

    return _Names()


_SPACE = re.compile(r"\s+")


def english_words(nlp: Any) -> frozenset[str]:
    """English words: the WordNet lemma index of ``nlp``'s lemmatizer (none if absent)."""
    if "lemmatizer" not in nlp.pipe_names:
        return frozenset()
    lookups = nlp.get_pipe("lemmatizer").lookups
    if "lemma_index" not in lookups.tables:
        return frozenset()
    return frozenset(w for ws in lookups.get_table("lemma_index").values() for w in ws)


def plausible(doc: Any, start: int, end: int, words: frozenset[str]) -> bool:
    """Whether a span the name model found (and the small model did not) can be a name.

    The fine-tuned model over-reaches on text unlike its training sentences (exam
    questions: "A. Wrong", "lungfish?"). Two filters, on its own finds only — a span
    the small model's NER also calls a person is always kept:

    * a span with no capitalised word is kept only in text that is itself in lower
      case (a chat message: "i talked to sonja dufresne"), not in ordinary prose;
    * a span whose every word is an English word of the lemmatizer's WordNet index
      ("Wrong", "Decision Trees", "Quiet Winter") is dropped — names that are also
      words ("Grace", "Rose") are left to the small model and the rules.
    """
    span = doc.char_span(start, end, alignment_mode="expand")
    if span is None:
        return False
    if any(e.label_ == "PERSON" and e.start < span.end and span.start < e.end
           for e in doc.ents):
        return True
    alpha = [t for t in span if t.is_alpha]
    if not alpha:
        return False
    if not any(t.text[:1].isupper() for t in alpha):
        lo, hi = max(0, start - 120), min(len(doc.text), end + 120)
        window = doc.text[lo:start] + doc.text[end:hi]
        if sum(c.isupper() for c in window) > 1:
            return False
    return not (words and all(t.lower_ in words or t.lemma_.lower() in words
                              for t in alpha))


@cache
def _figures() -> frozenset[str]:
    text = (resources.files("edgewise.privacy") / "data" / "public_figures.txt").read_text(
        encoding="utf-8")
    return frozenset(_key(line) for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def _key(name: str) -> str:
    return _SPACE.sub(" ", name.replace("’", "'")).strip().casefold()


def public_figure(name: str) -> bool:
    """Whether ``name`` (as found: "Karl Marx", "Marx's" → "Marx") is a public figure."""
    key = _key(name)
    if key.endswith("'s"):
        key = key[:-2]
    return key in _figures()

"""``PROPER_NOUN``: every run of proper-noun tokens, for operators who would rather redact
a city than leak a name (``privacy.proper_nouns: true``; off by default).

spaCy's small English NER model finds about 70 % of person names in presidio-evaluator's
sentences (``bench/privacy.py``); the rest are tagged ``ORG``, ``GPE`` or nothing, but
its part-of-speech tagger still calls them ``PROPN`` (NNP/NNPS). This recognizer reports
each maximal run of ``PROPN`` tokens — joined across single hyphens, apostrophes and
the periods of initials (``J. R. R. Tolkien``, ``O'Neill``, ``Smith-Jones``) — as one
finding, so a name the NER missed is still replaced when a request is redacted for a
lower tier. A run must hold a capitalised token (the tagger calls ``x^2`` a proper noun
too) of two letters or more that is not a Roman numeral (answer options ``D.``,
``Part IV``), so names written all in lower case are left to the NER. The price is
over-redaction: places, organisations and product names are
proper nouns too (measured on benign MMLU prompts in ``bench/privacy.py``), and as
``pii`` findings they also keep such prompts off tiers cleared only for ``public`` data
under ``escalation: forbid``.

It needs the spaCy pipeline's tagger (on in edgewise's NLP engine), so it runs only in
the full per-message scan, not on the cheap cross-message views.
"""

from __future__ import annotations

import re
from typing import Any

from presidio_analyzer import LocalRecognizer, RecognizerResult

__all__ = ["ProperNounRecognizer"]

_JOINERS = {"-", "'", "’", "."}
_ROMAN = re.compile(r"^(?=[MDCLXVI])M{0,3}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})\.?$")


def _wordlike(text: str) -> bool:
    """Two letters or more and not a Roman numeral: ``D.`` (an answer option), ``IV``
    and ``x`` are not names."""
    return sum(c.isalpha() for c in text) >= 2 and not _ROMAN.match(text)


class ProperNounRecognizer(LocalRecognizer):
    SCORE = 0.55

    def __init__(self) -> None:
        super().__init__(supported_entities=["PROPER_NOUN"], name="ProperNounRecognizer",
                         supported_language="en", context=[])

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None,
                ) -> list[RecognizerResult]:
        if entities and "PROPER_NOUN" not in entities:
            return []
        doc = getattr(nlp_artifacts, "tokens", None)
        if doc is None or not len(doc) or not doc.has_annotation("TAG"):
            return []
        results: list[RecognizerResult] = []
        run: list[Any] = []

        def close() -> None:
            while run and run[-1].text in _JOINERS:
                run.pop()
            # a name is capitalised (``x^2`` is tagged PROPN too) and word-like
            if run and any(t.text[:1].isupper() and _wordlike(t.text) for t in run):
                results.append(RecognizerResult(
                    entity_type="PROPER_NOUN", start=run[0].idx,
                    end=run[-1].idx + len(run[-1].text), score=self.SCORE,
                    recognition_metadata={
                        RecognizerResult.RECOGNIZER_NAME_KEY: "ProperNounRecognizer",
                        RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
            run.clear()

        for tok in doc:
            if tok.pos_ == "PROPN" and any(c.isalpha() for c in tok.text):
                if run and tok.idx > run[-1].idx + len(run[-1].text) + 1:
                    close()  # more than one space apart: another name
                run.append(tok)
            elif run and tok.text in _JOINERS and \
                    tok.idx == run[-1].idx + len(run[-1].text):
                run.append(tok)  # glued to the run: J. / O' / Smith-
            else:
                close()
        close()
        return results

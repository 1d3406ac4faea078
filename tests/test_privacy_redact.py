"""Reversible redaction: placeholders, stability, collisions, tolerant and streaming
restoration."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from edgewise.privacy.redact import redact


@dataclass(frozen=True)
class Span:
    segment: int
    start: int
    end: int
    entity: str


def spans_of(segments: list[str], *values: tuple[str, str]) -> list[Span]:
    """Spans for every occurrence of each (value, entity) in every segment."""
    out = []
    for i, seg in enumerate(segments):
        for value, entity in values:
            start = seg.find(value)
            while start >= 0:
                out.append(Span(i, start, start + len(value), entity))
                start = seg.find(value, start + 1)
    return out


def test_placeholders_are_stable_per_value_and_numbered_per_entity() -> None:
    segs = ["Jane Doe called about Bob Smith.", "Is jane  doe ok? Mail jane@x.org"]
    spans = spans_of(segs, ("Jane Doe", "PERSON"), ("Bob Smith", "PERSON"),
                     ("jane  doe", "PERSON"), ("jane@x.org", "EMAIL_ADDRESS"))
    r = redact(segs, spans)
    assert r.segments == ("<PERSON_1> called about <PERSON_2>.",
                          "Is <PERSON_1> ok? Mail <EMAIL_ADDRESS_1>")
    assert r.mapping == {"<PERSON_1>": "Jane Doe", "<PERSON_2>": "Bob Smith",
                         "<EMAIL_ADDRESS_1>": "jane@x.org"}
    assert r.replaced == 4


def test_history_prefix_keeps_its_placeholders_next_turn() -> None:
    turn1 = ["Patient Ann Lee, MRN 1234567."]
    turn2 = [*turn1, "Thanks.", "Also Ben Ray, MRN 7654321."]
    vals = (("Ann Lee", "PERSON"), ("Ben Ray", "PERSON"), ("1234567", "MRN"),
            ("7654321", "MRN"))
    r1, r2 = redact(turn1, spans_of(turn1, *vals)), redact(turn2, spans_of(turn2, *vals))
    assert r2.segments[0] == r1.segments[0]
    assert r2.segments[2] == "Also <PERSON_2>, MRN <MRN_2>."


def test_overlapping_spans_merge_and_nothing_of_either_survives() -> None:
    segs = ["call +1 555 0100 now"]
    spans = [Span(0, 5, 16, "PHONE_NUMBER"), Span(0, 8, 16, "US_BANK_NUMBER")]
    r = redact(segs, spans)
    assert r.segments == ("call <PHONE_NUMBER_1> now",)
    assert r.replaced == 1


def test_placeholders_already_in_the_text_are_skipped() -> None:
    segs = ["Template uses [PERSON_1]; fill in Kim Park."]
    r = redact(segs, spans_of(segs, ("Kim Park", "PERSON")))
    assert r.segments == ("Template uses [PERSON_1]; fill in <PERSON_2>.",)
    # the user's literal text is not restored into a name
    assert r.restore("Template uses [PERSON_1] for <PERSON_2>") == \
        "Template uses [PERSON_1] for Kim Park"


def test_out_of_range_spans_are_clipped_not_fatal() -> None:
    r = redact(["abc"], [Span(0, 1, 99, "X"), Span(5, 0, 1, "X"), Span(0, 2, 2, "X")])
    assert r.segments == ("a<X_1>",)


def test_restore_is_tolerant_but_only_for_issued_placeholders() -> None:
    segs = ["Email jo@x.org for Jo Lo"]
    r = redact(segs, spans_of(segs, ("jo@x.org", "EMAIL_ADDRESS"), ("Jo Lo", "PERSON")))
    answer = ("Dear < person_1 >, [EMAIL_ADDRESS_1] / {PERSON_1} / &lt;PERSON_1&gt; / "
              "PERSON_1. Not <PERSON_2> nor MY_PERSON_1 nor PERSON_10.")
    assert r.restore(answer) == ("Dear Jo Lo, jo@x.org / Jo Lo / Jo Lo / Jo Lo. "
                                 "Not <PERSON_2> nor MY_PERSON_1 nor PERSON_10.")


def test_repr_never_shows_values() -> None:
    segs = ["SSN 078-05-1120"]
    r = redact(segs, spans_of(segs, ("078-05-1120", "US_SSN")))
    assert "078" not in repr(r) and "078" not in str(r)


def _stream(r, pieces: list[str]) -> str:
    s = r.restorer()
    return "".join(s.feed(p) for p in pieces) + s.flush()


def test_stream_never_emits_part_of_a_placeholder() -> None:
    segs = ["Hi Ada Byron"]
    r = redact(segs, spans_of(segs, ("Ada Byron", "PERSON")))
    s = r.restorer()
    out = [s.feed(p) for p in ["Hello <", "PER", "SON", "_1", "> and ", "PERSON_", "1", "!"]]
    out.append(s.flush())
    assert "".join(out) == "Hello Ada Byron and Ada Byron!"
    assert all("PER" not in piece and "<" not in piece for piece in out)
    assert out[0] == "Hello "  # released as soon as it cannot be a placeholder


def test_stream_releases_text_that_cannot_be_a_placeholder() -> None:
    segs = ["Hi Ada Byron"]
    r = redact(segs, spans_of(segs, ("Ada Byron", "PERSON")))
    s = r.restorer()
    assert s.feed("a < b and [x] ") == "a < b and [x] "
    assert s.feed("<PERSON_2>") == "<PERSON_2>"


def test_no_mapping_streams_through_untouched() -> None:
    r = redact(["nothing here"], [])
    assert not r.changed
    assert _stream(r, ["<PER", "SON_1>"]) == "<PERSON_1>"


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["<PERSON_1>", "PERSON_1", "[EMAIL_ADDRESS_1]", "&lt;",
                                 "<", ">", " ", "PER", "SON", "_1", "x", "é", "\n",
                                 "<person_1 >", "PERSON_12", "{US_SSN_1}"]), max_size=12),
       st.data())
def test_streaming_equals_whole_restore(parts: list[str], data: st.DataObject) -> None:
    segs = ["Ann Lee, ann@x.org, 078-05-1120"]
    r = redact(segs, spans_of(segs, ("Ann Lee", "PERSON"), ("ann@x.org", "EMAIL_ADDRESS"),
                              ("078-05-1120", "US_SSN")))
    text = "".join(parts)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=6)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert _stream(r, pieces) == r.restore(text)


def test_then_composes_rounds_back_to_the_original() -> None:
    segs = ["Dr Ann Lee saw Bo Chen today"]
    first = redact(segs, spans_of(segs, ("Ann Lee", "PERSON")))
    assert first.segments == ("Dr <PERSON_1> saw Bo Chen today",)
    # a second round, on the redacted text: a new name, and a span that swallows a
    # placeholder of the first round
    seg = first.segments[0]
    second = redact(list(first.segments), [Span(0, seg.index("Bo"), seg.index(" today"),
                                                 "PERSON"),
                                           Span(0, 0, seg.index(" saw"), "PERSON")])
    both = first.then(second)
    # numbered in conversation order, skipping <PERSON_1>, still in the text
    assert both.segments == ("<PERSON_2> saw <PERSON_3> today",)
    assert both.mapping["<PERSON_2>"] == "Dr Ann Lee"
    assert both.mapping["<PERSON_3>"] == "Bo Chen"
    assert both.restore(both.segments[0]) == segs[0]
    assert both.replaced == 3
    assert both.placeholder_spans(both.segments[0]) == [(0, 10), (15, 25)]

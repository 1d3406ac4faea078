"""The threshold calibration (pure function, hand-computed cases) and `edgewise calibrate`
end to end on two fake-engine tiers reached in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from conftest import make_config
from edgewise.api.app import create_app
from edgewise.cli import app
from edgewise.config import load_config
from edgewise.engines.fake import FakeEngine
from edgewise.errors import ConfigError
from edgewise.node import Node
from edgewise.routing.calibrate import (
    ALWAYS_ESCALATE,
    calibrate_threshold,
    grade,
    load_labelled,
)

# Four examples, by hand (small cost 1, large cost 10 each; large accuracy 3/4):
#   i  conf  small  large
#   0  0.9   ok     ok
#   1  0.2   wrong  ok
#   2  0.6   ok     ok
#   3  0.4   wrong  wrong
CONF = [0.9, 0.2, 0.6, 0.4]
SMALL = [True, False, True, False]
LARGE = [True, True, True, False]
ONES, TENS = [1.0] * 4, [10.0] * 4
#            threshold        escalated  accuracy  mean cost
EXPECTED = [(0.0,             (),        0.50,     1.0),
             (0.2,             (),        0.50,     1.0),
             (0.4,             (1,),      0.75,     3.5),
             (0.6,             (1, 3),    0.75,     6.0),
             (0.9,             (1, 3, 2), 0.75,     8.5),
             (ALWAYS_ESCALATE, (1, 3, 2, 0), 0.75, 11.0)]


def test_curve_is_every_candidate_by_hand() -> None:
    r = calibrate_threshold(CONF, SMALL, LARGE, ONES, TENS, target=0.95)
    assert [p.threshold for p in r.curve] == [e[0] for e in EXPECTED]
    for p, (_, esc, acc, cost) in zip(r.curve, EXPECTED, strict=True):
        assert p.escalation_rate == len(esc) / 4
        assert p.accuracy == pytest.approx(acc)
        assert p.cost == pytest.approx(cost)
    assert (r.small_accuracy, r.large_accuracy) == (0.5, 0.75)
    assert (r.small_cost, r.large_cost) == (1.0, 10.0)
    assert r.n == 4


def test_cheapest_threshold_meeting_the_target() -> None:
    r = calibrate_threshold(CONF, SMALL, LARGE, ONES, TENS, target=0.95)
    # required 0.95 * 0.75 = 0.7125: t=0.4 is the cheapest with accuracy 0.75.
    assert r.met
    assert r.required_accuracy == pytest.approx(0.7125)
    assert r.chosen.threshold == 0.4 and r.threshold == 0.4
    assert r.chosen.cost == pytest.approx(3.5)
    assert r.chosen.escalation_rate == 0.25


def test_ties_in_cost_go_to_higher_accuracy_then_lower_threshold() -> None:
    # A low target is met without escalating: t=0 and t=0.2 cost the same (1.0) and
    # have the same accuracy, so the lower threshold wins.
    r = calibrate_threshold(CONF, SMALL, LARGE, ONES, TENS, target=0.5)
    assert r.chosen.threshold == 0.0 and r.chosen.cost == 1.0
    # Zero large cost: every point costs 1.0, so the most accurate (first: 0.4) wins.
    r = calibrate_threshold(CONF, SMALL, LARGE, ONES, [0.0] * 4, target=0.5)
    assert (r.chosen.threshold, r.chosen.accuracy) == (0.4, 0.75)


def test_escalating_a_right_answer_to_a_wrong_one_costs_accuracy() -> None:
    # The small tier is right where the large one is wrong (i=1): escalating it hurts,
    # so accuracy is not monotone and the cascade can beat the large tier.
    conf, small, large = [0.1, 0.3], [False, True], [True, False]
    r = calibrate_threshold(conf, small, large, [1, 1], [5, 5], target=2.0)
    assert [p.accuracy for p in r.curve] == [0.5, 0.5, 1.0, 0.5]
    # 2 x 0.5 = 1.0 is reached only by escalating exactly the one the large tier gets.
    assert r.met and r.chosen.threshold == 0.3 and r.chosen.accuracy == 1.0


def test_unreachable_target_returns_the_most_accurate_point_and_says_so() -> None:
    # Accuracy 0.5 at t=0.7 (escalate the first) and at 1+ε (both, dearer): the cheaper.
    r = calibrate_threshold([0.3, 0.7], [False, False], [True, False], [1, 1], [2, 2],
                            target=1.5)
    assert not r.met
    assert [p.accuracy for p in r.curve] == [0.0, 0.0, 0.5, 0.5]
    assert r.chosen.accuracy == 0.5 and r.chosen.threshold == 0.7
    assert r.required_accuracy == pytest.approx(0.75)


def test_always_escalate_is_clipped_to_a_configurable_threshold() -> None:
    r = calibrate_threshold([1.0, 1.0], [False, False], [True, True], [1, 1], [1, 1])
    assert r.chosen.threshold == ALWAYS_ESCALATE and r.chosen.escalation_rate == 1.0
    assert r.threshold == 1.0


@pytest.mark.parametrize("args, match", [
    (([], [], [], [], []), "non-empty"),
    (([0.5], [True, False], [True], [1], [1]), "equally long"),
    (([1.5], [True], [True], [1], [1]), r"confidence\[0\]"),
    (([float("nan")], [True], [True], [1], [1]), r"confidence\[0\]"),
    (([0.5], [True], [True], [-1], [1]), "costs"),
])
def test_bad_inputs_are_refused(args: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        calibrate_threshold(*args)
    with pytest.raises(ValueError, match="target"):
        calibrate_threshold([0.5], [True], [True], [1], [1], target=0.0)


@pytest.mark.parametrize("grader, reply, gold, ok", [
    ("number", "3 * 6 = 18 eggs.\n#### $18", "18", True),
    ("number", "#### 1,250.", "1250", True),
    ("number", "So the answer is \\boxed{42}.", "42", True),
    ("number", "It costs 5, then 7.", "7", True),
    ("number", "#### 19 (then 18)", "18", False),
    ("number", "no digits here", "3", False),
    ("choice", "B", "B", True),
    ("choice", "(C) Paris", "C", True),
    ("choice", "The answer is D.", "D", True),
    ("choice", "A. Nucleus", "B", False),
    ("exact", "  Hello   world. ", "hello world", True),
    ("exact", "hello", "hello world", False),
])
def test_graders(grader: str, reply: str, gold: str, ok: bool) -> None:
    assert grade(grader, reply, gold) is ok


@pytest.mark.parametrize("line, message", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"prompt": "a", "answer": "1"}', "grader: unknown grader 'None'; registered: choice, "
                                       "exact, number"),
    ('{"prompt": "a", "messages": [], "answer": "1", "grader": "exact"}', "exactly one of"),
    ('{"messages": [{"role": "user"}], "answer": "1", "grader": "exact"}', "messages[0]"),
    ('{"prompt": "a", "answer": "", "grader": "exact"}', "answer must be"),
    ('{"prompt": "a", "answer": "1", "grader": "exact", "ID": 3}', "unknown key(s) ID"),
    ('{"prompt": "a", "answer": "1", "grader": "exact", "id": [3]}', "id must be a string"),
])
def test_labelled_file_errors_name_file_and_line(tmp_path: Path, line: str,
                                                 message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "ok", "answer": 7, "grader": "number"}\n\n' + line + "\n")
    with pytest.raises(ConfigError) as err:
        load_labelled(path)
    assert f"{path}:3: " in str(err.value) and message in str(err.value)


def test_labelled_file_forms(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "6 x 7?", "answer": 42, "grader": "number"}\n'
                    '{"messages": [{"role": "system", "content": "s"}, {"role": "user", '
                    '"content": "u"}], "answer": "B", "grader": "choice"}\n')
    a, b = load_labelled(path)
    assert a.messages == (("user", "6 x 7?"),) and a.answer == "42"
    assert b.messages == (("system", "s"), ("user", "u")) and b.grader == "choice"


# -- `edgewise calibrate` on fake tiers ------------------------------------------------

CLOUD_URL = "http://cloud.test/v1"
FLEET_YAML = """\
# a comment that the round trip will lose (hence the .bak)
node: {name: clinic-1}
engine: {kind: fake, n_ctx: 512}
tiers:
  - name: device
    endpoints: [{engine: fake, model: auto}]
    clearance: phi
  - name: cloud
    endpoints: [{url: "http://cloud.test/v1"}]
    cost_per_1k_tokens: 0.6
routing:
  cascade: {enabled: true, threshold: 0.5, scorer: min_prob}
  jobs_path: JOBS
audit: {path: AUDIT}
"""


def _labelled(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def cloud_transport() -> Iterator[httpx.AsyncBaseTransport]:
    """A second fake node serving the `cloud` tier, reached in-process. It is loaded
    lazily by the command's event loop (the ASGI transport runs no lifespan)."""
    cloud = Node(make_config(node={"name": "cloud-1", "tier": "cloud"}),
                 FakeEngine(model="cloud-model"))
    inner = httpx.ASGITransport(app=create_app(cloud, manage_lifecycle=False))

    class Lazy(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if not cloud.ready:
                await cloud.start()
            return await inner.handle_async_request(request)

    yield Lazy()
    if cloud.executor is not None:
        cloud.executor.shutdown(wait=True)


def _fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
           cloud_transport: httpx.AsyncBaseTransport) -> Path:
    """FLEET_YAML in ``tmp_path``, its cloud tier reached through ``cloud_transport``."""
    import edgewise.cli.calibrate

    monkeypatch.setattr(edgewise.cli.calibrate, "_calibrate_transports",
                        lambda: {CLOUD_URL: cloud_transport})
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET_YAML.replace("JOBS", str(tmp_path / "jobs.sqlite"))
                     .replace("AUDIT", str(tmp_path / "audit.sqlite")))
    return fleet


def test_calibrate_command_writes_a_threshold_that_loads(
        tmp_path: Path, cloud_transport: httpx.AsyncBaseTransport,
        monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = _fleet(tmp_path, monkeypatch, cloud_transport)
    data = _labelled(tmp_path / "labelled.jsonl", [
        {"prompt": "Say hello", "answer": "hello", "grader": "exact"},
        {"messages": [{"role": "user", "content": "How many?"}], "answer": "3",
         "grader": "number"},
        {"prompt": "Pick one", "answer": "B", "grader": "choice"},
    ])
    result = CliRunner().invoke(app, ["calibrate", "--config", str(fleet), "--data", str(data),
                                      "--target", "0.9", "--write", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["n"] == 3 and report["small"] == "device" and report["large"] == "cloud"
    assert len(report["curve"]) >= 2
    assert report["small_cost"] > 0 and report["large_cost"] > 0  # tokens were counted
    assert report["curve"][-1]["escalation_rate"] == 1.0
    assert report["curve"][-1]["cost"] == pytest.approx(
        report["small_cost"] + report["large_cost"], rel=1e-5)
    cfg = load_config(fleet)
    cascade = cfg.routing.cascade
    assert cascade.threshold == pytest.approx(min(1.0, report["chosen"]["threshold"]))
    assert cascade.enabled and cascade.scorer == "min_prob"
    assert cascade.calibration is not None
    assert cascade.calibration["n"] == 3 and cascade.calibration["target"] == 0.9
    assert cascade.calibration["scorer"] == "min_prob"
    assert len(cascade.calibration["data_sha256"]) == 64
    assert cascade.calibration["chosen"] == report["chosen"]
    backup = fleet.with_name("fleet.yaml.bak")
    assert backup.read_text().startswith("# a comment")
    assert "backup" in result.stderr and str(backup) in result.stderr.replace("\n", "")
    assert yaml.safe_load(fleet.read_text())["tiers"][1]["cost_per_1k_tokens"] == 0.6


def test_calibrate_command_names_the_bad_line(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET_YAML.replace("JOBS", str(tmp_path / "jobs.sqlite"))
                     .replace("AUDIT", str(tmp_path / "audit.sqlite")))
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "a", "answer": "1", "grader": "number"}\n'
                    '{"prompt": "b", "answer": "2", "grader": "fuzzy"}\n')
    result = CliRunner().invoke(app, ["calibrate", "--config", str(fleet),
                                      "--data", str(data)])
    assert result.exit_code == 2
    assert f"{data}:2" in result.stderr.replace("\n", "")
    assert "registered: choice, exact, number" in result.stderr.replace("\n", "")


def test_calibrate_command_with_a_sampling_scorer(
        tmp_path: Path, cloud_transport: httpx.AsyncBaseTransport,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import edgewise.cli.calibrate

    monkeypatch.setattr(edgewise.cli.calibrate, "_calibrate_transports",
                        lambda: {CLOUD_URL: cloud_transport})
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET_YAML.replace("JOBS", str(tmp_path / "jobs.sqlite")).replace(
        "scorer: min_prob}", "scorer: min_prob, samples: 3, sample_temperature: 1.0}"))
    data = _labelled(tmp_path / "labelled.jsonl", [
        {"prompt": "Say hello", "answer": "hello", "grader": "exact"},
        {"prompt": "How many?", "answer": "3", "grader": "number"}])
    result = CliRunner().invoke(app, ["calibrate", "--config", str(fleet), "--data", str(data),
                                      "--scorer", "agreement", "--write", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["scorer"] == "agreement"
    assert report["scorer_settings"] == {"answer_pattern": None, "top_logprobs": 0,
                                         "samples": 3, "sample_temperature": 1.0}
    # Every fake answer is 24 tokens after the same prompt on both tiers, so the small
    # tier's cost is its answer plus 3 samples: 4x the large tier's.
    assert report["small_cost"] == pytest.approx(4 * report["large_cost"])
    cascade = load_config(fleet).routing.cascade
    assert cascade.scorer == "agreement" and cascade.samples == 3
    assert cascade.calibration is not None and cascade.calibration["scorer"] == "agreement"


async def test_collect_draws_samples_for_the_small_tier_only(
        tmp_path: Path, cloud_transport: httpx.AsyncBaseTransport) -> None:
    from edgewise.config import parse_config
    from edgewise.routing.calibrate import LabelledExample, calibrate_threshold, collect
    from edgewise.routing.confidence import ScorerOptions, build_scorer
    from scripted_engine import ScriptedEngine

    cfg = parse_config(yaml.safe_load(FLEET_YAML.replace("JOBS", str(tmp_path / "j.sqlite"))))
    # Per example: the answer, then 2 samples. Example 1: samples agree (1.0);
    # example 2: one of two agrees (0.5); example 3: none do, and the answer is wrong.
    engine = ScriptedEngine(["#### 3", "#### 3", "3", "#### 5", "#### 4", "#### 5",
                             "#### 8", "#### 9", "#### 7"])
    examples = [LabelledExample((("user", q),), gold, "number")
                for q, gold in (("a", "3"), ("b", "5"), ("c", "7"))]
    got = await collect(cfg, examples, ("device", "cloud"), max_tokens=16, samples=2,
                        sample_temperature=0.9, top_logprobs=2, engine=engine,
                        transports={CLOUD_URL: cloud_transport})
    small, large = got["device"], got["cloud"]
    assert [p.temperature for p in engine.calls] == [0.0, 0.9, 0.9] * 3
    assert [p.seed for p in engine.calls] == [None, 1, 2] * 3
    assert all(p.top_logprobs == 2 for p in engine.calls[::3])
    assert [len(s) for s in small.samples] == [2, 2, 2] and large.samples == [[], [], []]
    assert small.correct == [True, True, False]
    agreement = build_scorer("agreement", ScorerOptions(samples=2))
    assert small.confidence(agreement) == [1.0, 0.5, 0.0]
    # Samples cost prompt + completion each, like the answer; "3" is 5 tokens shorter
    # than "#### 3" (the fake tokenizer spells both byte by byte).
    assert small.sample_tokens == [2 * small.tokens[0] - 5, 2 * small.tokens[1],
                                   2 * small.tokens[2]]
    # Escalating below 0.5 sends exactly the wrong answer up.
    r = calibrate_threshold(small.confidence(agreement), small.correct, [True] * 3,
                            [0] * 3, large.tokens, target=1.0)
    assert r.chosen.threshold == 0.5 and r.chosen.escalation_rate == pytest.approx(1 / 3)


def test_calibrate_writes_the_learned_routers_training_file(
        tmp_path: Path, cloud_transport: httpx.AsyncBaseTransport,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from edgewise.routing.learned import load_router_data

    fleet = _fleet(tmp_path, monkeypatch, cloud_transport)
    data = _labelled(tmp_path / "labelled.jsonl", [
        {"id": "greet", "prompt": "Say hello", "answer": "hello", "grader": "exact"},
        {"messages": [{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "How many?"}], "answer": "3",
         "grader": "number"}])
    out = tmp_path / "router" / "train.jsonl"
    result = CliRunner().invoke(app, ["calibrate", "--config", str(fleet), "--data",
                                      str(data), "--router-data", str(out), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["greet", "2"]  # the id, else the line number
    assert [r["prompt"] for r in rows] == ["Say hello", "How many?"]  # the last user turn
    assert all(isinstance(r["small_correct"], bool) and r["large_tokens"] > 0 for r in rows)
    assert [e.id for e in load_router_data(out)] == ["greet", "2"]  # what `router train` reads
    assert "edgewise router train" in " ".join(result.stderr.split())

"""`edgewise scan`: levels, masked values, JSON, per-tier verdicts, --fail-at."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from edgewise import cli
from edgewise.privacy import Detector
from privacy_helpers import default_detector

EDGEWISE = str(Path(sys.executable).parent / "edgewise")
TEXT = "Patient Ana Lima (MRN: 00457812) takes metformin.\nCall +44 20 7946 0958."

FLEET = """
tiers:
  - name: device
    endpoints: [{engine: fake}]
    clearance: phi
  - name: regional
    endpoints: [{url: "http://127.0.0.1:9/v1"}]
    clearance: pii
    escalation: redact
  - name: cloud
    endpoints: [{url: "http://127.0.0.1:9/v1"}]
    clearance: public
    escalation: forbid
privacy:
  deny_lists: [{entity: PROJECT, terms: [Bluebird], level: internal}]
"""


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    def build(privacy: Any) -> Detector:
        return Detector(privacy, nlp_engine=default_detector().nlp_engine)

    monkeypatch.setattr(cli.scan, "_scan_detector", build)
    return CliRunner()


def test_scan_prints_level_and_masked_findings(runner: CliRunner, tmp_path: Path) -> None:
    f = tmp_path / "note.txt"
    f.write_text(TEXT)
    r = runner.invoke(cli.app, ["scan", str(f)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "level: phi" in r.output and "PHI rule" in r.output
    for entity in ("PERSON", "MRN", "DRUG_NAME", "PHONE_NUMBER"):
        assert entity in r.output
    assert "1:24" in r.output  # MRN at line 1, column 24
    for value in ("Ana Lima", "00457812", "7946"):
        assert value not in r.output
    assert "•••• (8 chars)" in r.output


def test_scan_show_values_and_json(runner: CliRunner) -> None:
    r = runner.invoke(cli.app, ["scan", "-", "--json", "--show-values"], input=TEXT)
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["level"] == "phi" and out["phi_rule"] is True
    values = {(f["entity"], f["value"]) for f in out["findings"]}
    assert ("MRN", "00457812") in values and ("PERSON", "Ana Lima") in values
    masked = json.loads(runner.invoke(cli.app, ["scan", "-", "--json"], input=TEXT).output)
    assert all("value" not in f for f in masked["findings"])
    assert "00457812" not in json.dumps(masked)


def test_scan_with_fleet_config_gives_per_tier_verdicts(runner: CliRunner,
                                                        tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text(FLEET)
    r = runner.invoke(cli.app, ["scan", "-", "--config", str(fleet), "--json"],
                      input="My name is Ana Lima; tell me about project Bluebird.")
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["level"] == "pii"
    verdicts = {t["tier"]: t["verdict"] for t in out["tiers"]}
    assert verdicts == {"device": "send", "regional": "send", "cloud": "refuse"}
    assert {f["entity"] for f in out["findings"]} >= {"PERSON", "PROJECT"}
    phi = json.loads(runner.invoke(cli.app, ["scan", "-", "--config", str(fleet), "--json"],
                                   input=TEXT).output)
    verdicts = {t["tier"]: t for t in phi["tiers"]}
    assert verdicts["regional"]["verdict"] == "send redacted"
    assert verdicts["regional"]["why"].startswith("3 span(s)")  # person, MRN, phone
    table = runner.invoke(cli.app, ["scan", "-", "--config", str(fleet)], input=TEXT,
                          env={"COLUMNS": "200"})
    assert "send redacted" in table.output and "refuse" in table.output


def test_scan_label_chat_and_fail_at(runner: CliRunner) -> None:
    r = runner.invoke(cli.app, ["scan", "-", "--label", "internal", "--json"],
                      input="What is the capital of France?")
    assert json.loads(r.output)["level"] == "internal"
    assert runner.invoke(cli.app, ["scan", "-", "--fail-at", "pii"],
                         input="my SSN is 123-45-6789").exit_code == 1
    assert runner.invoke(cli.app, ["scan", "-", "--fail-at", "pii"],
                         input="hello there").exit_code == 0
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "card 4111 1111"},
                         {"role": "user", "content": "1111 1111"}]}
    r = runner.invoke(cli.app, ["scan", "-", "--chat", "--json"], input=json.dumps(body))
    out = json.loads(r.output)
    assert {f["where"] for f in out["findings"]} == {"messages[1].content",
                                                     "messages[2].content"}


def test_scan_rejects_bad_flags(runner: CliRunner) -> None:
    r = runner.invoke(cli.app, ["scan", "-", "--label", "secret"], input="x")
    assert r.exit_code == 2 and "--label must be one of" in r.output
    r = runner.invoke(cli.app, ["scan", "-", "--chat"], input="not json")
    assert r.exit_code == 2 and "is not JSON" in r.output
    r = runner.invoke(cli.app, ["scan", "/nonexistent/file.txt"])
    assert r.exit_code == 2 and "cannot read" in r.output


def test_scan_end_to_end_process() -> None:
    r = subprocess.run([EDGEWISE, "scan", "-", "--json"], input="email ana@example.org",
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["level"] == "pii" and out["counts"] == {"EMAIL_ADDRESS": 1}

"""Federated recipes: what a run needs, validated before anything starts, with one clear
line per mistake; simulated partitions are non-IID as asked; the Flower environment's
pins match the node's."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from edgewise.errors import DatasetError, FederatedError, RecipeError
from edgewise.federated.partition import partition, split_holdout
from edgewise.federated.recipe import from_json, load_federated_recipe, parse_federated_recipe
from edgewise.supply.data import Example

ROOT = Path(__file__).resolve().parent.parent


def _recipe(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "notes", "base": "smollm2-135m", "rounds": 2}
    base.update(over)
    return base


def test_a_minimal_recipe_gets_the_defaults_and_round_trips(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "name: notes\nbase: ./model\nrounds: 4\nstrategy: {name: FedProx, proximal_mu: 0.1}\n"
        "simulation: {dataset: {path: pool.jsonl, format: completion}, partition: key, "
        "key: speaker}\n")
    r = load_federated_recipe(tmp_path / "r.yaml")
    assert r.base == str(tmp_path / "model") and r.output == tmp_path / "runs" / "notes"
    assert r.strategy == "fedprox" and r.aggregation == "ffa"
    assert r.simulation is not None and r.simulation.dataset.path == str(tmp_path / "pool.jsonl")
    local = r.local_config()
    assert local.freeze_a and local.proximal_mu == 0.1 and local.seed == 0
    assert not r.dp_config().enabled and len(r.sha256) == 64
    again = from_json(json.loads(json.dumps(r.to_json())))
    assert again == r


@pytest.mark.parametrize(("over", "message"), [
    ({"rounds": 0}, r"rounds: .*greater than or equal to 1"),
    ({"strategy": {"name": "fedsgd"}}, r"strategy.name 'fedsgd': one of fedavg, fedprox"),
    ({"strategy": {"name": "fedprox", "eta": 0.1}},
     r"strategy.eta: not an option of fedprox; its options: proximal_mu"),
    ({"strategy": {"name": "fedavg", "beta": 0.1}},
     r"strategy.beta: not an option of fedavg; it takes no options"),
    ({"strategy": {"name": "fedtrimmedavg", "beta": 0.6}}, r"strategy.beta: the share"),
    ({"strategy": {"name": "krum", "num_malicious_nodes": 1.5}}, r"an integer >= 0"),
    ({"clients": {"per_round": 2, "min": 3}}, r"clients.min 3 is more than clients.per_round 2"),
    ({"clients": {"per_round": 2, "sampling": "random"}}, r"clients.sampling"),
    ({"privacy": {"max_epsilon": 3}}, r"max_epsilon needs privacy.noise_multiplier > 0"),
    ({"privacy": {"noise_multiplier": 1.0}, "strategy": {"name": "fedmedian"}},
     r"strategy fedmedian looks at each client's update.*privacy.noise: client"),
    ({"privacy": {"noise_multiplier": 1.0}, "aggregation": "product"},
     r"aggregation: product looks at each client's update"),
    ({"aggregation": "product", "strategy": {"name": "krum"}},
     r"aggregation: product replaces the averaging step.*not krum"),
    ({"simulation": {"dataset": {"path": "p.jsonl"}, "partition": "dirichlet"}},
     r"dirichlet needs simulation.key"),
    ({"secure_aggregation": True, "strategy": {"name": "krum"},
      "clients": {"per_round": 4, "min": 3}},
     r"strategy krum looks at each client's update, but secure_aggregation shows"),
    ({"secure_aggregation": True, "clients": {"per_round": 4, "min": 2}},
     r"secure_aggregation needs clients.min >= 3"),
    ({"secure_aggregation": {"threshold": 0.5}, "clients": {"per_round": 4, "min": 3}},
     r"secure_aggregation.threshold: .*greater than 0.5"),
    ({"secure_aggregation": {"shares": 2.5}, "clients": {"per_round": 4, "min": 3}},
     r"secure_aggregation.shares: a share of the sampled nodes in \(0, 1\], or a whole"),
    ({"secure_aggregation": {"clipping_range": 2}, "clients": {"per_round": 4, "min": 3},
      "privacy": {"noise_multiplier": 1.0}}, r"clipping_range is derived under privacy"),
    ({"secure_aggregation": {"shares": 1, "treshold": 0.7}}, r"treshold: unknown key"),
    ({"locals": {"r": 4}}, r"locals: unknown key"),
    ({"local": {"rank": 4}}, r"local.rank: unknown key"),
])
def test_a_bad_recipe_is_refused_with_its_key_path(over: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        parse_federated_recipe(_recipe(**over))


def test_fedavgm_takes_a_server_learning_rate() -> None:
    r = parse_federated_recipe(_recipe(strategy={"name": "fedavgm", "server_learning_rate": 2.5,
                                                 "server_momentum": 0.5}))
    assert r.strategy == "fedavgm" and not r.sees_each_update
    assert r.strategy_options == {"server_learning_rate": 2.5, "server_momentum": 0.5}


def test_robust_strategies_take_a_server_step() -> None:
    r = parse_federated_recipe(_recipe(strategy={"name": "fedmedian",
                                                 "server_learning_rate": 2.5,
                                                 "server_momentum": 0.5}))
    assert r.strategy_options == {"server_learning_rate": 2.5, "server_momentum": 0.5}
    with pytest.raises(RecipeError, match="not an option of fedprox"):
        parse_federated_recipe(_recipe(strategy={"name": "fedprox",
                                                 "server_learning_rate": 2.5}))


def test_robust_strategies_run_with_noise_on_each_update() -> None:
    r = parse_federated_recipe(_recipe(strategy={"name": "multikrum", "num_malicious_nodes": 1,
                                                 "num_nodes_to_select": 3},
                                       privacy={"noise_multiplier": 1.0, "noise": "client"}))
    assert r.sees_each_update and r.strategy_options == {"num_malicious_nodes": 1,
                                                         "num_nodes_to_select": 3}


def test_secure_aggregation_derives_its_range_from_the_noise() -> None:
    r = parse_federated_recipe(_recipe(secure_aggregation=True,
                                       clients={"per_round": 10, "min": 6}))
    assert r.secure_aggregation is not None and r.secure_aggregation.threshold == 0.6
    assert r.secure_clip(10) == 1.0 and from_json(json.loads(json.dumps(r.to_json()))) == r
    dp = parse_federated_recipe(_recipe(secure_aggregation={"shares": 7},
                                        clients={"per_round": 10, "min": 6},
                                        privacy={"noise_multiplier": 1.0, "clip_norm": 0.5}))
    assert dp.secure_clip(4) == pytest.approx(0.5 * (1 + 10 / 2))  # C + 10 zC/√4
    assert parse_federated_recipe(_recipe(secure_aggregation=False)).secure_aggregation is None


def test_a_recipe_file_that_is_not_yaml_or_missing_says_so(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        load_federated_recipe(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_federated_recipe(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- name: x\n")
    with pytest.raises(RecipeError, match="a federated recipe is a mapping"):
        load_federated_recipe(tmp_path / "list.yaml")


def _pool(path: Path, labels: list[str]) -> Path:
    with path.open("w") as f:
        for i, label in enumerate(labels):
            f.write(json.dumps({"prompt": f"q{i} ", "completion": label, "label": label,
                                "speaker": f"s{i % 5}"}) + "\n")
    return path


def test_partitions_are_seeded_and_non_iid(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool.jsonl", [c for c in "abcd" for _ in range(40)])
    parts = partition(pool, "completion", 8, how="dirichlet", key="label", alpha=0.1, seed=3)
    assert parts == partition(pool, "completion", 8, how="dirichlet", key="label", alpha=0.1,
                              seed=3)
    assert sum(len(p) for p in parts) == 160 and min(len(p) for p in parts) >= 2
    def skew(parts: list[list[Example]]) -> float:  # mean total variation from 1/4 each
        return sum(0.5 * sum(abs(sum(e.completion == c for e in p) / len(p) - 0.25)
                             for c in "abcd") for p in parts) / len(parts)

    # small α: each node's labels are far from the pool's mix; large α and IID: near it
    assert skew(parts) > 0.4
    assert skew(partition(pool, "completion", 8, how="dirichlet", key="label", alpha=100,
                          seed=3)) < 0.1
    iid = partition(pool, "completion", 4, how="iid", seed=0)
    assert [len(p) for p in iid] == [40] * 4 and skew(iid) < 0.1
    by = partition(pool, "completion", 3, how="key", key="speaker", seed=0)
    assert [len(p) for p in by] == [32, 32, 32]  # the three largest speakers
    with pytest.raises(DatasetError, match="5 distinct values of 'speaker', fewer than the 6"):
        partition(pool, "completion", 6, how="key", key="speaker")
    with pytest.raises(DatasetError, match=r"pool.jsonl:1: the partition key 'colour'"):
        partition(pool, "completion", 2, how="dirichlet", key="colour")


def test_a_broken_pool_names_its_file_and_line(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "pool.jsonl", ["a"] * 6)
    pool.write_text(pool.read_text() + '{"prompt": "x", \n')
    with pytest.raises(DatasetError, match=r"pool.jsonl:7: not valid JSON"):
        partition(pool, "completion", 2, how="iid")


def test_holdout_keeps_at_least_one_for_training() -> None:
    ex = [Example(f"p{i}", "c") for i in range(5)]
    d = split_holdout(ex, 0.2, seed=0)
    assert len(d.train) == 4 and len(d.holdout) == 1
    assert split_holdout(ex[:1], 0.5, seed=0).holdout == []
    assert len(split_holdout(ex[:2], 0.9, seed=0).train) == 1


def _pins(text: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2)
            for m in re.finditer(r"['\"]([A-Za-z0-9_.\-]+)(?:\[[a-z,]+\])?==([0-9.]+)['\"]", text)}


def test_flowers_environment_pins_what_the_node_pins() -> None:
    """The Makefile's Flower environment trains with the same torch, transformers, peft
    and accountant as the supply chain (a drift would make the two sides' adapters
    differ)."""
    make = (ROOT / "Makefile").read_text()
    flower = _pins(re.search(r"FLOWER_PKGS := (.*?)\n\n", make, re.S).group(1))  # type: ignore[union-attr]
    node = _pins((ROOT / "pyproject.toml").read_text())
    assert flower["flwr"] == "1.42.0"
    for pkg in ("transformers", "peft", "dp-accounting"):
        assert flower[pkg] == node[pkg], pkg
    assert "torch==" + node["torch"] in make


def test_without_flowers_environment_the_run_names_the_fix(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    from edgewise.federated.run import flower_python

    monkeypatch.setenv("EDGEWISE_FLOWER_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(FederatedError, match=r"does not exist: run `make federated`"):
        flower_python()


def test_the_run_command_wants_one_engine_and_a_run_folder_to_report(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgewise.cli import app

    (tmp_path / "r.yaml").write_text("name: x\nbase: smollm2-135m\n")

    def cli(*args: str) -> tuple[int, str]:
        res = CliRunner().invoke(app, list(args))
        return res.exit_code, " ".join(res.output.split())

    code, out = cli("federate", "run", str(tmp_path / "r.yaml"))
    assert code == 2 and "give --simulate N (virtual nodes here) or --superlink" in out
    code, out = cli("federate", "run", str(tmp_path / "r.yaml"), "--simulate", "2",
                    "--superlink", "127.0.0.1:9098")
    assert code == 2 and "one of them" in out
    code, out = cli("federate", "run", str(tmp_path / "r.yaml"), "--superlink", "127.0.0.1:1")
    assert code == 2 and "--superlink needs --dir CONTROL_DIR" in out
    code, out = cli("federate", "run", str(tmp_path / "r.yaml"), "--simulate", "2")
    assert code == 2 and "--simulate needs the recipe's simulation section" in out
    code, out = cli("federate", "status", str(tmp_path))
    assert code == 2 and "is not a federated run folder (no status.json)" in out

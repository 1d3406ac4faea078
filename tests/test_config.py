from pathlib import Path

import pytest

from edgewise.config import EdgewiseConfig, load_config, parse_config
from edgewise.errors import ConfigError


def test_defaults_are_the_quick_start() -> None:
    cfg = load_config(None)
    assert (cfg.node.host, cfg.node.port) == ("127.0.0.1", 8080)
    assert cfg.engine.kind == "llamacpp"
    assert cfg.engine.model == "smollm2-135m-instruct"
    assert cfg.serving.max_queue == 16


def test_yaml_maps_onto_dataclasses(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text("node: {name: clinic-1, port: 9000}\nserving: {max_queue: 3}\n")
    cfg = load_config(path)
    assert isinstance(cfg, EdgewiseConfig)
    assert cfg.node.name == "clinic-1" and cfg.node.port == 9000
    assert cfg.serving.max_queue == 3
    assert cfg.engine.n_ctx == 2048  # untouched sections keep defaults


def test_unknown_key_names_path_and_allowed_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"serving": {"max_queeu": 3}})
    msg = str(exc.value)
    assert "serving.max_queeu: unknown key" in msg
    assert "max_queue" in msg and "queue_timeout_s" in msg


def test_unknown_section_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"routingg: unknown key; allowed keys here: node"):
        parse_config({"routingg": {}})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"serving": {"max_queue": -1}},
         "serving.max_queue: Input should be greater than or equal to 0"),
        ({"node": {"port": 70000}}, "node.port: Input should be less than or equal to 65535"),
        ({"engine": {"kind": "vllm"}}, "engine.kind: Input should be 'llamacpp' or 'fake'"),
        ({"sampling": {"temperature": "hot"}}, "sampling.temperature"),
        ({"node": {"name": "has space"}}, "node.name: String should match pattern"),
    ],
)
def test_bad_values_name_the_key_and_the_rule(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert fragment in str(exc.value)


def test_several_errors_are_all_reported() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"serving": {"max_queue": -1}, "node": {"port": -5}})
    assert "serving.max_queue" in str(exc.value) and "node.port" in str(exc.value)


def test_file_problems_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("node: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(top)


def test_replace_revalidates() -> None:
    cfg = parse_config({})
    assert cfg.replace(node={"port": 9001}).node.port == 9001
    with pytest.raises(ConfigError, match=r"node\.port"):
        cfg.replace(node={"port": -1})

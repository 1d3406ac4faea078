from pathlib import Path
from typing import Any

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
        ({"engine": {"kind": "has space"}}, "engine.kind: String should match pattern"),
        ({"sampling": {"temperature": "hot"}}, "sampling.temperature"),
        ({"node": {"name": "has space"}}, "node.name: String should match pattern"),
    ],
)
def test_bad_values_name_the_key_and_the_rule(data: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert fragment in str(exc.value)


def test_engine_kind_is_any_registered_engine() -> None:
    """engine.kind names a registered engine (plug-ins register their own); an unknown
    one fails when the node is built, with the key and the registered names."""
    from edgewise.engines import ENGINES, register_engine
    from edgewise.engines.fake import FakeEngine
    from edgewise.node import build_engine

    with pytest.raises(ConfigError, match=r"engine.kind: unknown engine 'vllm'; "
                                          r"registered: fake, llamacpp"):
        build_engine(parse_config({"engine": {"kind": "vllm"}}))
    made: list[int] = []

    def plugin(config: Any, resolve: Any) -> FakeEngine:
        made.append(config.n_ctx)
        return FakeEngine(n_ctx=config.n_ctx, model="plugin-model")

    register_engine("test-plugin", plugin)
    try:
        engine = build_engine(parse_config({"engine": {"kind": "test-plugin", "n_ctx": 256}}))
        assert isinstance(engine, FakeEngine) and made == [256]
        with pytest.raises(ValueError, match="'test-plugin' is already registered"):
            register_engine("test-plugin", FakeEngine.from_config)
    finally:
        ENGINES.unregister("test-plugin")


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


ISSUE_EXAMPLE = """
node: {name: clinic-1}
tiers:
  - name: device
    endpoints: [{engine: llamacpp, model: smollm2-135m-instruct}]
    clearance: phi
    cost_per_1k_tokens: 0.0
  - name: cloud
    endpoints: [{url: "http://127.0.0.1:8081/v1", model: "auto", api_key_env: CLOUD_API_KEY}]
    clearance: public
    cost_per_1k_tokens: 0.6
routing:
  cascade: {enabled: true, threshold: 0.62}
"""


def test_tiered_example_from_the_docs(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(ISSUE_EXAMPLE)
    cfg = load_config(path)
    assert [t.name for t in cfg.ladder()] == ["device", "cloud"]
    assert cfg.tiers[1].endpoints[0].api_key_env == "CLOUD_API_KEY"
    assert cfg.routing.cascade.enabled and cfg.routing.cascade.threshold == 0.62
    assert cfg.local_endpoint() is not None and cfg.local_endpoint()[0] == "device"  # type: ignore[index]


def test_without_tiers_the_engine_is_one_local_tier() -> None:
    ladder = parse_config({"node": {"tier": "gateway"}}).ladder()
    assert [(t.name, t.clearance) for t in ladder] == [("gateway", "phi")]
    assert ladder[0].endpoints[0].engine == "llamacpp"


@pytest.mark.parametrize(
    ("tiers", "fragment"),
    [
        ([{"name": "a", "endpoints": [{}]}], "tiers.0.endpoints.0: an endpoint needs exactly one"),
        ([{"name": "a", "endpoints": [{"engine": "fake", "url": "http://x/v1"}]}],
         "exactly one of `engine`"),
        ([{"name": "a", "endpoints": []}], "tiers.0.endpoints: List should have at least 1"),
        ([{"name": "a", "endpoints": [{"url": "ftp://x"}]}], "tiers.0.endpoints.0.url"),
        ([{"name": "a", "clearance": "secret", "endpoints": [{"engine": "fake"}]}],
         "tiers.0.clearance: Input should be 'public', 'internal', 'pii' or 'phi'"),
        ([{"name": "a", "endpoints": [{"engine": "fake"}]},
          {"name": "a", "endpoints": [{"url": "http://x/v1"}]}], "repeated: a"),
        ([{"name": "a", "endpoints": [{"engine": "fake"}], "clearnce": "pii"}],
         "tiers.0.clearnce: unknown key; allowed keys here: name, endpoints, clearance"),
    ],
)
def test_bad_tiers_are_explained(tiers: list, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"tiers": tiers})
    assert fragment in str(exc.value)

"""Recipes, datasets and the stage registry: every error names the key path or file:line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgewise.errors import DatasetError, RecipeError
from edgewise.supply import data
from edgewise.supply.recipe import load_recipe, parse_recipe
from edgewise.supply.stage import Stage, StageContext, StageResult
from edgewise.supply.stages import register_stage


def recipe(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "r", "base": "./model",
        "datasets": {"train": {"path": "train.jsonl"}, "text": {"path": "t.txt",
                                                                 "format": "text"}},
        "stages": [{"quantize": {"types": ["Q8_0"]}}]}
    base.update(over)
    return base


def errors_of(data_: dict[str, Any]) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(data_, root=Path("/r"))
    return str(info.value)


def test_a_valid_recipe_maps_onto_typed_stages(tmp_path: Path) -> None:
    r = parse_recipe(recipe(stages=[
        {"finetune": {"dataset": "train", "merge": True, "lora": {"r": 4}}},
        {"quantize": {"types": ["F16", "Q4_K_M"]}},
        {"prune": {"id": "w50", "input": "base", "method": "wanda", "sparsity": 0.5,
                   "calibration": "text"}},
        {"quantize": None},
        {"evaluate": {"perplexity": "text"}},
    ]), root=tmp_path)
    assert [s.id for s in r.stages] == ["finetune", "quantize", "w50", "quantize-2", "evaluate"]
    assert [s.input for s in r.stages] == ["base", "finetune", "base", "w50", "w50"]
    assert r.stages[0].params.lora.r == 4 and r.stages[0].params.merge
    assert r.stages[3].params.types == ["Q4_K_M"]  # the default
    assert r.base == str(tmp_path / "model")
    assert r.output == tmp_path / "artifacts" / "r"
    assert r.datasets["train"].path == str(tmp_path / "train.jsonl")


@pytest.mark.parametrize(("stages", "fragment"), [
    ([{"quantise": {}}], "stages[0]: unknown stage 'quantise'; registered: distill, evaluate, "
                         "export, finetune, prune, quantize"),
    ([{"quantize": {"typez": ["Q8_0"]}}], "stages[0].quantize.typez: unknown key; allowed keys "
                                          "here: types, onnx_int8, onnx_int8_method, "
                                          "embedding_type, prefix"),
    ([{"quantize": {"types": ["Q4KM"]}}], "types: unknown 'Q4KM'; choose from"),
    ([{"finetune": {"dataset": "nope"}}], "stages[0].finetune: unknown dataset 'nope'; "
                                          "datasets: text, train"),
    ([{"finetune": {}}], "stages[0].finetune.dataset: required key is missing"),
    ([{"finetune": {"dataset": "train", "lora": {"rank": 8}}}],
     "stages[0].finetune.lora.rank: unknown key; allowed keys here: r, alpha, dropout, targets"),
    ([{"prune": {"method": "wanda", "sparsity": 1.5, "calibration": "text"}}],
     "stages[0].prune.sparsity: Input should be less than 1"),
    ([{"prune": {"method": "wanda", "sparsity": 0.5}}], "needs a `calibration` dataset"),
    ([{"quantize": {}, "export": {}}], "each stage is a mapping with one key"),
    (["quantize"], "each stage is a mapping with one key"),
    ([{"quantize": {"input": "later"}}], "stages[0].quantize.input: 'later' is not an earlier "
                                         "stage that produces a model"),
    ([{"quantize": {}}, {"export": {"id": "quantize"}}], "'quantize' is already used"),
    ([{"distill": {"dataset": "text", "teacher": "nope"}}],
     "stages[0].distill.teacher: 'nope' is not base or an earlier stage"),
])
def test_bad_stages_name_the_path_and_what_is_allowed(stages: list[Any], fragment: str) -> None:
    assert fragment in errors_of(recipe(stages=stages))


def test_top_level_errors_are_all_reported() -> None:
    msg = errors_of({"name": "bad name!", "stages": [], "colour": 1})
    assert "name: String should match pattern" in msg
    assert "base: required key is missing" in msg
    assert "colour: unknown key; allowed keys here: name, base, stages, datasets" in msg


def test_recipe_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(tmp_path / "list.yaml")


def test_profiles_inline_and_from_files(tmp_path: Path) -> None:
    (tmp_path / "pi.yaml").write_text("name: pi\nmemory_mb: 512\ncores: 4\n"
                                      "latency: {tokens_per_s: 5}\n")
    r = parse_recipe(recipe(profiles=["pi.yaml", {"name": "tiny", "memory_mb": 100}]),
                     root=tmp_path)
    assert [(p.name, p.memory_mb, p.cores) for p in r.profiles] == [("pi", 512, 4),
                                                                     ("tiny", 100, 1)]
    assert r.profiles[0].latency.tokens_per_s == 5
    with pytest.raises(RecipeError, match=r"profiles\[0\]: invalid hardware profile\n  "
                                          r"memory: unknown key; allowed keys here: name, "
                                          "memory_mb"):
        parse_recipe(recipe(profiles=[{"name": "x", "memory_mb": 9, "memory": 1}]),
                     root=tmp_path)


def test_the_registry_rejects_a_duplicate_name() -> None:
    @dataclass
    class P:
        pass

    class Another(Stage):
        kind = "quantize"
        Params = P

        def run(self, params: Any, ctx: StageContext) -> StageResult:
            return StageResult()

    with pytest.raises(ValueError, match="stage 'quantize' is already registered"):
        register_stage(Another)


# -- datasets --------------------------------------------------------------------------
def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def test_chat_examples_render_like_the_node(tmp_path: Path) -> None:
    p = _write(tmp_path / "c.jsonl", [json.dumps({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"},
        {"role": "assistant", "content": "Hello."}]})])
    (ex,) = data.load_examples(p, "chat")
    assert ex.prompt == "system: Be brief.\nuser: Hi?\nassistant:"
    assert ex.completion == " Hello."


@pytest.mark.parametrize(("lines", "fmt", "fragment"), [
    (['{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}',
      "{not json"], "chat", ":2: not valid JSON"),
    (['{"prompt": "a"}'], "chat", ':1: expected {"messages"'),
    (['{"messages": [{"role": "user", "content": "a"}]}'], "chat",
     ":1: \"messages\" must end with an assistant message"),
    (['{"messages": [{"role": "robot", "content": "a"}, {"role": "assistant", "content": "b"}]}'],
     "chat", ":1: messages[0].role must be system"),
    (['{"prompt": "a", "completion": 3}'], "completion", ':1: expected {"prompt": str'),
    ([""], "completion", "has no examples"),
])
def test_a_bad_line_is_reported_with_file_and_line(tmp_path: Path, lines: list[str], fmt: str,
                                                   fragment: str) -> None:
    p = _write(tmp_path / "d.jsonl", lines)
    with pytest.raises(DatasetError) as info:
        data.load_examples(p, fmt)
    assert str(p) in str(info.value) and fragment in str(info.value)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DatasetError, match=r"d.jsonl:2: not valid UTF-8"):
        data.load_texts(p, "text")


def test_texts_and_split(tmp_path: Path) -> None:
    assert data.load_texts(_write(tmp_path / "a.txt", ["one", "two"]), "text") == ["one\ntwo\n"]
    assert data.load_texts(_write(tmp_path / "a.jsonl", ['{"text": "x"}']), "text") == ["x"]
    exs = [data.Example(str(i), "c") for i in range(10)]
    train, val = data.split_examples(exs, 0.2, seed=1)
    assert len(train) == 8 and len(val) == 2 and set(train).isdisjoint(val)
    assert data.split_examples(exs, 0.2, seed=1) == (train, val)  # seeded

"""Every stage on a tiny Llama built in the test: what each one does, checked by numbers.

One recipe runs once per session (``built``): quantize (F16/Q8_0/Q4_K_M + int8 ONNX),
finetune (LoRA, merged), Wanda 50 %, layer pruning → distillation, channel pruning, ONNX
export and evaluation. The tests then check each stage's effect against the files it
wrote, with llama.cpp, onnxruntime and transformers as independent judges.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.supply
torch = pytest.importorskip("torch", reason="the supply extra is not installed")
transformers = pytest.importorskip("transformers")

from edgewise.artifacts import Manifest  # noqa: E402
from edgewise.chat import Message  # noqa: E402
from edgewise.engines.llamacpp import LlamaCppEngine  # noqa: E402
from edgewise.models import ResolvedModel  # noqa: E402
from edgewise.supply import build, load_recipe  # noqa: E402
from edgewise.supply.data import render_chat_prompt  # noqa: E402
from edgewise.supply.measure import perplexity_chunks  # noqa: E402
from edgewise.supply.stages.prune import wanda_mask  # noqa: E402
from tiny_models import COLOURS, build_tiny_llama, write_colour_chat, write_text  # noqa: E402

RECIPE = """
name: tiny
base: {base}
pre_tokenizer: gpt-2
threads: 2
datasets:
  colours: {{path: colours.jsonl, format: chat}}
  colours-test: {{path: colours-test.jsonl, format: chat}}
  text: {{path: text.txt, format: text}}
stages:
  - quantize: {{types: [F16, Q8_0, Q4_K_M], onnx_int8: true}}
  - export: {{id: onnx, formats: [onnx]}}
  - quantize: {{id: onnx-wo, types: [], onnx_int8: true, onnx_int8_method: weight_only}}
  - finetune: {{dataset: colours, max_steps: 40, eval_every: 10, lr: 0.01, batch_size: 8,
               lora: {{r: 8, alpha: 16}}, merge: true}}
  - prune: {{id: wanda, input: base, method: wanda, sparsity: 0.5, calibration: text,
            samples: 16, seq_len: 32}}
  - prune: {{id: shallow, input: base, method: layers, sparsity: 0.5, calibration: text,
            samples: 16, seq_len: 32}}
  - distill: {{dataset: text, seq_len: 32, max_steps: 30, lr: 0.002, eval_every: 10,
              patience: 5}}
  - export: {{id: student, formats: [gguf]}}
  - prune: {{id: narrow, input: base, method: channels, sparsity: 0.5, multiple_of: 32,
            calibration: text, samples: 16, seq_len: 32}}
  - export: {{id: narrow-gguf, formats: [gguf]}}
  - evaluate: {{variants: [q4_k_m, finetune.lora, onnx-int8], perplexity: text,
               task: colours-test, ppl_ctx: 32, speed_tokens: 8, speed_repeats: 1}}
profiles:
  - {{name: roomy, memory_mb: 4000, cores: 2}}
  - {{name: watch, memory_mb: 5, cores: 1}}
"""


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def built(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Manifest]:
    work = tmp_path_factory.mktemp("build")
    write_colour_chat(work / "colours.jsonl", 128)
    write_colour_chat(work / "colours-test.jsonl", 24, seed=1)
    write_text(work / "text.txt", repeat=12)
    (work / "recipe.yaml").write_text(RECIPE.format(base=tiny))
    yield build(load_recipe(work / "recipe.yaml"))


def art(m: Manifest) -> Path:
    return m.path.parent


def variant_file(m: Manifest, name: str) -> Path:
    v = next(v for v in m.variants if v.name == name)
    return art(m) / v.path


def hf_logprobs(model_dir: Path, ids: list[int]) -> Any:
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
    lp = torch.log_softmax(logits.double(), -1)
    return lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].numpy()


def engine(path: Path, lora: Path | None = None) -> LlamaCppEngine:
    e = LlamaCppEngine(ResolvedModel(path.stem, path, "", path.stat().st_size, None),
                       n_ctx=256, n_threads=2, lora_path=str(lora) if lora else None)
    e.load()
    return e


PROBE = "the quick brown fox jumps over the lazy dog. the sun rises in the east"


def test_quantized_gguf_files_load_tokenize_and_match_the_checkpoint(
        built: Manifest, tiny: Path) -> None:
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    ids = tok(PROBE).input_ids
    ref = hf_logprobs(tiny, ids)
    sizes = {}
    for name, tol in (("f16", 0.02), ("q8_0", 0.1), ("q4_k_m", 0.6)):
        path = variant_file(built, name)
        sizes[name] = path.stat().st_size
        e = engine(path)
        try:
            assert e.tokenize(PROBE) == ids  # llama.cpp re-implements the tokenizer exactly
            got = [s.logprob for s in e.score(ids)]
            assert abs(sum(got) - ref.sum()) / len(got) < tol, name
        finally:
            e.close()
    assert sizes["q4_k_m"] < sizes["q8_0"] < sizes["f16"]
    m = built.stages[0].metrics["sizes"]
    assert set(m) == {"f16", "q8_0", "q4_k_m", "onnx-int8"}
    assert next(v for v in built.variants if v.name == "onnx-int8-wo").quantization == \
        "int8 weight-only"


def test_partial_and_shared_prefix_scoring_equal_full_scoring(built: Manifest) -> None:
    """`score(first=)` and `score_continuations` skip work, not numbers: they match
    the plain full scoring (what evaluate used before) token for token."""
    e = engine(variant_file(built, "f16"))
    e.n_batch = 8  # several decode batches, so the logits bookkeeping crosses them
    try:
        ids = e.tokenize(PROBE)
        full = [s.logprob for s in e.score(ids)]
        tail = e.score(ids, first=9)
        assert [s.token for s in tail] == ids[9:]
        assert [s.logprob for s in tail] == pytest.approx(full[8:], abs=1e-4)
        prefix, conts = ids[:11], [ids[11:], ids[11:12], [], ids[3:7]]
        got = e.score_continuations(prefix, conts)
        for cont, steps in zip(conts, got, strict=True):
            ref = [s.logprob for s in e.score(prefix + cont)][len(prefix) - 1:]
            assert [s.token for s in steps] == cont
            assert [s.logprob for s in steps] == pytest.approx(ref, abs=1e-4)
        # the engine is left clean: generation afterwards is unaffected
        assert [s.logprob for s in e.score(ids)] == pytest.approx(full, abs=1e-6)
    finally:
        e.close()


def test_onnx_exports_run_in_onnxruntime_close_to_torch(built: Manifest, tiny: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    ids = np.array([tok(PROBE).input_ids], dtype=np.int64)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tiny))
    with torch.no_grad():
        ref = model(input_ids=torch.tensor(ids)).logits.numpy()
    f32 = ort.InferenceSession(str(variant_file(built, "onnx")))
    int8 = ort.InferenceSession(str(variant_file(built, "onnx-int8")))
    wo = ort.InferenceSession(str(variant_file(built, "onnx-int8-wo")))
    assert np.abs(f32.run(None, {"input_ids": ids})[0] - ref).max() < 1e-3
    q = int8.run(None, {"input_ids": ids})[0]
    agree = (q.argmax(-1) == ref.argmax(-1)).mean()
    assert agree > 0.8 and np.abs(q - ref).mean() < 0.2
    # weight-only int8 (activations stay float) is much closer than dynamic int8
    w = wo.run(None, {"input_ids": ids})[0]
    assert np.abs(w - ref).mean() < 0.5 * np.abs(q - ref).mean()
    assert {o.op_type for o in __import__("onnx").load(
        str(variant_file(built, "onnx-int8-wo")), load_external_data=False).graph.node
        } >= {"MatMulNBits"}
    assert (art(built) / "stages/quantize/onnx-int8/tokenizer.json").is_file()


def test_lora_lowers_validation_loss_and_the_gguf_adapter_carries_it(built: Manifest) -> None:
    m = next(s for s in built.stages if s.id == "finetune").metrics
    assert m["best_val_loss"] < 0.7 * m["initial_val_loss"]
    assert m["trainable_parameters"] < 0.2 * m["total_parameters"]
    lora = next(v for v in built.variants if v.name == "finetune.lora")
    base_path, adapter = art(built) / lora.path, art(built) / str(lora.adapter)
    assert lora.quantization == "F16+LoRA" and adapter.stat().st_size > 0
    # llama.cpp with the adapter: the answers become likelier than with the base alone
    plain, tuned = engine(base_path), engine(base_path, adapter)
    gain = []
    try:
        for colour_of, colour in list(COLOURS.items())[:4]:
            prompt = render_chat_prompt([{"role": "user", "content": f"what colour is "
                                          f"{colour_of}?"}])
            p = plain.tokenize(prompt)
            full = plain.tokenize(prompt + " " + colour)
            a = sum(s.logprob for s in plain.score(full)[len(p) - 1:])
            b = sum(s.logprob for s in tuned.score(full)[len(p) - 1:])
            gain.append(b - a)
    finally:
        plain.close()
        tuned.close()
    assert min(gain) > 0.5
    # the merged checkpoint is the same model as base + adapter
    merged = art(built) / "stages/finetune/model"
    tok = transformers.AutoTokenizer.from_pretrained(str(merged))
    ids = tok(render_chat_prompt([{"role": "user", "content": "what colour is sky?"}])
              + " blue").input_ids
    e = engine(base_path, adapter)
    try:
        got = [s.logprob for s in e.score(ids)]
    finally:
        e.close()
    assert abs(sum(got) - hf_logprobs(merged, ids).sum()) / len(got) < 0.05


def test_the_node_renders_chat_like_the_training_data(built: Manifest) -> None:
    e = engine(variant_file(built, "f16"))
    try:
        msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
        assert e.chat_prompt([Message(**m) for m in msgs]) == e.tokenize(
            render_chat_prompt(msgs))
    finally:
        e.close()


async def test_a_node_serves_base_gguf_plus_adapter(built: Manifest) -> None:
    import httpx

    from edgewise.api.app import create_app
    from edgewise.config import parse_config
    from edgewise.node import Node, build_engine

    lora = next(v for v in built.variants if v.name == "finetune.lora")
    cfg = parse_config({"node": {"name": "t"}, "engine": {
        "model": str(art(built) / lora.path), "lora_adapter": str(art(built) / str(lora.adapter)),
        "n_ctx": 256, "n_threads": 2}})
    node = Node(cfg, build_engine(cfg))
    await node.start()
    try:
        assert node.info.extra["lora_adapter"].endswith("adapter.gguf")
        transport = httpx.ASGITransport(app=create_app(node, manage_lifecycle=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://n") as client:
            r = await client.post("/v1/chat/completions", json={
                "model": "auto", "temperature": 0, "max_tokens": 4,
                "messages": [{"role": "user", "content": "what colour is snow?"}]})
    finally:
        await node.stop()
    assert r.status_code == 200
    # trained with EOS after the answer: the tuned model answers with one colour and stops
    answer = r.json()["choices"][0]["message"]["content"].strip()
    assert answer in COLOURS.values()


def test_wanda_zeros_the_intended_fraction_of_every_row(built: Manifest, tiny: Path) -> None:
    pruned = transformers.AutoModelForCausalLM.from_pretrained(
        str(art(built) / "stages/wanda/model"))
    dense = transformers.AutoModelForCausalLM.from_pretrained(str(tiny))
    for (name, p), (_, d) in zip(pruned.model.layers.named_parameters(),
                                 dense.model.layers.named_parameters(), strict=True):
        if p.dim() != 2:
            assert torch.equal(p, d), name  # norms untouched
            continue
        zeros = (p == 0).sum(dim=1)
        assert torch.all(zeros == p.shape[1] // 2), name
        kept = p != 0
        assert torch.equal(p[kept], d[kept])  # survivors unchanged
    assert torch.equal(pruned.model.embed_tokens.weight, dense.model.embed_tokens.weight)
    m = next(s for s in built.stages if s.id == "wanda").metrics
    assert m["sparsity_achieved"] == pytest.approx(0.5, abs=1e-3)


def test_wanda_score_uses_activations_not_just_magnitude() -> None:
    w = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # feature 3 (|w| = 4) sees tiny activations; feature 0 (|w| = 1) huge ones
    norms = torch.tensor([100.0, 1.0, 1.0, 0.01])
    assert wanda_mask(w, norms, 0.5).tolist() == [[False, True, False, True]]
    assert wanda_mask(w, torch.ones(4), 0.5).tolist() == [[True, True, False, False]]


def test_layer_pruning_removes_the_least_influential_layer_and_still_runs(
        built: Manifest) -> None:
    m = next(s for s in built.stages if s.id == "shallow").metrics
    assert m["layers_before"] == 2 and m["layers_after"] == 1
    low = min(range(2), key=lambda i: m["block_influence"][i])
    assert m["removed_layers"] == [low]
    cfg = json.loads((art(built) / "stages/shallow/model/config.json").read_text())
    assert cfg["num_hidden_layers"] == 1
    e = engine(variant_file(built, "distill.f16"))  # distilled student, converted to GGUF
    try:
        assert e.llm.metadata["llama.block_count"] == "1"
        text = e.llm.create_completion("the cat", max_tokens=4, temperature=0)
        assert text["usage"]["completion_tokens"] >= 1
    finally:
        e.close()


def test_channel_pruning_narrows_every_mlp_and_still_runs(built: Manifest, tiny: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(art(built) / "stages/narrow/model"))
    assert model.config.intermediate_size == 64
    for layer in model.model.layers:
        assert layer.mlp.gate_proj.weight.shape == (64, 64)
        assert layer.mlp.down_proj.weight.shape == (64, 64)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    assert math.isfinite(float(hf_logprobs(art(built) / "stages/narrow/model",
                                           tok(PROBE).input_ids).sum()))
    e = engine(variant_file(built, "narrow.f16"))
    try:
        assert e.llm.metadata["llama.feed_forward_length"] == "64"
    finally:
        e.close()


def test_distillation_lowers_kl_to_the_teacher_on_training_data(built: Manifest,
                                                                 tiny: Path) -> None:
    m = next(s for s in built.stages if s.id == "distill").metrics
    assert m["kl_train_after"] < 0.7 * m["kl_train_before"]
    assert m["kl_val_after"] < m["kl_val_before"]
    # check independently: KL(teacher || student) before (shallow) and after (distill)
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    ids = torch.tensor([tok(PROBE).input_ids])

    def kl(student_dir: Path) -> float:
        s = transformers.AutoModelForCausalLM.from_pretrained(str(student_dir))
        t = transformers.AutoModelForCausalLM.from_pretrained(str(tiny))
        with torch.no_grad():
            lq = torch.log_softmax(s(input_ids=ids).logits, -1)
            lp = torch.log_softmax(t(input_ids=ids).logits, -1)
        return float((lp.exp() * (lp - lq)).sum(-1).mean())

    assert kl(art(built) / "stages/distill/model") < kl(art(built) / "stages/shallow/model")


def test_evaluate_measures_quality_size_speed_and_memory(built: Manifest, tiny: Path) -> None:
    by_name = {v.name: v for v in built.variants}
    for name in ("q4_k_m", "finetune.lora", "onnx-int8"):
        m = by_name[name].metrics
        assert m["evaluated_by"] == "evaluate"
        assert 1 < m["perplexity"] < 400 and m["ppl_ctx"] == 32
        assert 0 <= m["task_accuracy"] <= 1 and m["task_n"] == 24
        assert m["tokens_per_s"] > 0 and m["ttft_ms"] > 0 and m["peak_rss_mb"] > 20
        assert m["size_bytes"] == by_name[name].size_bytes
        assert sorted(m["task_choices"]) == sorted(set(COLOURS.values()))
    # fine-tuning on the task helps the task
    assert by_name["finetune.lora"].metrics["task_accuracy"] > \
        by_name["q4_k_m"].metrics["task_accuracy"]
    # perplexity is llama-perplexity's: recompute it for the F16 ONNX with torch
    tok = transformers.AutoTokenizer.from_pretrained(str(tiny))
    text = (art(built).parent.parent / "text.txt").read_text()
    chunks = perplexity_chunks(tok(text, add_special_tokens=False).input_ids, 32,
                               tok.bos_token_id, 16384)
    nll = [-x for c in chunks for x in hf_logprobs(tiny, c)[16:]]
    ref = math.exp(sum(nll) / len(nll))
    assert by_name["onnx-int8"].metrics["perplexity"] == pytest.approx(ref, rel=0.1)
    assert by_name["q4_k_m"].metrics["perplexity"] == pytest.approx(ref, rel=0.15)
    assert built.profiles[0]["best"] == "finetune.lora"
    assert built.profiles[1]["best"] is None


def test_measurements_are_kept_and_redone_only_when_the_job_changes(
        built: Manifest, tmp_path: Path) -> None:
    from edgewise.supply.stages.evaluate import _measured

    evaluated = [v for v in built.variants if v.metrics.get("evaluated_by") == "evaluate"]
    assert len(list((art(built) / ".measurements").glob("*.json"))) == len(evaluated)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"weights")
    job = {"format": "gguf", "path": str(model), "adapter": None, "threads": 1}
    calls: list[int] = []

    def measure() -> dict[str, Any]:
        calls.append(1)
        return {"perplexity": 10.0 + len(calls)}

    cache = tmp_path / "cache"
    assert _measured(cache, job, measure) == {"perplexity": 11.0}
    assert _measured(cache, job, measure) == {"perplexity": 11.0, "reused_measurement": True}
    assert _measured(cache, {**job, "threads": 2}, measure)["perplexity"] == 12.0
    model.write_bytes(b"other weights")  # a rebuilt variant is measured again
    assert _measured(cache, job, measure)["perplexity"] == 13.0
    assert not list(cache.glob("*.tmp-*"))


def test_perplexity_chunks_follow_llama_perplexity() -> None:
    chunks = perplexity_chunks(list(range(10, 30)), 8, bos=1, max_tokens=None)
    assert chunks == [[1, *range(11, 18)], [1, *range(19, 26)]]
    assert perplexity_chunks(list(range(100)), 8, None, 20) == [list(range(8)),
                                                                 list(range(8, 16))]


def test_build_cli_reports_and_explains_errors(tiny: Path, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).parent / "edgewise")
    env = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}
    (tmp_path / "r.yaml").write_text(
        f"name: cli\nbase: {tiny}\npre_tokenizer: gpt-2\n"
        "stages:\n  - quantize: {types: [Q8_0]}\n"
        "profiles: [{name: pi, memory_mb: 500}]\n")
    r = subprocess.run([exe, "build", str(tmp_path / "r.yaml")], capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "q8_0" in r.stdout and "profile pi: best fit q8_0" in r.stdout
    assert "✓ quantize (quantize)" in r.stderr
    again = subprocess.run([exe, "build", str(tmp_path / "r.yaml"), "--json"],
                           capture_output=True, text=True, timeout=300, env=env)
    assert "quantize (quantize) reused" in again.stderr
    assert json.loads(again.stdout)["variants"][0]["name"] == "q8_0"
    (tmp_path / "bad.yaml").write_text(f"name: x\nbase: {tiny}\nstages: [{{quantise: {{}}}}]\n")
    bad = subprocess.run([exe, "build", str(tmp_path / "bad.yaml")], capture_output=True,
                         text=True, timeout=120, env=env)
    assert bad.returncode == 2
    assert "stages[0]: unknown stage 'quantise'" in bad.stderr


def test_requantising_a_derived_model_to_its_source_grid_warns(
        built: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("EDGEWISE_MODEL_DIR", str(tmp_path / "models"))  # the GGUF → HF cache
    (tmp_path / "recipe.yaml").write_text(f"""
name: regrid
base: {variant_file(built, "q8_0")}
threads: 2
stages:
  - quantize: {{id: as-is, types: [Q8_0]}}
  - prune: {{id: pruned, input: base, method: magnitude, sparsity: 0.1}}
  - quantize: {{id: same-grid, types: [Q8_0, Q4_K_M]}}
  - quantize: {{id: other-grid, types: [Q4_K_M], prefix: other.}}
""")
    with caplog.at_level("WARNING"):
        m = build(load_recipe(tmp_path / "recipe.yaml"))
    warned = {s.id: s.metrics.get("warnings") for s in m.stages}
    assert warned["as-is"] is None and warned["other-grid"] is None  # the source itself
    (msg,) = warned["same-grid"]
    assert "derived from" in msg and "(Q8_0)" in msg and "base GGUF + adapter" in msg
    assert msg in caplog.text


def test_vocabulary_pruning_keeps_what_the_text_needs(built: Manifest, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A GGUF-born model (the tiny F16 GGUF above) trimmed to the colour-chat vocabulary."""
    import numpy as np

    monkeypatch.setenv("EDGEWISE_MODEL_DIR", str(tmp_path / "models"))  # the GGUF → HF cache
    source = variant_file(built, "f16")
    write_colour_chat(tmp_path / "colours.jsonl", 64)
    (tmp_path / "recipe.yaml").write_text(f"""
name: trimmed
base: {source}
threads: 2
datasets:
  colours: {{path: colours.jsonl, format: chat}}
stages:
  - prune: {{id: trim, method: vocab, calibration: colours}}
  - quantize: {{types: [F16]}}
""")
    m = build(load_recipe(tmp_path / "recipe.yaml"))
    metrics = m.stages[0].metrics
    # (a byte-level BPE keeps its 256-byte alphabet; merges the chat never uses go)
    assert metrics["vocab_after"] <= metrics["vocab_before"] - 10
    trimmed = engine(art(m) / m.variants[0].path)
    original = engine(source)
    try:
        assert trimmed.llm.n_vocab() == metrics["vocab_after"]
        text = "user: what colour is snow?\nassistant: white"
        a, b = original.tokenize(text), trimmed.tokenize(text)
        # the same segmentation: the same token strings, renumbered
        assert [original.token_bytes(t) for t in a] == [trimmed.token_bytes(t) for t in b]
        # a softmax over a subset of the vocabulary: every kept token gets likelier
        lp_a = np.array([s.logprob for s in original.score(a)])
        lp_b = np.array([s.logprob for s in trimmed.score(b)])
        assert np.all(lp_b >= lp_a - 1e-3) and lp_b.sum() > lp_a.sum()
    finally:
        trimmed.close()
        original.close()
    # the HF tokenizer no longer matches: stages that need it refuse, saying what to do
    (tmp_path / "recipe.yaml").write_text((tmp_path / "recipe.yaml").read_text().replace(
        "  - quantize: {types: [F16]}",
        "  - finetune: {dataset: colours, max_steps: 1}"))
    from edgewise.errors import StageError

    with pytest.raises(StageError, match=r"its vocabulary was pruned.*Put `prune: \{method: "
                                         r"vocab\}` last"):
        build(load_recipe(tmp_path / "recipe.yaml"))

"""Speculative decoding on one node: decode speed against plain decoding, acceptance,
peak memory and whether the output is the same — edgewise's drafters side by side with
llama-cpp-python's ``LlamaPromptLookupDecoding`` and Hugging Face assisted generation.

Tasks (greedy, ``--max-tokens`` each): input-grounded — a summary and an extraction
from a ~600-token incident report, two edits of a ~50-line Python file that return the
whole file — and open chat (a story, an explanation). Every system runs in a process of
its own (one llama.cpp / torch thread, n_ctx ``--n-ctx``), so peak RSS is its own:

- **edgewise plain** — the engine as a node runs it without ``engine.speculative``;
- **edgewise plain, flash attention** — the same with ``engine.flash_attn: on`` (what
  exact speculation runs on: the reference for "identical output");
- **edgewise prompt_lookup** and, for a model with a catalogue draft model,
  **edgewise model drafter**;
- **llama-cpp-python plain** and **llama-cpp-python prompt lookup**
  (``Llama(draft_model=LlamaPromptLookupDecoding(num_pred_tokens=10))``, which forces
  ``logits_all``: an n_ctx × n_vocab float32 buffer);
- **HF plain**, **HF prompt lookup** (``prompt_lookup_num_tokens=10``) and **HF
  assisted** (``assistant_model=`` the draft model) — transformers on the same GGUF
  weights dequantised to float32 (converted once, cached under ``--hf-cache``).

Decode speed is tokens per second from the first token to the last; each system's
ratio is to its own plain run (edgewise's to edgewise plain, without flash attention:
what a user runs otherwise). "Same" compares the token ids with the system family's
plain output (edgewise: with flash attention on).

    .venv/bin/python bench/speculative.py                  # ~60 min on 2 idle cores
    .venv/bin/python bench/speculative.py --models smollm2-135m-instruct --skip-hf
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
MODELS = ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct",
          "qwen2.5-coder-1.5b-instruct"]
#: The catalogue's draft model for a target (the model drafter, HF assisted).
DRAFTS = {"qwen2.5-coder-1.5b-instruct": "qwen2.5-coder-0.5b-instruct"}

REPORT = """\
Incident report 2026-03-14, Ward 4B, North Clinic.
At 06:40 the night nurse, Maria Keller, noticed that the infusion pump in room 412 was
showing a flow-rate alarm. The pump had been set to 125 ml per hour for the patient in
bed 2, who was receiving saline after surgery on 13 March. Nurse Keller paused the
pump, checked the line for kinks, and found a partly closed roller clamp below the
drip chamber. She opened the clamp, restarted the pump at 125 ml per hour, and the
alarm cleared at 06:47. At 07:15 the day nurse, Tom Okafor, took over the ward and
was told about the alarm during the handover in the staff room on the fourth floor.
At 08:05 the same pump alarmed again. Nurse Okafor replaced the giving set with a new
one from the supply cupboard in room 405, primed it, and restarted the infusion at
08:12. The biomedical engineering team was called at 08:20 and collected the pump at
09:30; it was replaced by pump number 7731 from the equipment store in the basement.
Engineering found that the pump's pressure sensor read 20 percent high, which made it
stop early on a normal back-pressure. The patient was not harmed: the infusion was
delayed by 19 minutes in total, and the surgeon, Dr. Amal Haddad, was informed at
10:00 during the ward round. Actions: all pumps of the same model on Ward 4B will be
checked by 21 March; roller clamps will be included in the line check at every
handover; the incident will be reviewed at the safety meeting on 28 March in room 101.
"""

CODE = '''\
"""Dose calculations for the ward's infusion pumps."""

from dataclasses import dataclass


@dataclass
class Patient:
    weight_kg: float
    age_years: int
    renal_clearance: float


def compute_dose(patient, drug_mg_per_kg, max_mg):
    """The dose in mg for one administration, capped at max_mg."""
    dose = patient.weight_kg * drug_mg_per_kg
    if patient.age_years > 75:
        dose = dose * 0.8
    if patient.renal_clearance < 30:
        dose = dose * 0.5
    return min(dose, max_mg)


def infusion_rate(dose_mg, concentration_mg_per_ml, hours):
    """The pump rate in ml per hour to give dose_mg over the given hours."""
    volume_ml = dose_mg / concentration_mg_per_ml
    return volume_ml / hours


def schedule(patient, drug_mg_per_kg, max_mg, concentration_mg_per_ml, hours):
    """Dose and pump rate for one patient."""
    dose = compute_dose(patient, drug_mg_per_kg, max_mg)
    rate = infusion_rate(dose, concentration_mg_per_ml, hours)
    return {"dose_mg": round(dose, 1), "rate_ml_per_hour": round(rate, 1)}


if __name__ == "__main__":
    p = Patient(weight_kg=70.0, age_years=80, renal_clearance=25.0)
    print(schedule(p, drug_mg_per_kg=1.5, max_mg=100.0,
                   concentration_mg_per_ml=2.0, hours=4.0))
'''

TASKS: list[tuple[str, str, str]] = [
    ("grounded", "summary",
     f"{REPORT}\nSummarize the report above in five bullet points, reusing its wording."),
    ("grounded", "extraction",
     f"{REPORT}\nList every time of day mentioned in the report, each with the full "
     "sentence it appears in, quoted exactly."),
    ("grounded", "code edit: rename",
     f"```python\n{CODE}```\nRename the function compute_dose to dose_for everywhere "
     "in this file and return the complete file."),
    ("grounded", "code edit: docstrings",
     f"```python\n{CODE}```\nAdd type hints to every function in this file and return "
     "the complete file."),
    ("open chat", "story", "Write a short story about a lighthouse keeper and a storm."),
    ("open chat", "explanation", "Explain to a ten-year-old how a heat pump works."),
]

EDGEWISE = ["edgewise plain", "edgewise plain, flash attention", "edgewise prompt_lookup",
            "edgewise model drafter"]
LLAMA_CPP = ["llama-cpp-python plain", "llama-cpp-python prompt lookup"]
HF = ["HF plain", "HF prompt lookup", "HF assisted"]


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- workers (one system, one process) ----------------------------------------------------


def prompts_for(model: str) -> list[list[int]]:
    from edgewise.chat import Message
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    e = LlamaCppEngine(resolve_model(model), vocab_only=True)
    e.load()
    try:
        return [e.chat_prompt([Message("user", text)]) for _, _, text in TASKS]
    finally:
        e.close()


def run_edgewise(system: str, model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from edgewise.decoding import SpeculativeOptions
    from edgewise.engines.base import SamplingParams
    from edgewise.engines.llamacpp import LlamaCppEngine
    from edgewise.models import resolve_model

    spec = None
    if system == "edgewise prompt_lookup":
        spec = SpeculativeOptions("prompt_lookup", {}, k_max=args.k_max)
    elif system == "edgewise model drafter":
        spec = SpeculativeOptions("model", {"path": str(resolve_model(DRAFTS[model]).path)},
                                  k_max=args.k_max)
    engine = LlamaCppEngine(resolve_model(model), n_ctx=args.n_ctx, n_threads=args.threads,
                            parallel=1, prefix_cache=False, speculative=spec,
                            flash_attn=system != "edgewise plain")
    engine.load()
    out = []
    try:
        for prompt in prompts_for(model):
            before = engine.batch_stats()
            stamps, tokens = [], []
            for step in engine.steps(prompt, SamplingParams(
                    max_tokens=args.max_tokens, temperature=0.0), lambda: False):
                stamps.append(time.perf_counter())
                tokens.append(step.token)
            after = engine.batch_stats()
            out.append({"tokens": tokens, "stamps": stamps,
                        "drafted": after.spec_drafted - before.spec_drafted,
                        "accepted": after.spec_accepted - before.spec_accepted})
    finally:
        engine.close()
    return out


def run_llama_cpp(system: str, model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import llama_cpp
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    from edgewise.engines.cpu import ensure_backend
    from edgewise.models import resolve_model

    ensure_backend()
    draft = LlamaPromptLookupDecoding(num_pred_tokens=10) \
        if system.endswith("prompt lookup") else None
    llm = llama_cpp.Llama(model_path=str(resolve_model(model).path), n_ctx=args.n_ctx,
                          n_threads=args.threads, n_threads_batch=args.threads,
                          draft_model=draft, verbose=False,
                          # its draft_model path needs logits_all, but sizes the scores
                          # buffer by the argument (n_batch rows): past 512 tokens it
                          # fails to broadcast (llama-cpp-python 0.3.36) — so say it
                          logits_all=draft is not None)
    out = []
    for prompt in prompts_for(model):
        stamps, tokens = [], []
        llm.reset()
        for tok in llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0):
            stamps.append(time.perf_counter())
            tokens.append(int(tok))
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok) \
                    or len(tokens) >= args.max_tokens:
                break
        out.append({"tokens": tokens, "stamps": stamps})
    llm.close()
    return out


def hf_model(model: str, cache: Path) -> Path:
    """The GGUF's weights as a transformers folder (float32), converted once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edgewise.models import resolve_model

    dest = cache / model
    if (dest / "config.json").exists():
        return dest
    path = resolve_model(model).path
    progress(f"    converting {path.name} for transformers (once)")
    m = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    m.hf_quantizer = None
    if hasattr(m.config, "quantization_config"):
        del m.config.quantization_config
    m.save_pretrained(dest)
    tok.save_pretrained(dest)
    return dest


def run_hf(system: str, model: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    torch.set_num_threads(args.threads)
    target = AutoModelForCausalLM.from_pretrained(hf_model(model, args.hf_cache),
                                                  torch_dtype=torch.float32)
    extra: dict[str, Any] = {}
    if system == "HF prompt lookup":
        extra["prompt_lookup_num_tokens"] = 10
    elif system == "HF assisted":
        extra["assistant_model"] = AutoModelForCausalLM.from_pretrained(
            hf_model(DRAFTS[model], args.hf_cache), torch_dtype=torch.float32)

    class Stamps(BaseStreamer):
        def __init__(self) -> None:
            self.stamps: list[float] = []
            self.tokens: list[int] = []
            self.first = True

        def put(self, value: Any) -> None:
            if self.first:  # the prompt
                self.first = False
                return
            for t in value.reshape(-1).tolist():
                self.stamps.append(time.perf_counter())
                self.tokens.append(int(t))

        def end(self) -> None:
            pass

    out = []
    for prompt in prompts_for(model):
        s = Stamps()
        with torch.inference_mode():
            target.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                                                                              dtype=torch.long),
                            max_new_tokens=args.max_tokens, do_sample=False, streamer=s,
                            pad_token_id=target.config.eos_token_id, **extra)
        eos = target.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        tokens = s.tokens
        cut = next((i for i, t in enumerate(tokens) if t in eos_ids), len(tokens))
        out.append({"tokens": tokens[:cut], "stamps": s.stamps[:cut]})
    return out


def worker(args: argparse.Namespace) -> None:
    system, model = args.system, args.model
    if system in EDGEWISE:
        runs = run_edgewise(system, model, args)
    elif system in LLAMA_CPP:
        runs = run_llama_cpp(system, model, args)
    else:
        runs = run_hf(system, model, args)
    print(json.dumps({"runs": runs, "peak_rss_mb": peak_rss_mb()}))


# -- the driver ---------------------------------------------------------------------------


def rate(run: dict[str, Any]) -> float:
    s = run["stamps"]
    return (len(s) - 1) / (s[-1] - s[0]) if len(s) > 2 else float("nan")


def systems_for(model: str, args: argparse.Namespace) -> list[str]:
    names = [s for s in EDGEWISE if s != "edgewise model drafter" or model in DRAFTS]
    names += LLAMA_CPP
    if not args.skip_hf and (args.hf_models is None or model in args.hf_models):
        names += [s for s in HF if s != "HF assisted" or model in DRAFTS]
    return names


def summarize(model: str, raw: dict[str, Any]) -> dict[str, Any]:
    base = {"edgewise": "edgewise plain", "llama-cpp-python": "llama-cpp-python plain",
            "HF": "HF plain"}
    same_as = {"edgewise": "edgewise plain, flash attention",
               "llama-cpp-python": "llama-cpp-python plain", "HF": "HF plain"}
    rows: dict[str, Any] = {}
    for system, r in raw.items():
        family = system.split(" ")[0]
        plain, ref = raw.get(base[family]), raw.get(same_as[family])
        per_kind: dict[str, Any] = {}
        for kind in ("grounded", "open chat"):
            idx = [i for i, t in enumerate(TASKS) if t[0] == kind]
            ratios = [rate(r["runs"][i]) / rate(plain["runs"][i]) for i in idx] \
                if plain else []
            drafted = sum(r["runs"][i].get("drafted", 0) for i in idx)
            accepted = sum(r["runs"][i].get("accepted", 0) for i in idx)
            per_kind[kind] = {
                "tok_s": statistics.mean(rate(r["runs"][i]) for i in idx),
                "ratio": statistics.mean(ratios) if ratios else None,
                "ratios": ratios,
                "acceptance": accepted / drafted if drafted else None,
                "same": [r["runs"][i]["tokens"] == ref["runs"][i]["tokens"] for i in idx]
                if ref else None,
                "same_as_plain": [r["runs"][i]["tokens"] == plain["runs"][i]["tokens"]
                                  for i in idx] if plain else None}
        rows[system] = {"peak_rss_mb": r["peak_rss_mb"], "kinds": per_kind}
    return {"model": model, "systems": rows}


def report(result: dict[str, Any]) -> str:
    st = result["settings"]
    lines = [f"# Speculative decoding on one node (greedy, {st['threads']} thread, n_ctx "
             f"{st['n_ctx']}, {st['max_tokens']} tokens)", "",
             "Ratio: decode tok/s over the same family's plain run, averaged over the "
             "tasks of each kind (input-grounded: 4, open chat: 2). Same: the token ids "
             "equal the family's plain output (edgewise: plain with flash attention) on "
             "n of the tasks.", "",
             "| model | system | grounded tok/s | ratio | acceptance | same | open chat "
             "tok/s | ratio | same | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]

    def f(v: float | None, fmt: str) -> str:
        return "–" if v is None else format(v, fmt)

    def same(k: dict[str, Any]) -> str:
        return "–" if k["same"] is None else f"{sum(k['same'])}/{len(k['same'])}"

    for m in result["results"]:
        for system, v in m["systems"].items():
            g, c = v["kinds"]["grounded"], v["kinds"]["open chat"]
            lines.append(
                f"| {m['model']} | {system} | {g['tok_s']:.1f} | {f(g['ratio'], '.2f')}× | "
                f"{f(g['acceptance'], '.0%')} | {same(g)} | {c['tok_s']:.1f} | "
                f"{f(c['ratio'], '.2f')}× | {same(c)} | {v['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-ctx", type=int, default=8192)
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--k-max", type=int, default=8)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--hf-models", nargs="+", help="run transformers on these models only")
    ap.add_argument("--hf-cache", type=Path,
                    default=Path.home() / ".cache/edgewise/hf-from-gguf")
    ap.add_argument("--out", default="speculative")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--system", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return
    if args.report_only:
        md = report(json.loads((RESULTS / f"{args.out}.json").read_text()))
        (RESULTS / f"{args.out}.md").write_text(md)
        print(md)
        return
    results = []
    for model in args.models:
        progress(f"==> {model}")
        raw: dict[str, Any] = {}
        for system in systems_for(model, args):
            progress(f"  {system}")
            cmd = [sys.executable, __file__, "--worker", "--system", system, "--model", model,
                   "--threads", str(args.threads), "--n-ctx", str(args.n_ctx),
                   "--max-tokens", str(args.max_tokens), "--k-max", str(args.k_max),
                   "--hf-cache", str(args.hf_cache)]
            env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
            r = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if r.returncode != 0:
                progress(f"    failed ({r.returncode}): {r.stderr.strip().splitlines()[-1:]}")
                continue
            raw[system] = json.loads(r.stdout.strip().splitlines()[-1])
        results.append({**summarize(model, raw), "raw": raw})
    result = {"settings": {k: str(v) if isinstance(v, Path) else v
                           for k, v in vars(args).items()}, "results": results}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=1))
    md = report(result)
    (RESULTS / f"{args.out}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

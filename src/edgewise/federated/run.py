"""``edgewise federate run``: a recipe in, a run folder and a registry-ready artifact out.

The node's environment holds edgewise's web stack; Flower 1.42 pins older versions of
several of the same libraries, so Flower runs in its own environment
(``.venv-federated``, ``make federated``; or any Python named by
``$EDGEWISE_FLOWER_PYTHON``) and this module drives it as a child process:

1. validate the recipe, resolve the base model to a checkpoint (a catalogue GGUF is
   converted once, cached — the supply chain's :func:`resolve_source`), write the run
   folder's ``plan.json`` (the recipe, the base's path and digest, the mode);
2. start Flower (:mod:`edgewise.federated.flower`) with telemetry and runtime dependency
   installation off, its output in ``flower.log``; follow ``status.json`` and report each
   round; Ctrl-C stops the whole process group;
3. turn the global adapter into an artifact in the same folder, as ``edgewise build``
   writes one: the peft adapter, its GGUF conversion and a variant *base GGUF + adapter*
   a node serves, and a ``manifest.json`` whose ``federated`` stage carries the run's
   lineage (base digest, rounds, strategy, aggregation, clients per round, ε and δ, the
   per-round record) — ``edgewise control publish RUN_DIR --name NAME`` puts it in
   the registry, and a canary rollout ships it from there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgewise.errors import FederatedError
from edgewise.federated.recipe import FederatedRecipe
from edgewise.federated.status import STATUS, RunStatus, read_status

__all__ = ["FLOWER_PYTHON_ENV", "build_artifact", "flower_env", "flower_python", "run"]

FLOWER_PYTHON_ENV = "EDGEWISE_FLOWER_PYTHON"
PLAN = "plan.json"
LOG = "flower.log"


def flower_python() -> Path:
    """The Python of Flower's environment (FederatedError naming the fix when absent)."""
    named = os.environ.get(FLOWER_PYTHON_ENV)
    path = Path(named) if named else Path(sys.prefix).parent / ".venv-federated" / "bin" / "python"
    if not path.is_file():
        where = f"${FLOWER_PYTHON_ENV} = {named}" if named else str(path)
        raise FederatedError(
            f"federated runs need Flower's environment, and {where} does not exist: run "
            "`make federated` (Flower 1.42 pins its own FastAPI/Starlette/uvicorn, so it "
            "lives beside the node's .venv, not in it)")
    return path


def flower_env(home: Path | None = None) -> dict[str, str]:
    """The child's environment: offline, no telemetry, no runtime installs, this edgewise;
    with ``home``, Flower's own ``$FLWR_HOME`` there and Flower's ``bin`` first on
    ``PATH`` (its processes start each other by name: flower-superexec, flwr-clientapp)."""
    env = dict(os.environ)
    if home is not None:
        env["FLWR_HOME"] = str(home)
        env["PATH"] = os.pathsep.join([str(flower_python().parent), env.get("PATH", "")])
    src = str(Path(__file__).resolve().parents[2])  # the folder holding this edgewise
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    env.update({
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "TRANSFORMERS_VERBOSITY": "error",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def _prepare(recipe: FederatedRecipe, *, nodes: int | None, fresh: bool,
             say: Callable[[str], None]) -> tuple[Path, dict[str, Any]]:
    from edgewise.supply.convert import resolve_source

    run_dir = recipe.output
    if (run_dir / STATUS).exists() or (run_dir / PLAN).exists():
        if not fresh:
            state = "unknown"
            with contextlib.suppress(FederatedError):
                state = read_status(run_dir).state
            raise FederatedError(f"{run_dir} holds an earlier run ({state}): pass --fresh to "
                                 "replace it, or set the recipe's output")
        shutil.rmtree(run_dir)
    if nodes is not None and recipe.simulation is None:
        raise FederatedError("--simulate needs the recipe's simulation section (the pooled "
                             "dataset and how to partition it)")
    src = resolve_source(recipe.base, pre_tokenizer=recipe.pre_tokenizer, progress=say)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = {"recipe": recipe.to_json(), "mode": "simulation" if nodes else "deployment",
            "nodes": nodes,
            "base": {"name": src.info["name"], "sha256": src.info["sha256"],
                     "format": src.info["format"], "path": src.info["path"],
                     "checkpoint": str(src.state.hf_dir),
                     "gguf": str(src.state.gguf) if src.state.gguf else None,
                     "pre_tokenizer": src.state.pre_tokenizer}}
    (run_dir / PLAN).write_text(json.dumps(plan, indent=2), encoding="utf-8")
    return run_dir, plan


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def run(recipe: FederatedRecipe, *, simulate: int, fresh: bool = False,
        on_status: Callable[[RunStatus], None] | None = None,
        say: Callable[[str], None] = lambda _m: None, client_app: str | None = None,
        artifact: bool = True) -> RunStatus:
    """Run ``recipe`` on ``simulate`` virtual nodes; the final status (the artifact is
    built when the run produced an adapter, unless ``artifact`` is false).
    ``client_app`` (``module:attribute``, importable in Flower's environment) replaces
    edgewise's ClientApp: benchmarks wrap it to play attackers and drop-outs."""
    if simulate < 1:
        raise FederatedError(f"--simulate {simulate}: at least 1 virtual node")
    if recipe.clients.min > simulate:
        raise FederatedError(f"clients.min {recipe.clients.min} is more than the {simulate} "
                             "simulated nodes")
    python = flower_python()
    run_dir, plan = _prepare(recipe, nodes=simulate, fresh=fresh, say=say)
    assert recipe.simulation is not None
    cmd = [str(python), "-m", "edgewise.federated.flower", "simulate", str(run_dir),
           "--nodes", str(simulate), "--client-cpus", str(recipe.simulation.client_cpus),
           *(["--client-app", client_app] if client_app else [])]
    say(f"starting Flower's simulation engine: {simulate} virtual nodes, log in "
        f"{run_dir / LOG}")
    with (run_dir / LOG).open("ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=flower_env(),
                                start_new_session=True)
        try:
            seen = 0.0
            while proc.poll() is None:
                time.sleep(0.5)
                seen = _report(run_dir, seen, on_status)
        except BaseException:
            _stop(proc)
            raise
    _report(run_dir, 0.0, on_status)
    try:
        status = read_status(run_dir)
    except FederatedError:
        raise FederatedError(f"Flower exited ({proc.returncode}) before the run started: "
                             f"{_tail(run_dir / LOG)}") from None
    if status.state in ("starting", "running"):
        status.state = "failed"
        status.error = f"Flower exited ({proc.returncode}) mid-run: {_tail(run_dir / LOG, 1)}"
        status.save(run_dir)
    if status.adapter and artifact:
        say("building the artifact: the adapter as GGUF, the manifest with the run's lineage")
        build_artifact(run_dir, plan, status)
    return status


def _report(run_dir: Path, seen: float, on_status: Callable[[RunStatus], None] | None
            ) -> float:
    try:
        status = read_status(run_dir)
    except FederatedError:
        return seen
    if status.updated != seen and on_status is not None:
        on_status(status)
    return status.updated


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def build_artifact(run_dir: Path, plan: dict[str, Any], status: RunStatus) -> Path:
    """The run folder as an artifact `control publish` takes (module docstring)."""
    from edgewise.artifacts.manifest import (
        MANIFEST,
        Manifest,
        StageRecord,
        digest_tree,
        tool_versions,
    )
    from edgewise.artifacts.variant import Variant
    from edgewise.models import file_sha256
    from edgewise.supply.convert import gguf_quantization, hf_to_gguf, lora_to_gguf
    from edgewise.supply.stage import ModelState
    from edgewise.supply.stages.finetune import has_chat_template

    base = plan["base"]
    ckpt = Path(base["checkpoint"])
    adapter = lora_to_gguf(run_dir / "adapter", ckpt, run_dir / "adapter.gguf")
    files = digest_tree(run_dir / "adapter", run_dir)
    files[adapter.name] = {"sha256": file_sha256(adapter), "size_bytes": adapter.stat().st_size}
    gguf = Path(base["gguf"]) if base.get("gguf") else None
    if gguf is None or has_chat_template(gguf):
        # served as trained: no chat template (as the supply chain's finetune does)
        gguf = hf_to_gguf(ModelState(hf_dir=ckpt, pre_tokenizer=base.get("pre_tokenizer")),
                          run_dir / "base.f16.gguf")
        files[gguf.name] = {"sha256": file_sha256(gguf), "size_bytes": gguf.stat().st_size}
        base_ref, quant = gguf.name, "F16"
    else:
        base_ref, quant = str(gguf), gguf_quantization(gguf)
    recipe = plan["recipe"]
    rounds = [{"round": r.round, "nodes": len(r.replied), "failed": len(r.failed),
               "train_loss": r.train_loss, "eval_loss": r.eval_loss,
               "eval_exact": r.eval_exact, "epsilon": r.epsilon,
               "bytes_up": r.bytes_up, "seconds": r.seconds} for r in status.rounds]
    lineage = {
        "base_sha256": base["sha256"], "mode": status.mode, "state": status.state,
        "rounds": len(status.rounds), "rounds_planned": status.rounds_planned,
        "strategy": status.strategy, "aggregation": status.aggregation,
        "clients_per_round": status.clients_per_round, "sampling": status.sampling,
        "nodes": sum(1 for n in status.nodes.values() if n.rounds),
        "epsilon": status.epsilon, "delta": status.privacy.get("delta"),
        "privacy": status.privacy, "initial_eval_loss": status.initial_eval_loss,
        "final_eval_loss": status.rounds[-1].eval_loss if status.rounds else None,
        "initial_eval_exact": status.initial_eval_exact,
        "final_eval_exact": status.rounds[-1].eval_exact if status.rounds else None,
        "per_round": rounds}
    stage = StageRecord(id="federated", kind="federated", input="base",
                        params={k: recipe[k] for k in ("rounds", "clients", "strategy",
                                                        "strategy_options", "aggregation",
                                                        "local", "privacy")},
                        fingerprint=recipe.get("sha256", ""), lineage=["federated"],
                        started=status.started, finished=status.finished or time.time(),
                        metrics=lineage, files=files)
    variant = Variant(name="federated.lora", format="gguf", path=base_ref,
                      quantization=f"{quant}+LoRA", stage="federated", adapter=adapter.name,
                      lineage=["federated"],
                      size_bytes=gguf.stat().st_size + adapter.stat().st_size,
                      metrics={"eval_loss": lineage["final_eval_loss"],
                               "eval_exact": lineage["final_eval_exact"]})
    manifest = Manifest(path=run_dir / MANIFEST, name=recipe["name"],
                        recipe={"sha256": recipe.get("sha256"), "kind": "federated"},
                        source={k: base[k] for k in ("name", "path", "format", "sha256")},
                        datasets={}, tools=tool_versions(), stages=[stage],
                        variants=[variant], complete=True)
    manifest.save()
    return run_dir

"""Running a recipe: stages in order, resumable, never a half-written artifact.

Algorithm of :func:`build`:

1. Lock the artifact folder (one build at a time), load its manifest if any.
2. Resolve the base model (GGUF → checkpoint once, cached) and hash every dataset.
3. Remove leftovers: temporary stage folders of an interrupted run, and stage folders
   the manifest does not list (a crash between rename and manifest write).
4. For each stage, compute its *fingerprint*: sha256 of (kind, params, seed, the
   fingerprint of its input model, the digests of the datasets it reads, and — for
   stages that read variants, like ``evaluate`` — the fingerprints of every earlier
   stage). A stage whose manifest entry has the same fingerprint is reused; otherwise it
   runs in ``stages/.<id>.tmp-<pid>/``, every file it wrote is hashed, the folder is
   renamed to ``stages/<id>/`` and only then is its manifest entry written (atomically).
   A changed stage therefore changes the fingerprints after it, which are redone too.
5. Check every variant against the recipe's hardware profiles, mark the manifest
   complete.

An interrupted run (Ctrl-C, a crash, a failing stage) keeps every completed stage; the
next ``edgewise build`` of the same recipe resumes at the first incomplete one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Protocol

from edgewise.artifacts.manifest import Manifest, StageRecord, digest_tree, tool_versions
from edgewise.artifacts.profiles import evaluate_profile
from edgewise.artifacts.variant import Variant
from edgewise.errors import EdgewiseError, StageError, SupplyError
from edgewise.supply.convert import resolve_source
from edgewise.supply.data import file_digest
from edgewise.supply.recipe import Recipe, StageSpec
from edgewise.supply.stage import ModelState, StageContext
from edgewise.supply.stages import get_stage

__all__ = ["BuildProgress", "build", "fingerprint"]

log = logging.getLogger("edgewise.supply")


class BuildProgress(Protocol):
    """What the CLI's progress bar implements (all optional to act on)."""

    def stage_started(self, index: int, total: int, spec: StageSpec, reused: bool) -> None: ...

    def update(self, done: float, total: float | None, note: str) -> None: ...

    def stage_finished(self, spec: StageSpec, seconds: float, reused: bool) -> None: ...

    def message(self, text: str) -> None: ...


class _Quiet:
    def stage_started(self, index: int, total: int, spec: StageSpec, reused: bool) -> None:
        log.info("stage %d/%d %s (%s)%s", index + 1, total, spec.id, spec.kind,
                 " — reused" if reused else "")

    def update(self, done: float, total: float | None, note: str) -> None:
        pass

    def stage_finished(self, spec: StageSpec, seconds: float, reused: bool) -> None:
        pass

    def message(self, text: str) -> None:
        log.info("%s", text)


def _params_json(params: Any) -> dict[str, Any]:
    data = asdict(params) if is_dataclass(params) and not isinstance(params, type) else {}
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return out


def fingerprint(spec: StageSpec, *, seed: int, input_fp: str, dataset_digests: list[str],
                earlier: list[str]) -> str:
    """sha256 of everything that determines a stage's output (see the module docstring)."""
    payload = {"kind": spec.kind, "params": _params_json(spec.params), "seed": seed,
               "input": input_fp, "datasets": dataset_digests, "earlier": earlier}
    version = get_stage(spec.kind).version
    if version > 1:  # absent at 1, so fingerprints from before versions existed still hold
        payload["version"] = version
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@contextlib.contextmanager
def _locked(artifact: Path) -> Iterator[None]:
    artifact.mkdir(parents=True, exist_ok=True)
    with (artifact / ".lock").open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise SupplyError(f"another `edgewise build` is writing {artifact}; wait for it "
                              "or use another output folder") from exc
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(recipe: Recipe, *, fresh: bool = False,
          progress: BuildProgress | None = None) -> Manifest:
    """Run (or resume) a recipe; return the complete manifest.

    ``fresh`` discards earlier results of this artifact first.

    Raises:
        StageError: a stage failed (completed stages are kept; rerun to resume).
        RecipeError, DatasetError, ModelNotFoundError, MissingDependencyError: before or
            while running, with what to fix.
    """
    bar: BuildProgress = progress or _Quiet()
    art = recipe.output
    with _locked(art):
        stages_dir = art / "stages"
        if fresh:
            shutil.rmtree(stages_dir, ignore_errors=True)
            (art / "manifest.json").unlink(missing_ok=True)
        manifest = Manifest.load(art) or Manifest(path=art / "manifest.json", name=recipe.name)
        source = resolve_source(recipe.base, pre_tokenizer=recipe.pre_tokenizer,
                                progress=bar.message)
        digests = {}
        for name, ds in recipe.datasets.items():
            from edgewise.errors import DatasetError

            p = Path(ds.path)
            if not p.is_file():
                raise DatasetError(f"dataset {name!r}: {p} does not exist")
            digests[name] = file_digest(p)
            manifest.datasets[name] = {"path": str(p), "format": ds.format,
                                       "sha256": digests[name], "size_bytes": p.stat().st_size}
        manifest.datasets = {k: v for k, v in manifest.datasets.items()
                             if k in recipe.datasets}
        manifest.name = recipe.name
        manifest.recipe = {"path": str(recipe.path) if recipe.path else None,
                           "sha256": recipe.sha256}
        manifest.source = source.info
        manifest.tools = tool_versions()
        manifest.complete = False
        # Stages no longer in the recipe, and folders without a manifest entry, go.
        wanted = {s.id for s in recipe.stages}
        for rec in list(manifest.stages):
            if rec.id not in wanted:
                _drop(manifest, stages_dir, rec.id)
        stages_dir.mkdir(parents=True, exist_ok=True)
        for d in stages_dir.iterdir():
            if d.name.startswith(".") or manifest.stage(d.name) is None:
                shutil.rmtree(d) if d.is_dir() else d.unlink()
        manifest.save()

        threads = recipe.threads or os.cpu_count() or 1
        models: dict[str, ModelState] = {"base": source.state}
        fps: dict[str, str] = {"base": str(source.info["sha256"])}
        lineages: dict[str, list[str]] = {"base": []}
        for i, spec in enumerate(recipe.stages):
            fp = fingerprint(
                spec, seed=recipe.seed, input_fp=fps[spec.input],
                dataset_digests=[digests[d] for d in spec.stage.datasets(spec.params)],
                earlier=([fps[s.id] for s in recipe.stages[:i]] if spec.stage.reads_variants
                         else []) + [fps[m] for m in spec.stage.models(spec.params)])
            fps[spec.id] = fp
            in_state = models[spec.input]
            lineage = [*lineages[spec.input], spec.id]
            old = manifest.stage(spec.id)
            reused = old is not None and old.fingerprint == fp and _intact(art, old)
            bar.stage_started(i, len(recipe.stages), spec, reused)
            t0 = time.monotonic()
            if reused and old is not None:
                rec = old
            else:
                if old is not None:
                    _drop(manifest, stages_dir, spec.id)
                    manifest.save()
                rec = _run_stage(recipe, manifest, spec, fp, in_state, models, lineage,
                                 threads, bar, earlier={s.id for s in recipe.stages[:i]})
            models[spec.id] = _model_after(rec, in_state, art)
            lineages[spec.id] = lineage if rec.model else lineages[spec.input]
            bar.stage_finished(spec, time.monotonic() - t0, reused)

        order = {s.id: i for i, s in enumerate(recipe.stages)}
        manifest.stages.sort(key=lambda r: order.get(r.id, len(order)))
        manifest.profiles = [evaluate_profile(manifest.variants, p).to_json()
                             for p in recipe.profiles]
        manifest.complete = True
        manifest.save()
        return manifest


def _intact(art: Path, rec: StageRecord) -> bool:
    """Every file the stage recorded is still there with its size (a cheap check; the
    sha256s are in the manifest for a full verification)."""
    for rel, info in rec.files.items():
        p = art / rel
        if not p.is_file() or p.stat().st_size != info.get("size_bytes"):
            log.warning("stage %s: %s is missing or changed; running the stage again",
                        rec.id, rel)
            return False
    return (art / "stages" / rec.id).is_dir()


def _model_after(rec: StageRecord, in_state: ModelState, art: Path) -> ModelState:
    if rec.model is None:
        return in_state
    return ModelState(hf_dir=art / rec.model, vocab_gguf=in_state.vocab_gguf,
                      pre_tokenizer=in_state.pre_tokenizer)


def _drop(manifest: Manifest, stages_dir: Path, sid: str) -> None:
    manifest.drop_stage(sid)
    for v in manifest.variants:
        if v.metrics.get("evaluated_by") == sid:
            v.metrics = {}
    shutil.rmtree(stages_dir / sid, ignore_errors=True)


def _run_stage(recipe: Recipe, manifest: Manifest, spec: StageSpec, fp: str,
               in_state: ModelState, models: dict[str, ModelState], lineage: list[str],
               threads: int, bar: BuildProgress, earlier: set[str]) -> StageRecord:
    art = recipe.output
    final = art / "stages" / spec.id
    tmp = art / "stages" / f".{spec.id}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ctx = StageContext(
        stage_id=spec.id, out_dir=tmp, artifact_dir=art, model=in_state,
        base=models["base"], models=dict(models),
        # only what the stages before this one produced: a stage rerun after the recipe
        # grew must not see (or measure) the variants of stages after it
        variants={v.name: v for v in manifest.variants if v.stage in earlier},
        lineage=lineage,
        datasets=recipe.datasets, seed=recipe.seed, threads=threads,
        progress=bar.update, log=log.getChild(spec.id))
    started = time.time()
    try:
        try:
            result = spec.stage.run(spec.params, ctx)
        except StageError:
            raise
        except EdgewiseError as exc:
            raise type(exc)(f"stage {spec.id!r} ({spec.kind}): {exc}") from exc
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # a library failed: keep the cause, name the stage
            raise StageError(f"stage {spec.id!r} ({spec.kind}) failed: "
                             f"{type(exc).__name__}: {exc}; completed stages are kept, "
                             "run the build again to resume here") from exc
        files = {str(Path("stages") / spec.id / k): v
                 for k, v in digest_tree(tmp, tmp).items()}
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    names = {v.name for v in manifest.variants}
    for v in result.variants:
        if v.name in names:
            raise StageError(f"stage {spec.id!r} produced variant {v.name!r}, which an earlier "
                             "stage already produced; give the stage another `id`")
        v.lineage = v.lineage or list(lineage)
        manifest.variants.append(v)
    for name, metrics in result.variant_metrics.items():
        for v in manifest.variants:
            if v.name == name:
                v.metrics = {**metrics, "evaluated_by": spec.id}
    rec = StageRecord(
        id=spec.id, kind=spec.kind, input=spec.input, params=_params_json(spec.params),
        fingerprint=fp, lineage=lineage, started=started, finished=time.time(),
        model=(str(Path("stages") / spec.id / result.model.relative_to(tmp))
               if result.model is not None else None),
        metrics=result.metrics, files=files)
    manifest.stages.append(rec)
    manifest.save()  # the stage is complete from here on
    return rec


def variant_by_name(manifest: Manifest, name: str) -> Variant:
    for v in manifest.variants:
        if v.name == name:
            return v
    raise KeyError(name)

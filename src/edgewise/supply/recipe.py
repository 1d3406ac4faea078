"""Build recipes: a YAML file mapped onto typed dataclasses, validated in one place.

Example ``recipe.yaml``::

    name: gemma3-270m-sarcasm
    base: gemma3-270m                 # catalogue name, a .gguf file, or a HF checkpoint folder
    output: artifacts/gemma3-270m-sarcasm   # default: artifacts/<name> next to the recipe
    seed: 0
    datasets:                         # paths are relative to the recipe file
      sarcasm-train: {path: data/sarcasm-train.jsonl, format: chat}
      sarcasm-test:  {path: data/sarcasm-test.jsonl,  format: chat}
      ptb-test:      {path: data/ptb-test.txt,        format: text}
    stages:                           # run in order; each is `- <stage>: {params}`
      - finetune: {dataset: sarcasm-train, max_steps: 300, merge: true}
      - quantize: {types: [F16, Q8_0, Q4_K_M]}
      - prune:    {id: wanda50, input: finetune, method: wanda, sparsity: 0.5,
                   calibration: sarcasm-train}
      - quantize: {id: wanda50-q, types: [Q4_K_M]}
      - evaluate: {perplexity: ptb-test, task: sarcasm-test}
    profiles: [profiles/pi5.yaml, {name: tiny, memory_mb: 300, cores: 2}]

Every stage takes ``id`` (default: its name, ``-2``, ``-3`` … when repeated) and
``input`` (the id of an earlier stage whose model it starts from, or ``base``; default:
the latest model-producing stage). The other keys are the stage's ``Params``. Errors
name the key path and what is allowed, e.g.
``stages[1].quantize.typez: unknown key; allowed keys here: types, embedding_type``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, TypeAdapter, with_config

from edgewise.artifacts.profiles import HardwareProfile, load_profile, parse_profile
from edgewise.config import read_yaml, validation_messages
from edgewise.errors import RecipeError
from edgewise.supply.stage import STRICT, Stage
from edgewise.supply.stages import STAGES

__all__ = [
    "DatasetSpec",
    "Recipe",
    "StageSpec",
    "load_recipe",
    "parse_recipe",
]

_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


@with_config(STRICT)
@dataclass
class DatasetSpec:
    """A local dataset file.

    ``chat``: JSONL, ``{"messages": [{"role", "content"}, …]}`` ending with the
    assistant's answer. ``completion``: JSONL, ``{"prompt", "completion"}``. ``text``:
    JSONL ``{"text"}`` lines, or any other file read as plain text.
    """

    path: Annotated[str, Field(min_length=1)]
    format: Literal["chat", "completion", "text"] = "chat"


@with_config(STRICT)
@dataclass
class _RawRecipe:
    name: _NAME
    base: Annotated[str, Field(min_length=1)]
    stages: Annotated[list[Any], Field(min_length=1)]
    datasets: dict[_NAME, DatasetSpec] = field(default_factory=dict)
    output: str | None = None
    seed: int = 0
    #: Threads for training and llama.cpp (default: every core).
    threads: Annotated[int, Field(ge=1, le=1024)] | None = None
    profiles: list[str | dict[str, Any]] = field(default_factory=list)
    #: llama.cpp BPE pre-tokenizer for a HF base whose tokenizer it does not recognise.
    pre_tokenizer: str | None = None


@dataclass(frozen=True)
class StageSpec:
    """One validated stage of a recipe."""

    kind: str
    id: str
    #: Stage id whose working model this one starts from (``base`` for the base model).
    input: str
    params: Any
    stage: Stage


@dataclass
class Recipe:
    """A validated recipe; paths are absolute."""

    name: str
    base: str
    stages: list[StageSpec]
    datasets: dict[str, DatasetSpec]
    output: Path
    seed: int = 0
    threads: int | None = None
    profiles: list[HardwareProfile] = field(default_factory=list)
    pre_tokenizer: str | None = None
    #: sha256 of the recipe text (recorded in the manifest).
    sha256: str = ""
    path: Path | None = None


def _stage_specs(raw: list[Any], datasets: dict[str, DatasetSpec]) -> list[StageSpec]:
    errors: list[str] = []
    specs: list[StageSpec] = []
    seen: dict[str, int] = {}
    model_ids = {"base"}
    latest = "base"
    for i, entry in enumerate(raw):
        where = f"stages[{i}]"
        if not isinstance(entry, dict) or len(entry) != 1:
            got = (f"keys {', '.join(map(str, entry))}" if isinstance(entry, dict)
                   else type(entry).__name__)
            errors.append(f"{where}: each stage is a mapping with one key, the stage name "
                          f"(e.g. `- quantize: {{types: [Q4_K_M]}}`); got {got}")
            continue
        ((kind, body),) = entry.items()
        if str(kind) not in STAGES:
            errors.append(f"{where}: {STAGES.unknown(str(kind))}")
            continue
        cls = STAGES.get(str(kind))
        where = f"{where}.{kind}"
        body = {} if body is None else body
        if not isinstance(body, dict):
            errors.append(f"{where}: the parameters must be a mapping, got "
                          f"{type(body).__name__}")
            continue
        body = dict(body)
        seen[kind] = seen.get(kind, 0) + 1
        sid = body.pop("id", kind if seen[kind] == 1 else f"{kind}-{seen[kind]}")
        source = body.pop("input", None)
        if not isinstance(sid, str) or not sid or not all(c.isalnum() or c in "_.-"
                                                          for c in sid):
            errors.append(f"{where}.id: must be letters, digits, '_', '.', '-' (got {sid!r})")
            continue
        if sid in {s.id for s in specs} or sid == "base":
            errors.append(f"{where}.id: {sid!r} is already used; stage ids must be unique")
            continue
        if source is None:
            source = latest
        elif source not in model_ids:
            errors.append(f"{where}.input: {source!r} is not an earlier stage that produces a "
                          f"model; choose from: {', '.join(sorted(model_ids))}")
            continue
        try:
            params: Any = TypeAdapter(cls.Params).validate_python(body)
        except pydantic.ValidationError as exc:
            errors.extend(validation_messages(exc, cls.Params, where))
            continue
        stage = cls()
        for f in cls.model_fields:
            ref = getattr(params, f, None)
            if isinstance(ref, str) and ref not in model_ids:
                errors.append(f"{where}.{f}: {ref!r} is not base or an earlier stage that "
                              f"produces a model; choose from: {', '.join(sorted(model_ids))}")
        for name in stage.datasets(params):
            if name not in datasets:
                known = ", ".join(sorted(datasets)) or "none defined (add a `datasets:` section)"
                errors.append(f"{where}: unknown dataset {name!r}; datasets: {known}")
        specs.append(StageSpec(kind=kind, id=sid, input=source, params=params, stage=stage))
        if stage.produces_model(params):
            model_ids.add(sid)
            latest = sid
    if errors:
        raise RecipeError("\n  ".join(errors))
    return specs


def parse_recipe(data: Any, *, source: str = "recipe", root: Path | None = None,
                 sha256: str = "") -> Recipe:
    """Validate a mapping (parsed YAML) into a :class:`Recipe`.

    ``root`` is the folder relative paths are resolved against (the recipe's folder).

    Raises:
        RecipeError: naming every offending key path and what is allowed.
    """
    root = (root or Path.cwd()).resolve()
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe is a mapping with name, base, stages "
                          f"(and datasets, output, seed, threads, profiles); got "
                          f"{type(data).__name__}")
    try:
        raw = TypeAdapter(_RawRecipe).validate_python(data)
    except pydantic.ValidationError as exc:
        raise RecipeError(f"{source}: invalid recipe\n  " + "\n  ".join(
            validation_messages(exc, _RawRecipe))) from exc
    datasets = {name: DatasetSpec(path=str(_resolve(root, d.path)), format=d.format)
                for name, d in raw.datasets.items()}
    try:
        stages = _stage_specs(raw.stages, datasets)
    except RecipeError as exc:
        raise RecipeError(f"{source}: invalid recipe\n  {exc}") from None
    profiles = []
    for i, p in enumerate(raw.profiles):
        if isinstance(p, str):
            profiles.append(load_profile(_resolve(root, p)))
        else:
            profiles.append(parse_profile(p, source=f"{source}: profiles[{i}]"))
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise RecipeError(f"{source}: profiles: names must be unique, got {', '.join(names)}")
    base = raw.base
    if "/" in base or base.endswith(".gguf") or base.startswith((".", "~")):
        base = str(_resolve(root, base))
    output = _resolve(root, raw.output) if raw.output else root / "artifacts" / raw.name
    return Recipe(name=raw.name, base=base, stages=stages, datasets=datasets, output=output,
                  seed=raw.seed, threads=raw.threads, profiles=profiles,
                  pre_tokenizer=raw.pre_tokenizer, sha256=sha256)


def _resolve(root: Path, path: str | Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root / p).resolve()


def load_recipe(path: str | Path) -> Recipe:
    """Load and validate a recipe YAML file."""
    p = Path(path)
    text, data = read_yaml(p, RecipeError, "recipe")
    recipe = parse_recipe(data, source=str(p), root=p.resolve().parent,
                          sha256=hashlib.sha256(text.encode()).hexdigest())
    recipe.path = p.resolve()
    return recipe

"""Federated recipes: the YAML ``edgewise federate run`` takes, validated in one place.

Example ``federated.yaml``::

    name: clinic-notes                # the run, and the artifact it produces
    base: smollm2-135m                # catalogue name or HF checkpoint folder (as `build`)
    rounds: 5
    seed: 0
    clients:
      per_round: 4                    # nodes sampled each round (all of them when fewer)
      min: 2                          # fewer replies than this and the round fails
      sampling: fixed                 # fixed: that many at random; poisson: each node
                                      #   independently with q = per_round / nodes
      timeout_s: 600                  # a round waits this long for its replies
    strategy: {name: fedavg}          # fedavg, fedprox (proximal_mu), fedavgm
                                      #   (server_learning_rate, server_momentum),
                                      #   fedadam (eta, eta_l, beta_1, beta_2, tau),
                                      #   fedtrimmedavg (beta),
                                      #   fedmedian, krum (num_malicious_nodes), multikrum
                                      #   (num_malicious_nodes, num_nodes_to_select); the
                                      #   robust four also take server_learning_rate and
                                      #   server_momentum (a FedAvgM step on their aggregate)
    aggregation: ffa                  # ffa (default), product, naive (see federated.lora)
    local: {r: 8, alpha: 16, targets: [q_proj, v_proj], steps: 10, batch_size: 8,
            lr: 5.0e-4, max_length: 128}
    privacy: {noise_multiplier: 1.0, clip_norm: 0.5, delta: 1.0e-5, max_epsilon: 8,
              noise: distributed}     # distributed: each client adds its share of the
                                      #   sum's noise; client: each adds all of it (local DP)
    secure_aggregation:               # SecAgg+ (federated.secagg; `true`: these defaults):
                                      #   the server sees only the sum of the updates
      shares: 1.0                     # a node's secrets are split among this share of the
                                      #   sampled nodes (or this many)
      threshold: 0.6                  # this share of them rebuilds the secrets (> 0.5):
                                      #   0.6 survives 40 % leaving after their masked update
      clipping_range: 1.0             # update coordinates beyond ±this are cut (without
                                      #   privacy; with it, C + 10σ, derived)
      max_weight: 1000                # a node weighs min(examples, this) (1 under privacy)
    data:                             # on each node; never read by anything but that node
      path: /var/lib/edgewise/federated/notes.jsonl   # a SuperNode's data-path overrides
      format: chat                    # chat or completion JSONL (the supply chain's parser)
      holdout: 0.2                    # each node's held-out share, for federated evaluation
    simulation:                       # `--simulate N`: N virtual nodes on this machine
      dataset: {path: data/pool.jsonl, format: completion}
      partition: dirichlet            # iid; key (one node per value of `key`, e.g. a
      key: label                      #   speaker); dirichlet (label shares ~ Dir(alpha))
      alpha: 0.5
      client_cpus: 1                  # Ray CPUs per virtual client (2 cores: 2 at a time)
    output: runs/clinic-notes         # default: runs/<name> next to the recipe
    pre_tokenizer: null               # for GGUF conversion of an unknown BPE (as `build`)

Errors name the key path and what is allowed, e.g. ``strategy.eta: not an option of
fedprox; its options: proximal_mu``. The same dataclasses are rebuilt from the run's
``recipe.json`` inside Flower's processes (:func:`from_json`), so the server and every
client read one validated recipe.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, TypeAdapter, with_config

from edgewise.config import read_yaml, validation_messages
from edgewise.errors import RecipeError
from edgewise.federated.local import LocalConfig
from edgewise.federated.privacy import DpConfig

__all__ = ["STRATEGIES", "FederatedRecipe", "load_federated_recipe", "parse_federated_recipe"]

STRICT = pydantic.ConfigDict(extra="forbid")
_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]

#: A robust strategy's server step, as FedAvgM's (edgewise adds it: Flower's robust
#: strategies replace the global by their aggregate).
SERVER_STEP = ("server_learning_rate", "server_momentum")
#: Flower strategy → the constructor options a recipe may set (flwr.serverapp.strategy).
STRATEGIES: dict[str, tuple[str, ...]] = {
    "fedavg": (),
    "fedprox": ("proximal_mu",),
    "fedavgm": ("server_learning_rate", "server_momentum"),
    "fedadam": ("eta", "eta_l", "beta_1", "beta_2", "tau"),
    "fedtrimmedavg": ("beta", *SERVER_STEP),
    "fedmedian": SERVER_STEP,
    "krum": ("num_malicious_nodes", *SERVER_STEP),
    "multikrum": ("num_malicious_nodes", "num_nodes_to_select", *SERVER_STEP),
}
#: Strategies that look at each client's update (not only their sum): they cannot run on
#: what secure aggregation or distributed noise hides.
ROBUST = frozenset({"fedtrimmedavg", "fedmedian", "krum", "multikrum"})
#: Under secure aggregation at most this many nodes a round (the quantiser keeps 2**20
#: levels for a 32-bit sum).
SECAGG_MAX_NODES = 4096


@with_config(STRICT)
@dataclass
class ClientsSpec:
    per_round: Annotated[int, Field(ge=1, le=100_000)] = 2
    min: Annotated[int, Field(ge=1, le=100_000)] = 2
    sampling: Literal["fixed", "poisson"] = "fixed"
    timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 600.0


@with_config(STRICT)
@dataclass
class LocalSpec:
    r: Annotated[int, Field(ge=1, le=1024)] = 8
    alpha: Annotated[int, Field(ge=1, le=4096)] = 16
    targets: Annotated[list[str], Field(min_length=1)] = field(
        default_factory=lambda: ["q_proj", "v_proj"])
    steps: Annotated[int, Field(ge=1, le=100_000)] = 10
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 8
    lr: Annotated[float, Field(gt=0, lt=1)] = 5e-4
    max_length: Annotated[int, Field(ge=8, le=32_768)] = 128
    threads: Annotated[int, Field(ge=1, le=1024)] = 1


@with_config(STRICT)
@dataclass
class PrivacySpec:
    noise_multiplier: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    clip_norm: Annotated[float, Field(gt=0, le=1e6)] = 1.0
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    max_epsilon: Annotated[float, Field(gt=0)] | None = None
    noise: Literal["distributed", "client"] = "distributed"


@with_config(STRICT)
@dataclass
class SecureAggregationSpec:
    shares: Annotated[float, Field(gt=0, le=100_000)] = 1.0
    threshold: Annotated[float, Field(gt=0.5, le=1)] = 0.6
    clipping_range: Annotated[float, Field(gt=0, le=1e6)] | None = None
    max_weight: Annotated[float, Field(ge=1, le=1e9)] = 1000.0


@with_config(STRICT)
@dataclass
class DataSpec:
    path: Annotated[str, Field(min_length=1)] | None = None
    format: Literal["chat", "completion"] = "chat"
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.2


@with_config(STRICT)
@dataclass
class DatasetRef:
    path: Annotated[str, Field(min_length=1)]
    format: Literal["chat", "completion"] = "chat"


@with_config(STRICT)
@dataclass
class SimulationSpec:
    dataset: DatasetRef
    partition: Literal["iid", "key", "dirichlet"] = "iid"
    key: Annotated[str, Field(min_length=1)] | None = None
    alpha: Annotated[float, Field(gt=0, le=1e6)] = 0.5
    client_cpus: Annotated[float, Field(gt=0, le=1024)] = 1.0


@with_config(STRICT)
@dataclass
class _Raw:
    name: _NAME
    base: Annotated[str, Field(min_length=1)]
    rounds: Annotated[int, Field(ge=1, le=100_000)] = 3
    seed: int = 0
    clients: ClientsSpec = field(default_factory=ClientsSpec)
    strategy: dict[str, Any] = field(default_factory=lambda: {"name": "fedavg"})
    aggregation: Literal["ffa", "product", "naive"] = "ffa"
    local: LocalSpec = field(default_factory=LocalSpec)
    privacy: PrivacySpec = field(default_factory=PrivacySpec)
    secure_aggregation: SecureAggregationSpec | None = None
    data: DataSpec = field(default_factory=DataSpec)
    simulation: SimulationSpec | None = None
    output: str | None = None
    #: BPE pre-tokenizer name for llama.cpp's GGUF conversion (as in `build` recipes).
    pre_tokenizer: str | None = None


@dataclass
class FederatedRecipe:
    """A validated federated recipe (paths absolute)."""

    name: str
    base: str
    rounds: int
    seed: int
    clients: ClientsSpec
    strategy: str
    strategy_options: dict[str, float]
    aggregation: str
    local: LocalSpec
    privacy: PrivacySpec
    data: DataSpec
    simulation: SimulationSpec | None
    output: Path
    sha256: str = ""
    pre_tokenizer: str | None = None
    secure_aggregation: SecureAggregationSpec | None = None

    # -- the algorithm layer's configs ---------------------------------------------------------
    def local_config(self) -> LocalConfig:
        return LocalConfig(r=self.local.r, alpha=self.local.alpha,
                           targets=tuple(self.local.targets), steps=self.local.steps,
                           batch_size=self.local.batch_size, lr=self.local.lr,
                           max_length=self.local.max_length,
                           proximal_mu=float(self.strategy_options.get("proximal_mu", 0.0)),
                           freeze_a=self.aggregation == "ffa", threads=self.local.threads,
                           seed=self.seed)

    def dp_config(self) -> DpConfig:
        return DpConfig(noise_multiplier=self.privacy.noise_multiplier,
                        clip_norm=self.privacy.clip_norm, delta=self.privacy.delta,
                        max_epsilon=self.privacy.max_epsilon)

    @property
    def sees_each_update(self) -> bool:
        """True when the server must look at individual updates (robust strategies, the
        product aggregation): incompatible with distributed noise."""
        return self.strategy in ROBUST or self.aggregation == "product"

    def secure_clip(self, expected: float) -> float:
        """The secure quantiser's range: ``C + 10σ`` under privacy (``σ`` a node's noise
        std, ``expected`` the nodes whose shares make the sum's noise), else the recipe's
        ``clipping_range`` (default 1)."""
        sa = self.secure_aggregation
        p = self.privacy
        if p.noise_multiplier > 0:
            shares = 1.0 if p.noise == "client" else max(expected, 1.0)
            return p.clip_norm * (1 + 10 * p.noise_multiplier / math.sqrt(shares))
        return sa.clipping_range if sa is not None and sa.clipping_range else 1.0

    # -- the run folder's copy ---------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "output"}
        d["output"] = str(self.output)
        return d


def _strategy(spec: dict[str, Any], source: str) -> tuple[str, dict[str, float]]:
    name = spec.get("name", "fedavg")
    if not isinstance(name, str) or name.lower() not in STRATEGIES:
        raise RecipeError(f"{source}: strategy.name {name!r}: one of "
                          f"{', '.join(STRATEGIES)}")
    name = name.lower()
    allowed = STRATEGIES[name]
    options: dict[str, float] = {}
    for key, value in spec.items():
        if key == "name":
            continue
        if key not in allowed:
            what = f"its options: {', '.join(allowed)}" if allowed else "it takes no options"
            raise RecipeError(f"{source}: strategy.{key}: not an option of {name}; {what}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RecipeError(f"{source}: strategy.{key} {value!r}: a number")
        options[key] = value
    if name == "fedprox" and options.get("proximal_mu", 0.0) < 0:
        raise RecipeError(f"{source}: strategy.proximal_mu: >= 0")
    if name == "fedtrimmedavg" and not 0 <= options.get("beta", 0.2) < 0.5:
        raise RecipeError(f"{source}: strategy.beta: the share trimmed at each end, in "
                          "[0, 0.5)")
    for key in ("num_malicious_nodes", "num_nodes_to_select"):
        if key in options and (options[key] != int(options[key]) or options[key] < 0):
            raise RecipeError(f"{source}: strategy.{key}: an integer >= 0")
    return name, options


def _resolve(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (root / p).resolve()


def parse_federated_recipe(data: Any, *, source: str = "recipe", root: Path | None = None,
                           sha256: str = "") -> FederatedRecipe:
    """Validate a mapping (parsed YAML) into a :class:`FederatedRecipe`.

    Raises:
        RecipeError: naming every offending key path and what is allowed.
    """
    root = (root or Path.cwd()).resolve()
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a federated recipe is a mapping with name, base, "
                          f"rounds, clients, strategy, local, privacy, data; got "
                          f"{type(data).__name__}")
    if isinstance(data.get("secure_aggregation"), bool):  # `secure_aggregation: true`
        data = {**data, "secure_aggregation": {} if data["secure_aggregation"] else None}
    try:
        raw = TypeAdapter(_Raw).validate_python(data)
    except pydantic.ValidationError as exc:
        raise RecipeError(f"{source}: invalid federated recipe\n  " + "\n  ".join(
            validation_messages(exc, _Raw))) from exc
    strategy, options = _strategy(raw.strategy, source)
    if raw.clients.min > raw.clients.per_round:
        raise RecipeError(f"{source}: clients.min {raw.clients.min} is more than "
                          f"clients.per_round {raw.clients.per_round}")
    if raw.privacy.max_epsilon is not None and raw.privacy.noise_multiplier == 0:
        raise RecipeError(f"{source}: privacy.max_epsilon needs privacy.noise_multiplier "
                          "> 0 (with no noise ε is infinite)")
    recipe_sees_each = strategy in ROBUST or raw.aggregation == "product"
    if raw.privacy.noise_multiplier > 0 and raw.privacy.noise == "distributed" \
            and recipe_sees_each:
        what = (f"strategy {strategy}" if strategy in ROBUST
                else "aggregation: product")
        raise RecipeError(
            f"{source}: {what} looks at each client's update, but privacy.noise: "
            "distributed adds only a share of the noise to each (private only as a sum); "
            "use privacy.noise: client (each update carries all the noise) or fedavg/"
            "fedprox/fedadam with aggregation ffa or naive")
    sa = raw.secure_aggregation
    if sa is not None:
        if recipe_sees_each:
            what = (f"strategy {strategy}" if strategy in ROBUST
                    else "aggregation: product")
            raise RecipeError(
                f"{source}: {what} looks at each client's update, but secure_aggregation "
                "shows the server only their sum; use fedavg, fedprox, fedavgm or fedadam "
                "with aggregation ffa or naive")
        if raw.clients.min < 3:
            raise RecipeError(f"{source}: secure_aggregation needs clients.min >= 3 (with "
                              "two, each learns the other's update from the sum)")
        if raw.clients.per_round > SECAGG_MAX_NODES:
            raise RecipeError(f"{source}: secure_aggregation takes at most "
                              f"{SECAGG_MAX_NODES} clients.per_round")
        if sa.shares > 1 and (sa.shares != int(sa.shares) or sa.shares < 3):
            raise RecipeError(f"{source}: secure_aggregation.shares: a share of the sampled "
                              "nodes in (0, 1], or a whole count >= 3")
        if sa.clipping_range is not None and raw.privacy.noise_multiplier > 0:
            raise RecipeError(f"{source}: secure_aggregation.clipping_range is derived "
                              "under privacy (clip_norm + 10 noise stds); remove it")
    if raw.aggregation == "product" and strategy not in ("fedavg", "fedprox"):
        raise RecipeError(f"{source}: aggregation: product replaces the averaging step, so "
                          f"it runs with strategy fedavg or fedprox, not {strategy}")
    sim = raw.simulation
    if sim is not None:
        if sim.partition == "key" and not sim.key:
            raise RecipeError(f"{source}: simulation.partition: key needs simulation.key "
                              "(the JSON field whose values become the nodes, e.g. speaker)")
        if sim.partition == "dirichlet" and not sim.key:
            raise RecipeError(f"{source}: simulation.partition: dirichlet needs "
                              "simulation.key (the JSON field holding each example's label)")
        sim = SimulationSpec(dataset=DatasetRef(path=str(_resolve(root, sim.dataset.path)),
                                                format=sim.dataset.format),
                             partition=sim.partition, key=sim.key, alpha=sim.alpha,
                             client_cpus=sim.client_cpus)
    data_spec = raw.data
    if data_spec.path is not None:
        data_spec = DataSpec(path=str(_resolve(root, data_spec.path)), format=data_spec.format,
                             holdout=data_spec.holdout)
    base = raw.base
    if "/" in base or base.startswith((".", "~")):
        base = str(_resolve(root, base))
    output = _resolve(root, raw.output) if raw.output else root / "runs" / raw.name
    return FederatedRecipe(name=raw.name, base=base, rounds=raw.rounds, seed=raw.seed,
                           clients=raw.clients, strategy=strategy, strategy_options=options,
                           aggregation=raw.aggregation, local=raw.local, privacy=raw.privacy,
                           data=data_spec, simulation=sim, output=output, sha256=sha256,
                           pre_tokenizer=raw.pre_tokenizer, secure_aggregation=sa)


def load_federated_recipe(path: str | Path) -> FederatedRecipe:
    """Load and validate a federated recipe YAML file."""
    p = Path(path)
    text, data = read_yaml(p, RecipeError, "federated recipe")
    return parse_federated_recipe(data, source=str(p), root=p.resolve().parent,
                                  sha256=hashlib.sha256(text.encode()).hexdigest())


def from_json(d: dict[str, Any]) -> FederatedRecipe:
    """The recipe a run folder's ``recipe.json`` holds (written by :meth:`to_json`)."""
    sim = d.get("simulation")
    return FederatedRecipe(
        name=d["name"], base=d["base"], rounds=d["rounds"], seed=d["seed"],
        clients=ClientsSpec(**d["clients"]), strategy=d["strategy"],
        strategy_options=dict(d["strategy_options"]), aggregation=d["aggregation"],
        local=LocalSpec(**d["local"]), privacy=PrivacySpec(**d["privacy"]),
        data=DataSpec(**d["data"]),
        simulation=None if sim is None else SimulationSpec(
            dataset=DatasetRef(**sim["dataset"]), partition=sim["partition"],
            key=sim["key"], alpha=sim["alpha"], client_cpus=sim["client_cpus"]),
        output=Path(d["output"]), sha256=d.get("sha256", ""),
        pre_tokenizer=d.get("pre_tokenizer"),
        secure_aggregation=SecureAggregationSpec(**d["secure_aggregation"])
        if d.get("secure_aggregation") else None)


def dumps(recipe: FederatedRecipe) -> str:
    return json.dumps(recipe.to_json(), indent=2, sort_keys=True)

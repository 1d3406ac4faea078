"""Typed node configuration: a YAML file mapped onto dataclasses.

The dataclasses are the source of truth; pydantic only validates the YAML mapping onto
them (unknown keys are rejected, values are range-checked) so every error names the key
path and what is allowed, e.g. ``serving.max_queue: must be >= 0 (got -1)``.

Example ``edgewise.yaml``::

    node: {name: clinic-1, tier: device}
    engine: {kind: llamacpp, model: smollm2-135m-instruct, n_ctx: 2048}
    serving: {max_queue: 16, max_body_bytes: 1000000}
    sampling: {temperature: 0.7}
"""

from __future__ import annotations

import dataclasses
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import Field, TypeAdapter, with_config

from edgewise.errors import ConfigError
from edgewise.levels import Level

__all__ = [
    "ApiKeyConfig",
    "AuditConfig",
    "AuthConfig",
    "CascadeConfig",
    "DenyListConfig",
    "EdgewiseConfig",
    "EndpointConfig",
    "EngineConfig",
    "FleetConfig",
    "HealthConfig",
    "NodeConfig",
    "PatternConfig",
    "PrivacyConfig",
    "RouterConfig",
    "RoutingConfig",
    "SamplingDefaults",
    "ServingConfig",
    "TierConfig",
    "TlsConfig",
    "UpdateConfig",
    "load_config",
    "parse_config",
]

_STRICT = pydantic.ConfigDict(extra="forbid")


@with_config(_STRICT)
@dataclass
class NodeConfig:
    """Who this node is: reported in ``x-edgewise-node`` / ``x-edgewise-tier``."""

    name: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.\-]+$")] = (
        field(default_factory=lambda: _default_node_name())
    )
    tier: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")] = (
        "device"
    )
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080


@with_config(_STRICT)
@dataclass
class SpeculativeConfig:
    """Speculative decoding in the local engine (``engine.speculative``): a drafter
    proposes tokens, the model verifies them in one decode pass; greedy output is the
    model's own, sampled output keeps its distribution (the speculative sampling rule).
    Speculation stops by itself where it does not pay (measured acceptance and costs)."""

    #: ``prompt_lookup`` (n-grams copied from the prompt and the answer so far: costs
    #: almost nothing, pays on summaries, extraction, RAG answers, code edits) or
    #: ``off``.
    #: ``model`` (a small model with the same tokenizer, ``model:`` below, drafts
    #: greedily with a KV cache of its own).
    drafter: Literal["prompt_lookup", "model", "off"] | Literal[False] = "off"
    #: The ``model`` drafter's model: a catalogue name or a .gguf path (e.g.
    #: ``qwen2.5-coder-0.5b-instruct`` for ``qwen2.5-coder-1.5b-instruct``).
    model: Annotated[str, Field(min_length=1)] | None = None
    #: The longest draft one verify pass checks (the engine picks up to this from the
    #: measured acceptance rate).
    k_max: Annotated[int, Field(ge=1, le=32)] = 8
    #: ``prompt_lookup``: the longest and shortest n-gram matched.
    ngram_max: Annotated[int, Field(ge=1, le=8)] = 3
    ngram_min: Annotated[int, Field(ge=1, le=8)] = 1
    #: Speculate only while at most this many requests are decoding (a verify pass is a
    #: decode call of its own, which the other streams of the batch wait for).
    max_batch: Annotated[int, Field(ge=1, le=64)] = 1
    #: Draft only when the measured acceptance rate and costs promise at least this
    #: speed-up over plain decoding (0: whenever the drafter has a guess).
    min_speedup: Annotated[float, Field(ge=0, le=10)] = 1.05
    #: Greedy output token for token the engine's own without speculation: needs
    #: llama.cpp's flash attention (``engine.flash_attn`` ``auto`` turns it on), whose
    #: rows of a verify pass round as one-token steps do (bit-identical on the Q4_1 and
    #: Gemma models; Q4_K matmuls still round a several-row pass by up to 0.011 in a
    #: logprob, so a near-tie can flip). False: plain attention, faster on long
    #: contexts, but greedy texts part from plain decoding at near-ties more often.
    exact: bool = True

    def __post_init__(self) -> None:
        if self.drafter is False:  # YAML reads a bare `off` as false
            self.drafter = "off"
        if self.ngram_min > self.ngram_max:
            raise ValueError("ngram_min must not exceed ngram_max")
        if self.drafter == "model" and self.model is None:
            raise ValueError("drafter: model needs model: (a catalogue name or a .gguf "
                             "path of a small model with the same tokenizer)")


@with_config(_STRICT)
@dataclass
class EngineConfig:
    """The local inference engine and the model it serves."""

    #: A registered engine (``llamacpp``, ``fake``, or one a plug-in registers with
    #: ``edgewise.engines.register_engine``); checked when the node is built.
    kind: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")] = (
        "llamacpp")
    #: A catalogue name (``edgewise models``), a path to a ``.gguf`` file, or ``auto``:
    #: the best variant under ``artifacts`` that fits ``profile``.
    model: Annotated[str, Field(min_length=1)] = "smollm2-135m-instruct"
    #: Context window in tokens (prompt + completion).
    n_ctx: Annotated[int, Field(ge=64, le=131072)] = 2048
    #: Threads for generation and prompt processing; ``None``: cores − 1 for generation
    #: (a busy core beside llama.cpp's spinning threads slows them ~5×) and every core
    #: for prompt batches (``bench/threads.py`` has the measurement).
    n_threads: Annotated[int, Field(ge=1, le=512)] | None = None
    #: Most tokens one llama.cpp decode step takes (prompt chunks plus one token per
    #: running sequence).
    n_batch: Annotated[int, Field(ge=1, le=8192)] = 512
    #: Requests the engine generates at once, batched into every decode step, each in
    #: its own KV-cache slot of ``n_ctx`` tokens (memory: parallel × n_ctx cells).
    #: ``None``: as many as fit 512 MiB of KV cache at ``n_ctx``, at most 8 (8 for the
    #: default model at 2048 tokens). 1 serves one request at a time.
    parallel: Annotated[int, Field(ge=1, le=64)] | None = None
    #: Prompt tokens of newly arrived requests decoded per step, across all of them
    #: (chunked prefill): smaller keeps running streams smoother while a long prompt
    #: is read, larger reads prompts faster.
    prefill_chunk: Annotated[int, Field(ge=16, le=8192)] = 256
    #: Keep each finished request's KV cells in its slot, so a new request that starts
    #: with the same tokens (system prompt, earlier turns) skips computing them. The
    #: cells stay in this process's memory only; off: every prompt is computed afresh.
    prefix_cache: bool = True
    #: Speculative decoding (off by default).
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    #: llama.cpp's flash attention: ``auto`` — on only for exact speculative decoding
    #: (each row then rounds the same however many a pass holds; ~13 % slower decoding
    #: at 2k tokens of context on the default model, slightly faster at short ones).
    #: Switching it changes logprobs by rounding (~0.02) and so, rarely, a greedy token.
    flash_attn: Literal["auto", "on", "off"] | bool = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.flash_attn, bool):  # YAML reads bare on / off as booleans
            self.flash_attn = "on" if self.flash_attn else "off"
        if self.flash_attn == "off" and self.speculative.drafter != "off" \
                and self.speculative.exact:
            raise ValueError("speculative.exact needs flash attention: set flash_attn to "
                             "auto or on, or speculative.exact to false")
    #: Check the model file's sha256 against the catalogue before loading.
    verify_digest: bool = True
    #: A GGUF LoRA adapter applied on top of ``model`` (``edgewise build`` makes them).
    lora_adapter: Annotated[str, Field(min_length=1)] | None = None
    #: With ``model: auto``: folder of ``edgewise build`` artifacts to choose from.
    artifacts: Annotated[str, Field(min_length=1)] = "artifacts"
    #: With ``model: auto``: a hardware-profile YAML (default: this machine's free
    #: memory and cores).
    profile: Annotated[str, Field(min_length=1)] | None = None


@with_config(_STRICT)
@dataclass
class TlsConfig:
    """HTTPS on the node's API with its fleet certificate (a joined node only), and
    which fleet peers may call it."""

    #: Serve HTTPS with the certificate ``edgewise join`` obtained (``fleet.state_dir``);
    #: renewed certificates are used for new connections without a restart.
    enabled: bool = False
    #: Client certificates: ``none`` (not asked for), ``optional`` (fleet peers present
    #: theirs; applications may use tokens or API keys instead) or ``required`` (only fleet
    #: nodes may connect: the TLS handshake refuses anyone else).
    client_certs: Literal["none", "optional", "required"] = "optional"
    #: Fleet peers allowed to call ``/v1`` with their certificate: ``node:<name>``,
    #: ``tier:<tier>`` or a SPIFFE ID. Empty: any fleet node that is not revoked.
    allow: list[Annotated[str, Field(pattern=r"^(node:|tier:|spiffe://)[A-Za-z0-9_.\-/:]+$")]] = (
        field(default_factory=list))


@with_config(_STRICT)
@dataclass
class ServingConfig:
    """Admission control and limits of the HTTP front end."""

    #: Requests allowed to wait for the engine; one more gets 429 + Retry-After.
    max_queue: Annotated[int, Field(ge=0, le=100_000)] = 16
    #: Seconds a queued request may wait before it gets 429.
    queue_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    #: Largest accepted request body; larger ones get 413.
    max_body_bytes: Annotated[int, Field(ge=1024, le=1 << 30)] = 4 * 1024 * 1024
    #: Seconds SIGTERM/Ctrl-C waits for in-flight requests before exiting.
    drain_timeout_s: Annotated[float, Field(ge=0, le=3600)] = 30.0
    #: Optional cap on ``max_tokens`` (``None``: up to the largest context window of
    #: the node's tiers).
    max_tokens_limit: Annotated[int, Field(ge=1)] | None = None
    #: Most messages one chat request may carry (OpenAI's limit); checked before any
    #: rendering or tokenizing.
    max_messages: Annotated[int, Field(ge=1, le=100_000)] = 2048
    #: Seconds a connection may take to send a whole request head (request line and
    #: headers), counted from when it opens or from the first byte of its next request;
    #: then it is closed, with 408 if part of a head had arrived.
    header_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 10.0
    #: Seconds a request body may take to arrive in full; then 408 and the connection
    #: is closed.
    body_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    #: Seconds an idle keep-alive connection stays open waiting for its next request.
    keepalive_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    #: Most client connections open at once; at the cap a new one replaces the oldest
    #: idle one. ``None``: min(1024, the file-descriptor limit ``ulimit -n`` - 64).
    max_connections: Annotated[int, Field(ge=1, le=1_000_000)] | None = None
    tls: TlsConfig = field(default_factory=TlsConfig)


@with_config(_STRICT)
@dataclass
class SamplingDefaults:
    """Sampling used when a request does not set a value (llama.cpp server defaults)."""

    temperature: Annotated[float, Field(ge=0, le=2)] = 0.8
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    top_k: Annotated[int, Field(ge=0)] = 40
    min_p: Annotated[float, Field(ge=0, le=1)] = 0.05
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] = 1.0


_NAME = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


@with_config(_STRICT)
@dataclass
class EndpointConfig:
    """One place a tier can send requests: a local engine or an OpenAI-compatible URL."""

    #: Local engine kind (``llamacpp``, ``fake`` or a registered one); mutually
    #: exclusive with ``url``.
    engine: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    #: Base URL of an OpenAI-compatible API, e.g. ``http://10.0.0.5:8080/v1``.
    url: Annotated[str, Field(pattern=r"^https?://")] | None = None
    #: Local: catalogue name or .gguf path. Remote: the upstream model name
    #: (``auto``: send the client's ``model`` field on unchanged).
    model: Annotated[str, Field(min_length=1)] = "auto"
    #: Environment variable holding the upstream's API key (never the key itself).
    api_key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    #: Relative share of this tier's traffic among its healthy endpoints.
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    #: The fleet identity expected at an ``https://`` URL that is another fleet node:
    #: ``node:<name>`` (that node) or ``tier:<tier>`` (any node of that tier). The call
    #: then uses mutual TLS with this node's certificate, and the peer's certificate must
    #: be from the fleet CA, carry that identity and not be revoked, all checked before
    #: the request is sent. Needs a joined node (``fleet.state_dir``).
    peer: Annotated[str, Field(
        pattern=r"^(node|tier):[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")] | None = None
    #: Speculative decoding across tiers: the ``url`` is an edgewise node whose model
    #: shares this node's vocabulary; this node's model drafts ``draft_tokens`` tokens,
    #: the upper one verifies them in one pass (``/v1/edgewise/verify``). The answers are
    #: the upper model's. Not for tools, ``response_format`` or ``n > 1``.
    verify: bool = False
    draft_tokens: Annotated[int, Field(ge=1, le=32)] = 8

    def __post_init__(self) -> None:
        if self.verify and self.url is None:
            raise ValueError("`verify` needs a `url` (an edgewise node that verifies drafts)")
        if (self.engine is None) == (self.url is None):
            raise ValueError("an endpoint needs exactly one of `engine` (local) or `url` (remote)")
        if self.engine is not None and self.api_key_env is not None:
            raise ValueError("`api_key_env` only applies to `url` endpoints")
        if self.peer is not None and not (self.url or "").startswith("https://"):
            raise ValueError("`peer` needs an https:// `url` (fleet peers talk mutual TLS)")

    @property
    def label(self) -> str:
        """A short, non-secret name for logs and metrics."""
        return f"{self.engine}:{self.model}" if self.engine else str(self.url)


@with_config(_STRICT)
@dataclass
class TierConfig:
    """One rung of the escalation ladder."""

    name: _NAME
    endpoints: Annotated[list[EndpointConfig], Field(min_length=1)]
    #: The most sensitive data this tier may receive.
    clearance: Level = Level.PUBLIC
    cost_per_1k_tokens: Annotated[float, Field(ge=0)] = 0.0
    energy_per_token_j: Annotated[float, Field(ge=0)] = 0.0
    #: Largest prompt + completion the tier accepts (``None``: no limit known).
    max_context: Annotated[int, Field(ge=16)] | None = None
    #: Seconds before a request to this tier counts as failed (``None``: no limit).
    timeout: Annotated[float, Field(gt=0, le=3600)] | None = None
    #: What may reach this tier when a request is more sensitive than its clearance:
    #: ``forbid`` (never), ``redact`` (with every detected sensitive span replaced by a
    #: placeholder, restored in the answer) or ``allow`` (as is; the operator accepts the
    #: risk, and the audit log records it).
    escalation: Literal["forbid", "redact", "allow"] = "forbid"


@with_config(_STRICT)
@dataclass
class CascadeConfig:
    """Answer with the lowest eligible tier; escalate when confidence is below threshold.

    Scorers are described in ``edgewise.routing.confidence``; ``edgewise calibrate``
    picks the threshold for the configured one."""

    enabled: bool = False
    #: Confidence in [0, 1] below which the answer is escalated (``edgewise calibrate``).
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    #: A registered confidence scorer: ``mean_prob``, ``min_prob``, ``tail_mean_prob``,
    #: ``answer_prob``, ``margin``, ``agreement`` (or one registered by a plugin);
    #: checked when the node's router is built.
    scorer: Annotated[str, Field(min_length=1)] = "mean_prob"
    #: Regular expression locating the final answer in a reply (its last match; group 1
    #: if it has groups), for ``answer_prob``, ``margin`` and ``agreement``. Unset: what
    #: follows the last ``####``, else the whole reply.
    answer_pattern: str | None = None
    #: Answers sampled from a tier to score one of its answers (``agreement``): each is
    #: another generation of up to ``max_tokens`` on that tier.
    samples: Annotated[int, Field(ge=1, le=32)] = 5
    #: Temperature of those samples (> 0: greedy samples would all repeat the answer).
    sample_temperature: Annotated[float, Field(gt=0, le=2)] = 0.7
    #: Written by ``edgewise calibrate``: the measured curve behind ``threshold``.
    calibration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        import re

        if self.answer_pattern is not None:
            try:
                compiled = re.compile(self.answer_pattern)
            except re.error as exc:
                raise ValueError(f"answer_pattern is not a valid regular expression: {exc}"
                                 ) from None
            if compiled.match(""):
                raise ValueError(f"answer_pattern {self.answer_pattern!r} matches the empty "
                                 "string, so it would find an empty answer everywhere; "
                                 "anchor it on text that precedes the answer, e.g. "
                                 r"'answer is\s*(\S+)'")


@with_config(_STRICT)
@dataclass
class HealthConfig:
    """Active probes and circuit breakers for remote endpoints."""

    probe_interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    probe_timeout_s: Annotated[float, Field(gt=0, le=600)] = 2.0
    #: Consecutive failures that open an endpoint's breaker.
    failure_threshold: Annotated[int, Field(ge=1, le=1000)] = 3
    #: EWMA weight of the newest latency observation.
    ewma_alpha: Annotated[float, Field(gt=0, le=1)] = 0.3


@with_config(_STRICT)
@dataclass
class RouterConfig:
    """A learned router that scores each prompt before any tier answers
    (``edgewise.routing.learned``; train it with ``edgewise router train``).

    A prompt scored ≥ ``threshold`` goes straight to the top eligible tier (the lower
    ones stay as failover, without the cascade); the rest take the cheapest-first plan
    and the cascade as without a router. Requests that pin a tier, and plans of one
    tier, are not scored."""

    #: Router directory (``edgewise router train --out DIR``); relative paths are taken
    #: from the working directory. Verified (manifest, sha256 of its weights) at start.
    path: Annotated[str, Field(min_length=1)]
    kind: Literal["learned"] = "learned"
    #: Score in [0, 1] at or above which a prompt goes to the top tier
    #: (``edgewise router threshold DIR CALIBRATION.jsonl --share S``).
    threshold: Annotated[float, Field(ge=0, le=1)] = 0.5
    #: CPU threads of the embedding model (torch's, for the whole node process: the node
    #: runs no other torch). One keeps routing latency steady while the engine decodes
    #: on the other cores; ``null`` leaves torch's default (every core).
    threads: Annotated[int, Field(ge=1, le=256)] | None = 1


@with_config(_STRICT)
@dataclass
class RoutingConfig:
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    #: A learned router (``None``: none).
    router: RouterConfig | None = None
    health: HealthConfig = field(default_factory=HealthConfig)
    #: Sensitivity assumed for a request that declares none (the privacy guard raises it).
    default_sensitivity: Level = Level.PUBLIC
    #: Weight of energy (J per token) against cost (per 1k tokens) when ranking tiers.
    energy_weight: Annotated[float, Field(ge=0)] = 0.0
    #: SQLite file of the store-and-forward queue for async requests.
    jobs_path: str = ".edgewise/jobs.sqlite"


_ENTITY = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Z][A-Z0-9_]*$")]


@with_config(_STRICT)
@dataclass
class PatternConfig:
    """A custom recognizer: a regular expression that marks an entity type."""

    #: Entity type reported for a match (upper case, e.g. ``EMPLOYEE_ID``).
    entity: _ENTITY
    #: Python regular expression; matched case-sensitively unless it says ``(?i)``.
    regex: Annotated[str, Field(min_length=1)]
    #: Sensitivity of a match.
    level: Level = Level.PII
    #: Words that, near a match, raise its score (Presidio context enhancement).
    context: list[str] = field(default_factory=list)
    #: Score of a match, in (0, 1]; findings below ``privacy.min_score`` are ignored.
    score: Annotated[float, Field(gt=0, le=1)] = 0.85

    def __post_init__(self) -> None:
        import re

        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"regex is not a valid regular expression: {exc}") from None


@with_config(_STRICT)
@dataclass
class DenyListConfig:
    """Terms that are always sensitive (project code names, customer names...)."""

    entity: _ENTITY
    #: Matched as whole words, ignoring case.
    terms: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]
    level: Level = Level.INTERNAL


@with_config(_STRICT)
@dataclass
class PrivacyConfig:
    """The privacy guard: sensitivity detection before routing (``edgewise.privacy``)."""

    #: Scan every routed request; off, only declared labels count (not recommended).
    enabled: bool = True
    #: Findings scored below this are ignored (Presidio scores are in [0, 1]).
    min_score: Annotated[float, Field(ge=0, le=1)] = 0.5
    #: Sensitivity per entity type, overriding the built-in mapping
    #: (e.g. ``{LOCATION: internal, DATE_TIME: public}``).
    levels: dict[_ENTITY, Level] = field(default_factory=dict)
    #: Host-name suffixes of the organisation's private networks: names under them are
    #: ``INTERNAL_HOSTNAME`` findings.
    internal_domains: list[Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9.\-]+$")]] = (
        field(default_factory=lambda: ["internal", "corp", "local", "lan", "intranet",
                                       "home.arpa"]))
    #: Extra regular-expression recognizers.
    patterns: list[PatternConfig] = field(default_factory=list)
    #: Extra deny lists.
    deny_lists: list[DenyListConfig] = field(default_factory=list)
    #: Exact strings never reported (the organisation's own public name, say).
    allow_list: list[Annotated[str, Field(min_length=1)]] = field(default_factory=list)
    #: Also report every proper-noun run (spaCy's tagger) as ``PROPER_NOUN`` (``pii``):
    #: names the NER model misses are then redacted too, and so are places and brands.
    proper_nouns: bool = False
    #: Run edgewise's name detector (``edgewise.privacy.names``: spaCy's NER fine-tuned
    #: on names of many cultures) beside the small model's NER; a name either finds is
    #: a ``PERSON``.
    names_model: bool = True
    #: A name on the public-figures list (``privacy/data/public_figures.txt``: "Karl
    #: Marx", "Marie Curie") is ``public`` in a request where nothing else identifies
    #: anyone and there is no health information.
    public_figures: bool = True


@with_config(_STRICT)
@dataclass
class AuditConfig:
    """The hash-chained, append-only audit log of routing decisions (SQLite)."""

    enabled: bool = True
    path: str = ".edgewise/audit.sqlite"
    #: Environment variable holding a secret HMAC key: with it, a record cannot be
    #: forged or the chain recomputed by someone who can write the file but lacks the key.
    key_env: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None


@with_config(_STRICT)
@dataclass
class ApiKeyConfig:
    """A client API key, known by its sha256 (the key itself is never stored)."""

    #: The requester identity recorded in the audit log.
    name: _NAME
    #: Hex sha256 of the key: ``printf %s "$KEY" | sha256sum``.
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    #: Sensitivity declared for every request made with this key (the detector may
    #: raise it, never lower it).
    sensitivity: Level | None = None


@with_config(_STRICT)
@dataclass
class AuthConfig:
    """Client API keys. With none configured, the node accepts requests without one."""

    keys: list[ApiKeyConfig] = field(default_factory=list)
    #: On a joined node: accept the control plane's short-lived access tokens
    #: (``Authorization: Bearer <jwt>``, verified offline with its public key; ``/v1``
    #: needs the ``infer`` scope).
    access_tokens: bool = True
    #: ``/metrics`` needs an access token with the ``metrics`` scope (a joined node).
    metrics_scope: bool = False
    #: ``/v1`` needs a credential (an API key, an access token or a fleet certificate)
    #: even without ``keys``; requests without one get 401.
    required: bool = False


@with_config(_STRICT)
@dataclass
class UpdateConfig:
    """Signed model updates: which registry model and alias this node follows."""

    #: The registry name to follow (``edgewise control publish --name``); ``None``: the
    #: node serves its configured model and takes no updates.
    model: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")] | None = None
    #: The alias whose version the node serves (``stable``, ``canary``...).
    alias: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")] = "stable"
    #: Seconds between update checks (``None``: after every heartbeat).
    interval_s: Annotated[float, Field(gt=0, le=86400)] | None = None
    #: Installed versions kept on disk (the current one and the one before it).
    keep: Annotated[int, Field(ge=1, le=100)] = 2
    #: This node's hardware profile (a name from the builds' recipes, e.g. ``pi5-2gb``):
    #: a release none of whose variants fits it is refused as wrong software before a
    #: byte of it is downloaded. ``None``: take any release.
    profile: Annotated[str, Field(min_length=1, max_length=64)] | None = None


@with_config(_STRICT)
@dataclass
class FleetConfig:
    """Membership of a fleet: where ``edgewise join`` left this node's identity."""

    #: The node's fleet state (key, certificate, CA, deny list, last good central
    #: config). Without ``fleet.json`` in it the node never joined and runs alone.
    state_dir: str = ".edgewise/fleet"
    #: Seconds between two heartbeats to the control plane (``None``: what the control
    #: plane said at join).
    heartbeat_s: Annotated[float, Field(gt=0, le=3600)] | None = None
    update: UpdateConfig = field(default_factory=UpdateConfig)


@with_config(_STRICT)
@dataclass
class EmbeddingsConfig:
    """``POST /v1/embeddings``, served on this node from a local embedding model."""

    #: The embedding model (``all-minilm-l6-v2``: the offline MiniLM package of the
    #: ``router`` extra, 384 dimensions); ``null``: the route answers 404.
    model: Literal["all-minilm-l6-v2"] | None = "all-minilm-l6-v2"
    #: Most inputs in one request (OpenAI allows 2048).
    max_inputs: Annotated[int, Field(ge=1, le=2048)] = 2048
    #: Word pieces embedded per input (the model was trained on 256; longer inputs are
    #: truncated, and ``usage`` counts what was embedded).
    max_tokens: Annotated[int, Field(ge=8, le=512)] = 256
    #: CPU threads of the embedding model (torch's, shared with a learned router).
    threads: Annotated[int, Field(ge=1, le=256)] | None = 1


@with_config(_STRICT)
@dataclass
class EdgewiseConfig:
    """The whole node configuration."""

    node: NodeConfig = field(default_factory=NodeConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    #: The escalation ladder, lowest first. Empty: one tier (``node.tier``) serving the
    #: ``engine`` section locally, with clearance ``phi``.
    tiers: list[TierConfig] = field(default_factory=list)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    embeddings: EmbeddingsConfig = field(default_factory=EmbeddingsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique; repeated: {', '.join(dupes)}")
        local = [(t.name, e) for t in self.tiers for e in t.endpoints if e.engine]
        if len(local) > 1:
            raise ValueError("at most one local engine endpoint per node (one model in memory)")
        if self.tiers and not local:
            raise ValueError("one tier must have a local endpoint ({engine: llamacpp, "
                             "model: ...}): a node always serves its own tier")

    def ladder(self) -> list[TierConfig]:
        """The tiers, with the implicit single local tier when none are configured."""
        if self.tiers:
            return list(self.tiers)
        return [TierConfig(name=self.node.tier, clearance=Level.PHI,
                           endpoints=[EndpointConfig(engine=self.engine.kind,
                                                     model=self.engine.model)])]

    def local_endpoint(self) -> tuple[str, EndpointConfig] | None:
        """The tier and endpoint served by this node's own engine, if any."""
        for tier in self.ladder():
            for ep in tier.endpoints:
                if ep.engine is not None:
                    return tier.name, ep
        return None

    def replace(self, **sections: Any) -> EdgewiseConfig:
        """A copy with some fields of some sections replaced, re-validated.

        ``cfg.replace(node={"port": 9000})`` — used for CLI flag overrides.
        """
        data = dataclasses.asdict(self)
        for section, values in sections.items():
            if values:
                data[section].update(values)
        return parse_config(data, source="command-line flags")


def _default_node_name() -> str:
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in socket.gethostname())
    return name[:128] or "edgewise"


_ADAPTER: TypeAdapter[EdgewiseConfig] = TypeAdapter(EdgewiseConfig)


def _format_error(err: Any) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "(top level)"
    kind = err["type"]
    if kind == "value_error":
        return f"{path}: {str(err['msg']).removeprefix('Value error, ')}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        parent = err["loc"][:-1]
        allowed = allowed_keys(EdgewiseConfig, parent)
        return f"{path}: unknown key; allowed keys here: {', '.join(allowed)}"
    msg = err["msg"]
    got = err.get("input")
    return f"{path}: {msg} (got {got!r})"


def allowed_keys(root: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the dataclass at ``loc`` below ``root`` (walking lists and
    optionals): what an "unknown key" error lists. Shared with the supply recipe."""
    tp: Any = root
    for part in loc:
        tp = _dataclass_in(tp)
        if isinstance(part, int) or tp is None:
            continue
        hints = typing.get_type_hints(tp, include_extras=True)
        if str(part) not in hints:
            return []
        tp = hints[str(part)]
    tp = _dataclass_in(tp)
    return [f.name for f in dataclasses.fields(tp)] if tp is not None else []


def validation_messages(exc: pydantic.ValidationError, root: Any, prefix: str = "") -> list[str]:
    """One line per pydantic error: the key path, what is wrong, what is allowed.

    ``root`` is the dataclass that was validated (for the "allowed keys here" list),
    ``prefix`` the key path above it. Shared by the supply recipe and hardware profiles.
    """
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        path = ".".join([prefix] * bool(prefix) + [str(p) for p in loc]) or "(top level)"
        kind = err["type"]
        if kind == "value_error":
            lines.append(f"{path}: {str(err['msg']).removeprefix('Value error, ')}")
        elif kind in ("extra_forbidden", "unexpected_keyword_argument"):
            allowed = allowed_keys(root, loc[:-1])
            lines.append(f"{path}: unknown key; allowed keys here: {', '.join(allowed)}")
        elif kind == "missing" or kind == "missing_argument":
            lines.append(f"{path}: required key is missing")
        else:
            lines.append(f"{path}: {err['msg']} (got {err.get('input')!r})")
    return lines


def _dataclass_in(tp: Any) -> Any:
    """The dataclass inside ``Annotated[list[X] | None, ...]``-style hints, or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None


def parse_config(data: Any, *, source: str = "config") -> EdgewiseConfig:
    """Validate a mapping (parsed YAML) into an :class:`EdgewiseConfig`.

    Raises:
        ConfigError: naming every offending key path and what is allowed.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections "
                          "(node, engine, serving, sampling, tiers, routing, privacy, "
                          "audit, auth, fleet), "
                          f"got {type(data).__name__}")
    try:
        return _ADAPTER.validate_python(data)
    except pydantic.ValidationError as exc:
        lines = [_format_error(e) for e in exc.errors()]
        raise ConfigError(f"{source}: invalid configuration\n  " + "\n  ".join(lines)) from exc


def load_config(path: str | Path | None) -> EdgewiseConfig:
    """Load a YAML config file (``None``: all defaults)."""
    if path is None:
        return parse_config({})
    p = Path(path)
    _, data = read_yaml(p, ConfigError, "config file")
    return parse_config(data, source=str(p))


def read_yaml(p: Path, error: type[Exception], what: str) -> tuple[str, Any]:
    """The text of a YAML file and what it parses to; ``error`` with one clear line
    (missing, unreadable, not YAML) otherwise. Shared with the supply recipe."""
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise error(f"{what} {p} does not exist") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{what} {p} cannot be read: {exc}") from exc
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{p}: not valid YAML: {exc}") from exc

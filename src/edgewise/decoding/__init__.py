"""Speculative decoding: drafters propose tokens, the target verifies them in one pass.

- :mod:`~edgewise.decoding.drafters` — the drafter interface and registry
  (``prompt_lookup``), and :mod:`~edgewise.decoding.model_drafter` (``model``: a small
  model with the target's tokenizer);
- :mod:`~edgewise.decoding.verify` — the acceptance rules (greedy; speculative
  sampling) over logits rows;
- :mod:`~edgewise.decoding.policy` — when to speculate and how far (measured acceptance
  and costs; off below break-even).

The llama.cpp engine's batch scheduler runs the verify passes
(:mod:`edgewise.engines.batching`).
"""

from edgewise.decoding.drafters import (
    Draft,
    Drafter,
    NoDraft,
    PromptLookup,
    drafter_names,
    make_drafter,
    register_drafter,
)
from edgewise.decoding.model_drafter import DraftModel, DraftSequence
from edgewise.decoding.policy import CostModel, Speculation, SpeculativeOptions
from edgewise.decoding.verify import ChainParams, accept_greedy, accept_sampled, chain_probs

__all__ = ["ChainParams", "CostModel", "Draft", "DraftModel", "DraftSequence", "Drafter",
           "NoDraft", "PromptLookup", "Speculation",
           "SpeculativeOptions", "accept_greedy", "accept_sampled", "chain_probs",
           "drafter_names", "make_drafter", "register_drafter"]

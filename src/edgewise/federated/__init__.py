"""Federated fine-tuning: LoRA adapters trained on each node's private data and
aggregated, with differential privacy and its accountant.

The algorithms live in plain modules (:mod:`.lora` — LoRA-aware aggregation,
:mod:`.privacy` — clipping, distributed noise, the ε accountant) that Flower's server and
client apps call.
"""

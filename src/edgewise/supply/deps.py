"""The one place that checks the supply chain's optional dependencies.

``import edgewise`` (and the node) never imports torch: the supply chain's heavy
libraries live in the ``supply`` extra and are imported inside the functions that use
them. Before such a function starts, it calls :func:`require`, which looks the modules up
with ``find_spec`` (nothing is imported) and, if any is missing, raises
:class:`~edgewise.errors.MissingDependencyError` naming the extra and the commands.
"""

from __future__ import annotations

import importlib.util

from edgewise.errors import MissingDependencyError

__all__ = ["INSTALL_HINT", "SUPPLY_EXTRA", "TORCH_PIN", "require"]

SUPPLY_EXTRA = "supply"
#: The CPU build of torch; an unpinned torch pulls a multi-GB CUDA build.
TORCH_PIN = "torch==2.13.0"
INSTALL_HINT = (f"pip install {TORCH_PIN} && pip install -e '.[{SUPPLY_EXTRA}]' "
                "(torch first, pinned; `make test` does both)")

#: import name -> distribution, for the message.
_DISTRIBUTIONS = {
    "torch": TORCH_PIN,
    "transformers": "transformers",
    "peft": "peft",
    "safetensors": "safetensors",
    "gguf": "gguf",
    "onnx": "onnx",
    "onnxscript": "onnxscript",
    "onnxruntime": "onnxruntime",
    "tokenizers": "tokenizers",
}


def require(*modules: str, feature: str) -> None:
    """Raise :class:`MissingDependencyError` unless every module can be imported.

    ``feature`` says what needs them (``"the finetune stage"``).
    """
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is None:
            missing.append(_DISTRIBUTIONS.get(name, name))
    if missing:
        raise MissingDependencyError(
            f"{feature} needs {', '.join(missing)}, from edgewise's `{SUPPLY_EXTRA}` extra: "
            f"run `{INSTALL_HINT}`")

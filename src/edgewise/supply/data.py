"""Reading local datasets: chat / completion JSONL and plain text, with exact errors.

A line that does not parse is reported with the file, the line number and what was
expected (``data/train.jsonl:17: "messages" must end with an assistant message``);
the content itself is never quoted (datasets may be sensitive).

Chat examples are rendered as text for a model without a chat template exactly as the
node's llama.cpp engine renders a chat request for such a model
(``LlamaCppEngine.chat_prompt``: ``"role: content\\n"`` per message, then
``"assistant:"``), so a model fine-tuned here answers the node's ``/v1/chat/completions``
in the format it was trained on. A test checks the two renderings agree.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgewise.errors import DatasetError
from edgewise.models import file_sha256

__all__ = [
    "Example",
    "file_digest",
    "jsonl_lines",
    "load_examples",
    "load_texts",
    "render_chat_prompt",
    "split_examples",
]


@dataclass(frozen=True)
class Example:
    """A prompt and the completion the model should produce (the training target)."""

    prompt: str
    completion: str


def render_chat_prompt(messages: Sequence[dict[str, str]]) -> str:
    """The transcript a base model (no chat template) sees; ends with ``assistant:``."""
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"


def file_digest(path: str | Path) -> str:
    return file_sha256(Path(path))


def jsonl_lines(path: Path) -> list[tuple[int, Any]]:
    """``(line number, parsed JSON)`` of every non-blank line of a JSONL file; raises
    :class:`DatasetError` naming the file (and line) when it cannot be read or parsed."""
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetError(f"dataset {path} does not exist") from exc
    except UnicodeDecodeError as exc:
        bad_line = raw_line_of(path, exc.start)
        raise DatasetError(f"{path}:{bad_line}: not valid UTF-8 (byte {exc.start})") from exc
    except OSError as exc:
        raise DatasetError(f"dataset {path} cannot be read: {exc}") from exc
    out = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{n}: not valid JSON ({exc.msg} at column "
                               f"{exc.colno}); each line must be one JSON object") from exc
    if not out:
        raise DatasetError(f"dataset {path} has no examples")
    return out


def raw_line_of(path: Path, offset: int) -> int:
    """1-based line number of a byte offset (for encoding errors)."""
    with path.open("rb") as f:
        return f.read(offset).count(b"\n") + 1


def _chat(path: Path, n: int, obj: Any) -> Example:
    where = f"{path}:{n}"
    msgs = obj.get("messages") if isinstance(obj, dict) else None
    if not isinstance(msgs, list) or not msgs:
        raise DatasetError(f'{where}: expected {{"messages": [{{"role": ..., "content": ...}}, '
                           '...]}} (format: chat)')
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str)
                and isinstance(m.get("content"), str)):
            raise DatasetError(f'{where}: messages[{i}] must be {{"role": str, '
                               '"content": str}}')
        if m["role"] not in ("system", "user", "assistant", "developer"):
            raise DatasetError(f"{where}: messages[{i}].role must be system, developer, user "
                               "or assistant")
    if msgs[-1]["role"] != "assistant" or len(msgs) < 2:
        raise DatasetError(f'{where}: "messages" must end with an assistant message (the '
                           "answer to learn) after at least one other message")
    return Example(render_chat_prompt(msgs[:-1]), " " + msgs[-1]["content"])


def _completion(path: Path, n: int, obj: Any) -> Example:
    if not (isinstance(obj, dict) and isinstance(obj.get("prompt"), str)
            and isinstance(obj.get("completion"), str)):
        raise DatasetError(f'{path}:{n}: expected {{"prompt": str, "completion": str}} '
                           "(format: completion)")
    return Example(obj["prompt"], obj["completion"])


def load_examples(path: str | Path, fmt: str, *, limit: int | None = None) -> list[Example]:
    """Prompt/completion pairs from a ``chat`` or ``completion`` JSONL file.

    Raises:
        DatasetError: names the file and line of the first problem.
    """
    p = Path(path)
    if fmt not in ("chat", "completion"):
        raise DatasetError(f"dataset {p} has format {fmt!r}; this stage needs chat or "
                           "completion examples")
    parse = _chat if fmt == "chat" else _completion
    out = [parse(p, n, obj) for n, obj in jsonl_lines(p)]
    return out[:limit] if limit else out


def load_texts(path: str | Path, fmt: str) -> list[str]:
    """Texts for calibration, distillation or perplexity.

    ``text`` format: a ``.jsonl`` file of ``{"text": str}`` lines, any other file as one
    text. ``chat``/``completion`` files give prompt + completion of each example.
    """
    p = Path(path)
    if fmt != "text":
        return [e.prompt + e.completion for e in load_examples(p, fmt)]
    if p.suffix != ".jsonl":
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise DatasetError(f"dataset {p} does not exist") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise DatasetError(f"dataset {p} cannot be read as UTF-8 text: {exc}") from exc
        if not text.strip():
            raise DatasetError(f"dataset {p} is empty")
        return [text]
    out = []
    for n, obj in jsonl_lines(p):
        if not (isinstance(obj, dict) and isinstance(obj.get("text"), str)):
            raise DatasetError(f'{p}:{n}: expected {{"text": str}} (format: text)')
        out.append(obj["text"])
    return out


def split_examples(examples: Sequence[Example], validation: float, seed: int,
                   ) -> tuple[list[Example], list[Example]]:
    """A seeded shuffle, then the last ``validation`` fraction (at least 1) held out."""
    if len(examples) < 2:
        raise DatasetError("a train/validation split needs at least 2 examples")
    order = list(examples)
    random.Random(seed).shuffle(order)
    n_val = min(len(order) - 1, max(1, round(len(order) * validation)))
    return order[:-n_val], order[-n_val:]

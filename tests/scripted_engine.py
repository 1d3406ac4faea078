"""A fake engine that says what the test tells it to: the n-th generation emits the n-th
scripted reply (the last one repeats), so a test knows what the main answer and each
confidence sample say. ``None`` in the script makes that generation fail."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from edgewise.engines.base import SamplingParams, Step
from edgewise.engines.fake import EOS, FakeEngine
from edgewise.errors import EngineError


class ScriptedEngine(FakeEngine):
    def __init__(self, replies: Sequence[str | None], *, logprob: float = -0.1,
                 model: str = "scripted") -> None:
        super().__init__(model=model)
        self.replies = list(replies)
        self.logprob = logprob
        #: SamplingParams of every generation, in order.
        self.calls: list[SamplingParams] = []

    def steps(self, prompt: Sequence[int], params: SamplingParams,
              should_stop: Callable[[], bool]) -> Iterator[Step]:
        self._check(prompt)
        reply = self.replies[min(len(self.calls), len(self.replies) - 1)]
        self.calls.append(params)
        if reply is None:
            raise EngineError("scripted failure")
        tokens = self.tokenize(reply, add_bos=False)
        for t in tokens:
            # The chosen token first, then a runner-up at logprob - 2.9 (for `margin`).
            top = ((t, self.logprob), (EOS, self.logprob - 2.9))[:params.top_logprobs]
            yield Step(t, self.logprob, top)
        yield Step(EOS, 0.0, end_of_generation=True)

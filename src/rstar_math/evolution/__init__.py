"""Self-evolution: resumable tree generation, evaluation, rounds, Ray scale-out."""

from rstar_math.evolution.evaluate import EvalReport, evaluate
from rstar_math.evolution.generate import (
    ProblemRecord,
    completed_ids,
    generate_trees,
    read_problem_records,
)
from rstar_math.evolution.rounds import EvolutionConfig, EvolutionRunner, RoundConfig
from rstar_math.evolution.spec import SolverSpec

__all__ = [
    "EvalReport",
    "EvolutionConfig",
    "EvolutionRunner",
    "ProblemRecord",
    "RoundConfig",
    "SolverSpec",
    "completed_ids",
    "evaluate",
    "generate_trees",
    "read_problem_records",
]


def __getattr__(name: str) -> object:
    if name in ("RayTreeGenerator", "generate_trees_ray"):
        from rstar_math.evolution import distributed

        return getattr(distributed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

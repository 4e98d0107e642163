"""rstar_math: rStar-Math style test-time math reasoning.

Monte Carlo Tree Search over code-augmented chain-of-thought steps with pluggable Generator
(policy), Scorer (process preference model) and Executor (runs each step's Python), plus the
training side. Heavy backends live in subpackages and are imported lazily::

    from rstar_math import MCTSSolver, SearchConfig
    from rstar_math.generators import HFGenerator
"""

from rstar_math.format import ChatPromptTemplate, PromptTemplate
from rstar_math.interfaces import (
    Completion,
    ExecRequest,
    ExecResult,
    Executor,
    GenerationRequest,
    GenerationResult,
    Generator,
    Scorer,
    ScoreRequest,
)
from rstar_math.log import disable_progress_bars, enable_progress_bars, set_verbosity
from rstar_math.search import SearchConfig, SearchStats, select_answer
from rstar_math.solver import MCTSSolver, SolveResult
from rstar_math.tree import Node, StepKind, TerminalKind, Trajectory, Tree

__version__ = "0.1.0"

__all__ = [
    "ChatPromptTemplate",
    "Completion",
    "ExecRequest",
    "ExecResult",
    "Executor",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "MCTSSolver",
    "Node",
    "PromptTemplate",
    "ScoreRequest",
    "Scorer",
    "SearchConfig",
    "SearchStats",
    "SolveResult",
    "StepKind",
    "TerminalKind",
    "Trajectory",
    "Tree",
    "__version__",
    "disable_progress_bars",
    "enable_progress_bars",
    "select_answer",
    "set_verbosity",
]

"""Search algorithms over code-augmented CoT steps and the engine that batches them."""

from rstar_math.search.algorithms import MCTS, BeamSearch, BestOfN, make_search
from rstar_math.search.config import SearchConfig
from rstar_math.search.engine import ExpansionTask, SearchStats, TreeSearch, run_searches
from rstar_math.search.selection import AnswerGroup, group_answers, select_answer

__all__ = [
    "MCTS",
    "AnswerGroup",
    "BeamSearch",
    "BestOfN",
    "ExpansionTask",
    "SearchConfig",
    "SearchStats",
    "TreeSearch",
    "group_answers",
    "make_search",
    "run_searches",
    "select_answer",
]

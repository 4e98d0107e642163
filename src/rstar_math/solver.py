"""``MCTSSolver``: the public entry point that turns a policy into a math reasoner."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rstar_math.format import Prompter, PromptTemplate
from rstar_math.interfaces import Executor, Generator, Scorer
from rstar_math.log import progress_bar
from rstar_math.search.algorithms import make_search
from rstar_math.search.config import SearchConfig
from rstar_math.search.engine import SearchStats, TreeSearch, run_searches
from rstar_math.search.selection import select_answer
from rstar_math.tree import Trajectory, Tree

__all__ = ["MCTSSolver", "SolveResult"]

logger = logging.getLogger(__name__)

#: Counts that only exist for a whole batch (under ``stats["batch"]``), not per problem.
_BATCH_ONLY_STATS = frozenset({"generator_calls", "scorer_calls", "waves"})


@dataclass
class SolveResult:
    """The outcome of solving one problem.

    ``trajectories`` are every answered trajectory of every tree of the problem; ``trajectory``
    is the one behind ``answer``; ``correct`` is set when a reference answer was given.
    ``stats`` holds this problem's own counts (generation requests, tokens, executions, scored
    nodes) and, under ``"batch"``, the wall time per phase of the whole call it was part of.
    """

    question: str
    answer: str | None
    trajectory: Trajectory | None
    trajectories: list[Trajectory]
    tree: Tree
    trees: list[Tree]
    reference: str | None = None
    correct: bool | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __repr__(self) -> str:
        return (
            f"SolveResult(answer={self.answer!r}, correct={self.correct}, "
            f"trajectories={len(self.trajectories)}, nodes={len(self.tree)})"
        )


class MCTSSolver:
    """Search for solutions of math problems with a policy, an executor and an optional PPM.

    ``generator`` samples steps; ``executor`` runs each step's Python (a sandboxed executor is
    created when none is given and closed by :meth:`close`); ``scorer`` (a PPM) scores partial
    solutions. ``config.algorithm`` picks MCTS, beam search, best-of-N or greedy decoding.
    Use as a context manager to release the executor's workers (``owns_executor=True`` hands a
    given executor's lifetime to the solver too).
    """

    def __init__(
        self,
        generator: Generator,
        scorer: Scorer | None = None,
        executor: Executor | None = None,
        config: SearchConfig | None = None,
        prompt: Prompter | None = None,
        num_trees: int = 1,
        owns_executor: bool | None = None,
    ) -> None:
        if isinstance(generator, (str, os.PathLike)):
            raise TypeError(
                f"MCTSSolver takes a Generator, not a model path ({os.fspath(generator)!r}): wrap "
                "the model first, e.g. MCTSSolver(HFGenerator(path)) or "
                "MCTSSolver(VLLMGenerator(path)) (from rstar_math.generators)"
            )
        if not isinstance(generator, Generator):
            raise TypeError(
                "generator must implement generate(requests) -> list[GenerationResult] "
                f"(the Generator protocol); got {type(generator).__name__}"
            )
        if scorer is not None and not isinstance(scorer, Scorer):
            raise TypeError(
                f"scorer must implement score(requests) -> list[float]; got {type(scorer).__name__}"
            )
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(
                "executor must implement execute_batch(requests) and close(); "
                f"got {type(executor).__name__}"
            )
        if num_trees < 1:
            raise ValueError(f"num_trees must be >= 1, got {num_trees}")
        self.config = config if config is not None else SearchConfig()
        if self.config.algorithm == "beam" and scorer is None:
            raise ValueError("beam search ranks steps by a scorer: pass scorer=PPMScorer(...)")
        self.generator = generator
        self.scorer = scorer
        self._owns_executor = executor is None if owns_executor is None else owns_executor
        self._executor = executor
        self.prompt: Prompter = prompt if prompt is not None else PromptTemplate.sft()
        self.num_trees = num_trees

    @classmethod
    def default(cls, **overrides: Any) -> MCTSSolver:
        """The built-in miniature policy and PPM (synthetic word problems only; see README).

        ``overrides`` are the keyword arguments of
        :func:`rstar_math.models.builtin.default_solver` (``seed``, ``use_ppm``, ``executor``,
        ...) or single :class:`SearchConfig` fields (``num_rollouts=16``). Needs the ``hf``
        extra; raises FileNotFoundError when the package's model files are missing.
        """
        from rstar_math.models.builtin import default_solver

        return default_solver(**overrides)

    @property
    def executor(self) -> Executor:
        """The executor; the default sandbox is started on first use."""
        if self._executor is None:
            from rstar_math.executors import default_executor

            self._executor = default_executor()
        return self._executor

    def close(self) -> None:
        """Stop the executor's workers if this solver created them."""
        if self._owns_executor and self._executor is not None:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> MCTSSolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ solving

    def solve(self, question: str, reference: str | None = None) -> SolveResult:
        """Search one problem; with ``reference`` the search is terminal-guided and graded."""
        return self.solve_batch([question], None if reference is None else [reference])[0]

    def solve_batch(
        self,
        questions: Sequence[str],
        references: Sequence[str | None] | None = None,
        on_result: Any = None,
        progress: bool = False,
    ) -> list[SolveResult]:
        """Search many problems together: each wave of every tree shares one model call.

        ``on_result(index, result)`` is called as each problem finishes, so callers can stream
        results to disk. A problem whose search raises gets a result with ``error`` set; the
        others are unaffected. ``progress`` shows a progress bar of finished problems
        (:func:`rstar_math.log.disable_progress_bars` hides it whatever the flag says).
        """
        if isinstance(questions, str):
            raise TypeError(
                "solve_batch takes a list of questions, got one string; for one question use "
                "solve(question), or pass [question]"
            )
        if isinstance(references, str):
            raise TypeError("references must be a list with one reference per question, not a str")
        questions = list(questions)
        for i, q in enumerate(questions):
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"questions[{i}] must be a non-empty string, got {q!r}")
        if references is None:
            refs: list[str | None] = [None] * len(questions)
        else:
            refs = list(references)
            if len(refs) != len(questions):
                raise ValueError(
                    f"got {len(refs)} references for {len(questions)} questions; "
                    "pass one reference (or None) per question"
                )
        searches: list[TreeSearch] = []
        owner: list[int] = []
        for i, (question, reference) in enumerate(zip(questions, refs)):
            for t in range(self.num_trees):
                tree = Tree(question, None if reference is None else str(reference))
                tree.meta["tree_index"] = t
                tree.meta["algorithm"] = self.config.algorithm
                searches.append(make_search(tree, self.config, tree_index=t))
                owner.append(i)

        bar = progress_bar(total=len(questions), desc="problems", enabled=progress)
        solved = 0
        remaining = [self.num_trees] * len(questions)
        results: list[SolveResult | None] = [None] * len(questions)
        batch_stats: SearchStats | None = None

        def on_done(index: int, _search: TreeSearch) -> None:
            nonlocal solved
            problem = owner[index]
            remaining[problem] -= 1
            if remaining[problem] == 0:
                result = self._result(problem, questions[problem], refs[problem], searches, owner)
                results[problem] = result
                if refs[problem] is not None:
                    solved += bool(result.correct)
                    bar.set_postfix(correct=solved, refresh=False)
                bar.update(1)
                if on_result is not None:
                    on_result(problem, result)

        executor = self.executor
        try:
            batch_stats = run_searches(
                searches, self.generator, executor, self.scorer, self.prompt, self.config, on_done
            )
        finally:
            bar.close()
        batch = batch_stats.to_dict()
        out: list[SolveResult] = []
        for result in results:
            assert result is not None
            result.stats["batch"] = batch
            out.append(result)
        return out

    def _result(
        self,
        problem: int,
        question: str,
        reference: str | None,
        searches: Sequence[TreeSearch],
        owner: Sequence[int],
    ) -> SolveResult:
        own = [s for s, o in zip(searches, owner) if o == problem]
        trees = [s.tree for s in own]
        trajectories = [t for tree in trees for t in tree.trajectories()]
        answer, best = select_answer(
            trajectories, self.config.answer_selection, self.config.vote_top_k
        )
        correct: bool | None = None
        if reference is not None:
            from rstar_math.grading import is_equivalent

            correct = answer is not None and is_equivalent(answer, reference)
        stats: dict[str, Any] = {}
        for s in own:
            for key, value in s.stats.to_dict().items():
                if key.startswith("time_") or key in _BATCH_ONLY_STATS:
                    continue
                stats[key] = stats.get(key, 0) + value
        errors = [t.meta["error"] for t in trees if "error" in t.meta]
        tree = best.tree if best is not None else trees[0]
        return SolveResult(
            question=question,
            answer=answer,
            trajectory=best,
            trajectories=trajectories,
            tree=tree,
            trees=trees,
            reference=reference,
            correct=correct,
            stats=stats,
            error="; ".join(errors) if errors else None,
        )

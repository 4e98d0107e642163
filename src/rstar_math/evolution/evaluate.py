"""Evaluation: accuracy of a solver on a problem set, by best value, majority and weighted majority.

Per problem the trajectories of all its trees, in the order the search found them, are cut to the
first ``k`` for each requested ``k``; each selection rule picks an answer among them, graded against
the reference. Per-problem results (answers per rule and k, tokens, seconds) stream to a JSONL file
so a long evaluation can be resumed like tree generation.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rstar_math.data.loaders import Problem
from rstar_math.evolution.generate import _check_unique

__all__ = ["EvalReport", "evaluate"]

METHODS = ("best", "majority", "weighted_majority")


@dataclass
class EvalReport:
    """Accuracy per selection rule and k, with cost per problem."""

    problems: int
    accuracy: dict[str, dict[int, float]]
    tokens_per_problem: float
    seconds_per_problem: float
    results_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def table(self) -> str:
        ks = sorted({k for by_k in self.accuracy.values() for k in by_k})
        lines = ["| rule | " + " | ".join(f"@{k}" for k in ks) + " |"]
        lines.append("| --- |" + " ---: |" * len(ks))
        for method, by_k in self.accuracy.items():
            cells = " | ".join(f"{100 * by_k[k]:.1f}%" for k in ks)
            lines.append(f"| {method} | {cells} |")
        lines.append(
            f"\n{self.problems} problems, {self.tokens_per_problem:.0f} generated tokens and "
            f"{self.seconds_per_problem:.2f} s per problem"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "problems": self.problems,
            "accuracy": {m: {str(k): v for k, v in a.items()} for m, a in self.accuracy.items()},
            "tokens_per_problem": self.tokens_per_problem,
            "seconds_per_problem": self.seconds_per_problem,
            "results_path": self.results_path,
        }


def _trajectories_in_order(trees: Sequence[Any]) -> list[Any]:
    out = []
    for tree in trees:
        out.extend(sorted(tree.trajectories(), key=lambda t: t.last.id))
    return out


def evaluate(
    solver: Any,
    problems: Sequence[Problem],
    ks: Sequence[int] = (1, 4, 8, 16, 64),
    results_path: str | os.PathLike[str] | None = None,
    chunk_size: int = 32,
    show_progress: bool = True,
) -> EvalReport:
    """Solve every problem (without its reference: test time) and report accuracy."""
    from tqdm.auto import tqdm

    from rstar_math.grading import is_equivalent
    from rstar_math.search.selection import select_answer

    _check_unique(problems)
    if any(p.answer is None for p in problems):
        raise ValueError("evaluation needs a reference answer for every problem")
    ks = sorted({int(k) for k in ks if int(k) > 0})
    if not ks:
        raise ValueError("ks must hold at least one positive k")
    rows: dict[str, dict[str, Any]] = {}
    path = Path(results_path) if results_path else None
    if path is not None and path.exists():
        from rstar_math.evolution.generate import _complete_lines

        for line in _complete_lines(path):
            row = json.loads(line)
            rows[row["problem_id"]] = row
    todo = [p for p in problems if p.id not in rows]
    fh = None
    if path is not None:
        from rstar_math.evolution.generate import _cut_partial_line

        path.parent.mkdir(parents=True, exist_ok=True)
        _cut_partial_line(path)
        fh = path.open("a", encoding="utf-8")
    try:
        with tqdm(total=len(todo), desc="eval", disable=not show_progress) as bar:
            for start in range(0, len(todo), chunk_size):
                chunk = todo[start : start + chunk_size]
                started = time.perf_counter()

                def done(
                    index: int,
                    result: Any,
                    chunk: Sequence[Problem] = chunk,
                    started: float = started,
                ) -> None:
                    problem = chunk[index]
                    trajs = _trajectories_in_order(result.trees)
                    answers: dict[str, dict[str, Any]] = {}
                    for method in METHODS:
                        answers[method] = {}
                        for k in ks:
                            answer, _ = select_answer(trajs[:k], method)
                            answers[method][str(k)] = {
                                "answer": answer,
                                "correct": answer is not None
                                and is_equivalent(answer, str(problem.answer)),
                            }
                    row = {
                        "problem_id": problem.id,
                        "question": problem.question,
                        "reference": problem.answer,
                        "answer": result.answer,
                        "correct": result.answer is not None
                        and is_equivalent(result.answer, str(problem.answer)),
                        "trajectories": len(trajs),
                        "answers": answers,
                        "tokens": result.stats.get("generated_tokens", 0),
                        "seconds": time.perf_counter() - started,
                        "error": result.error,
                    }
                    rows[problem.id] = row
                    if fh is not None:
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                        fh.flush()
                    bar.update(1)

                solver.solve_batch([p.question for p in chunk], None, on_result=done)
    finally:
        if fh is not None:
            fh.close()

    selected = [rows[p.id] for p in problems]
    n = max(len(selected), 1)
    accuracy = {
        m: {k: sum(r["answers"][m][str(k)]["correct"] for r in selected) / n for k in ks}
        for m in METHODS
    }
    return EvalReport(
        problems=len(selected),
        accuracy=accuracy,
        tokens_per_problem=sum(r["tokens"] for r in selected) / n,
        seconds_per_problem=sum(r["seconds"] for r in selected) / n,
        results_path=str(path) if path else None,
    )

"""Resumable tree generation: problems in, one JSONL line per finished problem out.

Each line is a *problem record*: the problem id, question, reference, the selected answer, whether
it is correct, the search's stats and every tree of the problem. A line is written (and flushed)
the moment its problem finishes, so killing the process loses at most the problems in flight; a
crash mid-write leaves a partial last line, which the next run cuts off before appending. On
restart the ids already in the file are skipped, so no finished problem is redone and none is
written twice.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rstar_math.data.loaders import Problem
from rstar_math.tree import Tree

__all__ = [
    "ProblemRecord",
    "completed_ids",
    "generate_trees",
    "read_problem_records",
    "solve_chunked",
]

logger = logging.getLogger(__name__)


@dataclass
class ProblemRecord:
    """One finished problem as stored in ``trees.jsonl``."""

    problem_id: str
    question: str
    reference: str | None
    answer: str | None
    correct: bool | None
    trees: list[Tree]
    stats: dict[str, Any]
    seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "problem_id": self.problem_id,
            "question": self.question,
            "reference": self.reference,
            "answer": self.answer,
            "correct": self.correct,
            "stats": self.stats,
            "seconds": self.seconds,
            "error": self.error,
            "trees": [t.to_dict() for t in self.trees],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProblemRecord:
        return cls(
            problem_id=str(data["problem_id"]),
            question=data["question"],
            reference=data.get("reference"),
            answer=data.get("answer"),
            correct=data.get("correct"),
            trees=[Tree.from_dict(t) for t in data.get("trees", [])],
            stats=data.get("stats", {}),
            seconds=float(data.get("seconds", 0.0)),
            error=data.get("error"),
        )


def _complete_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.endswith("\n") and line.strip():
                yield line


def read_problem_records(path: str | os.PathLike[str]) -> Iterator[ProblemRecord]:
    """Stream the complete records of a ``trees.jsonl`` (a partial last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return
    for line in _complete_lines(path):
        yield ProblemRecord.from_dict(json.loads(line))


def completed_ids(path: str | os.PathLike[str]) -> set[str]:
    """Ids of the problems already written to ``path``."""
    path = Path(path)
    if not path.exists():
        return set()
    return {str(json.loads(line)["problem_id"]) for line in _complete_lines(path)}


def _cut_partial_line(path: Path) -> None:
    """Drop an incomplete trailing line left by a crash mid-write."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping an incomplete last record (%d bytes)", path, len(data) - keep)
        fh.truncate(keep)


class RecordWriter:
    """Appends whole lines and flushes (and fsyncs) each, so records survive a kill -9."""

    def __init__(self, path: str | os.PathLike[str], fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _cut_partial_line(self.path)
        self._fh = self.path.open("a", encoding="utf-8")
        self._fsync = fsync

    def write(self, record: ProblemRecord) -> None:
        self._fh.write(json.dumps(record.to_dict(), ensure_ascii=False) + "\n")
        self._fh.flush()
        if self._fsync:
            os.fsync(self._fh.fileno())

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.flush()
            self._fh.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def solve_chunked(
    solver: Any,
    problems: Sequence[Problem],
    on_record: Callable[[ProblemRecord], None],
    chunk_size: int = 32,
    use_reference: bool = True,
    progress: Any = None,
) -> None:
    """Solve ``problems`` in batches of ``chunk_size``; hand each finished problem to ``on_record``.

    One problem whose search fails is recorded with its error and the rest go on.
    """
    for start in range(0, len(problems), chunk_size):
        chunk = list(problems[start : start + chunk_size])
        refs = [p.answer if use_reference else None for p in chunk]
        started = time.perf_counter()

        def done(
            index: int, result: Any, chunk: list[Problem] = chunk, started: float = started
        ) -> None:
            problem = chunk[index]
            record = ProblemRecord(
                problem_id=problem.id,
                question=problem.question,
                reference=problem.answer,
                answer=result.answer,
                correct=_grade(result.answer, problem.answer),
                trees=result.trees,
                stats=result.stats,
                seconds=time.perf_counter() - started,
                error=result.error,
            )
            for tree in record.trees:
                tree.meta["problem_id"] = problem.id
            on_record(record)
            if progress is not None:
                progress.update(1)

        solver.solve_batch([p.question for p in chunk], refs, on_result=done)


def _grade(answer: str | None, reference: str | None) -> bool | None:
    if reference is None:
        return None
    if answer is None:
        return False
    from rstar_math.grading import is_equivalent

    return is_equivalent(answer, reference)


def generate_trees(
    solver: Any,
    problems: Sequence[Problem],
    out_path: str | os.PathLike[str],
    chunk_size: int = 32,
    use_reference: bool = True,
    show_progress: bool = True,
) -> int:
    """Search every problem not yet in ``out_path``, appending one record per problem.

    Returns how many problems were solved by this call. Safe to call again after any crash.
    """
    from tqdm.auto import tqdm

    _check_unique(problems)
    done = completed_ids(out_path)
    todo = [p for p in problems if p.id not in done]
    if done:
        logger.info("%s: %d problems already done, %d to go", out_path, len(done), len(todo))
    with (
        RecordWriter(out_path) as writer,
        tqdm(total=len(todo), desc="trees", disable=not show_progress) as bar,
    ):
        solve_chunked(solver, todo, writer.write, chunk_size, use_reference, progress=bar)
    return len(todo)


def _check_unique(problems: Sequence[Problem]) -> None:
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise ValueError(f"problem id {p.id!r} appears twice; ids must be unique to resume")
        seen.add(p.id)

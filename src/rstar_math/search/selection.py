"""Final-answer selection among terminal trajectories, from one tree or several.

Three rules, as in the paper's evaluation:

* ``best``: the answer of the trajectory with the highest terminal value (PPM score at test time);
* ``majority``: the answer most trajectories agree on (self-consistency);
* ``weighted_majority``: answers weighted by the trajectory value mapped to [0, 1].

Answers are grouped by mathematical equivalence (:func:`rstar_math.grading.is_equivalent`), not by
string, so ``\\frac{1}{2}`` and ``0.5`` vote together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rstar_math.tree import Trajectory

__all__ = ["AnswerGroup", "group_answers", "select_answer"]


@dataclass
class AnswerGroup:
    """Trajectories whose answers are equivalent."""

    answer: str
    trajectories: list[Trajectory]

    @property
    def count(self) -> int:
        return len(self.trajectories)

    @property
    def weight(self) -> float:
        return sum(_weight(t) for t in self.trajectories)

    @property
    def best_value(self) -> float:
        return max(_value(t) for t in self.trajectories)


def _value(t: Trajectory) -> float:
    v = t.value
    return -1.0 if v is None else float(v)


def _weight(t: Trajectory) -> float:
    v = t.value
    return 1.0 if v is None else (max(-1.0, min(1.0, float(v))) + 1.0) / 2.0


def group_answers(trajectories: Sequence[Trajectory]) -> list[AnswerGroup]:
    """Group answered trajectories by equivalent answers (first-seen order)."""
    from rstar_math.grading import is_equivalent, normalize_answer

    groups: list[AnswerGroup] = []
    by_key: dict[str, AnswerGroup] = {}
    for traj in trajectories:
        answer = traj.answer
        if answer is None:
            continue
        key = normalize_answer(answer)
        group = by_key.get(key)
        if group is None:
            for candidate in groups:
                if is_equivalent(answer, candidate.answer):
                    group = candidate
                    break
        if group is None:
            group = AnswerGroup(answer, [])
            groups.append(group)
        by_key[key] = group
        group.trajectories.append(traj)
    return groups


def select_answer(
    trajectories: Sequence[Trajectory], method: str = "best", top_k: int = 0
) -> tuple[str | None, Trajectory | None]:
    """Pick the final answer and the trajectory that represents it.

    ``trajectories`` may come from several trees. ``top_k > 0`` first keeps the k trajectories with
    the highest value (the paper's vote over top-K). Returns ``(None, None)`` when no trajectory
    has an answer.
    """
    answered = [t for t in trajectories if t.answer is not None]
    if not answered:
        return None, None
    ranked = sorted(answered, key=lambda t: (_value(t), t.mean_q), reverse=True)
    if method == "best":
        best = ranked[0]
        return best.answer, best
    if top_k > 0:
        ranked = ranked[:top_k]
    groups = group_answers(ranked)
    if method == "majority":
        winner = max(groups, key=lambda g: (g.count, g.best_value))
    elif method == "weighted_majority":
        winner = max(groups, key=lambda g: (g.weight, g.count, g.best_value))
    else:
        raise ValueError(
            f"answer selection method must be 'best', 'majority' or 'weighted_majority', "
            f"got {method!r}"
        )
    representative = max(winner.trajectories, key=lambda t: (_value(t), t.mean_q))
    return representative.answer, representative

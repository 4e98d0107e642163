"""Turning search trees into training data: PPM preference pairs and policy SFT records.

The rules are the paper's (rStar-Math, section 3.3; see ``DESIGN.md``):

**Step-level pairs** (:func:`extract_pairs`). At every node, its usable children are split by what
their subtrees reached:

* *correct-reaching*: the subtree holds an answer terminal graded correct;
* *only-wrong*: the subtree holds at least one terminal and none of them is correct (a wrong
  answer, no boxed answer, depth limit, repeated code errors: every terminal kind other than a
  correct answer counts as not correct).

Children never used: ``INVALID`` steps; children whose subtree holds no terminal, or only
ungraded answers (unknown outcome). Positives are the top ``num_pos`` correct-reaching children
by Q that executed without error (``exec_ok``); negatives the bottom ``num_neg`` only-wrong
children by Q (failed steps are welcome there). Ties are broken by node id. Answer steps are left
to the answer-level rule unless ``include_answer_steps=True``.

**Answer-level pairs.** Whole trajectories ending in an answer step, sharing only the question:
the top ``num_pos`` correct ones (graded correct, every step executed) by average Q against the
bottom ``num_neg`` wrong ones (graded wrong, or no boxed answer) by average Q; one record per
tree.

**Margin.** After selection every positive must beat every negative by more than ``min_margin``
in Q (average Q for the answer level): positives not above the lowest negative's Q + margin are
dropped, then negatives not below the lowest remaining positive's Q - margin. A node left without
a positive or a negative gives no record.

**SFT selection** (:func:`select_sft`): the top-k correct trajectories by average Q, ties broken by
the higher minimum Q (then by node id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rstar_math.format import step_chunks
from rstar_math.tree import Node, StepKind, TerminalKind, Tree

from .records import PreferencePair, SFTRecord

__all__ = ["extract_pairs", "select_sft", "subtree_outcomes"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the terminals below a node (the node included) reached."""

    correct: int = 0  # answer terminals graded correct
    wrong: int = 0  # every other graded or non-answer terminal
    unknown: int = 0  # answer terminals without a grade

    @property
    def reaches_correct(self) -> bool:
        return self.correct > 0

    @property
    def only_wrong(self) -> bool:
        return self.correct == 0 and self.wrong > 0


def _terminal_outcome(node: Node) -> str | None:
    if node.terminal is None:
        return None
    if node.terminal is TerminalKind.ANSWER:
        if node.grade is True:
            return "correct"
        if node.grade is None:
            return "unknown"
        return "wrong"
    return "wrong"


def subtree_outcomes(tree: Tree) -> list[Outcome]:
    """Per node id, how many correct / wrong / ungraded terminals its subtree holds."""
    n = len(tree.nodes)
    correct = [0] * n
    wrong = [0] * n
    unknown = [0] * n
    # children always have larger ids than their parents (Tree.add_child), but do not rely on it:
    order = _postorder(tree)
    for node in order:
        kind = _terminal_outcome(node)
        i = node.id
        if kind == "correct":
            correct[i] += 1
        elif kind == "wrong":
            wrong[i] += 1
        elif kind == "unknown":
            unknown[i] += 1
        for c in node.children:
            correct[i] += correct[c]
            wrong[i] += wrong[c]
            unknown[i] += unknown[c]
    return [Outcome(correct[i], wrong[i], unknown[i]) for i in range(n)]


def _postorder(tree: Tree) -> list[Node]:
    out: list[Node] = []
    stack: list[tuple[Node, bool]] = [(tree.root, False)]
    seen: set[int] = set()
    while stack:
        node, done = stack.pop()
        if done:
            out.append(node)
            continue
        if node.id in seen:
            raise ValueError(f"tree has a cycle or a shared child at node {node.id}")
        seen.add(node.id)
        stack.append((node, True))
        stack.extend((tree.nodes[c], False) for c in node.children)
    return out


def _apply_margin(
    pos: list[tuple[float, Any]], neg: list[tuple[float, Any]], margin: float
) -> tuple[list[tuple[float, Any]], list[tuple[float, Any]]]:
    """Keep only combinations where every positive beats every negative by more than ``margin``."""
    if not pos or not neg:
        return [], []
    lowest_neg = min(q for q, _ in neg)
    pos = [p for p in pos if p[0] > lowest_neg + margin]
    if not pos:
        return [], []
    lowest_pos = min(q for q, _ in pos)
    neg = [n for n in neg if n[0] < lowest_pos - margin]
    return pos, neg


def extract_pairs(
    tree: Tree,
    num_pos: int = 2,
    num_neg: int = 2,
    min_margin: float = 0.0,
    *,
    step_pairs: bool = True,
    answer_pairs: bool = True,
    include_answer_steps: bool = False,
    max_output_chars: int = 1024,
) -> list[PreferencePair]:
    """PPM preference pairs of one tree by the paper's rules (see the module docstring).

    Returns node-level :class:`PreferencePair` records: step-level ones in node-id order, then
    the tree's answer-level record (if any). ``meta`` holds ``node_id``, ``depth``, the selected
    Q values (``pos_q``/``neg_q``, average Q for answer pairs) and the ids of the selected nodes
    (``pos_ids``/``neg_ids``; terminal node ids for answer pairs).
    """
    if num_pos < 1 or num_neg < 1:
        raise ValueError(f"num_pos and num_neg must be >= 1, got {num_pos}, {num_neg}")
    if min_margin < 0:
        raise ValueError(f"min_margin must be >= 0, got {min_margin}")
    out: list[PreferencePair] = []
    if step_pairs:
        out.extend(
            _step_pairs(tree, num_pos, num_neg, min_margin, include_answer_steps, max_output_chars)
        )
    if answer_pairs:
        pair = _answer_pair(tree, num_pos, num_neg, min_margin, max_output_chars)
        if pair is not None:
            out.append(pair)
    return out


def _step_pairs(
    tree: Tree,
    num_pos: int,
    num_neg: int,
    margin: float,
    include_answer_steps: bool,
    max_output_chars: int,
) -> list[PreferencePair]:
    outcomes = subtree_outcomes(tree)
    out: list[PreferencePair] = []
    for node in tree.nodes:
        if not node.children:
            continue
        pos_cands: list[Node] = []
        neg_cands: list[Node] = []
        for child in tree.children(node):
            if child.kind in (StepKind.INVALID, StepKind.ROOT):
                continue
            if child.kind is StepKind.ANSWER and not include_answer_steps:
                continue
            outcome = outcomes[child.id]
            if outcome.reaches_correct:
                if child.exec_ok:
                    pos_cands.append(child)
            elif outcome.only_wrong:
                neg_cands.append(child)
        if not pos_cands or not neg_cands:
            continue
        pos_sel = sorted(pos_cands, key=lambda c: (-c.q, c.id))[:num_pos]
        neg_sel = sorted(neg_cands, key=lambda c: (c.q, c.id))[:num_neg]
        pos, neg = _apply_margin([(c.q, c) for c in pos_sel], [(c.q, c) for c in neg_sel], margin)
        if not pos or not neg:
            continue
        prefix_path = tree.path(node)
        prefix = step_chunks(prefix_path, max_output_chars)

        def chunk(child: Node, prefix_path: list[Node] = prefix_path) -> str:
            return step_chunks([*prefix_path, child], max_output_chars)[-1]

        out.append(
            PreferencePair(
                question=tree.question,
                prefix_steps=prefix,
                pos=[chunk(c) for _, c in pos],
                neg=[chunk(c) for _, c in neg],
                level="step",
                meta={
                    "node_id": node.id,
                    "depth": node.depth,
                    "pos_ids": [c.id for _, c in pos],
                    "neg_ids": [c.id for _, c in neg],
                    "pos_q": [q for q, _ in pos],
                    "neg_q": [q for q, _ in neg],
                    **_tree_meta(tree),
                },
            )
        )
    return out


def _answer_pair(
    tree: Tree, num_pos: int, num_neg: int, margin: float, max_output_chars: int
) -> PreferencePair | None:
    correct: list[tuple[float, float, Node, list[Node]]] = []
    wrong: list[tuple[float, float, Node, list[Node]]] = []
    for node in tree.nodes:
        if node.terminal is None or node.kind is not StepKind.ANSWER:
            continue
        outcome = _terminal_outcome(node)
        if outcome == "unknown":
            continue
        path = tree.path(node)
        if any(n.kind is StepKind.INVALID for n in path):
            continue
        traj = tree.trajectory(node)
        entry = (traj.mean_q, traj.min_q, node, path)
        if outcome == "correct":
            if all(n.exec_ok for n in path):
                correct.append(entry)
        else:
            wrong.append(entry)
    if not correct or not wrong:
        return None
    pos_sel = sorted(correct, key=lambda e: (-e[0], -e[1], e[2].id))[:num_pos]
    neg_sel = sorted(wrong, key=lambda e: (e[0], e[1], e[2].id))[:num_neg]
    pos, neg = _apply_margin([(e[0], e) for e in pos_sel], [(e[0], e) for e in neg_sel], margin)
    if not pos or not neg:
        return None

    def text(entry: tuple[float, float, Node, list[Node]]) -> str:
        return "".join(step_chunks(entry[3], max_output_chars))

    return PreferencePair(
        question=tree.question,
        prefix_steps=[],
        pos=[text(e) for _, e in pos],
        neg=[text(e) for _, e in neg],
        level="answer",
        meta={
            "node_id": 0,
            "depth": 0,
            "pos_ids": [e[2].id for _, e in pos],
            "neg_ids": [e[2].id for _, e in neg],
            "pos_q": [q for q, _ in pos],
            "neg_q": [q for q, _ in neg],
            **_tree_meta(tree),
        },
    )


def _tree_meta(tree: Tree) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for key in ("id", "problem_id", "index", "source"):
        if key in tree.meta:
            meta[f"tree_{key}"] = tree.meta[key]
    return meta


def select_sft(
    tree: Tree,
    k: int = 2,
    *,
    require_exec_ok: bool = True,
    max_output_chars: int = 1024,
    key: Callable[[Sequence[Node]], Any] | None = None,
) -> list[SFTRecord]:
    """The top-``k`` correct trajectories of ``tree`` as SFT records.

    Correct: the trajectory ends in an answer terminal graded correct (``grade is True``). Ranked
    by average Q, ties by the higher minimum Q, then by the lower terminal node id. With
    ``require_exec_ok`` (default) trajectories holding a step whose code failed are skipped: the
    policy should not learn to write failing code. ``response`` is ``"".join(step_chunks(path))``.
    ``key`` overrides the ranking (larger is better) for experiments.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cands: list[tuple[Any, Node, list[Node]]] = []
    for node in tree.nodes:
        if node.terminal is not TerminalKind.ANSWER or node.grade is not True:
            continue
        path = tree.path(node)
        if any(n.kind is StepKind.INVALID for n in path):
            continue
        if require_exec_ok and not all(n.exec_ok for n in path):
            continue
        if key is not None:
            rank: Any = key(path)
        else:
            qs = [n.q for n in path]
            rank = (sum(qs) / len(qs), min(qs)) if qs else (0.0, 0.0)
        cands.append((rank, node, path))
    cands.sort(key=lambda e: e[1].id)  # stable secondary order: lower id first on ties
    cands.sort(key=lambda e: e[0], reverse=True)
    out: list[SFTRecord] = []
    for _rank, node, path in cands[:k]:
        qs = [n.q for n in path]
        meta = {
            "node_id": node.id,
            "mean_q": sum(qs) / len(qs) if qs else 0.0,
            "min_q": min(qs) if qs else 0.0,
            "answer": node.answer,
            "reference": tree.reference,
            **_tree_meta(tree),
        }
        out.append(SFTRecord(tree.question, "".join(step_chunks(path, max_output_chars)), meta))
    return out

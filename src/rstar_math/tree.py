"""Search trees: :class:`Node`, :class:`Tree`, :class:`Trajectory` and the terminal kinds.

A tree is the whole record of one problem's search: every step the policy wrote, what its code
printed or how it failed, visit counts, Q values, PPM values, and how each leaf ended. It is the
training data of the self-evolution loop, so it round-trips through JSON losslessly.

Nodes live in a flat list indexed by id (the root is id 0); links are ids, never object
references, which keeps serialisation trivial and node bookkeeping cheap.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

__all__ = ["Node", "StepKind", "TerminalKind", "Trajectory", "Tree"]

TREE_FORMAT_VERSION = 1


class StepKind(str, Enum):
    """What a step is, from the marker that ended it and its content."""

    ROOT = "root"
    CODE = "code"  # an intermediate code step, ends with <end_of_step>
    FINAL_CODE = "final_code"  # the last code step, ends with <end_of_code>; its output follows
    ANSWER = "answer"  # <answer> ... <end_of_answer>
    INVALID = "invalid"  # cut by the token limit or otherwise unparseable


class TerminalKind(str, Enum):
    """Why a node ends its trajectory."""

    ANSWER = "answer"  # an answer step with a \\boxed{} answer
    NO_ANSWER = "no_answer"  # an answer step without a \\boxed{} answer
    MAX_DEPTH = "max_depth"  # reached the depth limit without answering
    CODE_ERRORS = "code_errors"  # too many consecutive steps whose code failed
    NO_VALID_CHILD = "no_valid_child"  # every sampled candidate was invalid or failed


class Node:
    """One step of a solution and its search statistics.

    ``visits`` (N) and ``value_sum`` give ``q = value_sum / visits``, the mean of the values backed
    up through this node (a PPM-initialised node counts its PPM value as its first visit).
    """

    __slots__ = (
        "answer",
        "children",
        "code",
        "consecutive_errors",
        "depth",
        "duplicates",
        "error_message",
        "error_type",
        "exec_ok",
        "grade",
        "id",
        "kind",
        "output",
        "parent",
        "ppm_value",
        "stop",
        "terminal",
        "terminal_value",
        "text",
        "tokens",
        "value_sum",
        "visits",
    )

    def __init__(
        self,
        id: int,
        parent: int | None,
        depth: int,
        text: str = "",
        kind: StepKind = StepKind.ROOT,
        code: str = "",
        stop: str | None = None,
        tokens: int = 0,
    ) -> None:
        self.id = id
        self.parent = parent
        self.depth = depth
        self.text = text  # the step's full text, stop marker included
        self.kind = kind
        self.code = code  # the Python this step adds to the program ("" for none)
        self.stop = stop
        self.tokens = tokens
        self.children: list[int] = []
        self.duplicates = 0  # identical candidates merged into this node
        self.output = ""  # stdout printed by this step's code
        self.exec_ok = True
        self.error_type: str | None = None
        self.error_message: str | None = None
        self.consecutive_errors = 0
        self.answer: str | None = None  # extracted \boxed{} content of an answer step
        self.grade: bool | None = None  # correctness against the reference, when known
        self.ppm_value: float | None = None
        self.terminal: TerminalKind | None = None
        self.terminal_value: float | None = None
        self.visits = 0
        self.value_sum = 0.0

    @property
    def q(self) -> float:
        """Mean backed-up value; 0 for a node never visited."""
        return self.value_sum / self.visits if self.visits else 0.0

    @property
    def is_terminal(self) -> bool:
        return self.terminal is not None

    @property
    def is_expanded(self) -> bool:
        return bool(self.children)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parent": self.parent,
            "depth": self.depth,
            "text": self.text,
            "kind": self.kind.value,
            "code": self.code,
            "stop": self.stop,
            "tokens": self.tokens,
            "children": list(self.children),
            "duplicates": self.duplicates,
            "output": self.output,
            "exec_ok": self.exec_ok,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "consecutive_errors": self.consecutive_errors,
            "answer": self.answer,
            "grade": self.grade,
            "ppm_value": self.ppm_value,
            "terminal": self.terminal.value if self.terminal else None,
            "terminal_value": self.terminal_value,
            "visits": self.visits,
            "value_sum": self.value_sum,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        try:
            node = cls(
                id=int(data["id"]),
                parent=data["parent"],
                depth=int(data["depth"]),
                text=data["text"],
                kind=StepKind(data["kind"]),
                code=data.get("code", ""),
                stop=data.get("stop"),
                tokens=int(data.get("tokens", 0)),
            )
        except KeyError as exc:
            raise ValueError(f"tree node is missing the field {exc.args[0]!r}") from exc
        node.children = [int(c) for c in data.get("children", [])]
        node.duplicates = int(data.get("duplicates", 0))
        node.output = data.get("output", "")
        node.exec_ok = bool(data.get("exec_ok", True))
        node.error_type = data.get("error_type")
        node.error_message = data.get("error_message")
        node.consecutive_errors = int(data.get("consecutive_errors", 0))
        node.answer = data.get("answer")
        node.grade = data.get("grade")
        node.ppm_value = data.get("ppm_value")
        terminal = data.get("terminal")
        node.terminal = TerminalKind(terminal) if terminal else None
        node.terminal_value = data.get("terminal_value")
        node.visits = int(data.get("visits", 0))
        node.value_sum = float(data.get("value_sum", 0.0))
        return node

    def __repr__(self) -> str:
        return (
            f"Node(id={self.id}, depth={self.depth}, kind={self.kind.value}, N={self.visits}, "
            f"Q={self.q:.3f}, terminal={self.terminal.value if self.terminal else None})"
        )


class Trajectory:
    """A root-to-node path of a tree: one (possibly partial) solution."""

    __slots__ = ("nodes", "tree")

    def __init__(self, tree: Tree, nodes: list[Node]) -> None:
        self.tree = tree
        self.nodes = nodes  # root excluded

    @property
    def last(self) -> Node:
        return self.nodes[-1]

    @property
    def steps(self) -> list[str]:
        """The full text of every step, in order."""
        return [n.text for n in self.nodes]

    @property
    def text(self) -> str:
        """The solution as the policy sees it: step texts with the code output spliced in."""
        from rstar_math.format import render_steps

        return render_steps(self.nodes)

    @property
    def program(self) -> str:
        """The Python program of the trajectory (code of the steps that ran without error)."""
        return "\n".join(n.code for n in self.nodes if n.code and n.exec_ok)

    @property
    def answer(self) -> str | None:
        return self.last.answer

    @property
    def terminal(self) -> TerminalKind | None:
        return self.last.terminal

    @property
    def correct(self) -> bool | None:
        return self.last.grade

    @property
    def value(self) -> float | None:
        """The terminal's value (grade or PPM), else the last node's PPM value."""
        last = self.last
        return last.terminal_value if last.terminal_value is not None else last.ppm_value

    @property
    def mean_q(self) -> float:
        return sum(n.q for n in self.nodes) / len(self.nodes) if self.nodes else 0.0

    @property
    def min_q(self) -> float:
        return min((n.q for n in self.nodes), default=0.0)

    def pretty(self, max_chars: int | None = None) -> str:
        """A plain-text rendering for terminals and logs.

        One header line per step (depth, kind, N, Q, PPM value, errors), the step's text, what its
        code printed or how it failed, then the outcome. ``max_chars`` cuts each text block.
        """

        def cut(text: str) -> str:
            text = text.rstrip()
            if max_chars is not None and len(text) > max_chars:
                return text[:max_chars] + f" [... {len(text) - max_chars} more characters]"
            return text

        lines = [f"Question: {cut(self.tree.question)}"]
        if self.tree.reference is not None:
            lines.append(f"Reference: {self.tree.reference}")
        for node in self.nodes:
            stats = f"N={node.visits} Q={node.q:+.3f}"
            if node.ppm_value is not None:
                stats += f" PPM={node.ppm_value:+.3f}"
            if not node.exec_ok:
                stats += f" ERROR={node.error_type}"
            lines.append(f"--- step {node.depth} [{node.kind.value}] {stats}")
            lines.append(cut(node.text))
            if node.output:
                lines.append(f"[output] {cut(node.output)}")
            if not node.exec_ok and node.error_message:
                lines.append(f"[error] {node.error_type}: {cut(node.error_message)}")
        if not self.nodes:
            lines.append("=== open: no steps")
            return "\n".join(lines)
        last = self.last
        end = last.terminal.value if last.terminal else "open"
        value = self.value
        shown = "None" if value is None else f"{value:+.3f}"
        lines.append(f"=== {end}: answer={last.answer!r} grade={last.grade} value={shown}")
        return "\n".join(lines)

    def __len__(self) -> int:
        return len(self.nodes)

    def __repr__(self) -> str:
        return f"Trajectory(depth={len(self.nodes)}, answer={self.answer!r}, value={self.value})"


class Tree:
    """One problem's search tree."""

    __slots__ = ("meta", "nodes", "question", "reference")

    def __init__(self, question: str, reference: str | None = None) -> None:
        self.question = question
        self.reference = reference
        self.nodes: list[Node] = [Node(0, None, 0)]
        self.meta: dict[str, Any] = {}

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def add_child(self, parent: Node, **fields: Any) -> Node:
        node = Node(len(self.nodes), parent.id, parent.depth + 1, **fields)
        self.nodes.append(node)
        parent.children.append(node.id)
        return node

    def children(self, node: Node) -> list[Node]:
        nodes = self.nodes
        return [nodes[c] for c in node.children]

    def path(self, node: Node) -> list[Node]:
        """Nodes from the first step down to ``node`` (root excluded)."""
        out: list[Node] = []
        nodes = self.nodes
        while node.parent is not None:
            out.append(node)
            node = nodes[node.parent]
        out.reverse()
        return out

    def trajectory(self, node: Node) -> Trajectory:
        return Trajectory(self, self.path(node))

    def terminals(self) -> list[Node]:
        return [n for n in self.nodes if n.terminal is not None]

    def trajectories(self, answers_only: bool = True) -> list[Trajectory]:
        """Every root-to-terminal path (only those ending in a boxed answer by default)."""
        return [
            self.trajectory(n)
            for n in self.nodes
            if n.terminal is not None and (not answers_only or n.terminal is TerminalKind.ANSWER)
        ]

    def best_trajectory(self) -> Trajectory | None:
        """The answered trajectory with the highest terminal value (ties: higher mean Q)."""
        trajs = self.trajectories()
        if not trajs:
            return None
        return max(trajs, key=lambda t: (_finite(t.value), t.mean_q))

    # ------------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": TREE_FORMAT_VERSION,
            "question": self.question,
            "reference": self.reference,
            "meta": self.meta,
            "nodes": [n.to_dict() for n in self.nodes],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tree:
        if not isinstance(data, dict) or "nodes" not in data or "question" not in data:
            raise ValueError("a tree record needs the fields 'question' and 'nodes'")
        version = data.get("format_version", TREE_FORMAT_VERSION)
        if version > TREE_FORMAT_VERSION:
            raise ValueError(
                f"tree format version {version} is newer than this library understands "
                f"({TREE_FORMAT_VERSION}); upgrade rstar-math"
            )
        tree = cls(data["question"], data.get("reference"))
        tree.meta = dict(data.get("meta") or {})
        tree.nodes = [Node.from_dict(d) for d in data["nodes"]]
        for i, node in enumerate(tree.nodes):
            if node.id != i:
                raise ValueError(f"tree node at position {i} has id {node.id}; ids must be 0..n-1")
        return tree

    # ------------------------------------------------------------------ views

    def _repr_html_(self) -> str:
        """Interactive view in Jupyter (see :func:`rstar_math.viz.tree_to_html`)."""
        from rstar_math.viz import tree_to_html

        return tree_to_html(self)

    def to_html(self, path: str | os.PathLike[str] | None = None, **options: Any) -> str:
        """A self-contained interactive HTML page of the tree; written to ``path`` when given.

        Returns the page. ``options`` go to :func:`rstar_math.viz.tree_to_html` (``max_nodes``,
        ``max_text_chars``, ``open_depth``, ``title``).
        """
        from rstar_math.viz import tree_to_html

        page = tree_to_html(self, full_page=True, **options)
        if path is not None:
            Path(path).write_text(page, encoding="utf-8")
        return page

    def to_dot(self, **options: Any) -> str:
        """The tree as Graphviz DOT (``dot -Tsvg``); see :func:`rstar_math.viz.tree_to_dot`."""
        from rstar_math.viz import tree_to_dot

        return tree_to_dot(self, **options)

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Tree:
        return cls.from_dict(json.loads(text))

    def __repr__(self) -> str:
        return (
            f"Tree(nodes={len(self.nodes)}, terminals={len(self.terminals())}, "
            f"question={self.question[:40]!r})"
        )


def _finite(value: float | None) -> float:
    if value is None or math.isnan(value):
        return -math.inf
    return value

"""Per-tree search algorithms: MCTS, step-level beam search, best-of-N and greedy.

Each is a :class:`~rstar_math.search.engine.TreeSearch` coroutine: it decides which leaves to
expand, yields them to the batching engine and reads the new children when it resumes. None of them
calls a model itself.
"""

from __future__ import annotations

import math

from rstar_math.search.engine import SearchCoroutine, TreeSearch
from rstar_math.tree import Node

__all__ = ["MCTS", "BeamSearch", "BestOfN", "make_search"]


class MCTS(TreeSearch):
    """Monte Carlo Tree Search over steps, as in rStar-Math.

    Each rollout selects children by UCT from the root down to a leaf, expands it with
    ``num_candidates`` sampled steps (executed, scored), keeps descending through the new children
    (selected by UCT again) until a terminal node, then backs the terminal's value up to every
    ancestor: ``N += 1`` and ``Q`` = mean of backed-up values. A rollout that selects an existing
    terminal backs its value up again. There is no random-simulation phase, as in the reference.
    """

    def run(self) -> SearchCoroutine:
        cfg = self.config
        root = self.tree.root
        for _ in range(cfg.num_rollouts):
            node = root
            while node.children and node.terminal is None:
                node = self.select_child(node)
            while node.terminal is None:
                task = self.task(node, cfg.num_candidates)
                yield [task]
                if not task.children:
                    break
                node = self.select_child(node)
            if node.terminal is None:
                # the root produced no valid step this rollout; the next rollout resamples
                continue
            value = node.terminal_value
            self.backup(node, cfg.failure_value if value is None else value)

    def uct(self, node: Node, parent_visits: int) -> float:
        """The UCT score of ``node``; an unvisited node scores 0 or +inf by ``config.unvisited``."""
        if node.visits == 0:
            return 0.0 if self.config.unvisited == "zero" else math.inf
        return node.value_sum / node.visits + self.config.c_puct * math.sqrt(
            math.log(max(parent_visits, 1)) / node.visits
        )

    def select_child(self, node: Node) -> Node:
        """The child with the highest UCT score (the first one on ties)."""
        nodes = self.tree.nodes
        best = nodes[node.children[0]]
        best_score = -math.inf
        parent_visits = node.visits
        for child_id in node.children:
            child = nodes[child_id]
            score = self.uct(child, parent_visits)
            if score > best_score:
                best, best_score = child, score
        return best


class BeamSearch(TreeSearch):
    """Step-level beam search guided by the scorer.

    At each depth every beam samples ``beam_expand`` next steps; the ``beam_width`` open children
    with the highest PPM value become the next beams; finished trajectories are collected until
    ``beam_width`` of them exist or no beam is left open.
    """

    def run(self) -> SearchCoroutine:
        cfg = self.config
        beams: list[Node] = [self.tree.root]
        finished: list[Node] = []
        for _ in range(cfg.max_depth):
            tasks = [self.task(beam, cfg.beam_expand) for beam in beams]
            yield tasks
            children = [child for task in tasks for child in task.children]
            for child in children:
                if child.terminal is not None:
                    finished.append(child)
                    value = child.terminal_value
                    self.backup(child, cfg.failure_value if value is None else value)
            open_children = [c for c in children if c.terminal is None]
            if not open_children or len(finished) >= cfg.beam_width:
                break
            open_children.sort(
                key=lambda c: c.ppm_value if c.ppm_value is not None else -math.inf, reverse=True
            )
            beams = open_children[: cfg.beam_width]


class BestOfN(TreeSearch):
    """``num_samples`` independent trajectories (or one greedy one), sampled step by step.

    Each sample is its own chain of expansions with ``n=1`` and its own seed, so samples are
    independent; the chains share the batching engine with every other tree.
    """

    def __init__(self, *args: object, greedy: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.greedy = greedy

    def run(self) -> SearchCoroutine:
        cfg = self.config
        samples = 1 if self.greedy else cfg.num_samples
        temperature = 0.0 if self.greedy else cfg.temperature
        chains: list[Node] = [self.tree.root] * samples
        while chains:
            tasks = [self.task(leaf, 1, temperature) for leaf in chains]
            yield tasks
            chains = []
            for task in tasks:
                if not task.children:
                    continue
                child = task.children[0]
                if child.terminal is not None:
                    value = child.terminal_value
                    self.backup(child, cfg.failure_value if value is None else value)
                else:
                    chains.append(child)


def make_search(tree: object, config: object, tree_index: int = 0) -> TreeSearch:
    """The search object for ``config.algorithm``."""
    from rstar_math.search.config import SearchConfig
    from rstar_math.tree import Tree

    assert isinstance(tree, Tree) and isinstance(config, SearchConfig)
    algorithm = config.algorithm
    if algorithm == "mcts":
        return MCTS(tree, config, tree_index)
    if algorithm == "beam":
        return BeamSearch(tree, config, tree_index)
    if algorithm == "best_of_n":
        return BestOfN(tree, config, tree_index)
    if algorithm == "greedy":
        return BestOfN(tree, config, tree_index, greedy=True)
    raise ValueError(f"unknown search algorithm {algorithm!r}")

"""The batching engine: expansions of many trees run as one generator, executor and scorer call.

Every search algorithm is written as a coroutine over one tree that *yields* the leaves it wants
expanded (an :class:`ExpansionTask` list) and resumes once their children exist. The scheduler
(:func:`run_searches`) drives all trees' coroutines in waves: it gathers every pending task of every
tree, then runs the three phases once per wave

1. one ``Generator.generate`` call for all tasks' prompts,
2. one ``Executor.execute_batch`` call for every new candidate's code,
3. one ``Scorer.score`` call for every new child,

attaches the children to their trees and resumes the coroutines. So the number of model calls is
bounded by the number of waves (rollouts x depth for MCTS), not by the number of problems.
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rstar_math.format import Prompter, format_output, parse_step, step_chunks
from rstar_math.interfaces import (
    ExecRequest,
    ExecResult,
    Executor,
    GenerationRequest,
    Scorer,
    ScoreRequest,
)
from rstar_math.interfaces import Generator as PolicyGenerator
from rstar_math.tree import Node, StepKind, TerminalKind, Tree

if TYPE_CHECKING:
    from rstar_math.search.config import SearchConfig

__all__ = ["ExpansionTask", "SearchStats", "TreeSearch", "run_searches"]

logger = logging.getLogger(__name__)

_CODE_KINDS = (StepKind.CODE, StepKind.FINAL_CODE)


@dataclass(slots=True)
class ExpansionTask:
    """A leaf to expand with ``n`` sampled next steps; ``children`` is filled by the engine."""

    leaf: Node
    n: int
    temperature: float
    seed: int
    children: list[Node] = field(default_factory=list)


@dataclass
class SearchStats:
    """What one search (or a batch of them) cost."""

    generator_calls: int = 0
    generation_requests: int = 0
    generated_tokens: int = 0
    prompt_tokens: int = 0
    candidates: int = 0
    invalid_candidates: int = 0
    merged_duplicates: int = 0
    executions: int = 0
    failed_executions: int = 0
    scorer_calls: int = 0
    scored: int = 0
    waves: int = 0
    time_generate_s: float = 0.0
    time_execute_s: float = 0.0
    time_score_s: float = 0.0
    time_total_s: float = 0.0

    def to_dict(self) -> dict[str, float | int]:
        return dict(self.__dict__)


SearchCoroutine = Generator[list[ExpansionTask], None, None]


class TreeSearch:
    """Base class of per-tree search algorithms (MCTS, beam, best-of-N).

    Subclasses implement :meth:`run`, a coroutine that yields lists of :class:`ExpansionTask` and
    reads their ``children`` after resuming. Shared helpers: seeds that depend only on the
    question and the expansion count (so a problem's search is the same alone or in any batch),
    back-up, and terminal values.
    """

    def __init__(self, tree: Tree, config: SearchConfig, tree_index: int = 0) -> None:
        self.tree = tree
        self.config = config
        self.stats = SearchStats()
        self._expansions = 0
        self._base_seed = (
            config.seed * 1_000_003
            + tree_index * 104_729
            + zlib.crc32(tree.question.encode("utf-8"))
        ) & 0x7FFFFFFF

    def run(self) -> SearchCoroutine:  # pragma: no cover - abstract
        raise NotImplementedError

    def task(self, leaf: Node, n: int, temperature: float | None = None) -> ExpansionTask:
        seed = (self._base_seed + 7919 * self._expansions) & 0x7FFFFFFF
        self._expansions += 1
        temp = self.config.temperature if temperature is None else temperature
        return ExpansionTask(leaf=leaf, n=n, temperature=temp, seed=seed)

    def backup(self, node: Node, value: float) -> None:
        """Add one visit with ``value`` to ``node`` and every ancestor (root included)."""
        nodes = self.tree.nodes
        current: Node | None = node
        while current is not None:
            current.visits += 1
            current.value_sum += value
            current = nodes[current.parent] if current.parent is not None else None


class _Engine:
    """Runs the three phases of one wave over tasks from many trees."""

    def __init__(
        self,
        generator: PolicyGenerator,
        executor: Executor | None,
        scorer: Scorer | None,
        prompt: Prompter,
        config: SearchConfig,
    ) -> None:
        self.generator = generator
        self.executor = executor
        self.scorer = scorer
        self.prompt = prompt
        self.config = config
        self._prompt_cache: dict[str, str] = {}

    def _prompt_of(self, tree: Tree) -> str:
        cached = self._prompt_cache.get(tree.question)
        if cached is None:
            cached = self.prompt.render(tree.question)
            self._prompt_cache[tree.question] = cached
        return cached

    def wave(self, work: Sequence[tuple[TreeSearch, ExpansionTask]], stats: SearchStats) -> None:
        cfg = self.config
        stats.waves += 1

        # 1. generation: one call for every task of every tree
        requests = []
        # per task: the leaf's path, its rendered chunks and the stdout printed along it, reused
        # for the prompt, the executor context and the new children's scorer inputs
        prefixes: list[tuple[list[Node], list[str], str]] = []
        for search, task in work:
            path = search.tree.path(task.leaf)
            chunks = step_chunks(path, cfg.max_output_chars)
            stdout = "".join(n.output for n in path if n.exec_ok and n.output)
            prefixes.append((path, chunks, stdout))
            text = self._prompt_of(search.tree) + "".join(chunks)
            requests.append(
                GenerationRequest(
                    prompt=text,
                    n=task.n,
                    stop=cfg.stop,
                    max_tokens=cfg.max_step_tokens,
                    temperature=task.temperature,
                    top_p=cfg.top_p,
                    seed=task.seed,
                )
            )
        t0 = time.perf_counter()
        results = self.generator.generate(requests)
        stats.time_generate_s += time.perf_counter() - t0
        stats.generator_calls += 1
        stats.generation_requests += len(requests)
        if len(results) != len(requests):
            raise RuntimeError(
                f"the generator returned {len(results)} results for {len(requests)} requests"
            )

        # 2. parse, merge duplicates, collect code to run
        pending: list[tuple[TreeSearch, ExpansionTask, Node, int]] = []
        exec_requests: list[ExecRequest] = []
        exec_targets: list[int] = []
        for task_index, ((search, task), result) in enumerate(zip(work, results)):
            tree = search.tree
            search.stats.generation_requests += 1
            search.stats.prompt_tokens += result.prompt_tokens
            stats.prompt_tokens += result.prompt_tokens
            seen: dict[str, Node] = {}
            path = prefixes[task_index][0]
            context = tuple(n.code for n in path if n.code and n.exec_ok)
            for completion in result.completions:
                search.stats.candidates += 1
                search.stats.generated_tokens += completion.num_tokens
                stats.candidates += 1
                stats.generated_tokens += completion.num_tokens
                step = parse_step(completion.text, completion.stop)
                if step.kind is StepKind.INVALID:
                    search.stats.invalid_candidates += 1
                    stats.invalid_candidates += 1
                    continue
                if cfg.merge_duplicates:
                    key = step.text.strip()
                    twin = seen.get(key)
                    if twin is not None:
                        twin.duplicates += 1
                        search.stats.merged_duplicates += 1
                        stats.merged_duplicates += 1
                        continue
                node = Node(
                    id=-1,
                    parent=task.leaf.id,
                    depth=task.leaf.depth + 1,
                    text=step.text,
                    kind=step.kind,
                    code=step.code,
                    stop=completion.stop,
                    tokens=completion.num_tokens,
                )
                node.answer = step.answer
                if cfg.merge_duplicates:
                    seen[step.text.strip()] = node
                if step.kind in _CODE_KINDS and self.executor is not None:
                    exec_targets.append(len(pending))
                    exec_requests.append(ExecRequest(code=step.code, context=context))
                pending.append((search, task, node, task_index))

        # 3. execution: one batch for every new code step
        if exec_requests:
            assert self.executor is not None
            t0 = time.perf_counter()
            exec_results = self.executor.execute_batch(exec_requests)
            stats.time_execute_s += time.perf_counter() - t0
            stats.executions += len(exec_requests)
            if len(exec_results) != len(exec_requests):
                raise RuntimeError(
                    f"the executor returned {len(exec_results)} results for "
                    f"{len(exec_requests)} requests"
                )
            for index, res in zip(exec_targets, exec_results):
                search, _task, node, _ = pending[index]
                search.stats.executions += 1
                _apply_exec(node, res)
                if not node.exec_ok:
                    search.stats.failed_executions += 1
                    stats.failed_executions += 1

        # 4. attach surviving children, decide terminals
        to_score: list[tuple[TreeSearch, Node, int]] = []
        for search, task, node, task_index in pending:
            tree = search.tree
            parent = task.leaf
            if not node.exec_ok:
                if not cfg.keep_failed_steps:
                    continue
                node.consecutive_errors = parent.consecutive_errors + 1
            node.id = len(tree.nodes)
            tree.nodes.append(node)
            parent.children.append(node.id)
            task.children.append(node)
            self._classify(tree, node)
            if node.terminal is None or node.terminal is TerminalKind.ANSWER:
                to_score.append((search, node, task_index))

        # 5. scoring: one call for every new child
        if self.scorer is not None and to_score:
            score_requests = []
            for s, n, task_index in to_score:
                _path, chunks, stdout = prefixes[task_index]
                if n.kind is StepKind.FINAL_CODE:
                    out = stdout + (n.output if n.exec_ok else "")
                    chunk = n.text + format_output(out, cfg.max_output_chars)
                else:
                    chunk = n.text
                score_requests.append(ScoreRequest(s.tree.question, (*chunks, chunk)))
            t0 = time.perf_counter()
            values = self.scorer.score(score_requests)
            stats.time_score_s += time.perf_counter() - t0
            stats.scorer_calls += 1
            stats.scored += len(score_requests)
            if len(values) != len(score_requests):
                raise RuntimeError(
                    f"the scorer returned {len(values)} values for {len(score_requests)} requests"
                )
            for (search, node, _), value in zip(to_score, values):
                value = float(value)
                if not -1.0 - 1e-6 <= value <= 1.0 + 1e-6:
                    raise ValueError(
                        f"the scorer returned {value}, outside [-1, 1]; a Scorer must squash its "
                        "values (PPMScorer does)"
                    )
                search.stats.scored += 1
                node.ppm_value = value
                if cfg.ppm_init:
                    node.visits = 1
                    node.value_sum = value
        for search, _task, node, _ in pending:
            if node.terminal is not None and node.id >= 0:
                node.terminal_value = self._terminal_value(search.tree, node)
        for _search, task in work:
            if task.leaf.parent is not None and not task.children and task.leaf.terminal is None:
                task.leaf.terminal = TerminalKind.NO_VALID_CHILD
                task.leaf.terminal_value = cfg.failure_value

    def _classify(self, tree: Tree, node: Node) -> None:
        cfg = self.config
        if node.kind is StepKind.ANSWER:
            if node.answer is None:
                node.terminal = TerminalKind.NO_ANSWER
                if tree.reference is not None:
                    node.grade = False
            else:
                node.terminal = TerminalKind.ANSWER
                if tree.reference is not None:
                    from rstar_math.grading import is_equivalent

                    node.grade = is_equivalent(node.answer, tree.reference)
        elif not node.exec_ok and node.consecutive_errors >= cfg.max_consecutive_code_errors:
            node.terminal = TerminalKind.CODE_ERRORS
        elif node.depth >= cfg.max_depth:
            node.terminal = TerminalKind.MAX_DEPTH

    def _terminal_value(self, tree: Tree, node: Node) -> float:
        cfg = self.config
        if node.terminal is TerminalKind.ANSWER:
            if tree.reference is not None:
                return cfg.correct_value if node.grade else cfg.wrong_value
            return node.ppm_value if node.ppm_value is not None else 0.0
        return cfg.failure_value


def _apply_exec(node: Node, result: ExecResult) -> None:
    node.output = result.stdout
    node.exec_ok = result.ok
    if not result.ok:
        node.error_type = result.error_type or (
            "TimeoutError"
            if result.timed_out
            else "MemoryError"
            if result.memory_exceeded
            else "Error"
        )
        node.error_message = result.error_message


def run_searches(
    searches: Sequence[TreeSearch],
    generator: PolicyGenerator,
    executor: Executor | None,
    scorer: Scorer | None,
    prompt: Prompter,
    config: SearchConfig,
    on_done: Callable[[int, TreeSearch], None] | None = None,
) -> SearchStats:
    """Drive every search to completion, batching each wave's work across all trees.

    ``on_done(index, search)`` is called as soon as a tree finishes (for streaming results). A
    search whose coroutine raises is logged and finished early with the error recorded in its
    tree's ``meta["error"]``; the other trees go on.
    """
    engine = _Engine(generator, executor, scorer, prompt, config)
    stats = SearchStats()
    started = time.perf_counter()
    active: dict[int, tuple[TreeSearch, SearchCoroutine, list[ExpansionTask]]] = {}

    def advance(index: int, search: TreeSearch, coro: SearchCoroutine, first: bool) -> None:
        try:
            tasks = next(coro) if first else coro.send(None)  # type: ignore[arg-type]
        except StopIteration:
            active.pop(index, None)
            if on_done is not None:
                on_done(index, search)
            return
        except Exception as exc:
            logger.exception("search of problem %d failed; its tree is kept as is", index)
            search.tree.meta["error"] = f"{type(exc).__name__}: {exc}"
            active.pop(index, None)
            if on_done is not None:
                on_done(index, search)
            return
        active[index] = (search, coro, tasks)

    for index, search in enumerate(searches):
        advance(index, search, search.run(), first=True)

    while active:
        work = [(search, task) for search, _coro, tasks in active.values() for task in tasks]
        engine.wave(work, stats)
        for index, (search, coro, _tasks) in list(active.items()):
            advance(index, search, coro, first=False)

    stats.time_total_s = time.perf_counter() - started
    return stats

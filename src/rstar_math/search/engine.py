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
from typing import TYPE_CHECKING, Any

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

    def merge(self, other: SearchStats) -> None:
        """Add ``other``'s counts and times (``time_total_s`` excepted) to this one."""
        for key, value in other.__dict__.items():
            if key != "time_total_s":
                setattr(self, key, getattr(self, key) + value)


@dataclass(slots=True)
class _Wave:
    """The state of one wave between its phases."""

    work: list[tuple[TreeSearch, ExpansionTask]]
    prefixes: list[tuple[list[Node], list[str], str]]
    pending: list[tuple[TreeSearch, ExpansionTask, Node, int]]
    exec_requests: list[ExecRequest]
    exec_targets: list[int]
    stats: SearchStats


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
        """Run one wave's three phases back to back."""
        state = self.generate(work)
        self.execute(state)
        self.finish(state)
        stats.merge(state.stats)

    def generate(self, work: Sequence[tuple[TreeSearch, ExpansionTask]]) -> _Wave:
        """Phase 1: one generator call for every task; parse, merge duplicates, queue code."""
        cfg = self.config
        stats = SearchStats(waves=1)

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
        return _Wave(list(work), prefixes, pending, exec_requests, exec_targets, stats)

    def execute(self, state: _Wave) -> None:
        """Phase 2: one executor batch for every new code step of the wave."""
        stats = state.stats
        exec_requests, exec_targets, pending = (
            state.exec_requests,
            state.exec_targets,
            state.pending,
        )
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

    def finish(self, state: _Wave) -> None:
        """Phase 3: attach children, decide terminals, one scorer call for the new children."""
        cfg = self.config
        stats, pending, prefixes, work = state.stats, state.pending, state.prefixes, state.work
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

    With ``config.pipeline_groups = G > 1`` the trees are split into G groups whose waves flow
    through the three phases as a pipeline: while the generator works on one group's wave, the
    executor runs another group's code and the scorer scores a third's. Each search depends only
    on its own results and seeds, so the trees are the same as without pipelining.
    """
    engine = _Engine(generator, executor, scorer, prompt, config)
    stats = SearchStats()
    started = time.perf_counter()
    groups = max(1, min(config.pipeline_groups, len(searches)))
    actives: list[dict[int, tuple[TreeSearch, SearchCoroutine, list[ExpansionTask]]]] = [
        {} for _ in range(groups)
    ]

    def advance(index: int, search: TreeSearch, coro: SearchCoroutine, first: bool) -> None:
        active = actives[index % groups]
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

    def work_of(group: int) -> list[tuple[TreeSearch, ExpansionTask]]:
        return [(s, task) for s, _coro, tasks in actives[group].values() for task in tasks]

    def advance_group(group: int) -> None:
        for index, (search, coro, _tasks) in list(actives[group].items()):
            advance(index, search, coro, first=False)

    for index, search in enumerate(searches):
        advance(index, search, search.run(), first=True)

    if groups == 1:
        while actives[0]:
            engine.wave(work_of(0), stats)
            advance_group(0)
    else:
        _run_pipelined(engine, groups, work_of, advance_group, stats)

    stats.time_total_s = time.perf_counter() - started
    return stats


def _run_pipelined(
    engine: _Engine,
    groups: int,
    work_of: Callable[[int], list[tuple[TreeSearch, ExpansionTask]]],
    advance_group: Callable[[int], None],
    stats: SearchStats,
) -> None:
    """Flow each group's waves through generate -> execute -> finish, one thread per phase.

    Each phase has a single worker thread, so no backend is ever called concurrently with itself;
    coroutines are resumed here, in the calling thread, and groups touch disjoint trees.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

    pools = [ThreadPoolExecutor(1, thread_name_prefix=f"rstar-{n}") for n in ("gen", "exec", "fin")]
    pending: dict[Future[Any], tuple[int, int, Any]] = {}
    try:
        for group in range(groups):
            work = work_of(group)
            if work:
                pending[pools[0].submit(engine.generate, work)] = (group, 0, None)
        while pending:
            done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
            for future in done:
                group, phase, state = pending.pop(future)
                result = future.result()
                if phase == 0:
                    pending[pools[1].submit(engine.execute, result)] = (group, 1, result)
                elif phase == 1:
                    pending[pools[2].submit(engine.finish, state)] = (group, 2, state)
                else:
                    stats.merge(state.stats)
                    advance_group(group)
                    work = work_of(group)
                    if work:
                        pending[pools[0].submit(engine.generate, work)] = (group, 0, None)
    finally:
        for pool in pools:
            pool.shutdown(wait=True, cancel_futures=True)

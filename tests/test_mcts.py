"""MCTS arithmetic pinned on small hand-computed trees with scripted generators."""

from __future__ import annotations

import math

import pytest

from rstar_math import MCTSSolver, SearchConfig, StepKind, TerminalKind, Tree
from rstar_math.generators.scripted import ScriptedGenerator
from rstar_math.interfaces import GenerationRequest
from tests.helpers import FunctionScorer, InProcessExecutor

A = "<code>\n# Step 1: take one\nx = 1\n<end_of_step>"
B = "<code>\n# Step 1: take two\nx = 2\n<end_of_step>"
PRINT = "\n# Now print the final answer\nprint(x)\n<end_of_code>"


def two_branch_script(request: GenerationRequest) -> list[str]:
    """Root -> A (x=1) or B (x=2); then print(x); then the answer the output shows."""
    prompt = request.prompt
    if prompt.endswith("<end_of_output>\n"):
        value = prompt.rsplit("<output>", 1)[1].split("<end_of_output>")[0]
        return [f"<answer>The answer is \\boxed{{{value}}}.<end_of_answer>"]
    if prompt.endswith("<end_of_step>"):
        return [PRINT]
    return [A, B]


def make_solver(config: SearchConfig, scorer=None, script=two_branch_script) -> MCTSSolver:
    return MCTSSolver(
        ScriptedGenerator(script), scorer=scorer, executor=InProcessExecutor(), config=config
    )


def by_text(tree: Tree, prefix: str):
    return [n for n in tree.nodes if n.text.startswith(prefix)]


def test_inf_policy_pins_every_n_and_q_after_four_rollouts() -> None:
    config = SearchConfig(num_rollouts=4, num_candidates=2, unvisited="inf", c_puct=2.0)
    result = make_solver(config).solve("Pick one.", reference="1")
    tree = result.tree
    # ids in creation order: 1=A 2=B 3=A/print 4=A/answer 5=B/print 6=B/answer
    assert [n.text for n in tree.nodes[1:3]] == [A, B]
    expected = {0: (4, 2.0), 1: (3, 3.0), 2: (1, -1.0), 3: (3, 3.0), 4: (3, 3.0), 5: (1, -1.0)}
    expected[6] = (1, -1.0)
    got = {n.id: (n.visits, n.value_sum) for n in tree.nodes}
    assert got == expected
    assert tree.nodes[4].terminal is TerminalKind.ANSWER and tree.nodes[4].grade is True
    assert tree.nodes[6].grade is False and tree.nodes[6].terminal_value == -1.0
    assert tree.nodes[3].kind is StepKind.FINAL_CODE and tree.nodes[3].output == "1\n"
    assert tree.nodes[3].duplicates == 1  # the two identical print steps were merged
    assert result.answer == "1" and result.correct is True
    # R1 expands root, A, A/print; R2 expands B, B/print; R3 and R4 revisit terminal 4
    assert result.stats["generation_requests"] == 5


def test_uct_choice_at_each_rollout() -> None:
    from rstar_math.search.algorithms import MCTS

    def visits_after(rollouts: int) -> tuple[int, int]:
        config = SearchConfig(num_rollouts=rollouts, num_candidates=2, unvisited="inf")
        tree = make_solver(config).solve("Pick one.", reference="1").tree
        return tree.nodes[1].visits, tree.nodes[2].visits

    config = SearchConfig(num_rollouts=10, num_candidates=2, unvisited="inf", c_puct=2.0)
    tree = make_solver(config).solve("Pick one.", reference="1").tree
    search = MCTS(tree, config)
    root, a, b = tree.nodes[0], tree.nodes[1], tree.nodes[2]
    assert (root.visits, a.visits, b.visits) == (10, 9, 1)
    # UCT(A) = 1 + 2 sqrt(ln 10 / 9) = 2.012 < UCT(B) = -1 + 2 sqrt(ln 10 / 1) = 2.035
    assert search.uct(a, root.visits) == pytest.approx(1 + 2 * math.sqrt(math.log(10) / 9))
    assert search.uct(b, root.visits) == pytest.approx(-1 + 2 * math.sqrt(math.log(10)))
    assert search.select_child(root) is b
    # and one rollout earlier A still won: UCT(A) = 2.048 > UCT(B) = 1.964 at N(root) = 9
    assert visits_after(9) == (8, 1)
    assert visits_after(11) == (9, 2)


def test_zero_policy_never_leaves_the_first_good_child() -> None:
    config = SearchConfig(num_rollouts=3, num_candidates=2, unvisited="zero")
    tree = make_solver(config).solve("Pick one.", reference="1").tree
    b = tree.nodes[2]
    assert b.visits == 0 and not b.children  # reference behaviour: unvisited scores 0
    assert tree.root.visits == 3 and tree.root.q == 1.0


def test_ppm_initialised_q_and_test_time_values() -> None:
    def value(text: str) -> float:
        return 0.5 if "x = 1" in text else -0.5

    scorer = FunctionScorer(value)
    config = SearchConfig(num_rollouts=2, num_candidates=2, unvisited="zero", c_puct=2.0)
    result = make_solver(config, scorer=scorer).solve("Pick one.")
    tree = result.tree
    a, b = tree.nodes[1], tree.nodes[2]
    assert a.ppm_value == 0.5 and b.ppm_value == -0.5
    # R1: A(Q0 0.5, N1) chosen; A/print, A/answer scored 0.5; terminal value = PPM of answer 0.5
    # backup 0.5 through answer (N2), print (N2), A (N2, sum 1.0), root (N1)
    assert (a.visits, a.value_sum) == (3, 1.5)  # R2: UCT(A)=0.5+0>UCT(B)=-0.5 -> A again
    assert (b.visits, b.value_sum) == (1, -0.5)
    assert tree.root.visits == 2 and tree.root.value_sum == 1.0
    answer = tree.nodes[4]
    assert answer.terminal is TerminalKind.ANSWER and answer.terminal_value == 0.5
    assert result.answer == "1" and result.correct is None
    assert scorer.calls == 3  # one scorer call per wave
    # the scorer saw exactly the rendered partial solution of every scored node
    from rstar_math.format import render_steps

    scored = [render_steps(tree.path(n)) for n in tree.nodes if n.ppm_value is not None]
    assert scorer.seen == scored
    assert "<output>1<end_of_output>" in scorer.seen[-1]


def test_terminal_kinds_max_depth_no_answer_and_no_valid_child() -> None:
    def endless(request: GenerationRequest) -> list[str]:
        return ["\ny = 1\n<end_of_step>"]

    tree = make_solver(SearchConfig(num_rollouts=1, num_candidates=1, max_depth=3), script=endless)
    result = tree.solve("Loop.")
    kinds = [n.terminal for n in result.tree.nodes]
    assert kinds == [None, None, None, TerminalKind.MAX_DEPTH]
    assert result.answer is None and result.trajectories == []

    def no_box(request: GenerationRequest) -> list[str]:
        return ["<answer>I do not know.<end_of_answer>"]

    res = make_solver(SearchConfig(num_rollouts=1, num_candidates=1), script=no_box).solve(
        "Q", reference="3"
    )
    assert res.tree.nodes[1].terminal is TerminalKind.NO_ANSWER
    assert res.tree.nodes[1].terminal_value == -1.0 and res.correct is False

    def then_fail(request: GenerationRequest) -> list[str]:
        if request.prompt.endswith("<end_of_step>"):
            return ["\nz = 1 / 0\n<end_of_step>", "\nundefined_name\n<end_of_step>"]
        return [A]

    res = make_solver(SearchConfig(num_rollouts=1, num_candidates=2), script=then_fail).solve("Q")
    assert len(res.tree) == 2  # failing candidates dropped
    assert res.tree.nodes[1].terminal is TerminalKind.NO_VALID_CHILD
    assert res.tree.nodes[1].terminal_value == -1.0 and res.tree.root.visits == 1


def test_kept_failed_steps_end_after_consecutive_code_errors() -> None:
    def failing(request: GenerationRequest) -> list[str]:
        return ["\nboom = 1 / 0\n<end_of_step>"]

    config = SearchConfig(
        num_rollouts=1, num_candidates=1, keep_failed_steps=True, max_consecutive_code_errors=2
    )
    tree = make_solver(config, script=failing).solve("Q").tree
    assert [n.error_type for n in tree.nodes[1:]] == ["ZeroDivisionError"] * 2
    assert [n.consecutive_errors for n in tree.nodes[1:]] == [1, 2]
    assert tree.nodes[2].terminal is TerminalKind.CODE_ERRORS
    assert tree.nodes[1].terminal is None


def test_invalid_candidates_and_duplicates() -> None:
    def script(request: GenerationRequest) -> list[str]:
        if request.prompt.endswith("<end_of_output>\n"):
            return ["<answer>\\boxed{1}<end_of_answer>"]
        if request.prompt.endswith("<end_of_step>"):
            return [PRINT]
        return [A, "cut off without a marker", A + "  "]

    result = make_solver(SearchConfig(num_rollouts=1, num_candidates=3), script=script).solve("Q")
    root_children = result.tree.children(result.tree.root)
    assert len(root_children) == 1 and root_children[0].duplicates == 1
    assert result.stats["invalid_candidates"] == 1 and result.stats["merged_duplicates"] >= 1


def test_solve_batch_batches_generator_calls() -> None:
    gen = ScriptedGenerator(two_branch_script)
    executor = InProcessExecutor()
    config = SearchConfig(num_rollouts=4, num_candidates=2, unvisited="inf", max_depth=5)
    solver = MCTSSolver(gen, executor=executor, config=config)
    questions = [f"Problem {i}: pick one." for i in range(12)]
    results = solver.solve_batch(questions, references=["1"] * 12)
    assert all(r.correct for r in results)
    assert gen.calls <= config.num_rollouts * config.max_depth
    assert gen.calls == 5  # the same 5 waves a single problem needs
    assert len(gen.requests) == 5 * 12
    assert executor.batches == [24, 12, 12]  # one executor batch per wave, all trees together


def test_batch_equals_sequential_for_same_seed() -> None:
    import random

    def noisy(request: GenerationRequest) -> list[str]:
        rng = random.Random(request.seed)
        if request.prompt.endswith("<end_of_output>\n"):
            return [f"<answer>\\boxed{{{rng.randint(1, 3)}}}<end_of_answer>"]
        if request.prompt.endswith("<end_of_step>"):
            return [PRINT]
        return [f"<code>\nx = {rng.randint(1, 3)}\n<end_of_step>" for _ in range(3)]

    config = SearchConfig(num_rollouts=6, num_candidates=3, unvisited="inf")
    qs = ["Q one", "Q two", "Q three"]
    batch = make_solver(config, script=noisy).solve_batch(qs, ["2", "2", "2"])
    single = [make_solver(config, script=noisy).solve(q, "2") for q in qs]
    for x, y in zip(batch, single):
        assert x.tree.to_dict() == y.tree.to_dict()


def test_bad_inputs_raise_clear_errors() -> None:
    solver = make_solver(SearchConfig(num_rollouts=1, num_candidates=1))
    with pytest.raises(ValueError, match="questions\\[1\\]"):
        solver.solve_batch(["ok", ""])
    with pytest.raises(ValueError, match="references"):
        solver.solve_batch(["a", "b"], references=["1"])
    with pytest.raises(TypeError, match="Generator protocol"):
        MCTSSolver(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_rollouts"):
        SearchConfig(num_rollouts=0)
    with pytest.raises(ValueError, match="unknown SearchConfig key"):
        SearchConfig.from_dict({"num_rolouts": 3})
    with pytest.raises(ValueError, match="outside \\[-1, 1\\]"):
        make_solver(
            SearchConfig(num_rollouts=1, num_candidates=1), scorer=FunctionScorer(lambda t: 3.0)
        ).solve("Q")


def test_one_failing_search_does_not_lose_the_others() -> None:
    from rstar_math.format import PromptTemplate
    from rstar_math.search import MCTS, run_searches

    class Exploding(MCTS):
        def run(self):
            yield from super().run()
            raise RuntimeError("bookkeeping bug")

    config = SearchConfig(num_rollouts=2, num_candidates=2, unvisited="inf")
    trees = [Tree("good one", "1"), Tree("bad one", "1"), Tree("good two", "2")]
    searches = [MCTS(trees[0], config), Exploding(trees[1], config), MCTS(trees[2], config)]
    done: list[int] = []
    run_searches(
        searches,
        ScriptedGenerator(two_branch_script),
        InProcessExecutor(),
        None,
        PromptTemplate.sft(),
        config,
        on_done=lambda i, s: done.append(i),
    )
    assert sorted(done) == [0, 1, 2]
    assert trees[1].meta["error"] == "RuntimeError: bookkeeping bug"
    assert "error" not in trees[0].meta and "error" not in trees[2].meta
    assert trees[1].root.visits == 2  # its work before the error is kept
    assert [t.terminals()[0].grade for t in (trees[0], trees[2])] == [True, False]


def test_pipelined_groups_give_identical_trees_and_overlap_phases() -> None:
    import random
    import threading
    import time

    def noisy(request: GenerationRequest) -> list[str]:
        rng = random.Random(request.seed)
        if request.prompt.endswith("<end_of_output>\n"):
            return [f"<answer>\\boxed{{{rng.randint(1, 3)}}}<end_of_answer>"]
        if request.prompt.endswith("<end_of_step>"):
            return [PRINT]
        return [f"<code>\nx = {rng.randint(1, 3)}\n<end_of_step>" for _ in range(3)]

    spans: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    class SlowExecutor(InProcessExecutor):
        def execute_batch(self, requests):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            time.sleep(0.01)
            out = super().execute_batch(requests)
            with lock:
                spans.append(("exec", t0, time.perf_counter()))
            return out

    class SlowGenerator(ScriptedGenerator):
        def generate(self, requests):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            time.sleep(0.01)
            out = super().generate(requests)
            with lock:
                spans.append(("gen", t0, time.perf_counter()))
            return out

    qs = [f"Q{i}" for i in range(6)]
    trees = {}
    for groups in (1, 3):
        config = SearchConfig(
            num_rollouts=5, num_candidates=3, unvisited="inf", pipeline_groups=groups
        )
        solver = MCTSSolver(SlowGenerator(noisy), executor=SlowExecutor(), config=config)
        spans.clear()
        results = solver.solve_batch(qs, ["2"] * len(qs))
        trees[groups] = [r.tree.to_dict() for r in results]
        gen = [(a, b) for kind, a, b in spans if kind == "gen"]
        exe = [(a, b) for kind, a, b in spans if kind == "exec"]
        overlapping = any(a1 < b2 and a2 < b1 for a1, b1 in gen for a2, b2 in exe)
        assert overlapping is (groups > 1)
    assert trees[1] == trees[3]

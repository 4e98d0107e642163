"""``benchmarks/miniature.py``: the jobs it plans and the table it writes.

The benchmark itself takes tens of minutes on the shipped model; these tests check its
bookkeeping (which job measures what, how matched-budget rows are derived and rendered) and run
one real job on a tiny trained policy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = REPO / "benchmarks" / "miniature.py"


def _bench() -> ModuleType:
    sys.path.insert(0, str(BENCHMARK.parent))
    try:
        spec = importlib.util.spec_from_file_location("bench_miniature", BENCHMARK)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARK.parent))
    return module


def _args(**kw: Any) -> argparse.Namespace:
    base = dict(
        n=3,
        n_hard=2,
        n_rounds=2,
        threads=1,
        seed=0,
        skip_rounds=True,
        skip_pairs=True,
        temperature=None,
        rollouts=None,
    )
    return argparse.Namespace(**{**base, **kw})


def _run_dir(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    for name, n in (("val", 4), ("hard", 3)):
        rows = [{"question": f"{name} {i}?", "answer": str(i)} for i in range(n)]
        (tmp_path / "data" / f"{name}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows)
        )
    return tmp_path


def _result(acc: float, candidates: float, **extra: Any) -> dict[str, Any]:
    return {
        "accuracy": acc,
        "pass_any": acc,
        "candidates_per_problem": candidates,
        "tokens_per_problem": 10 * candidates,
        "seconds_per_problem": 1.0,
        **extra,
    }


def test_matched_budget_rows_come_from_one_set_of_32_samples(tmp_path: Path) -> None:
    bench = _bench()
    run = _run_dir(tmp_path)
    jobs = bench.plan_jobs(_args(methods="greedy,best-of-32 (PPM)"), run, "POLICY", "PPM")
    by_key = {tuple(j["key"]): j for j in jobs}
    assert set(by_key) == {
        ("methods", f"{split}/{m}")
        for split in ("val", "hard")
        for m in ("greedy", "best-of-32 (PPM)")
    }
    sampled = by_key[("methods", "hard/best-of-32 (PPM)")]
    assert sampled["search"]["num_samples"] == 32 and sampled["ppm"] == "PPM"
    assert sampled["derived"] == {"majority@32": "majority"} and len(sampled["problems"]) == 2
    greedy = by_key[("methods", "val/greedy")]
    assert "derived" not in greedy and greedy["ppm"] is None and len(greedy["problems"]) == 3
    with pytest.raises(SystemExit, match="unknown method 'majority@32'"):
        bench.plan_jobs(_args(methods="majority@32"), run, "POLICY", "PPM")  # derived, not run

    out: dict[str, Any] = {"methods": {}, "rounds": [], "n": 3, "n_hard": 2, "jobs": 1}
    for split in ("val", "hard"):
        bench.record_result(out, ["methods", f"{split}/greedy"], _result(0.0, 5))
        bench.record_result(out, ["methods", f"{split}/majority@8"], _result(0.05, 36))
        bench.record_result(out, ["methods", f"{split}/MCTS + PPM"], _result(0.3, 150))
        bench.record_result(
            out,
            ["methods", f"{split}/best-of-32 (PPM)"],
            _result(0.1, 144, derived={"majority@32": {"accuracy": 0.2}}),
        )
    row = out["methods"]["hard/majority@32"]
    assert row["accuracy"] == 0.2 and row["candidates_per_problem"] == 144
    assert row["derived_from"] == "hard/best-of-32 (PPM)"
    text = bench.render(out)
    lines = text.splitlines()
    majority = next(line for line in lines if line.startswith("| majority@32 |"))
    assert "| 20.0% | 20.0% |" in majority and "| 144 |" in majority
    order = [line.split("|")[1].strip() for line in lines if line.startswith("| ")][2:6]
    assert order == ["greedy", "majority@8", "majority@32", "best-of-32 (PPM)"]
    assert "MCTS + PPM - majority@32 = +10.0 points" in text
    assert "MCTS + PPM - best-of-32 = +20.0" in text


@pytest.mark.hf
@pytest.mark.sandbox
def test_a_derived_selection_matches_running_that_selection(tiny_trained_policy_dir: Path) -> None:
    """Majority derived from a run's trajectories = the run's own answer when it used majority."""
    bench = _bench()
    from rstar_math.executors import SandboxExecutor
    from rstar_math.generators import HFGenerator

    from .conftest import TINY_PROBLEMS

    problems = [{"question": q, "answer": a} for q, _s, a in TINY_PROBLEMS[:2]]
    search = bench.search(
        {"algorithm": "best_of_n", "num_samples": 3, "answer_selection": "majority"}
    )
    generator = HFGenerator(str(tiny_trained_policy_dir), device="cpu", seed=0)
    executor = SandboxExecutor()
    try:
        result = bench.evaluate_method(
            generator, None, executor, problems, search, seed=0, derived={"again": "majority"}
        )
    finally:
        executor.close()
    assert result["n"] == 2 and result["candidates_per_problem"] > 0
    assert result["accuracy"] > 0  # the tiny policy writes these solutions
    assert result["derived"] == {"again": {"accuracy": result["accuracy"]}}
    # at most one child per sample at the root, at least one wherever a node was expanded
    assert 1.0 <= result["distinct_children_per_expansion"] <= 3.0


def test_the_table_says_how_many_distinct_steps_an_mcts_expansion_had() -> None:
    """A search whose sampled candidates are all identical grew one path: the report says so
    for each MCTS method that measured it, and says nothing for results that did not."""
    bench = _bench()
    out: dict[str, Any] = {"methods": {}, "rounds": [], "n": 3, "n_hard": 2, "jobs": 1}
    for split in ("val", "hard"):
        bench.record_result(out, ["methods", f"{split}/greedy"], _result(0.0, 5))
        bench.record_result(
            out,
            ["methods", f"{split}/MCTS"],
            _result(0.1, 40, distinct_children_per_expansion=1.125),
        )
        bench.record_result(out, ["methods", f"{split}/MCTS + PPM"], _result(0.1, 40))
    text = bench.render(out)
    line = next(x for x in text.splitlines() if x.startswith("Distinct steps per MCTS"))
    assert "(of 4 sampled;" in line and line.endswith(": MCTS 1.12.")
    del out["methods"]["hard/MCTS"]["distinct_children_per_expansion"]
    assert "Distinct steps per MCTS" not in bench.render(out)


PROBLEM = {
    "question": "Ann has 2 apples. Ben has 3 more apples than Ann. How many apples does Ben have?",
    "answer": "5",
    "steps": [["Ann has 2 apples", "ann_apples = 2"], ["Ben has 3 more", "ben = ann_apples + 3"]],
}
STEP1 = "<code>\n# Step 1: Ann has 2 apples\nann_apples = 2\n<end_of_step>"


def _step(code: str) -> str:
    return f"\n\n# Step 2: Ben's apples\n{code}\n<end_of_step>"


def _solution(answer: str) -> str:
    return (
        f"{STEP1}\n\n# Now print the final answer\nprint({answer})\n<end_of_code>\n"
        f"<output>{answer}<end_of_output>\n"
        f"<answer>The answer is \\boxed{{{answer}}}.<end_of_answer>"
    )


@pytest.mark.sandbox
def test_reference_oracle_judges_steps_by_the_reference_values() -> None:
    """The oracle row: right steps bind a value the teacher computes; answers are graded."""
    from rstar_math.executors import SandboxExecutor
    from rstar_math.training import PreferencePair

    bench = _bench()
    q = PROBLEM["question"]

    def step_pair(pos: list[str], neg: list[str]) -> Any:
        return PreferencePair(q, [STEP1], [_step(c) for c in pos], [_step(c) for c in neg])

    ranked = step_pair(["b = ann_apples + 3"], ["b = ann_apples - 3"])  # oracle right
    mislabeled = step_pair(["b = 3 * 3"], ["b = 2 + 3"])  # the negative is the right step
    tie = step_pair(["b = ann_apples + 3"], ["c = ann_apples + 3"])  # both right
    answer = PreferencePair(q, [], [_solution("5")], [_solution("1"), _solution("5.0")], "answer")
    printing = step_pair(["print(ann_apples)"], ["b = 7"])  # binds nothing: counts as right
    executor = SandboxExecutor()
    try:
        oracle = bench.reference_oracle
        assert oracle([ranked], [PROBLEM], executor)["accuracy"] == 1.0
        assert oracle([mislabeled], [PROBLEM], executor)["accuracy"] == 0.0
        assert oracle([tie], [PROBLEM], executor) == {
            "accuracy": 0.5,
            "strict_accuracy": 0.0,
            "combos": 1.0,
        }
        # 5 vs 1: right; 5 vs 5.0: a tie
        assert oracle([answer], [PROBLEM], executor)["accuracy"] == 0.75
        assert oracle([printing], [PROBLEM], executor)["accuracy"] == 1.0
        everything = oracle([ranked, mislabeled, tie, answer, printing], [PROBLEM], executor)
        assert everything["combos"] == 6.0 and everything["accuracy"] == pytest.approx(4 / 6)
    finally:
        executor.close()


def test_the_oracle_row_is_rendered_with_the_ppms() -> None:
    bench = _bench()
    out = {
        "n": 3,
        "pairs": {
            "pairs": 4,
            "problems": 3,
            "round 2 PPM": {"accuracy": 0.5, "strict_accuracy": 0.5},
            bench.ORACLE: {"accuracy": 0.9, "strict_accuracy": 0.8},
        },
    }
    text = bench.render(out)
    assert "| round 2 PPM | 50.0% | 50.0% |" in text
    assert f"| {bench.ORACLE} | 90.0% | 80.0% |" in text


def test_relation_flip_pairs_differ_from_the_teacher_step_only_in_sign_and_word() -> None:
    from rstar_math.data.synthetic import generate_problems
    from rstar_math.format import split_solution

    bench = _bench()
    problems = [p.to_dict() for p in generate_problems(120, ["level2", "level3"], seed=5)]
    flips = bench.relation_flip_pairs(problems)
    assert len(flips["+"]) == len(flips["-"]) >= 5
    by_question = {p["question"]: p for p in problems}
    for sign, other, word, other_word in (("+", "-", "more", "fewer"), ("-", "+", None, "more")):
        for pair in flips[sign]:
            steps = [s.text for s in split_solution(by_question[pair.question]["solution"])]
            (pos,), (neg,) = pair.pos, pair.neg
            assert (
                pos == steps[len(pair.prefix_steps)]
                and pair.prefix_steps == steps[: len(pair.prefix_steps)]
            )
            code_pos, code_neg = pos.split("\n")[-2], neg.split("\n")[-2]
            assert f" {sign} " in code_pos and code_neg == code_pos.replace(
                f" {sign} ", f" {other} "
            )
            comment_pos, comment_neg = pos.split("\n")[-3], neg.split("\n")[-3]
            assert f" {other_word} " in comment_neg and comment_neg != comment_pos
            if word:
                assert comment_neg == comment_pos.replace(f" {word} ", f" {other_word} ")
    assert bench.relation_flip_pairs([]) == {"+": [], "-": []}


def test_the_relation_flip_table_is_rendered_per_ppm(tmp_path: Path) -> None:
    bench = _bench()
    out = {
        "n": 3,
        "pairs": {
            "pairs": 4,
            "problems": 3,
            "round 2 PPM": {"accuracy": 0.5, "strict_accuracy": 0.5},
        },
        "flip": {"pairs": 16, "ppms": {"round 2 PPM": {"plus": 1.0, "minus": 0.0}}},
    }
    text = bench.render(out)
    assert "16 teacher steps that add" in text
    assert "| method |" not in text  # no empty method table when only the PPMs were measured
    assert "| round 2 PPM | 100.0% | 0.0% | 50.0% |" in text
    assert "Does the PPM read the question?" not in bench.render({**out, "flip": None})
    jobs = bench.plan_jobs(_args(skip_pairs=False, methods=""), _run_dir(tmp_path), "p", "q")
    assert [j["kind"] for j in jobs] == ["pairs", "pairs", "flip"]
    assert [j["key"] for j in jobs[:2]] == [["pairs"], ["pairs_hard"]]
    assert [len(j["problems"]) for j in jobs[:2]] == [3, 2]  # --n val, --n-hard hard problems
    assert jobs[2]["ppms"] == [("shipped", "q")]


def test_the_method_rows_ppm_is_measured_beside_the_rounds_ppms(tmp_path: Path) -> None:
    """A --ppm that is none of the run's rounds' PPMs gets its own rows in the pair and flip
    tables (the rows of the methods that used it would otherwise have no pair accuracy)."""
    bench = _bench()
    run = _run_dir(tmp_path)
    ppm_dir = run / "evolution" / "round_2" / "ppm" / "final"
    ppm_dir.mkdir(parents=True)
    manifest = {
        "rounds": {
            "round_2": {
                "stages": {
                    "train_sft": {"model_dir": str(run / "p2")},
                    "train_ppm": {"model_dir": str(ppm_dir)},
                }
            }
        }
    }
    (run / "evolution" / "manifest.json").write_text(json.dumps(manifest))
    args = _args(skip_pairs=False, methods="")
    models = bench.round_models(run)
    assert [m[2] for m in models] == [str(ppm_dir)]
    round_name = models[0][0]
    other = str(tmp_path / "elsewhere")
    for job in bench.plan_jobs(args, run, "p", other):
        assert job["ppms"] == [(round_name, str(ppm_dir)), (bench.METHOD_ROWS_PPM, other)]
    # the run's own PPM (however the path is spelled) is not measured twice
    same = str(run / "evolution" / "round_2" / "ppm" / ".." / "ppm" / "final")
    for job in bench.plan_jobs(args, run, "p", same):
        assert job["ppms"] == [(round_name, str(ppm_dir))]


def test_pairs_from_hard_trees_get_their_own_table() -> None:
    bench = _bench()
    val = {"pairs": 1, "problems": 3, "round 2 PPM": {"accuracy": 1.0, "strict_accuracy": 1.0}}
    hard = {
        "pairs": 40,
        "problems": 2,
        "round 2 PPM": {"accuracy": 0.55, "strict_accuracy": 0.5, "combos": 60.0},
    }
    out: dict[str, Any] = {"n": 3, "pairs": val}
    bench.record_result(out, ["pairs_hard"], hard)
    assert out["pairs_hard"] == hard and out["pairs"] == val
    text = bench.render(out)
    assert "1 preference pairs extracted from terminal-guided MCTS trees of 3 validation" in text
    assert "40 preference pairs extracted from terminal-guided MCTS trees of 2 hard" in text
    assert "| round 2 PPM | 55.0% | 50.0% | 60 |" in text


def test_the_header_says_which_results_came_from_the_cache() -> None:
    bench = _bench()
    out: dict[str, Any] = {"n": 3, "wall_seconds": 90.0}
    assert "1.5 min in all" in bench.render(out)
    out.update(jobs_cached=2, jobs_total=5)
    assert "1.5 min for the 3 jobs run now; 2 of the 5 jobs' results came from the cache" in (
        bench.render(out)
    )
    out.update(jobs_cached=5, wall_seconds=0.2)
    text = bench.render(out)
    assert "every one of the 5 jobs' results came from the cache" in text and "0.0 min" not in text


@pytest.mark.sandbox
def test_the_teacher_oracle_scores_a_partial_solution_by_the_teacher_values(
    tmp_path: Path,
) -> None:
    """The upper-bound search's scorer: +1 only while every bound name holds the teacher's value."""
    from rstar_math.executors import SandboxExecutor
    from rstar_math.interfaces import ScoreRequest

    bench = _bench()
    q = PROBLEM["question"]
    right = "\n\n# Step 2: Ben\nben = ann_apples + 3\n<end_of_step>"
    final = "\n\n# Now print the final answer\nprint(ben)\n<end_of_code>"
    cases = {
        (STEP1,): 1.0,
        ("<code>\n# Step 1: Ann\nann_apples = 3\n<end_of_step>",): -1.0,  # another number
        (STEP1, right): 1.0,
        (STEP1, "\n\n# Step 2: Ben\nben = ann_apples - 3\n<end_of_step>"): -1.0,  # flipped
        (STEP1, "\n\n# Step 2: Ben\nbob = ann_apples + 3\n<end_of_step>"): -1.0,  # other name
        (STEP1, "\n\n# Step 2: Ben\nben = anne + 3\n<end_of_step>"): -1.0,  # fails
        (STEP1, right, final): 1.0,
        (STEP1, right, "\n\n# Now print\nprint(ann_apples)\n<end_of_code>"): -1.0,
        (STEP1, right, final, "<answer>\\boxed{5}<end_of_answer>"): 1.0,
        (STEP1, right, final, "<answer>\\boxed{6}<end_of_answer>"): -1.0,
    }
    with SandboxExecutor() as executor:
        oracle = bench.TeacherOracle([PROBLEM], executor)
        scores = oracle.score([ScoreRequest(q, steps) for steps in cases])
    assert dict(zip(cases, scores, strict=True)) == cases
    # the upper-bound row runs with the oracle in the PPM's place
    jobs = bench.plan_jobs(_args(methods="MCTS + oracle"), _run_dir(tmp_path), "p", "q")
    assert {(j["oracle"], j["ppm"]) for j in jobs} == {(True, None)}
    assert "MCTS + oracle" in bench.ROWS


@pytest.mark.sandbox
def test_the_teacher_oracle_judges_equation_steps_by_what_they_state() -> None:
    """Steps written as equations are right when each equation holds at the teacher's values."""
    from rstar_math.data.synthetic import generate_problems, teacher_solution
    from rstar_math.executors import SandboxExecutor
    from rstar_math.format import split_solution
    from rstar_math.interfaces import ScoreRequest

    bench = _bench()
    problem = next(
        p
        for p in generate_problems(40, "level2", seed=1)
        if any(" - " in e for e in p.meta["step_equations"])
    )
    steps = [s.text for s in split_solution(teacher_solution(problem, equations=True))]
    hops = problem.hops
    flip = next(i for i, e in enumerate(problem.meta["step_equations"]) if " - " in e)
    k = next(i for i, s in enumerate(steps) if problem.meta["step_equations"][flip] in s)
    flipped = steps[k].replace(" - ", " + ")
    renamed = steps[k].replace(problem.target, "someone_else")
    q = problem.question
    cases = {tuple(steps[: i + 1]): 1.0 for i in range(hops + 2)}  # every prefix, the answer too
    cases[(*steps[:k], flipped)] = -1.0  # the relation turned round
    if renamed != steps[k]:
        cases[(*steps[:k], renamed)] = -1.0  # a quantity the teacher does not have
    cases[(*steps[:hops], steps[hops].replace(problem.target, "eqs[0]"))] = -1.0  # wrong print
    cases[(*steps[: hops + 1], steps[hops + 1].replace(problem.answer, "999"))] = -1.0
    with SandboxExecutor() as executor:
        oracle = bench.TeacherOracle([problem.to_dict()], executor)
        scores = oracle.score([ScoreRequest(q, list(c)) for c in cases])
    assert dict(zip(cases, scores, strict=True)) == cases


def test_the_teacher_oracle_judges_every_sentence_steps_by_the_sentence_they_translate() -> None:
    """An every-sentence step is right when it states its sentence's equation (in any
    equivalent form); skipping, repeating or flipping a sentence is wrong, and so is a final
    step that comes too early or prints another answer."""
    from rstar_math.data.synthetic import generate_problems, teacher_solution
    from rstar_math.format import format_output, split_solution
    from rstar_math.interfaces import ScoreRequest

    bench = _bench()
    problem = next(
        p
        for p in generate_problems(40, "level2", seed=1)
        if any(" - " in e for _, e in p.meta["sentence_equations"])
    )
    steps = [s.text for s in split_solution(teacher_solution(problem, every_sentence=True))]
    n = len(problem.meta["sentence_equations"])
    steps[n] += format_output(problem.answer)  # as a search tree's chunk of a final code step
    k = next(i for i, (_, e) in enumerate(problem.meta["sentence_equations"]) if " - " in e)
    equation = problem.meta["sentence_equations"][k][1]
    lhs, rhs = equation.split(" = ")
    cases = {tuple(steps[: i + 1]): 1.0 for i in range(n + 2)}  # every prefix, the answer too
    cases[(*steps[:k], steps[k].replace(equation, f"{rhs} = {lhs}"))] = 1.0  # sides swapped
    cases[(*steps[:k], steps[k].replace(" - ", " + "))] = -1.0  # the relation turned round
    if k + 1 < n:
        cases[(*steps[:k], steps[k + 1])] = -1.0  # a sentence skipped
    if k > 0:
        cases[(*steps[:k], steps[k - 1])] = -1.0  # a sentence repeated
    cases[(*steps[:k], steps[n])] = -1.0  # the final step before the last sentence
    wrong_print = steps[n].replace(format_output(problem.answer), format_output("999"))
    cases[(*steps[:n], wrong_print)] = -1.0
    cases[(*steps[: n + 1], steps[n + 1].replace(problem.answer, "999"))] = -1.0
    oracle = bench.TeacherOracle([problem.to_dict()], executor=None, every_sentence=True)
    scores = oracle.score([ScoreRequest(problem.question, list(c)) for c in cases])
    assert dict(zip(cases, scores, strict=True)) == cases


def test_relation_flip_pairs_in_the_every_sentence_form() -> None:
    from rstar_math.data.synthetic import generate_problems

    bench = _bench()
    problems = [p.to_dict() for p in generate_problems(60, "level2", seed=3)]
    flips = bench.relation_flip_pairs(problems, {"every_sentence": True, "numbered": False})
    assert flips["+"] and len(flips["+"]) == len(flips["-"])
    for sign, pairs in flips.items():
        for pair in pairs:
            (pos,), (neg,) = pair.pos, pair.neg
            assert "eqs.append('" in pos and "eqs.append('" in neg
            other = "-" if sign == "+" else "+"
            assert f" {sign} " in pos.splitlines()[-2] and f" {other} " in neg.splitlines()[-2]


def test_the_benchmark_reads_the_teacher_format_from_the_build(tmp_path: Path) -> None:
    bench = _bench()
    assert bench.teacher_format(tmp_path) == {}
    recipe = {"teacher_every_sentence": True, "teacher_step_numbers": False}
    (tmp_path / "build.json").write_text(json.dumps({"recipe": recipe}))
    assert bench.teacher_format(tmp_path) == {"every_sentence": True, "numbered": False}
    recipe = {"teacher_every_sentence": False, "teacher_quote": True, "teacher_equations": True}
    (tmp_path / "build.json").write_text(json.dumps({"recipe": recipe}))
    assert bench.teacher_format(tmp_path) == {"quote": True, "equations": True}


def test_a_rejected_round_is_measured_with_the_policy_it_kept(tmp_path: Path) -> None:
    bench = _bench()
    (tmp_path / "sft_r1" / "final").mkdir(parents=True)
    (tmp_path / "evolution").mkdir()
    r1 = str(tmp_path / "sft_r1" / "final")
    trained = {i: str(tmp_path / "evolution" / f"round_{i}" / "policy" / "final") for i in (1, 2)}
    ppm = {i: str(tmp_path / "evolution" / f"round_{i}" / "ppm" / "final") for i in (1, 2)}
    rounds = {
        "round_1": {
            "ppm_used": None,
            "stages": {
                "train_sft": {"model_dir": trained[1]},
                "accept": {"accepted": False, "incumbent": r1, "candidate": trained[1]},
                "train_ppm": {"model_dir": ppm[1]},
            },
        },
        "round_2": {
            "ppm_used": ppm[1],
            "stages": {
                "train_sft": {"model_dir": trained[2]},
                "accept": {"accepted": True, "incumbent": r1, "candidate": trained[2]},
                "train_ppm": {"model_dir": ppm[2]},
            },
        },
    }
    (tmp_path / "evolution" / "manifest.json").write_text(json.dumps({"rounds": rounds}))
    models = bench.round_models(tmp_path)
    assert [(pol, p) for _, pol, p in models] == [(r1, None), (r1, ppm[1]), (trained[2], ppm[2])]
    assert "rejected" in models[1][0] and "rejected" not in models[2][0]


def test_validation_problems_the_acceptance_check_chose_on_are_not_reported(
    tmp_path: Path,
) -> None:
    bench = _bench()
    run = _run_dir(tmp_path)
    assert [r["question"] for r in bench.load_split(run, "val", 10)] == [
        f"val {i}?" for i in range(4)
    ]
    (run / "data" / "select.jsonl").write_text(
        "".join(
            json.dumps({"id": f"s{i}", "question": f"val {i}?", "answer": str(i)}) + "\n"
            for i in (2, 3)
        )
    )
    assert [r["question"] for r in bench.load_split(run, "val", 10)] == ["val 0?", "val 1?"]
    assert len(bench.load_split(run, "hard", 10)) == 3  # only validation is held back


def test_a_policy_without_a_ppm_is_refused_only_where_a_ppm_is_needed(tmp_path: Path) -> None:
    bench = _bench()
    run = _run_dir(tmp_path)
    common = ["--run-dir", str(run), "--no-write", "--skip-rounds"]
    with pytest.raises(SystemExit, match=r"MCTS \+ PPM need a PPM"):
        bench.main([*common, "--policy", "p", "--methods", "greedy,MCTS + PPM", "--skip-pairs"])
    with pytest.raises(SystemExit, match="the PPM pair tables need a PPM"):
        bench.main([*common, "--policy", "p", "--methods", "greedy"])
    with pytest.raises(SystemExit, match="--ppm needs --policy"):
        bench.main([*common, "--ppm", "q", "--methods", "greedy"])
    # nothing to measure needs the PPM: the run goes ahead (here with nothing to run at all)
    assert bench.main([*common, "--policy", "p", "--methods", "", "--skip-pairs"]) == 0


def test_the_search_budget_and_temperature_can_be_raised_and_are_part_of_the_cache_key(
    tmp_path: Path,
) -> None:
    """--rollouts changes only the MCTS methods, --temperature every method; either gives the
    jobs a new identity, so a cached result of another budget is never reused."""
    bench = _bench()
    run = _run_dir(tmp_path)
    methods = "greedy,majority@8,MCTS + oracle"
    default = bench.plan_jobs(_args(methods=methods), run, "p", "")
    raised = bench.plan_jobs(_args(methods=methods, rollouts=16, temperature=1.0), run, "p", "")
    by_key = {tuple(j["key"]): j["search"] for j in raised}
    assert by_key[("methods", "hard/MCTS + oracle")]["num_rollouts"] == 16
    assert "num_rollouts" not in by_key[("methods", "hard/majority@8")]
    assert {s["temperature"] for s in by_key.values()} == {1.0}
    assert {j["search"]["temperature"] for j in default} == {bench.COMMON["temperature"]}
    assert not {bench.job_id(j) for j in default} & {bench.job_id(j) for j in raised}
    out = {"n": 3, "n_hard": 2, "temperature": 1.0, "rollouts": 16, "methods": {}}
    assert "temperature 1.0; MCTS with 16 rollouts" in bench.render(out)
    common = ["--run-dir", str(run), "--no-write", "--methods", "", "--skip-pairs"]
    with pytest.raises(SystemExit, match="--rollouts must be >= 1, got 0"):
        bench.main([*common, "--rollouts", "0"])
    with pytest.raises(SystemExit, match="--temperature must be > 0"):
        bench.main([*common, "--temperature", "0"])


def test_the_header_says_when_the_hard_column_is_not_the_hard_split() -> None:
    bench = _bench()
    base = {"n": 3, "n_hard": 2, "methods": {}}
    assert "2 held-out hard (8-9 steps) problems" in bench.render({**base, "hard_levels": ["hard"]})
    assert "held-out hard (8-9 steps)" in bench.render(base)  # a benchmark.json from before
    probe = bench.render({**base, "hard_levels": ["probe-hard-hops"]})
    assert "2 'hard' (not the hard split: levels probe-hard-hops) problems" in probe
    # a build whose recipe drew its hard split from another level (hard_level) says which
    own = {**base, "hard_levels": ["hard-hops"], "hard_split_level": "hard-hops"}
    assert "2 held-out hard (8-9 steps, level hard-hops) problems" in bench.render(own)
    assert "not the hard split" in bench.render({**own, "hard_split_level": "hard"})


def test_the_hard_split_level_comes_from_the_builds_recipe(tmp_path: Path) -> None:
    bench = _bench()
    assert bench.build_hard_level(tmp_path) == "hard"  # no build.json: the library's level
    (tmp_path / "build.json").write_text(json.dumps({"recipe": {"seed": 0}}))
    assert bench.build_hard_level(tmp_path) == "hard"  # a build from before hard_level
    (tmp_path / "build.json").write_text(json.dumps({"recipe": {"hard_level": "hard-hops"}}))
    assert bench.build_hard_level(tmp_path) == "hard-hops"


def test_the_lm_judge_prefers_the_step_its_lm_writes_to_a_miscopied_one(
    tiny_trained_policy_dir: Path,
) -> None:
    """StepLikelihoodJudge: a step the LM writes scores above the same step with one number
    changed; values lie in [-1, 1]; its pair accuracy counts that as a win."""
    bench = _bench()
    from rstar_math.interfaces import ScoreRequest
    from rstar_math.training import PreferencePair

    from .conftest import TINY_PROBLEMS

    question = TINY_PROBLEMS[0][0]
    right = "<code>\n# Step 1: Add the numbers\nx = 2 + 3\n<end_of_step>"
    wrong = "<code>\n# Step 1: Add the numbers\nx = 2 + 7\n<end_of_step>"
    judge = bench.StepLikelihoodJudge(str(tiny_trained_policy_dir))
    values = judge.score(
        [ScoreRequest(question, (right,)), ScoreRequest(question, (wrong,)), ScoreRequest(question)]
    )
    assert all(-1.0 <= v <= 1.0 for v in values)
    assert values[0] > values[1]
    assert values[2] == 0.0  # nothing written yet: no opinion
    pair = PreferencePair(question, [], [right], [wrong], "step")
    flipped = PreferencePair(question, [], [wrong], [right], "step")
    assert bench.scorer_pair_accuracy(judge, [pair])["accuracy"] == 1.0
    assert bench.scorer_pair_accuracy(judge, [pair, flipped])["accuracy"] == 0.5


def test_the_lm_judge_row_is_planned_only_with_an_lm_to_judge_with(tmp_path: Path) -> None:
    bench = _bench()
    run = _run_dir(tmp_path)
    methods = "greedy,MCTS + LM judge"
    without = bench.plan_jobs(_args(methods=methods, skip_pairs=False), run, "p", "q")
    assert not any("LM judge" in str(j["key"]) or j.get("judge_lm") for j in without)
    judged = bench.plan_jobs(
        _args(methods=methods, skip_pairs=False, judge_lm="big"), run, "p", "q"
    )
    by_key = {tuple(j["key"]): j for j in judged}
    row = by_key[("methods", "hard/MCTS + LM judge")]
    assert row["judge_lm"] == "big" and row["ppm"] is None
    assert row["search"]["algorithm"] == "mcts" and row["search"]["answer_selection"] == "best"
    assert by_key[("pairs_hard",)]["judge_lm"] == by_key[("flip",)]["judge_lm"] == "big"
    assert "judge_lm" not in by_key[("methods", "hard/greedy")]
    out = {
        "n": 3,
        "n_hard": 2,
        "judge_lm": "big",
        "methods": {
            f"{split}/{m}": _result(0.5, 30.0)
            for split in ("val", "hard")
            for m in methods.split(",")
        },
        "pairs_hard": {
            "pairs": 4,
            "problems": 2,
            bench.JUDGE: {"accuracy": 0.9, "strict_accuracy": 0.8, "combos": 10.0},
        },
    }
    common = ["--run-dir", str(run), "--no-write", "--skip-pairs", "--skip-rounds"]
    with pytest.raises(SystemExit, match="MCTS \\+ LM judge needs --judge-lm DIR"):
        bench.main([*common, "--methods", "MCTS + LM judge"])
    with pytest.raises(SystemExit, match="--judge-lm: no model directory at"):
        bench.main([*common, "--methods", "", "--judge-lm", str(tmp_path / "missing")])
    text = bench.render(out)
    assert "| MCTS + LM judge | 50.0% | 50.0% |" in text
    assert "likelihood of each step under `big`" in text
    assert f"| {bench.JUDGE} | 90.0% | 80.0% | 10 |" in text


def test_the_cache_tells_apart_ppms_that_share_a_backbone(tmp_path: Path) -> None:
    """Two PPMs with the same backbone weights but different token-evidence weights (or
    settings) give different results, so they must not share cached jobs."""
    bench = _bench()
    dirs = []
    for name, evidence in (("a", b"one"), ("b", b"two"), ("c", None)):
        d = tmp_path / name
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"same backbone")
        if evidence is not None:
            (d / "ppm_evidence.safetensors").write_bytes(evidence)
        dirs.append(str(d))
    digests = [bench._digest(d) for d in dirs]
    assert len(set(digests)) == 3
    assert bench._digest(dirs[0]) == digests[0]  # stable


def test_a_side_run_does_not_replace_the_json_behind_the_docs_table(tmp_path: Path) -> None:
    """--no-write (a quick probe) writes RUN/benchmark.scratch.json, never RUN/benchmark.json,
    which --render-only re-renders into the docs; --json names another file."""
    bench = _bench()
    run = _run_dir(tmp_path)
    main_json = run / "benchmark.json"
    main_json.write_text(json.dumps({"n": 3, "n_hard": 2, "methods": {}, "marker": "main run"}))
    common = ["--run-dir", str(run), "--no-write", "--methods", "", "--skip-pairs", "--skip-rounds"]
    assert bench.main(common) == 0
    assert json.loads(main_json.read_text())["marker"] == "main run"
    scratch = json.loads((run / "benchmark.scratch.json").read_text())
    assert "marker" not in scratch and scratch["n"] == 100
    elsewhere = tmp_path / "probe.json"
    assert bench.main([*common, "--json", str(elsewhere), "--n", "7"]) == 0
    assert json.loads(elsewhere.read_text())["n"] == 7
    assert json.loads(main_json.read_text())["marker"] == "main run"


def test_the_wide_search_keeps_its_own_temperature_and_rollouts(tmp_path: Path) -> None:
    """The reference's test-time shape (1 rollout of 32 candidates per expansion at T 1.0) is
    what the row is: --temperature and --rollouts change the other rows, not it; it is
    PPM-guided, planned by default, and its cache key holds its real settings."""
    bench = _bench()
    run = _run_dir(tmp_path)
    wide = bench.WIDE
    assert wide in bench.ROWS and wide in bench.USES_PPM
    raised = bench.plan_jobs(
        _args(methods=f"MCTS + PPM,{wide}", rollouts=16, temperature=0.5), run, "p", "q"
    )
    by_key = {tuple(j["key"]): j for j in raised}
    row = by_key[("methods", f"hard/{wide}")]
    assert row["ppm"] == "q"
    assert row["search"] == {
        **bench.COMMON,
        "algorithm": "mcts",
        "num_rollouts": 1,
        "num_candidates": 32,
        "temperature": 1.0,
        "answer_selection": "best",
    }
    narrow = by_key[("methods", "hard/MCTS + PPM")]["search"]
    assert (narrow["temperature"], narrow["num_rollouts"]) == (0.5, 16)
    # the settings are valid search settings, and the benchmark's default plan holds the row
    from rstar_math.search import SearchConfig

    SearchConfig.from_dict({**row["search"], "seed": 1})
    default = bench.plan_jobs(_args(methods=",".join(bench.METHODS)), run, "p", "q")
    assert ("methods", f"val/{wide}") in {tuple(j["key"]) for j in default}


def test_the_target_line_compares_the_wide_search_at_both_budgets() -> None:
    bench = _bench()
    acc = {"greedy": 0.3, "majority@8": 0.4, "MCTS + PPM": 0.5, bench.WIDE: 0.7,
           "majority@32": 0.45, "best-of-32 (PPM)": 0.55}  # fmt: skip
    out: dict[str, Any] = {"methods": {}, "n": 3, "n_hard": 2}
    for split in ("val", "hard"):
        for method, a in acc.items():
            bench.record_result(
                out,
                ["methods", f"{split}/{method}"],
                _result(a, 300, distinct_children_per_expansion=5.5),
            )
    text = bench.render(out)
    line = next(x for x in text.splitlines() if x.startswith("On hard"))
    assert "MCTS + PPM - greedy = +20.0 points" in line
    assert f"{bench.WIDE} - greedy = +40.0 points; - majority@8 = +30.0." in line
    assert f"{bench.WIDE} - majority@32 = +25.0 points, - best-of-32 = +15.0." in line
    assert f"best-of-32 (PPM) 300, MCTS + PPM 300, {bench.WIDE} 300)" in line
    assert f"| {bench.WIDE} | 70.0% | 70.0% |" in text
    assert f"{bench.WIDE} 5.50 of 32" in text
